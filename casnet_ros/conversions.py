"""sensor_msgs <-> numpy and the building of the node's output messages.

Pure functions of messages and arrays (no node, no rclpy.init), so tests call them directly. The
pixels of incoming images are decoded by ``casnet_core.image_encoding`` (the decoder the rosbag2
reader shares); this module only hands it the message's fields.
"""

from __future__ import annotations

import array
import functools
import importlib
import sys
from typing import Sequence

import numpy as np
from sensor_msgs.msg import Image
from vision_msgs.msg import LabelInfo, VisionClass

from casnet_core import image_encoding, messages
from casnet_core.image_encoding import ImageConversionError


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB (``casnet_core.image_encoding.image_to_rgb``): a view of
    the message's buffer for the 8-bit RGB/BGR/mono encodings, a new array for the others."""
    return image_encoding.image_to_rgb(msg.data, msg.height, msg.width, msg.encoding, msg.step,
                                       is_bigendian=bool(msg.is_bigendian))


def compressed_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage -> (H, W, 3) uint8 RGB (``casnet_core.image_encoding.compressed_to_rgb``)."""
    return image_encoding.compressed_to_rgb(msg.data, msg.format)


def byte_array(pixels: np.ndarray) -> array.array:
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
    msg.data = byte_array(pixels)
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


@functools.lru_cache(maxsize=None)
def message_class(msgtype: str) -> type:
    """The rclpy class of a message type name, e.g. "vision_msgs/msg/Detection2D" (``casnet_core.messages``)."""
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def instances_to_frame(panoptic_image, instances: Sequence, mode: str, header):
    """Prediction instances + the panoptic image (``panoptic_to_image``) -> casnet_msgs/PanopticFrame
    (``casnet_core.messages.panoptic_frame_message``)."""
    return messages.panoptic_frame_message(message_class, panoptic_image, instances, mode, header)


def instances_to_detections(instances: Sequence, header):
    """Prediction instances -> vision_msgs/Detection2DArray (``casnet_core.messages.detections_message``: id =
    panoptic id, hypothesis class_id = label id as a string, bbox = centre + size in pixels, empty pose)."""
    return messages.detections_message(message_class, instances, header)


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
