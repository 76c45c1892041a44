"""casnet_node: the ROS 2 perception node of CASNet, a thin adapter around casnet_core's Predictor.

Topics (``~/x`` is ``<namespace>/<node name>/x``; remap ``~/image`` to the camera topic)::

  in  ~/image             sensor_msgs/Image: rgb8, bgr8, rgba8, bgra8, mono8, yuv422 (uyvy),
                          yuv422_yuy2 (yuyv), bayer_rggb8, bayer_bggr8, bayer_gbrg8, bayer_grbg8,
                          rgb16, bgr16, rgba16, bgra16, mono16 (converted as cv_bridge does:
                          casnet_core.image_encoding)
  in  ~/image/compressed  sensor_msgs/CompressedImage (only with subscribe_compressed: true)
  out ~/panoptic          sensor_msgs/Image 16UC1: Cityscapes panoptic id per pixel,
                          label_id * 1000 + k for things, label_id for stuff, 0 for void
  out ~/semantic          sensor_msgs/Image mono8: Cityscapes label id per pixel (0 void)
  out ~/instances         casnet_msgs/PanopticFrame: header + panoptic image + instance list
  out ~/detections        vision_msgs/Detection2DArray: class id = label id as a string,
                          Detection2D.id = panoptic id of the instance
  out ~/overlay           sensor_msgs/Image rgb8 colour overlay (computed only while subscribed)
  out ~/label_info        vision_msgs/LabelInfo, transient local: label id -> class name
  out /diagnostics        diagnostic_msgs/DiagnosticArray, every diagnostics_period seconds

Every output carries the header (stamp and frame_id) of the image it was computed from. An output
is computed only while something subscribes to it, and only while its publish_* parameter is true.

/diagnostics values: state (active | idle | inactive), device, mode, input_rate_hz,
output_rate_hz, frames_received / processed / idle (nothing subscribed) / dropped (replaced in
the mailbox) / rejected (undecodable) / failed, frames_with_nonfinite_outputs and
nonfinite_values_last (NaN / inf in the network's outputs, which the post-processing treats as no
evidence), latency_ms_mean / max / last (stamp -> published), and time_<stage>_ms per frame for
receive (stamp -> callback), wait, decode, preprocess, forward, postprocess, predict, build,
publish and total (decode -> published).

Design decisions:

* Newest frame only. The subscription callback only drops the message into a one-slot mailbox;
  a worker thread takes the newest frame from it, runs the Predictor and publishes. A camera
  faster than the model replaces the waiting frame (counted as dropped in /diagnostics) instead of
  queueing it, so latency stays bounded by about two inference times. Input QoS is best effort,
  depth 1 (sensor data) by default, reliable with input_reliability: reliable.
* Idle without readers. While no output has a subscriber (or every publish_* is false), frames are
  counted (frames_idle in /diagnostics) but neither decoded nor run through the network.
* Each activation has its own worker thread, mailbox and stop event: a worker of an earlier
  activation that is still finishing a frame ends after it, whatever the later activations do.
* The overlay (np.unique over the image plus blending) is drawn by a thread of its own from the
  newest finished frame, so it never delays the next inference; it drops frames when it lags.
* Each output message is built once per frame: ~/instances carries the very Image object
  published on ~/panoptic. Panoptic ids are sent as 16UC1, half the bytes of 32SC1 with the same
  Cityscapes encoding: the post-processing caps instances below 1000 per class (max_instances),
  so ids stay <= 33 999 (a 32SC1 image is sent only if an id ever exceeded 65 535).
  Image.data is filled with one copy of the result (array.array, which the message setter takes
  without a per-byte check); 8-bit RGB/BGR/mono inputs are read as views of the received buffer.
* Inputs larger than max_input_size (longest side) are resized for the network keeping their
  aspect ratio (outputs stay at the camera's size), so an 8K camera cannot exhaust the device.
* Lifecycle node (rclpy.lifecycle, available since Humble): configure loads the checkpoint onto
  the device and creates the publishers (and latches ~/label_info), activate subscribes and starts
  the workers, deactivate unsubscribes and stops them, cleanup frees the model. With autostart:
  true (the default) the node runs configure and activate itself at start, so ``ros2 launch`` or
  ``ros2 run`` alone gives a working node; autostart: false leaves it unconfigured for a lifecycle
  manager (e.g. nav2_lifecycle_manager or ``ros2 lifecycle set``).
* An empty checkpoint parameter means the packaged default model (casnet_core.default_model_path(),
  trained on generated scenes only; one log line says so). A missing or mismatched checkpoint fails configure with a fatal log; with autostart the process
  then exits with status 1.
* Thresholds (box_threshold, nms_iou, tie_margin, min_area, stuff_area, max_instances) and the
  publish_* switches apply live, from the next frame on. The thresholds form one frozen
  ``Thresholds`` set that the worker reads once per frame. rclpy's parameter services call the
  parameter callback once per parameter, so the callback only collects the changes and a task of
  the executor, run after the whole SetParameters request (``ros2 param set``/``load``), swaps
  in the new set: a frame sees all of a request's changes or none of them. Model-related
  parameters (checkpoint, device, fp16, backend, mode, input size, QoS, subscribe_compressed) are read at
  configure; they are refused while the node is configured (deactivate and clean up first, set
  them, configure again).
* Transport: main() selects the shipped Fast DDS profile (config/fastdds_shm.xml: 64 MB shared
  memory + UDPv4) before rclpy starts, unless the environment names another profile;
  see casnet_ros.transport.
* Only APIs present in Humble are used (no ``with rclpy.init()``, no parameter client classes), so
  the node runs unchanged on Humble, Jazzy and Kilted.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from casnet_core import default_model_path
from casnet_core.postprocess import DEFAULT_THRESHOLDS
from casnet_core.predictor import DEFAULT_MAX_INPUT_SIZE, Predictor
from casnet_ros import conversions, transport

try:  # Humble has it too; the guard only keeps older rclpy importable.
    from rclpy.executors import ExternalShutdownException
except ImportError:  # pragma: no cover
    ExternalShutdownException = KeyboardInterrupt

NODE_NAME = "casnet"
OUTPUTS = ("panoptic", "semantic", "instances", "detections", "overlay")
# Read at configure only.
CONFIGURE_TIME_PARAMETERS = ("checkpoint", "device", "fp16", "backend", "mode", "input_height", "input_width",
                             "max_input_size", "input_reliability", "subscribe_compressed", "diagnostics_period")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
_ERROR_LOG_PERIOD_S = 5.0
_WORKER_JOIN_TIMEOUT_S = 30.0


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
    "fp16": (False, _descriptor("Half-precision inference on CUDA (ignored on CPU). Read at configure.")),
    "backend": ("auto", _descriptor(
        "Network runtime: torch, onnxruntime (the checkpoint exported in memory, or an .onnx file as "
        "checkpoint) or auto (onnxruntime for an .onnx file, else torch). Read at configure.",
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
        "Also subscribe to ~/image/compressed (sensor_msgs/CompressedImage). Read at configure.")),
    "diagnostics_period": (1.0, _descriptor(
        "Seconds between /diagnostics messages. Read at configure.", floating=(0.1, 60.0))),
    **{f"publish_{name}": (True, _descriptor(f"Publish ~/{name} (live).")) for name in OUTPUTS},
}


class Frame(NamedTuple):
    msg: Any  # sensor_msgs/Image or sensor_msgs/CompressedImage
    compressed: bool
    received_ns: int  # the node's clock when the subscription callback got it


class LatestFrameMailbox:
    """A one-slot mailbox: put() replaces what has not been taken yet (and counts it as dropped)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: Any = None
        self._closed = False
        self.dropped = 0

    def put(self, item: Any) -> None:
        with self._condition:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._condition.notify()

    def take(self, timeout: float) -> Any:
        """The newest item, or None after ``timeout`` seconds or once closed."""
        with self._condition:
            self._condition.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()


