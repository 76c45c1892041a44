"""casnet_node: the ROS 2 perception node of CASNet, a thin adapter around casnet_core's Predictor.

Topics (``~/x`` is ``<namespace>/<node name>/x``; remap ``~/image`` to the camera topic)::

  in  ~/image             sensor_msgs/Image: rgb8, bgr8, rgba8, bgra8 or mono8
  in  ~/image/compressed  sensor_msgs/CompressedImage (only with subscribe_compressed: true)
  out ~/panoptic          sensor_msgs/Image 32SC1: Cityscapes panoptic id per pixel,
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

Design decisions:

* Newest frame only. The subscription callback only drops the message into a one-slot mailbox;
  a worker thread takes the newest frame from it, runs the Predictor and publishes. A camera
  faster than the model replaces the waiting frame (counted as dropped in /diagnostics) instead of
  queueing it, so latency stays bounded by about two inference times. Input QoS is best effort,
  depth 1 (sensor data) by default, reliable with input_reliability: reliable.
* Lifecycle node (rclpy.lifecycle, available since Humble): configure loads the checkpoint onto
  the device and creates the publishers (and latches ~/label_info), activate subscribes and starts
  the worker, deactivate unsubscribes and stops it, cleanup frees the model. With autostart: true
  (the default) the node runs configure and activate itself at start, so ``ros2 launch`` or
  ``ros2 run`` alone gives a working node; autostart: false leaves it unconfigured for a lifecycle
  manager (e.g. nav2_lifecycle_manager or ``ros2 lifecycle set``).
* A missing or mismatched checkpoint fails configure with a fatal log; with autostart the process
  then exits with status 1.
* Thresholds (box_threshold, nms_iou, min_area, stuff_area) and the publish_* switches apply live,
  from the next frame on. Model-related parameters (checkpoint, device, fp16, mode, input size,
  QoS, subscribe_compressed) are read at configure; they are refused while the node is configured
  (deactivate and clean up first, set them, configure again).
* Only APIs present in Humble are used (no ``with rclpy.init()``, no parameter client classes), so
  the node runs unchanged on Humble, Jazzy and Kilted.
"""

from __future__ import annotations

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

from casnet_core.predictor import DEFAULT_THRESHOLDS, Predictor
from casnet_ros import conversions

try:  # Humble has it too; the guard only keeps older rclpy importable.
    from rclpy.executors import ExternalShutdownException
except ImportError:  # pragma: no cover
    ExternalShutdownException = KeyboardInterrupt

NODE_NAME = "casnet"
OUTPUTS = ("panoptic", "semantic", "instances", "detections", "overlay")
# Parameters that are live attributes of the Predictor, of the same names.
LIVE_THRESHOLDS = ("box_threshold", "nms_iou", "tie_margin", "min_area", "stuff_area")
# Read at configure only.
CONFIGURE_TIME_PARAMETERS = ("checkpoint", "device", "fp16", "mode", "input_height", "input_width",
                             "input_reliability", "subscribe_compressed", "diagnostics_period")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
_ERROR_LOG_PERIOD_S = 5.0


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
        "Path of the CASNet checkpoint (casnet_core.checkpoint). Required; read at configure.")),
    "device": ("auto", _descriptor(
        "Inference device: auto (CUDA if available, else CPU), cpu, cuda or cuda:N. Read at configure.",
        constraints="auto | cpu | cuda | cuda:N")),
    "fp16": (False, _descriptor("Half-precision inference on CUDA (ignored on CPU). Read at configure.")),
    "mode": ("", _descriptor(
        "Output mode: panoptic (stuff and things) or instance (things only); empty = the checkpoint's "
        "mode. Read at configure.", constraints="'' | panoptic | instance")),
    "input_height": (0, _descriptor(
        "Height the image is resized to before inference (0 = the image's own size; "
        "outputs are always at the input image's size). Read at configure.", integer=(0, 8192))),
    "input_width": (0, _descriptor(
        "Width the image is resized to before inference (0 = the image's own size; set both or "
        "neither). Read at configure.",
        integer=(0, 8192))),
    "box_threshold": (DEFAULT_THRESHOLDS["box_threshold"], _descriptor(
        "Minimum box probability of an instance seed (live).", floating=(0.0, 1.0))),
    "nms_iou": (DEFAULT_THRESHOLDS["nms_iou"], _descriptor(
        "IoU above which NMS suppresses a seed box (live).", floating=(0.0, 1.0))),
    "tie_margin": (DEFAULT_THRESHOLDS["tie_margin"], _descriptor(
        "IoU margin within which a pixel's vote between seeds counts as a tie (live).", floating=(0.0, 1.0))),
    "min_area": (DEFAULT_THRESHOLDS["min_area"], _descriptor(
        "Minimum instance area in pixels of the input image (live).", integer=(0, 1 << 24))),
    "stuff_area": (DEFAULT_THRESHOLDS["stuff_area"], _descriptor(
        "Minimum area in pixels of a stuff segment; smaller ones become void (live).", integer=(0, 1 << 24))),
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


