"""The parameters of casnet_node: declarations, checks, the cameras, and the live settings staged per request.

Model-related parameters (CONFIGURE_TIME_PARAMETERS) are read at configure and refused while the node is
configured. The thresholds and the publish_* switches are live: they form one frozen ``LiveSettings``
that the worker reads once per batch of frames. rclpy's parameter services call the node's parameter
callback once per parameter of a request, so the callback only collects the changes in a
``StagedSettings`` and a task of the executor, run after the whole SetParameters request (``ros2 param
set``/``load``), swaps in the new set: a frame sees all of a request's changes or none of them.

Cameras: ``cameras`` (string array, empty = one camera on ``~/image``) names the cameras of one batched
process; ``<camera>.image_topic`` is each one's input (default ``<camera>/<node name>/image``, the topic a
one-camera node in namespace ``<camera>`` subscribes to, unremapped). Both are read at configure.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Callable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import InvalidTopicNameException
from rclpy.validate_topic_name import validate_topic_name

from casnet_core.postprocess import DEFAULT_THRESHOLDS
from casnet_core.predictor import DEFAULT_MAX_INPUT_SIZE, PRECISION_CHOICES, Predictor
from casnet_ros.statistics import DEFAULT_INPUT_TIMEOUT_S, DEFAULT_WINDOW_S
from casnet_ros.tracking_parameters import TRACKING_PARAMETERS

OUTPUTS = ("panoptic", "semantic", "instances", "detections", "overlay",
           "rois", "mask", "instance_mask")  # the last three: Autoware's (casnet_ros.autoware)
CAMERAS = "cameras"
CAMERA_TOPIC_SUFFIX = ".image_topic"
# Read at configure only.
CONFIGURE_TIME_PARAMETERS = ("checkpoint", "device", "precision", "cuda_graph", "backend", "mode", "input_height",
                             "input_width", "max_input_size", "input_reliability", "subscribe_compressed",
                             "diagnostics_period", "batch_timeout_ms", CAMERAS, *TRACKING_PARAMETERS)
CHOICES = {"mode": ("", "panoptic", "instance"), "input_reliability": ("best_effort", "reliable"),
           "backend": ("auto", "torch", "onnxruntime"), "precision": PRECISION_CHOICES}
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
# A camera name becomes a namespace token and a parameter prefix.
_CAMERA_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Thresholds:
    """The post-processing thresholds one frame runs with (the Predictor's attributes of the same names)."""

    box_threshold: float = DEFAULT_THRESHOLDS["box_threshold"]
    nms_iou: float = DEFAULT_THRESHOLDS["nms_iou"]
    tie_margin: float = DEFAULT_THRESHOLDS["tie_margin"]
    min_area: int = DEFAULT_THRESHOLDS["min_area"]
    stuff_area: int = DEFAULT_THRESHOLDS["stuff_area"]
    max_instances: int = DEFAULT_THRESHOLDS["max_instances"]

    def apply_to(self, predictor: Predictor) -> None:
        for name, value in dataclasses.asdict(self).items():
            setattr(predictor, name, value)


# Parameters that are live thresholds: the fields of Thresholds.
LIVE_THRESHOLDS = tuple(f.name for f in dataclasses.fields(Thresholds))
LIVE_SWITCHES = tuple(f"publish_{name}" for name in OUTPUTS)


@dataclass(frozen=True)
class LiveSettings:
    """Everything live that one batch of frames runs with: the thresholds and the enabled outputs."""

    thresholds: Thresholds = Thresholds()
    enabled_outputs: frozenset = frozenset(OUTPUTS)

    def replaced(self, changes: dict[str, Any]) -> "LiveSettings":
        """A new set with ``changes`` (threshold and publish_* parameter values) applied."""
        thresholds = {name: value for name, value in changes.items() if name in LIVE_THRESHOLDS}
        enabled = set(self.enabled_outputs)
        for name, value in changes.items():
            if name in LIVE_SWITCHES:
                output = name[len("publish_"):]
                enabled.add(output) if value else enabled.discard(output)
        return LiveSettings(dataclasses.replace(self.thresholds, **thresholds), frozenset(enabled))


def is_live(name: str) -> bool:
    return name in LIVE_THRESHOLDS or name in LIVE_SWITCHES


class StagedSettings:
    """The live settings the next frame runs with, and the changes of the request in progress.

    ``stage`` collects; ``commit`` swaps in one new ``LiveSettings`` (one reference swap: atomic for the
    worker, which reads ``current`` once per batch)."""

    def __init__(self, settings: LiveSettings) -> None:
        self.current = settings
        self._pending: dict[str, Any] = {}

    def stage(self, changes: dict[str, Any], schedule: Callable[[Callable[[], None]], Any] | None,
              on_commit: Callable[[dict[str, Any]], None]) -> None:
        """Collects ``changes``; ``schedule(task)`` runs the commit once the current request is done (the
        executor's create_task); without one (not spun yet) they apply at once. ``on_commit(changes)`` follows
        each commit."""
        first = not self._pending
        self._pending.update(changes)

        def commit() -> None:
            on_commit(self.commit())

        if schedule is None:
            commit()
        elif first:
            schedule(commit)

    def commit(self) -> dict[str, Any]:
        changes, self._pending = self._pending, {}
        if changes:
            self.current = self.current.replaced(changes)
        return changes


def _descriptor(description: str, *, floating: tuple[float, float] | None = None,
                integer: tuple[int, int] | None = None, constraints: str = "") -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=description, additional_constraints=constraints)
    if floating is not None:
        descriptor.floating_point_range = [FloatingPointRange(from_value=floating[0], to_value=floating[1], step=0.0)]
    if integer is not None:
        descriptor.integer_range = [IntegerRange(from_value=integer[0], to_value=integer[1], step=1)]
    return descriptor


