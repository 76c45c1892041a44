"""casnet_node: the ROS 2 perception node of CASNet, a thin adapter around casnet_core's Predictor.

Topics of one camera (``~/x`` is ``<namespace>/<node name>/x``; remap ``~/image`` to the camera topic)::

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
                          Detection2D.id = panoptic id of the instance (its track's with tracking on)
  out ~/overlay           sensor_msgs/Image rgb8 colour overlay (computed only while subscribed)
  out ~/label_info        vision_msgs/LabelInfo, transient local: label id -> class name
  out ~/rois, ~/mask, ~/instance_mask
                          Autoware's camera detections, run-length class mask and instance masks
                          (casnet_ros.autoware)
  out /diagnostics        diagnostic_msgs/DiagnosticArray, every diagnostics_period seconds
                          (values: casnet_ros.statistics)

Several cameras, one process, one model (``cameras: [front, rear]``, ``front.image_topic: /front/image_raw``):
camera ``c`` reads ``c.image_topic`` (and its ``/compressed``) and publishes under ``<namespace>/c/<node
name>/`` the topics above, the names a one-camera node in namespace ``<namespace>/c`` gives, so consumers
do not change when a vehicle switches between one process per camera and one batched process;
/diagnostics has one status per camera under that node's name, and one for the whole process.

Every output carries the header (stamp and frame_id) of the image it was computed from. An output is
computed only while something subscribes to it, and only while its publish_* parameter is true.

This module is the lifecycle adapter; the rooms: ``parameters`` (declarations, checks, the live settings
staged per request), ``mailbox`` (newest frame per camera), ``worker`` (the threads of an activation:
a frame's walk from the subscription to the publishers), ``cameras`` (topics, publishers, output
messages), ``statistics`` (counters, /diagnostics).

Design decisions:

* Newest frame only, per camera: a camera faster than the model replaces its waiting frame (counted as
  dropped) instead of queueing it, so latency stays bounded by about two inference times. Input QoS is
  best effort, depth 1 (sensor data) by default, reliable with input_reliability: reliable.
* One batch per step: the worker takes the newest frame of every camera that has one; the first waits
  at most batch_timeout_ms (from its arrival) for the others, so a silent or slow camera never holds
  the others back. Frames of one size run as one batch, each size as its own (Predictor.predict_batch
  says why). With one camera nothing waits and the outputs are exactly ``Predictor.predict``'s. A frame
  that fails in a batch is retried alone, so it fails only itself.
* Idle without readers: a camera none of whose outputs has a subscriber (or every publish_* is false)
  has its frames counted (frames_idle) but neither decoded nor run through the network.
* Each activation has its own threads, mailboxes and stop event (casnet_ros.worker.Activation).
* The overlay is drawn by a thread of its own from the newest finished frame of each camera, so it never
  delays the next inference.
* Each output message is built once per frame; panoptic ids are sent as 16UC1 (ids stay <= 33 999 with
  max_instances below 1000; 32SC1 only beyond 65 535). 8-bit RGB/BGR/mono inputs are read as views of
  the received buffer.
* Inputs larger than max_input_size (longest side) are resized for the network keeping their aspect
  ratio (outputs stay at the camera's size), so an 8K camera cannot exhaust the device.
* Lifecycle node (rclpy.lifecycle, available since Humble): configure loads the checkpoint onto the
  device and creates the publishers (and latches ~/label_info), activate subscribes and starts the
  workers, deactivate unsubscribes and stops them, cleanup frees the model. With autostart: true (the
  default) the node runs configure and activate itself at start; autostart: false leaves it
  unconfigured for a lifecycle manager (e.g. nav2_lifecycle_manager or ``ros2 lifecycle set``).
* An empty checkpoint parameter means the packaged default model (casnet_core.default_model_path(),
  trained on generated scenes only; one log line says so). A missing or mismatched checkpoint fails
  configure with a fatal log; with autostart the process then exits with status 1.
* Thresholds and publish_* switches apply live, from the next frame on, as one set per parameter
  request: a frame sees all of a request's changes or none. Model-related parameters and the cameras
  are read at configure and refused while the node is configured.
* Transport: main() selects the shipped Fast DDS profile (config/fastdds_shm.xml) before rclpy starts,
  unless the environment names another profile; see casnet_ros.transport.
* Tracking (``tracking``, on by default): one tracker per camera keeps an object's panoptic id across frames
  (casnet_ros.tracking_parameters); it starts afresh on activate and when a camera's stamps go backwards.
* Only APIs present in Humble are used, so the node runs unchanged on Humble, Jazzy and Kilted.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from casnet_core import default_model_path
from casnet_core.predictor import Predictor
from casnet_ros import conversions, transport
from casnet_ros.cameras import Camera, cameras_of, input_qos
from casnet_ros.parameters import (CAMERAS, CAMERAS_DESCRIPTOR, CONFIGURE_TIME_PARAMETERS, LIVE_THRESHOLDS, OUTPUTS,
                                   PARAMETERS, LiveSettings, StagedSettings, Thresholds, camera_topic_descriptor,
                                   camera_topic_parameter, check, check_cameras, check_topic, is_live)
from casnet_ros.statistics import STATUS_SUFFIX, Statistics, diagnostic_status
from casnet_ros.tracking_parameters import tracker_factory
from casnet_ros.transitions import guarded, run_each
from casnet_ros.worker import Activation

try:  # Humble has it too; the guard only keeps older rclpy importable.
    from rclpy.executors import ExternalShutdownException
except ImportError:  # pragma: no cover
    ExternalShutdownException = KeyboardInterrupt

NODE_NAME = "casnet"
_WORKER_JOIN_TIMEOUT_S = 30.0

__all__ = ["NODE_NAME", "OUTPUTS", "STATUS_SUFFIX", "CasnetNode", "Thresholds", "main"]


class CasnetNode(LifecycleNode):
    """Lifecycle node around casnet_core.predictor.Predictor; see the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for name, (default, descriptor) in PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)
        # Typed but unset by default: rclpy cannot infer a type from an empty list.
        self.declare_parameter(CAMERAS, Parameter.Type.STRING_ARRAY, CAMERAS_DESCRIPTOR)
        self._declare_camera_topics(self._camera_names())
        self._live = StagedSettings(LiveSettings(
            Thresholds(**{name: self._param(name) for name in LIVE_THRESHOLDS}),
            frozenset(name for name in OUTPUTS if self._param(f"publish_{name}"))))
        self._predictor: Predictor | None = None
        self._stats = Statistics()  # the node's totals; each camera's counters add to it
        self._cameras: list[Camera] = []
        self._diagnostics_publisher = None
        self._diagnostics_timer = None
        self._input_subscriptions: list[Any] = []
        self._activation: Activation | None = None
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ---------------------------------------------------------------- parameters
    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _camera_names(self) -> list[str]:
        parameter = self.get_parameter_or(CAMERAS, None)
        return list(parameter.value) if parameter is not None and parameter.value else []

    def _declare_camera_topics(self, cameras: list[str]) -> None:
        if check_cameras(cameras) is not None:  # refused at configure, with the reason
            return
        for camera in cameras:
            if not self.has_parameter(camera_topic_parameter(camera)):
                self.declare_parameter(camera_topic_parameter(camera), "", camera_topic_descriptor(camera))

    @property
    def live_settings(self) -> LiveSettings:
        """The thresholds and enabled outputs the next frame runs with."""
        return self._live.current

    @property
    def thresholds(self) -> Thresholds:
        """The threshold set the next frame runs with."""
        return self._live.current.thresholds

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        for parameter in parameters:
            reason = check(parameter.name, parameter.value, configured=self._predictor is not None)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        schedule = self.executor.create_task if self.executor is not None else None
        changes = {parameter.name: parameter.value for parameter in parameters if is_live(parameter.name)}
        if changes:
            self._live.stage(changes, schedule, self._on_live_settings_committed)
        cameras = [list(parameter.value or []) for parameter in parameters if parameter.name == CAMERAS]
        if cameras and schedule is not None:
            # Declared once this request is done (not from inside the callback), so each can then be set.
            schedule(lambda: self._declare_camera_topics(cameras[-1]))
        return SetParametersResult(successful=True)

    def _on_live_settings_committed(self, changes: dict[str, Any]) -> None:
        if "box_threshold" in changes:
            self._publish_label_info()

    # ---------------------------------------------------------------- lifecycle
    # Every transition is guarded (casnet_ros.transitions): an exception is logged and undone, never finalizes.
    @guarded("configure", undo=("_release",), result=TransitionCallbackReturn.FAILURE, outcome="still unconfigured")
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        names = self._camera_names()
        reason = check_cameras(names)
        if reason is not None:
            self.get_logger().fatal(f"cameras: {reason}")
            return TransitionCallbackReturn.FAILURE
        # Topic names are checked here, as rclpy would check them only when activate subscribes.
        for reason in (check_topic(camera_topic_parameter(name), self._param(camera_topic_parameter(name)))
                       for name in names if self.has_parameter(camera_topic_parameter(name))):
            if reason is not None:
                self.get_logger().fatal(reason)
                return TransitionCallbackReturn.FAILURE
        # Values given at start (-p, a params file) skip the set-parameter callback: checked here, before the
        # predictor, so that a wrong choice is named as such and not as a checkpoint that cannot load.
        for name in CONFIGURE_TIME_PARAMETERS:
            if name != CAMERAS and (reason := check(name, self._param(name), configured=False)) is not None:
                self.get_logger().fatal(reason)
                return TransitionCallbackReturn.FAILURE
        self._declare_camera_topics(names)
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
        self._stats = Statistics()
        self._cameras = cameras_of(names, {name: self._param(camera_topic_parameter(name)) for name in names},
                                   self.get_name(), self._stats)
        try:
            for camera in self._cameras:
                camera.create_publishers(self)
            self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        except Exception as error:  # e.g. a camera topic that is not a valid ROS name
            self.get_logger().fatal(f"cannot create the publishers: {type(error).__name__}: {error}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self._publish_label_info()
        self._diagnostics_timer = self.create_timer(self._param("diagnostics_period"), self._publish_diagnostics)
        predictor = self._predictor
        self.get_logger().info(
            f"configured: checkpoint {checkpoint}, device {predictor.device}, backend {predictor.backend} "
            f"({predictor.backend_note}), mode {predictor.mode}, precision {predictor.precision}, "
            f"cuda_graph {predictor.cuda_graph}, "
            f"max_input_size {self._param('max_input_size')}"
            + (f", cameras {', '.join(names)} (batch_timeout_ms {self._param('batch_timeout_ms')})" if names else ""))
        return super().on_configure(state)

    @guarded("activate", undo=("_stop_processing",), result=TransitionCallbackReturn.FAILURE, outcome="still inactive")
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        cameras = tuple(self._cameras)
        activation = Activation(
            self._predictor, cameras, live_settings=lambda: self._live.current,
            clock_ns=lambda: self.get_clock().now().nanoseconds, logger=self.get_logger(),
            others_wait=self._param("batch_timeout_ms") * 1e-3 if len(cameras) > 1 else 0.0,
            make_tracker=tracker_factory(self._param))
        self._activation = activation
        qos = input_qos(self._param("input_reliability"))
        for camera in cameras:
            self._input_subscriptions.append(self.create_subscription(
                Image, camera.image_topic, lambda msg, camera=camera: self._receive(camera, msg, False), qos))
            if self._param("subscribe_compressed"):
                self._input_subscriptions.append(self.create_subscription(
                    CompressedImage, camera.compressed_topic,
                    lambda msg, camera=camera: self._receive(camera, msg, True), qos))
        activation.start()
        topics = ", ".join(subscription.topic_name for subscription in self._input_subscriptions)
        self.get_logger().info(f"active: processing {topics} ({self._param('input_reliability')})")
        return super().on_activate(state)

    @guarded("deactivate", result=TransitionCallbackReturn.ERROR, outcome="cleaning up to unconfigured")
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        return super().on_deactivate(state)

    @guarded("cleanup", result=TransitionCallbackReturn.ERROR, outcome="cleaning up to unconfigured")
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    @guarded("shutdown", result=TransitionCallbackReturn.SUCCESS, outcome="finalized")
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        run_each(self.get_logger(), "shutdown", self._stop_processing, self._release)
        return super().on_shutdown(state)

    @guarded("error recovery", result=TransitionCallbackReturn.SUCCESS, outcome="unconfigured")
    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        # SUCCESS whatever failed: the node is then unconfigured and can be configured again, never finalized.
        run_each(self.get_logger(), "error recovery", self._stop_processing, self._release)
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
            checkpoint, device=self._param("device"), precision=self._param("precision"),
            cuda_graph=self._param("cuda_graph"), backend=self._param("backend"), mode=mode,
            input_size=input_size if all(input_size) else None,
            max_input_size=self._param("max_input_size") or None, **dataclasses.asdict(self.thresholds))

    def _stop_processing(self) -> None:
        for subscription in self._input_subscriptions:
            self.destroy_subscription(subscription)
        self._input_subscriptions = []
        activation, self._activation = self._activation, None
        if activation is None:
            return
        activation.close(join_timeout=_WORKER_JOIN_TIMEOUT_S)
        for camera in self._cameras:
            camera.dropped_before += activation.frames.dropped.get(camera.name, 0)

    def _release(self) -> None:
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        for camera in self._cameras:
            camera.destroy_publishers(self)
        if self._diagnostics_publisher is not None:
            self.destroy_publisher(self._diagnostics_publisher)
            self._diagnostics_publisher = None
        self._predictor = None

    def destroy_node(self) -> None:
        self._stop_processing()
        super().destroy_node()

    # ---------------------------------------------------------------- input
    def _receive(self, camera: Camera, msg: Any, compressed: bool) -> None:
        camera.statistics.on_received()
        activation = self._activation
        if activation is not None:
            activation.put(camera, msg, compressed)

    # ---------------------------------------------------------------- label info, diagnostics
    def _publish_label_info(self) -> None:
        predictor = self._predictor
        if predictor is None:
            return
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id="")
        message = conversions.label_info(predictor.class_space, self.thresholds.box_threshold, header)
        for camera in self._cameras:
            if camera.label_info_publisher is not None:
                camera.label_info_publisher.publish(message)

    def _status_name(self, camera: Camera) -> str:
        """The fully qualified name a one-camera node of this camera would have."""
        if not camera.name:
            return self.get_fully_qualified_name()
        return f"{self.get_namespace().rstrip('/')}/{camera.name}/{self.get_name()}"

    def _publish_diagnostics(self) -> None:
        if self._diagnostics_publisher is None:
            return
        activation, predictor = self._activation, self._predictor
        device = str(predictor.device) if predictor is not None else ""
        mode = predictor.mode if predictor is not None else ""
        enabled = self._live.current.enabled_outputs
        statuses, states, drops = [], [], []
        levels = {"window_s": self._param("diagnostics_window"), "input_timeout_s": self._param("input_timeout"),
                  "active_since": activation.started_at if activation is not None else None}
        for camera in self._cameras:
            drops.append(camera.dropped_before + (activation.frames.dropped.get(camera.name, 0) if activation else 0))
            states.append("inactive" if activation is None else "active" if camera.wanted(enabled) else "idle")
            statuses.append(diagnostic_status(self._status_name(camera), camera.statistics, state=states[-1],
                                              device=device, mode=mode, dropped=drops[-1], **levels))
        if len(self._cameras) > 1:  # the whole process: totals over its cameras
            state = "inactive" if activation is None else "active" if "active" in states else "idle"
            statuses.append(diagnostic_status(self.get_fully_qualified_name(), self._stats, state=state,
                                              device=device, mode=mode, dropped=sum(drops), batched=True, **levels))
        array = DiagnosticArray()
        array.header = Header(stamp=self.get_clock().now().to_msg(), frame_id="")
        array.status = statuses
        self._diagnostics_publisher.publish(array)

    @property
    def autostart(self) -> bool:
        return bool(self._param("autostart"))


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