class LatestFrameMailbox:
    """A one-slot mailbox: put() replaces what has not been taken yet (and counts it as dropped)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._condition:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._condition.notify()

    def take(self, timeout: float) -> Frame | None:
        """The newest frame, or None after ``timeout`` seconds or once closed."""
        with self._condition:
            self._condition.wait_for(lambda: self._frame is not None or self._closed, timeout)
            frame, self._frame = self._frame, None
            return frame

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()


@dataclass
class _Window:
    """What happened since the last diagnostics message."""

    received: int = 0
    processed: int = 0
    latencies: list[float] = field(default_factory=list)
    stage_sums: dict[str, float] = field(default_factory=dict)


class _Statistics:
    """Counters shared by the subscription callbacks, the worker and the diagnostics timer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.rejected = 0
        self.failed = 0
        self.last_latency: float | None = None
        self.window = _Window()
        self.window_start = time.monotonic()

    def on_received(self) -> None:
        with self.lock:
            self.received += 1
            self.window.received += 1

    def on_processed(self, latency: float, stages: dict[str, float]) -> None:
        with self.lock:
            self.processed += 1
            self.window.processed += 1
            self.last_latency = latency
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
        self._predictor = None
        self._output_publishers: dict[str, Any] = {}
        self._label_info_publisher = None
        self._diagnostics_publisher = None
        self._diagnostics_timer = None
        self._input_subscriptions: list[Any] = []
        self._mailbox: LatestFrameMailbox | None = None
        self._dropped_before = 0  # drops of mailboxes of earlier activations
        self._worker: threading.Thread | None = None
        self._active = False
        self._stats = _Statistics()
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ---------------------------------------------------------------- parameters
    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        # Types and ranges are checked by rclpy from the descriptors; the choices and the lifecycle here.
        choices = {"mode": ("", "panoptic", "instance"), "input_reliability": ("best_effort", "reliable")}
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
        for parameter in parameters:
            name, value = parameter.name, parameter.value
            if name in LIVE_THRESHOLDS and self._predictor is not None:
                setattr(self._predictor, name, value)
                if name == "box_threshold":
                    self._publish_label_info(threshold=value)
            elif name.startswith("publish_") and name[len("publish_"):] in OUTPUTS:
                self._outputs_enabled[name[len("publish_"):]] = bool(value)
        return SetParametersResult(successful=True)

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        # rclpy turns an exception in a transition into a silent ERROR: log every failure here.
        checkpoint = self._param("checkpoint")
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
            f"configured: checkpoint {checkpoint}, device {predictor.device}, mode {predictor.mode}, "
            f"fp16 {bool(self._param('fp16'))}")
        return super().on_configure(state)

    def _create_outputs(self) -> None:
        from casnet_msgs.msg import PanopticFrame
        from vision_msgs.msg import Detection2DArray, LabelInfo

        for name, msg_type in (("panoptic", Image), ("semantic", Image), ("overlay", Image),
                               ("instances", PanopticFrame), ("detections", Detection2DArray)):
            self._output_publishers[name] = self.create_publisher(msg_type, f"~/{name}", _OUTPUT_QOS)
        self._label_info_publisher = self.create_publisher(LabelInfo, "~/label_info", _LATCHED_QOS)
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._publish_label_info(threshold=self._predictor.box_threshold)
        self._stats = _Statistics()
        self._dropped_before = 0
        self._diagnostics_timer = self.create_timer(self._param("diagnostics_period"), self._publish_diagnostics)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        qos = _input_qos(self._param("input_reliability"))
        self._mailbox = LatestFrameMailbox()
        self._input_subscriptions.append(self.create_subscription(Image, "~/image", self._on_image, qos))
        if self._param("subscribe_compressed"):
            self._input_subscriptions.append(
                self.create_subscription(CompressedImage, "~/image/compressed", self._on_compressed, qos))
        self._active = True
        self._worker = threading.Thread(target=self._work, args=(self._mailbox,), name="casnet-worker", daemon=True)
        self._worker.start()
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
        if not checkpoint:
            raise ValueError("the parameter 'checkpoint' is empty; set it to a CASNet checkpoint file")
        thresholds = {name: self._param(name) for name in LIVE_THRESHOLDS}
        mode = self._param("mode") or None
        input_size = (self._param("input_height"), self._param("input_width"))
        if any(input_size) and not all(input_size):
            raise ValueError(f"input_height and input_width must both be 0 or both be set, got {input_size}")
        return Predictor.from_checkpoint(checkpoint, device=self._param("device"), fp16=self._param("fp16"),
                                         mode=mode, input_size=input_size if all(input_size) else None,
                                         **thresholds)

    def _stop_processing(self) -> None:
        self._active = False
        for subscription in self._input_subscriptions:
            self.destroy_subscription(subscription)
        self._input_subscriptions = []
        if self._mailbox is not None:
            self._mailbox.close()
            self._dropped_before += self._mailbox.dropped
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            self._worker = None
        self._mailbox = None

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
        self._stats.on_received()
        if self._mailbox is not None:
            self._mailbox.put(Frame(msg, compressed=False))

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._stats.on_received()
        if self._mailbox is not None:
            self._mailbox.put(Frame(msg, compressed=True))

    # ---------------------------------------------------------------- worker
    def _work(self, mailbox: LatestFrameMailbox) -> None:
        while self._active:
            frame = mailbox.take(timeout=0.5)
            if frame is None:
                continue
            try:
                self._process(frame)
            except Exception as error:  # the node stays alive; the error is reported and counted
                with self._stats.lock:
                    self._stats.failed += 1
                self.get_logger().error(f"frame failed: {type(error).__name__}: {error}",
                                        throttle_duration_sec=_ERROR_LOG_PERIOD_S)

    def _wanted(self, name: str) -> bool:
        publisher = self._output_publishers.get(name)
        return publisher is not None and self._outputs_enabled[name] and publisher.get_subscription_count() > 0

    def _process(self, frame: Frame) -> None:
        predictor = self._predictor
        if predictor is None:
            return
        start = time.perf_counter()
        try:
            rgb = conversions.compressed_to_rgb(frame.msg) if frame.compressed else conversions.image_to_rgb(frame.msg)
        except conversions.ImageConversionError as error:
            with self._stats.lock:
                self._stats.rejected += 1
            self.get_logger().error(f"frame skipped: {error}", throttle_duration_sec=_ERROR_LOG_PERIOD_S)
            return
        decoded = time.perf_counter()
        prediction = predictor.predict(rgb)
        predicted = time.perf_counter()

        header = frame.msg.header
        publishers = self._output_publishers
        panoptic_image = None
        if self._wanted("panoptic") or self._wanted("instances"):
            panoptic_image = conversions.panoptic_to_image(prediction.panoptic, header)
        if self._wanted("panoptic"):
            publishers["panoptic"].publish(panoptic_image)
        if self._wanted("semantic"):
            publishers["semantic"].publish(conversions.array_to_image(prediction.semantic, "mono8", header))
        if self._wanted("instances"):
            publishers["instances"].publish(
                conversions.instances_to_frame(panoptic_image, prediction.instances, predictor.mode, header))
        if self._wanted("detections"):
            publishers["detections"].publish(conversions.instances_to_detections(prediction.instances, header))
        if self._wanted("overlay"):
            from casnet_core.visualize import colorize

            publishers["overlay"].publish(conversions.array_to_image(colorize(prediction, rgb), "rgb8", header))
        published = time.perf_counter()

        stamp = header.stamp.sec + header.stamp.nanosec * 1e-9
        now_ns = self.get_clock().now().nanoseconds
        latency = now_ns * 1e-9 - stamp
        stages = {"decode": decoded - start, **dict(prediction.timings), "publish": published - predicted,
                  "total": published - start}
        self._stats.on_processed(latency, stages)

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
            totals = dict(received=stats.received, processed=stats.processed, rejected=stats.rejected,
                          failed=stats.failed, last_latency=stats.last_latency)
        dropped = self._dropped_before + (self._mailbox.dropped if self._mailbox is not None else 0)
        predictor = self._predictor
        values: dict[str, str] = {
            "state": "active" if self._active else "inactive",
            "device": str(predictor.device) if predictor is not None else "",
            "mode": predictor.mode if predictor is not None else "",
            "input_rate_hz": f"{window.received / elapsed:.3f}",
            "output_rate_hz": f"{window.processed / elapsed:.3f}",
            "frames_received": str(totals["received"]),
            "frames_processed": str(totals["processed"]),
            "frames_dropped": str(dropped),
            "frames_rejected": str(totals["rejected"]),
            "frames_failed": str(totals["failed"]),
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
        if not self._active:
            status.level, status.message = DiagnosticStatus.WARN, "not active"
        elif totals["failed"] or totals["rejected"]:
            status.level, status.message = DiagnosticStatus.WARN, "frames rejected or failed (see log)"
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