# name -> (default, descriptor).
PARAMETERS: dict[str, tuple[Any, ParameterDescriptor]] = {
    "autostart": (True, _descriptor(
        "Run configure and activate at start (no lifecycle manager needed). Read at start only.")),
    "checkpoint": ("", _descriptor(
        "Path of the CASNet checkpoint (casnet_core.checkpoint) or ONNX file; empty = the packaged default "
        "model (generated scenes only). Read at configure.")),
    "device": ("auto", _descriptor(
        "Inference device: auto (CUDA if available, else CPU), cpu, cuda or cuda:N. Read at configure.",
        constraints="auto | cpu | cuda | cuda:N")),
    "precision": ("fp32", _descriptor(
        "dtype of the network's forward pass: fp32, int8 (onnxruntime on the CPU: the checkpoint's int8 export, "
        "calibrated on generated scenes and cached; or an .onnx of `casnet export --int8`), fp16 or bf16 (PyTorch; "
        "the fast path on CUDA, bf16 also on CPUs with bfloat16 instructions). Read at configure.",
        constraints="fp32 | int8 | fp16 | bf16")),
    "cuda_graph": (False, _descriptor(
        "Replay the forward pass as a CUDA graph (torch backend on CUDA; ignored elsewhere): one graph per "
        "network input size and batch size rounded up to a power of two (a batch of 3 frames runs padded to 4), "
        "the 4 most recently used kept. Read at configure.")),
    "backend": ("auto", _descriptor(
        "Network runtime: torch, onnxruntime (the checkpoint exported in memory, or an .onnx file as "
        "checkpoint) or auto (onnxruntime for an .onnx file or on the CPU, with the checkpoint's export cached "
        "under ~/.cache/casnet; else torch). Read at configure.",
        constraints="auto | torch | onnxruntime")),
    "mode": ("", _descriptor(
        "Output mode: panoptic (stuff and things) or instance (things only); empty = the checkpoint's "
        "mode. Read at configure.", constraints="'' | panoptic | instance")),
    "max_input_size": (DEFAULT_MAX_INPUT_SIZE, _descriptor(
        "Longest side, in pixels, of the image the network sees: larger images are resized keeping "
        "their aspect ratio (0 = no limit; outputs are always at the camera's size). Read at configure.",
        integer=(0, 16384))),
    "input_height": (0, _descriptor(
        "Height of the box the image is scaled to fit inside (up or down, aspect ratio kept) before "
        "inference; 0 = none (set both or neither; max_input_size still applies). Read at configure.",
        integer=(0, 8192))),
    "input_width": (0, _descriptor(
        "Width of that box (0 = none). Read at configure.", integer=(0, 8192))),
    "box_threshold": (Thresholds.box_threshold, _descriptor(
        "Minimum box probability of an instance seed (live).", floating=(0.0, 1.0))),
    "nms_iou": (Thresholds.nms_iou, _descriptor(
        "IoU above which NMS suppresses a seed box (live).", floating=(0.0, 1.0))),
    "tie_margin": (Thresholds.tie_margin, _descriptor(
        "IoU margin within which a pixel's vote between seeds counts as a tie (live).", floating=(0.0, 1.0))),
    "min_area": (Thresholds.min_area, _descriptor(
        "Minimum instance area in pixels of the input image (live).", integer=(0, 1 << 24))),
    "stuff_area": (Thresholds.stuff_area, _descriptor(
        "Minimum area in pixels of a stuff segment; smaller ones become void (live).", integer=(0, 1 << 24))),
    "max_instances": (Thresholds.max_instances, _descriptor(
        "Most thing instances per image, the best-scoring kept (live; below 1000, so that panoptic ids "
        "fit the Cityscapes encoding).", integer=(1, 999))),
    "input_reliability": ("best_effort", _descriptor(
        "QoS reliability of the input subscriptions: best_effort (sensor data, depth 1) or reliable "
        "(depth 1). Read at configure.", constraints="best_effort | reliable")),
    "subscribe_compressed": (False, _descriptor(
        "Also subscribe to the image topic's /compressed (sensor_msgs/CompressedImage). Read at configure.")),
    "diagnostics_period": (1.0, _descriptor(
        "Seconds between /diagnostics messages. Read at configure.", floating=(0.1, 60.0))),
    "diagnostics_window": (DEFAULT_WINDOW_S, _descriptor(
        "Seconds a rejected or failed frame (or NaN / inf outputs) keeps its camera's /diagnostics level at WARN "
        "(live).", floating=(0.1, 3600.0))),
    "input_timeout": (DEFAULT_INPUT_TIMEOUT_S, _descriptor(
        "Seconds without input after which an active camera's /diagnostics level is WARN (no input); 0 = never "
        "(live).", floating=(0.0, 3600.0))),
    "batch_timeout_ms": (10.0, _descriptor(
        "With several cameras: the longest a frame waits for the other cameras' frames to join its batch "
        "(a silent camera never holds the others back longer). Read at configure.", floating=(0.0, 10000.0))),
    **{f"publish_{name}": (True, _descriptor(f"Publish ~/{name} (live).")) for name in OUTPUTS},
    **TRACKING_PARAMETERS,
}
CAMERAS_DESCRIPTOR = ParameterDescriptor(
    type=ParameterType.PARAMETER_STRING_ARRAY,
    description="Names of the cameras served by this one process, one batch per step (e.g. [front, rear]); "
                "outputs under <namespace>/<camera>/<node name>/..., input <camera>.image_topic. Unset or "
                "empty: one camera on ~/image. Read at configure.")


