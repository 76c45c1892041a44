"""sensor_msgs <-> numpy and the building of the node's output messages.

Pure functions of messages and arrays (no node, no rclpy.init), so tests call them directly. The
pixels of incoming images are decoded by ``casnet_core.image_encoding`` (the decoder the rosbag2
reader shares); this module only hands it the message's fields.
"""

from __future__ import annotations

import array
import sys
from typing import Sequence

import numpy as np
from casnet_msgs.msg import PanopticFrame, PanopticInstance
from geometry_msgs.msg import PoseWithCovariance
from sensor_msgs.msg import Image
from vision_msgs.msg import (Detection2D, Detection2DArray, LabelInfo, ObjectHypothesis,
                             ObjectHypothesisWithPose, VisionClass)

from casnet_core import image_encoding
from casnet_core.image_encoding import ImageConversionError


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB (``casnet_core.image_encoding.image_to_rgb``): a view of
    the message's buffer for the 8-bit RGB/BGR/mono encodings, a new array for the others."""
    return image_encoding.image_to_rgb(msg.data, msg.height, msg.width, msg.encoding, msg.step,
                                       is_bigendian=bool(msg.is_bigendian))


def compressed_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage -> (H, W, 3) uint8 RGB (``casnet_core.image_encoding.compressed_to_rgb``)."""
    return image_encoding.compressed_to_rgb(msg.data, msg.format)


def _byte_array(pixels: np.ndarray) -> array.array:
    """The bytes of an array as array.array('B'): the generated message setters take that type
    without checking every element (a list or bytes object would be checked value by value)."""
    data = array.array("B")
    data.frombytes(memoryview(np.ascontiguousarray(pixels)).cast("B"))
    return data


def array_to_image(pixels: np.ndarray, encoding: str, header):
    """(H, W) or (H, W, C) numpy array -> sensor_msgs/Image with ``header`` and ``encoding``."""
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


def panoptic_to_image(panoptic: np.ndarray, header, max_id: int | None = None):
    """(H, W) Cityscapes panoptic ids -> sensor_msgs/Image, encoding 16UC1 (image_encoding.PANOPTIC_ENCODING).

    Ids are at most 33 999 once instances are capped below 1000 per class, so 16 bits hold them in
    half the bytes of 32SC1. ``max_id``, the largest id (e.g. of the instance list, which is cheaper
    than a pass over the pixels), above 65 535 gives a 32SC1 image instead; ``image_to_panoptic``
    reads both.
    """
    pixels, encoding = image_encoding.panoptic_pixels(panoptic, max_id=max_id)
    return array_to_image(pixels, encoding, header)


def image_to_panoptic(msg) -> np.ndarray:
    """sensor_msgs/Image 16UC1 (or 32SC1) as published by the node -> (H, W) panoptic ids (a uint16 or int32
    view of the message's buffer)."""
    return image_encoding.panoptic_from_buffer(msg.data, msg.height, msg.width, msg.encoding, msg.step,
                                               bool(msg.is_bigendian))


def image_to_mono8(msg) -> np.ndarray:
    """sensor_msgs/Image mono8 -> (H, W) uint8 (a view)."""
    if msg.encoding != "mono8":
        raise ImageConversionError(f"expected encoding mono8, got {msg.encoding!r}")
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    return rows[:, : msg.width]


def instances_to_frame(panoptic_image, instances: Sequence, mode: str, header):
    """Prediction instances + the panoptic image (``panoptic_to_image``) -> casnet_msgs/PanopticFrame."""
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
    msg = LabelInfo()
    msg.header = header
    entries = {0: "unlabeled"}
    for label_id, name in zip(class_space.label_ids, class_space.names):
        entries[int(label_id)] = str(name)
    msg.class_map = [VisionClass(class_id=label_id, class_name=name) for label_id, name in sorted(entries.items())]
    msg.threshold = float(threshold)
    return msg