class _Activation(NamedTuple):
    """The threads of one activation and what they wait on; nothing here is shared with another one."""

    stop: threading.Event
    frames: LatestFrameMailbox
    overlays: LatestFrameMailbox  # (rgb, prediction, header) of finished frames
    threads: tuple[threading.Thread, ...]


@dataclass
class _Window:
    """What happened since the last diagnostics message."""

    received: int = 0
    processed: int = 0
    latencies: list[float] = field(default_factory=list)
    stage_sums: dict[str, float] = field(default_factory=dict)


class _Statistics:
    """Counters shared by the subscription callbacks, the workers and the diagnostics timer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.idle = 0
        self.rejected = 0
        self.failed = 0
        self.nonfinite_frames = 0
        self.last_nonfinite = 0
        self.last_latency: float | None = None
        self.window = _Window()
        self.window_start = time.monotonic()

    def on_received(self) -> None:
        with self.lock:
            self.received += 1
            self.window.received += 1

    def count(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)

    def on_processed(self, latency: float, stages: dict[str, float], nonfinite: int) -> None:
        with self.lock:
            self.processed += 1
            self.window.processed += 1
            self.last_latency = latency
            self.last_nonfinite = nonfinite
            self.nonfinite_frames += nonfinite > 0
            self.window.latencies.append(latency)
            for stage, seconds in stages.items():
                self.window.stage_sums[stage] = self.window.stage_sums.get(stage, 0.0) + seconds

    def take_window(self) -> tuple[_Window, float]:
        with self.lock:
            now = time.monotonic()
            window, elapsed = self.window, max(now - self.window_start, 1e-9)
            self.window, self.window_start = _Window(), now
            return window, elapsed


def _input_qos(reliability: str) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=1, durability=DurabilityPolicy.VOLATILE,
        reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT)


# Outputs: reliable, depth 1 (a late reader gets the newest result, never a backlog).
_OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
_LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)


class CasnetNode(LifecycleNode):
    """Lifecycle node around casnet_core.predictor.Predictor; see the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for name, (default, descriptor) in PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)
        self._outputs_enabled = {name: bool(self.get_parameter(f"publish_{name}").value) for name in OUTPUTS}
        self._thresholds = Thresholds(**{name: self._param(name) for name in LIVE_THRESHOLDS})
        self._pending_thresholds: dict[str, Any] = {}
        self._predictor: Predictor | None = None
        self._output_publishers: dict[str, Any] = {}
        self._label_info_publisher = None
        self._diagnostics_publisher = None
        self._diagnostics_timer = None
        self._input_subscriptions: list[Any] = []
        self._activation: _Activation | None = None
        self._dropped_before = 0  # drops of mailboxes of earlier activations
        self._stats = _Statistics()
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ---------------------------------------------------------------- parameters
    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    @property
    def thresholds(self) -> Thresholds:
        """The threshold set the next frame runs with."""
        return self._thresholds

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        # Types and ranges are checked by rclpy from the descriptors; the choices and the lifecycle here.
        choices = {"mode": ("", "panoptic", "instance"), "input_reliability": ("best_effort", "reliable"),
                   "backend": ("auto", "torch", "onnxruntime")}
        for parameter in parameters:
            name, value = parameter.name, parameter.value
            if name in CONFIGURE_TIME_PARAMETERS and self._predictor is not None:
                return SetParametersResult(successful=False, reason=(
                    f"{name} is read at configure; deactivate and clean up the node, set it, configure again"))
            if name == "device" and not _DEVICE_PATTERN.match(str(value)):
                return SetParametersResult(successful=False,
                                           reason=f"device must be auto, cpu, cuda or cuda:N, not {value!r}")
            if name in choices and value not in choices[name]:
                return SetParametersResult(successful=False,
                                           reason=f"{name} must be one of {choices[name]}, not {value!r}")
        changes = {}
        for parameter in parameters:
            name, value = parameter.name, parameter.value
            if name in LIVE_THRESHOLDS:
                changes[name] = value
            elif name.startswith("publish_") and name[len("publish_"):] in OUTPUTS:
                self._outputs_enabled[name[len("publish_"):]] = bool(value)
        if changes:
            self._stage_thresholds(changes)
        return SetParametersResult(successful=True)

    def _stage_thresholds(self, changes: dict[str, Any]) -> None:
        """Collects threshold changes; the executor swaps them in once the current callback (the whole
        SetParameters request) is done. Without an executor (not spun yet) they apply at once."""
        first = not self._pending_thresholds
        self._pending_thresholds.update(changes)
        executor = self.executor
        if executor is None:
            self._commit_thresholds()
        elif first:
            executor.create_task(self._commit_thresholds)

    def _commit_thresholds(self) -> None:
        changes, self._pending_thresholds = self._pending_thresholds, {}
        if not changes:
            return
        self._thresholds = dataclasses.replace(self._thresholds, **changes)  # one reference swap: atomic
        if "box_threshold" in changes:
            self._publish_label_info(threshold=self._thresholds.box_threshold)

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        # rclpy turns an exception in a transition into a silent ERROR: log every failure here.
        checkpoint = self._param("checkpoint")
        if not checkpoint:
            checkpoint = str(default_model_path())
            self.get_logger().info(f"no checkpoint given: using the default model {checkpoint} "
                                   "(trained on generated street scenes only)")
        try:
            self._predictor = self._load_predictor(checkpoint)
        except Exception as error:  # CheckpointError, CUDA errors, ...: all fatal for configure
            self.get_logger().fatal(f"cannot load the CASNet checkpoint {checkpoint!r}: {error}")
            self._predictor = None
            return TransitionCallbackReturn.FAILURE
        try:
            self._create_outputs()
        except Exception as error:  # e.g. casnet_msgs / vision_msgs not built
            self.get_logger().fatal(f"cannot create the publishers: {type(error).__name__}: {error}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        predictor = self._predictor
        self.get_logger().info(
            f"configured: checkpoint {checkpoint}, device {predictor.device}, backend {predictor.backend}, "
            f"mode {predictor.mode}, fp16 {bool(self._param('fp16'))}, max_input_size {self._param('max_input_size')}")
        return super().on_configure(state)

    def _create_outputs(self) -> None:
        from casnet_msgs.msg import PanopticFrame
        from vision_msgs.msg import Detection2DArray, LabelInfo

        for name, msg_type in (("panoptic", Image), ("semantic", Image), ("overlay", Image),
                               ("instances", PanopticFrame), ("detections", Detection2DArray)):
            self._output_publishers[name] = self.create_publisher(msg_type, f"~/{name}", _OUTPUT_QOS)
        self._label_info_publisher = self.create_publisher(LabelInfo, "~/label_info", _LATCHED_QOS)
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._publish_label_info(threshold=self._thresholds.box_threshold)
        self._stats = _Statistics()
        self._dropped_before = 0
        self._diagnostics_timer = self.create_timer(self._param("diagnostics_period"), self._publish_diagnostics)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        stop, frames, overlays = threading.Event(), LatestFrameMailbox(), LatestFrameMailbox()
        threads = (
            threading.Thread(target=self._work, args=(self._predictor, frames, overlays, stop),
                             name="casnet-worker", daemon=True),
            threading.Thread(target=self._draw_overlays, args=(overlays, stop), name="casnet-overlay", daemon=True),
        )
        self._activation = _Activation(stop, frames, overlays, threads)
        qos = _input_qos(self._param("input_reliability"))
        self._input_subscriptions.append(self.create_subscription(Image, "~/image", self._on_image, qos))
        if self._param("subscribe_compressed"):
            self._input_subscriptions.append(
                self.create_subscription(CompressedImage, "~/image/compressed", self._on_compressed, qos))
        for thread in threads:
            thread.start()
        topics = ", ".join(sub.topic_name for sub in self._input_subscriptions)
        self.get_logger().info(f"active: processing {topics} ({self._param('input_reliability')})")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._release()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def start(self) -> bool:
        """configure + activate (autostart); False, after a fatal log, when either fails."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            self.get_logger().fatal("configure failed; the node cannot start")
            return False
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            self.get_logger().fatal("activate failed; the node cannot start")
            return False
        return True

    def _load_predictor(self, checkpoint: str) -> Predictor:
        mode = self._param("mode") or None
        input_size = (self._param("input_height"), self._param("input_width"))
        if any(input_size) and not all(input_size):
            raise ValueError(f"input_height and input_width must both be 0 or both be set, got {input_size}")
        return Predictor.from_checkpoint(
            checkpoint, device=self._param("device"), fp16=self._param("fp16"), backend=self._param("backend"),
            mode=mode, input_size=input_size if all(input_size) else None,
            max_input_size=self._param("max_input_size") or None, **dataclasses.asdict(self._thresholds))

    def _stop_processing(self) -> None:
        for subscription in self._input_subscriptions:
            self.destroy_subscription(subscription)
        self._input_subscriptions = []
        activation, self._activation = self._activation, None
        if activation is None:
            return
        activation.stop.set()
        activation.frames.close()
        activation.overlays.close()
        self._dropped_before += activation.frames.dropped
        for thread in activation.threads:
            # A frame still running after the timeout finishes on its own; its stop event stays set.
            thread.join(timeout=_WORKER_JOIN_TIMEOUT_S)

    def _release(self) -> None:
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        for publisher in [*self._output_publishers.values(), self._label_info_publisher, self._diagnostics_publisher]:
            if publisher is not None:
                self.destroy_publisher(publisher)
        self._output_publishers = {}
        self._label_info_publisher = self._diagnostics_publisher = None
        self._predictor = None

    def destroy_node(self) -> None:
        self._stop_processing()
        super().destroy_node()

    # ---------------------------------------------------------------- input
    def _on_image(self, msg: Image) -> None:
        self._receive(msg, compressed=False)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._receive(msg, compressed=True)

    def _receive(self, msg: Any, compressed: bool) -> None:
        self._stats.on_received()
        activation = self._activation
        if activation is not None:
            activation.frames.put(Frame(msg, compressed, self.get_clock().now().nanoseconds))

    # ---------------------------------------------------------------- workers
    def _work(self, predictor: Predictor, frames: LatestFrameMailbox, overlays: LatestFrameMailbox,
              stop: threading.Event) -> None:
        """The inference thread of one activation: until ``stop`` is set, the newest frame of ``frames``."""
        while not stop.is_set():
            frame = frames.take(timeout=0.5)
            if frame is None:
                continue
            try:
                self._process(frame, predictor, overlays)
            except Exception as error:  # the node stays alive; the error is reported and counted
                self._stats.count("failed")
                self.get_logger().error(f"frame failed: {type(error).__name__}: {error}",
                                        throttle_duration_sec=_ERROR_LOG_PERIOD_S)

    def _wanted(self, name: str) -> bool:
        publisher = self._output_publishers.get(name)
        return publisher is not None and self._outputs_enabled[name] and publisher.get_subscription_count() > 0

    def _process(self, frame: Frame, predictor: Predictor, overlays: LatestFrameMailbox) -> None:
        wanted = [name for name in OUTPUTS if self._wanted(name)]
        if not wanted:
            self._stats.count("idle")
            return
        start = time.perf_counter()
        started_ns = self.get_clock().now().nanoseconds
        msg = frame.msg
        try:
            rgb = conversions.compressed_to_rgb(msg) if frame.compressed else conversions.image_to_rgb(msg)
        except conversions.ImageConversionError as error:
            self._stats.count("rejected")
            self.get_logger().error(f"frame skipped: {error}", throttle_duration_sec=_ERROR_LOG_PERIOD_S)
            return
        decoded = time.perf_counter()
        # This thread is the only caller of predict: the snapshot holds for the whole frame.
        self._thresholds.apply_to(predictor)
        prediction = predictor.predict(rgb)
        predicted = time.perf_counter()

        messages = self._build_outputs(prediction, msg.header, wanted, predictor.mode)
        built = time.perf_counter()
        for name, output in messages.items():
            publisher = self._output_publishers.get(name)  # gone when cleaned up meanwhile
            if publisher is not None:
                publisher.publish(output)
        published = time.perf_counter()
        if "overlay" in wanted:
            overlays.put((rgb, prediction, msg.header))

        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        latency = (self.get_clock().now().nanoseconds - stamp_ns) * 1e-9
        stages = {"receive": (frame.received_ns - stamp_ns) * 1e-9, "wait": (started_ns - frame.received_ns) * 1e-9,
                  "decode": decoded - start, **dict(prediction.timings), "predict": predicted - decoded,
                  "build": built - predicted, "publish": published - built, "total": published - start}
        self._stats.on_processed(latency, stages, int(prediction.nonfinite))

    @staticmethod
    def _build_outputs(prediction: Any, header: Any, wanted: list[str], mode: str) -> dict[str, Any]:
        """The messages of the wanted outputs (the overlay aside), each built once."""
        messages: dict[str, Any] = {}
        if "panoptic" in wanted or "instances" in wanted:
            max_id = max((instance.id for instance in prediction.instances), default=0)
            messages["panoptic"] = conversions.panoptic_to_image(prediction.panoptic, header, max_id=max_id)
        if "semantic" in wanted:
            messages["semantic"] = conversions.array_to_image(prediction.semantic, "mono8", header)
        if "instances" in wanted:
            messages["instances"] = conversions.instances_to_frame(messages["panoptic"], prediction.instances,
                                                                   mode, header)
        if "detections" in wanted:
            messages["detections"] = conversions.instances_to_detections(prediction.instances, header)
        if "panoptic" not in wanted:
            messages.pop("panoptic", None)
        return messages

    def _draw_overlays(self, overlays: LatestFrameMailbox, stop: threading.Event) -> None:
        """The overlay thread of one activation: draws and publishes the newest finished frame."""
        from casnet_core.visualize import colorize

        while not stop.is_set():
            item = overlays.take(timeout=0.5)
            if item is None:
                continue
            rgb, prediction, header = item
            publisher = self._output_publishers.get("overlay")
            if publisher is None:
                continue
            try:
                publisher.publish(conversions.array_to_image(colorize(prediction, rgb), "rgb8", header))
            except Exception as error:
                self._stats.count("failed")
                self.get_logger().error(f"overlay failed: {type(error).__name__}: {error}",
                                        throttle_duration_sec=_ERROR_LOG_PERIOD_S)

    # ---------------------------------------------------------------- label info, diagnostics
    def _publish_label_info(self, threshold: float) -> None:
        if self._label_info_publisher is None or self._predictor is None:
            return
        header = _header(self.get_clock().now().to_msg(), "")
        self._label_info_publisher.publish(conversions.label_info(self._predictor.class_space, threshold, header))

    def _publish_diagnostics(self) -> None:
        if self._diagnostics_publisher is None:
            return
        window, elapsed = self._stats.take_window()
        stats = self._stats
        with stats.lock:
            totals = dict(received=stats.received, processed=stats.processed, idle=stats.idle,
                          rejected=stats.rejected, failed=stats.failed, nonfinite_frames=stats.nonfinite_frames,
                          last_nonfinite=stats.last_nonfinite, last_latency=stats.last_latency)
        activation = self._activation
        dropped = self._dropped_before + (activation.frames.dropped if activation is not None else 0)
        predictor = self._predictor
        idle = activation is not None and not any(self._wanted(name) for name in OUTPUTS)
        state = "inactive" if activation is None else "idle" if idle else "active"
        values: dict[str, str] = {
            "state": state,
            "device": str(predictor.device) if predictor is not None else "",
            "mode": predictor.mode if predictor is not None else "",
            "input_rate_hz": f"{window.received / elapsed:.3f}",
            "output_rate_hz": f"{window.processed / elapsed:.3f}",
            "frames_received": str(totals["received"]),
            "frames_processed": str(totals["processed"]),
            "frames_idle": str(totals["idle"]),
            "frames_dropped": str(dropped),
            "frames_rejected": str(totals["rejected"]),
            "frames_failed": str(totals["failed"]),
            "frames_with_nonfinite_outputs": str(totals["nonfinite_frames"]),
            "nonfinite_values_last": str(totals["last_nonfinite"]),
        }
        if window.latencies:
            values["latency_ms_mean"] = f"{1e3 * sum(window.latencies) / len(window.latencies):.2f}"
            values["latency_ms_max"] = f"{1e3 * max(window.latencies):.2f}"
        if totals["last_latency"] is not None:
            values["latency_ms_last"] = f"{1e3 * totals['last_latency']:.2f}"
        for stage, seconds in window.stage_sums.items():
            values[f"time_{stage}_ms"] = f"{1e3 * seconds / max(window.processed, 1):.2f}"

        status = DiagnosticStatus()
        status.name = f"{self.get_fully_qualified_name()}: CASNet segmentation"
        status.hardware_id = values["device"]
        if activation is None:
            status.level, status.message = DiagnosticStatus.WARN, "not active"
        elif totals["failed"] or totals["rejected"]:
            status.level, status.message = DiagnosticStatus.WARN, "frames rejected or failed (see log)"
        elif totals["nonfinite_frames"]:
            status.level, status.message = DiagnosticStatus.WARN, "NaN or inf in the network's outputs"
        elif idle:
            status.level, status.message = DiagnosticStatus.OK, "idle: no subscriber to any output"
        else:
            status.level, status.message = DiagnosticStatus.OK, "ok"
        status.values = [KeyValue(key=key, value=value) for key, value in values.items()]
        array = DiagnosticArray()
        array.header = _header(self.get_clock().now().to_msg(), "")
        array.status = [status]
        self._diagnostics_publisher.publish(array)

    @property
    def autostart(self) -> bool:
        return bool(self._param("autostart"))


def _header(stamp, frame_id: str):
    from std_msgs.msg import Header

    return Header(stamp=stamp, frame_id=frame_id)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``casnet_node`` (``ros2 run casnet_ros casnet_node``). Returns the exit status."""
    transport.use_large_image_profile()  # before the first DDS participant of this process
    rclpy.init(args=args)
    node = None
    exit_code = 0
    try:
        node = CasnetNode()
        if node.autostart and not node.start():
            exit_code = 1
        else:
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