def camera_topic_parameter(camera: str) -> str:
    return camera + CAMERA_TOPIC_SUFFIX


def camera_topic_descriptor(camera: str) -> ParameterDescriptor:
    return ParameterDescriptor(description=(
        f"Input sensor_msgs/Image topic of camera {camera} (its /compressed beside it); empty = "
        f"{camera}/<node name>/image. Read at configure."))


def check(name: str, value: Any, *, configured: bool) -> str | None:
    """Why setting ``name`` to ``value`` is refused, or None. Types and ranges are checked by rclpy from the
    descriptors; the choices, the cameras and the lifecycle here."""
    if (name in CONFIGURE_TIME_PARAMETERS or name.endswith(CAMERA_TOPIC_SUFFIX)) and configured:
        return f"{name} is read at configure; deactivate and clean up the node, set it, configure again"
    if name == "device" and not _DEVICE_PATTERN.match(str(value)):
        return f"device must be auto, cpu, cuda or cuda:N, not {value!r}"
    if name in CHOICES and value not in CHOICES[name]:
        return f"{name} must be one of {CHOICES[name]}, not {value!r}"
    if name == CAMERAS:
        return check_cameras(list(value or []))
    if name.endswith(CAMERA_TOPIC_SUFFIX):
        return check_topic(name, str(value))
    return None


def check_topic(parameter: str, topic: str) -> str | None:
    """Why ``topic`` (the value of ``parameter``; empty = its default) is no valid ROS topic name, or None.
    Checked at configure: rclpy would only refuse it when activate subscribes (its /compressed too)."""
    if not topic:
        return None
    for name in (topic, topic.rstrip("/") + "/compressed"):
        try:
            validate_topic_name(name)
        except InvalidTopicNameException as error:
            detail = str(error).splitlines()[0].rstrip(":")
            return f"{parameter}: {topic!r} is not a valid ROS topic name ({detail})"
    return None


def check_cameras(cameras: list[str]) -> str | None:
    bad = [camera for camera in cameras if not _CAMERA_NAME_PATTERN.match(str(camera))]
    if bad:
        return f"camera names must be letters, digits and _ (starting with a letter), not {bad}"
    if len(set(cameras)) != len(cameras):
        return f"camera names must be unique, got {cameras}"
    return None
