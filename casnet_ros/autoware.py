"""The node's Autoware outputs (casnet_core.autoware says what they hold and why): their message types and their
messages built from a Prediction with rclpy's classes.

  out ~/rois           tier4_perception_msgs/DetectedObjectsWithFeature: one roi per instance (pixels),
                       existence_probability = score, one Autoware ObjectClassification (probability 1.0)
  out ~/mask           sensor_msgs/Image "mono8" whose data is Autoware's run-length encoding of the 16
                       Autoware mask classes (casnet_core.autoware.rle_encode), at the input's size
  out ~/instance_mask  autoware_internal_perception_msgs/SegmentationMask: pixel k > 0 = the k-th roi's
                       instance, classification[k - 1] its class

The launch file's ``autoware:=true`` remaps them to Autoware's per-camera topics.
"""

from __future__ import annotations

from typing import Any

from autoware_internal_perception_msgs.msg import SegmentationMask
from sensor_msgs.msg import Image
from tier4_perception_msgs.msg import DetectedObjectsWithFeature

from casnet_core import autoware
from casnet_core.predictor import Prediction
from casnet_ros.conversions import byte_array, message_class

#: Output name -> message type.
AUTOWARE_OUTPUTS = {"rois": DetectedObjectsWithFeature, "mask": Image, "instance_mask": SegmentationMask}


def autoware_outputs(prediction: Prediction, header: Any, wanted: list[str]) -> dict[str, Any]:
    """The messages of the wanted Autoware outputs of one frame, each with the input's ``header``."""
    messages: dict[str, Any] = {}
    height, width = prediction.panoptic.shape
    if "rois" in wanted:
        messages["rois"] = autoware.rois_message(message_class, prediction.instances, header, height, width,
                                                 to_data=byte_array)
    if "mask" in wanted:
        max_id = max((instance.id for instance in prediction.instances), default=0)
        messages["mask"] = autoware.mask_message(message_class, prediction.panoptic, header, max_id=max_id,
                                                 to_data=byte_array)
    if "instance_mask" in wanted:
        messages["instance_mask"] = autoware.instance_mask_message(message_class, prediction.panoptic,
                                                                   prediction.instances, header, to_data=byte_array)
    return messages
