"""sensor_msgs <-> numpy and the building of the node's output messages.

Pure functions of messages and arrays (no node, no rclpy.init), so tests call them directly.

Incoming images become views wherever the encoding allows: ``np.frombuffer`` over the message's
buffer, the row padding (``step``) sliced away and the channel order fixed with strided views
(``bgr8`` is ``[..., ::-1]``, ``mono8`` a zero-stride broadcast to three channels). The Predictor
accepts any strides, so no pixel is copied before it copies the image into its input tensor.
"""

from __future__ import annotations

import array
import sys
from typing import Sequence

import numpy as np

# encoding -> channels per pixel
_RAW_ENCODINGS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
SUPPORTED_ENCODINGS = tuple(_RAW_ENCODINGS)

PANOPTIC_ENCODING = "32SC1"


class ImageConversionError(ValueError):
    """An incoming image that cannot be interpreted (unsupported encoding, inconsistent size)."""


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB view of the message's buffer (no copy).

    Supports rgb8, bgr8, rgba8, bgra8 and mono8; raises ImageConversionError for any other
    encoding or when height, width, step and the data length disagree.
    """
    encoding = msg.encoding.lower()
    if encoding not in _RAW_ENCODINGS:
        raise ImageConversionError(
            f"unsupported encoding {msg.encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    channels = _RAW_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"empty image ({width}x{height})")
    if step < width * channels:
        raise ImageConversionError(
            f"step {step} is smaller than width * channels = {width * channels} ({msg.encoding})")
    if len(msg.data) != step * height:
        raise ImageConversionError(
            f"data holds {len(msg.data)} bytes, expected step * height = {step * height} "
            f"({width}x{height} {msg.encoding}, step {step})")
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)
    pixels = rows[:, : width * channels].reshape(height, width, channels)
    if encoding == "rgb8":
        return pixels
    if encoding == "mono8":
        return np.broadcast_to(pixels, (height, width, 3))
    if encoding == "rgba8":
        return pixels[..., :3]
    # bgr8, bgra8: channels 2, 1, 0 as a negative-stride view.
    return pixels[..., 2::-1]


def compressed_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG, PNG, ... whatever OpenCV decodes) -> (H, W, 3) uint8 RGB.

    The result is a view (reversed channels) of the BGR array OpenCV decodes into.
    """
    import cv2

    if len(msg.data) == 0:
        raise ImageConversionError("empty compressed image")
    bgr = cv2.imdecode(np.frombuffer(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageConversionError(f"OpenCV cannot decode the compressed image (format {msg.format!r})")
    return bgr[..., ::-1]


def _byte_array(pixels: np.ndarray) -> array.array:
    """The bytes of an array as array.array('B'): the generated message setters take that type
    without checking every element (a list or bytes object would be checked value by value)."""
    data = array.array("B")
    data.frombytes(memoryview(np.ascontiguousarray(pixels)).cast("B"))
    return data


def array_to_image(pixels: np.ndarray, encoding: str, header):
    """(H, W) or (H, W, C) numpy array -> sensor_msgs/Image with ``header`` and ``encoding``."""
    from sensor_msgs.msg import Image

    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    msg = Image()
    msg.header = header
    msg.height = height
    msg.width = width
    msg.encoding = encoding
    msg.is_bigendian = int(pixels.dtype.byteorder == ">" or (pixels.dtype.byteorder == "=" and sys.byteorder == "big"))
    msg.step = pixels.strides[0]
    msg.data = _byte_array(pixels)
    return msg


def panoptic_to_image(panoptic: np.ndarray, header):
    """(H, W) int32 Cityscapes panoptic ids -> sensor_msgs/Image, encoding 32SC1."""
    return array_to_image(np.asarray(panoptic, dtype=np.int32), PANOPTIC_ENCODING, header)


def image_to_panoptic(msg) -> np.ndarray:
    """sensor_msgs/Image 32SC1 (as published by the node) -> (H, W) int32 panoptic ids (a view)."""
    if msg.encoding != PANOPTIC_ENCODING:
        raise ImageConversionError(f"expected encoding {PANOPTIC_ENCODING}, got {msg.encoding!r}")
    dtype = np.dtype(">i4" if msg.is_bigendian else "<i4")
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    return rows[:, : 4 * msg.width].view(dtype).reshape(msg.height, msg.width)


def image_to_mono8(msg) -> np.ndarray:
    """sensor_msgs/Image mono8 -> (H, W) uint8 (a view)."""
    if msg.encoding != "mono8":
        raise ImageConversionError(f"expected encoding mono8, got {msg.encoding!r}")
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    return rows[:, : msg.width]


def instances_to_frame(panoptic_image, instances: Sequence, mode: str, header):
    """Prediction instances + the 32SC1 panoptic image -> casnet_msgs/PanopticFrame."""
    from casnet_msgs.msg import PanopticFrame, PanopticInstance

    frame = PanopticFrame()
    frame.header = header
    frame.mode = mode
    frame.panoptic = panoptic_image
    items = []
    for instance in instances:
        item = PanopticInstance()
        item.id = int(instance.id)
        item.class_id = int(instance.label_id)
        item.class_name = str(instance.class_name)
        item.score = float(instance.score)
        item.x_min, item.y_min, item.x_max, item.y_max = (float(v) for v in instance.box)
        item.area = int(instance.area)
        item.centroid_x, item.centroid_y = (float(v) for v in instance.centroid)
        items.append(item)
    frame.instances = items
    return frame


def instances_to_detections(instances: Sequence, header):
    """Prediction instances -> vision_msgs/Detection2DArray.

    Detection2D.id is the instance's panoptic id (its value in ~/panoptic), the hypothesis
    class_id the Cityscapes label id as a string (a key of ~/label_info), bbox the axis-aligned
    box as centre + size in pixels. The hypothesis pose is left empty (an image-space detection
    has no 3D pose).
    """
    from geometry_msgs.msg import PoseWithCovariance
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesis, ObjectHypothesisWithPose

    # One empty pose shared by all hypotheses: building a PoseWithCovariance (36 covariance values)
    # per detection would dominate the cost of this message.
    no_pose = PoseWithCovariance()
    detections = []
    for instance in instances:
        x0, y0, x1, y1 = (float(v) for v in instance.box)
        detection = Detection2D(header=header, id=str(int(instance.id)))
        detection.results = [ObjectHypothesisWithPose(
            hypothesis=ObjectHypothesis(class_id=str(int(instance.label_id)), score=float(instance.score)),
            pose=no_pose)]
        detection.bbox.center.position.x = 0.5 * (x0 + x1)
        detection.bbox.center.position.y = 0.5 * (y0 + y1)
        detection.bbox.size_x = x1 - x0
        detection.bbox.size_y = y1 - y0
        detections.append(detection)
    return Detection2DArray(header=header, detections=detections)


def label_info(class_space, threshold: float, header):
    """The class map of a casnet_core ClassSpace -> vision_msgs/LabelInfo.

    Keys are Cityscapes label ids, the values published in ~/semantic, in the panoptic ids and in
    Detection2D class ids; 0 ("unlabeled") marks void pixels.
    """
    from vision_msgs.msg import LabelInfo, VisionClass

    msg = LabelInfo()
    msg.header = header
    entries = {0: "unlabeled"}
    for label_id, name in zip(class_space.label_ids, class_space.names):
        entries[int(label_id)] = str(name)
    msg.class_map = [VisionClass(class_id=label_id, class_name=name) for label_id, name in sorted(entries.items())]
    msg.threshold = float(threshold)
    return msg
