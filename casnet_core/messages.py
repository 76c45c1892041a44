"""The node's structured outputs, built once for both message libraries.

``casnet_msgs/PanopticFrame`` (~/instances) and ``vision_msgs/Detection2DArray`` (~/detections) are built here
from ``Predictor`` instances, with the message classes given by ``message_class`` (a type name such as
``"vision_msgs/msg/Detection2D"`` -> its class): rclpy's generated classes in the node
(``casnet_ros.conversions``), rosbags' in the in-process replay (``casnet_core.replay``). Every field is passed
by keyword, so both libraries build the same message and serialize it to the same bytes. casnet_core never
imports ROS: the classes come from the caller.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

MessageClass = Callable[[str], Any]

PANOPTIC_FRAME_TYPE = "casnet_msgs/msg/PanopticFrame"
DETECTIONS_TYPE = "vision_msgs/msg/Detection2DArray"


def panoptic_frame_message(message_class: MessageClass, panoptic_image: Any, instances: Sequence[Any], mode: str,
                           header: Any) -> Any:
    """casnet_msgs/PanopticFrame of the panoptic image (the ~/panoptic Image, 16UC1 or 32SC1) and ``Predictor``
    instances: one PanopticInstance per instance (panoptic id, label id and name, score, box, area, centroid)."""
    instance_type = message_class("casnet_msgs/msg/PanopticInstance")
    items = []
    for instance in instances:
        x0, y0, x1, y1 = (float(v) for v in instance.box)
        cx, cy = (float(v) for v in instance.centroid)
        items.append(instance_type(
            id=int(instance.id), class_id=int(instance.label_id), class_name=str(instance.class_name),
            score=float(instance.score), x_min=x0, y_min=y0, x_max=x1, y_max=y1, area=int(instance.area),
            centroid_x=cx, centroid_y=cy))
    return message_class(PANOPTIC_FRAME_TYPE)(header=header, mode=mode, panoptic=panoptic_image, instances=items)


def detections_message(message_class: MessageClass, instances: Sequence[Any], header: Any) -> Any:
    """vision_msgs/Detection2DArray of ``Predictor`` instances.

    Detection2D.id is the instance's panoptic id (its value in ~/panoptic; its track id when tracked: vision_msgs
    documents it as the id that stays the same across messages), the hypothesis class_id the Cityscapes label id
    as a string (a key of ~/label_info), bbox the axis-aligned box as centre + size in pixels. The hypothesis pose
    is empty (an image-space detection has no 3D pose).
    """
    pose_type, point_type = message_class("geometry_msgs/msg/Pose"), message_class("geometry_msgs/msg/Point")
    # One empty pose shared by all hypotheses: building a PoseWithCovariance (36 covariance values) per detection
    # would dominate the cost of this message.
    no_pose = message_class("geometry_msgs/msg/PoseWithCovariance")(
        pose=pose_type(position=point_type(x=0.0, y=0.0, z=0.0),
                       orientation=message_class("geometry_msgs/msg/Quaternion")(x=0.0, y=0.0, z=0.0, w=1.0)),
        covariance=np.zeros(36, dtype=np.float64))
    detection_type = message_class("vision_msgs/msg/Detection2D")
    hypothesis_type = message_class("vision_msgs/msg/ObjectHypothesisWithPose")
    object_type = message_class("vision_msgs/msg/ObjectHypothesis")
    center_type, point2d_type = message_class("vision_msgs/msg/Pose2D"), message_class("vision_msgs/msg/Point2D")
    box_type = message_class("vision_msgs/msg/BoundingBox2D")
    detections = []
    for instance in instances:
        x0, y0, x1, y1 = (float(v) for v in instance.box)
        hypothesis = hypothesis_type(
            hypothesis=object_type(class_id=str(int(instance.label_id)), score=float(instance.score)), pose=no_pose)
        center = center_type(position=point2d_type(x=0.5 * (x0 + x1), y=0.5 * (y0 + y1)), theta=0.0)
        detections.append(detection_type(header=header, results=[hypothesis], id=str(int(instance.id)),
                                         bbox=box_type(center=center, size_x=x1 - x0, size_y=y1 - y0)))
    return message_class(DETECTIONS_TYPE)(header=header, detections=detections)
