"""The cameras of one casnet_node: where each one's frames come from and where its outputs go.

One camera (``cameras`` unset or empty) keeps the node's own topics: ``~/image`` in, ``~/panoptic``... out.
Several cameras in one process each get the topics a one-camera node in namespace ``<camera>`` would
have (``<namespace>/<camera>/<node name>/panoptic``, ...), so a consumer sees the same topics whether a
vehicle runs one process per camera or one batched process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from casnet_msgs.msg import PanopticFrame
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from casnet_core.predictor import Prediction
from casnet_ros import conversions
from casnet_ros.autoware import AUTOWARE_OUTPUTS, autoware_outputs
from casnet_ros.parameters import OUTPUTS
from casnet_ros.statistics import Statistics

# Outputs: reliable, depth 1 (a late reader gets the newest result, never a backlog).
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


def input_qos(reliability: str) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=1, durability=DurabilityPolicy.VOLATILE,
        reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT)


@dataclass
class Camera:
    """One camera: its topics, publishers and counters. ``name`` is "" for the node's single camera."""

    name: str
    prefix: str  # of its topics: "~/" or "<camera>/<node name>/"
    image_topic: str
    statistics: Statistics
    publishers: dict[str, Any] = field(default_factory=dict)
    label_info_publisher: Any = None
    dropped_before: int = 0  # replaced in mailboxes of earlier activations

    @property
    def compressed_topic(self) -> str:
        return self.image_topic.rstrip("/") + "/compressed"

    def create_publishers(self, node: Any) -> None:
        for name, msg_type in (("panoptic", Image), ("semantic", Image), ("overlay", Image),
                               ("instances", PanopticFrame), ("detections", Detection2DArray),
                               *AUTOWARE_OUTPUTS.items()):
            self.publishers[name] = node.create_publisher(msg_type, self.prefix + name, OUTPUT_QOS)
        self.label_info_publisher = node.create_publisher(LabelInfo, self.prefix + "label_info", LATCHED_QOS)

    def destroy_publishers(self, node: Any) -> None:
        for publisher in [*self.publishers.values(), self.label_info_publisher]:
            if publisher is not None:
                node.destroy_publisher(publisher)
        self.publishers, self.label_info_publisher = {}, None

    def wanted(self, enabled_outputs: frozenset) -> list[str]:
        """The outputs to compute for this camera's next frame: enabled and subscribed."""
        return [name for name in OUTPUTS if name in enabled_outputs and self.publishers.get(name) is not None
                and self.publishers[name].get_subscription_count() > 0]

    def publish(self, messages: dict[str, Any]) -> None:
        for name, message in messages.items():
            publisher = self.publishers.get(name)  # gone when cleaned up meanwhile
            if publisher is not None:
                publisher.publish(message)


def cameras_of(names: list[str], topics: dict[str, str], node_name: str, parent: Statistics) -> list[Camera]:
    """The node's cameras: the single one on ``~/image`` without names (its counters are the node's), else one
    per name (its image topic from ``topics``, default ``<camera>/<node name>/image``; its counters add to
    ``parent``)."""
    if not names:
        return [Camera("", "~/", "~/image", parent)]
    return [Camera(name, f"{name}/{node_name}/", topics.get(name) or f"{name}/{node_name}/image", Statistics(parent))
            for name in names]


def build_outputs(prediction: Prediction, header: Any, wanted: list[str], mode: str) -> dict[str, Any]:
    """The messages of the wanted outputs (the overlay aside), each built once: ~/instances carries the very
    Image object published on ~/panoptic."""
    messages: dict[str, Any] = {}
    if "panoptic" in wanted or "instances" in wanted:
        max_id = max((instance.id for instance in prediction.instances), default=0)
        messages["panoptic"] = conversions.panoptic_to_image(prediction.panoptic, header, max_id=max_id)
    if "semantic" in wanted:
        messages["semantic"] = conversions.array_to_image(prediction.semantic, "mono8", header)
    if "instances" in wanted:
        messages["instances"] = conversions.instances_to_frame(messages["panoptic"], prediction.instances, mode, header)
    if "detections" in wanted:
        messages["detections"] = conversions.instances_to_detections(prediction.instances, header)
    if "panoptic" not in wanted:
        messages.pop("panoptic", None)
    messages.update(autoware_outputs(prediction, header, wanted))
    return messages
