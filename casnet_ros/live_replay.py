"""Live replay (``casnet replay --live``): a rosbag2 played over DDS to a real ``casnet_node`` process.

The part of ``casnet_core.replay`` that needs rclpy (casnet_core never imports it). It starts
``python -m casnet_ros.node`` (``NodeProcess``) on an isolated ROS domain (discovery limited to this host),
its ``~/image`` (or ``~/image/compressed``) remapped to the bag's camera topic and reliable input, waits
until the node is configured (its latched ``~/label_info`` arrives), active and its outputs are
discovered, then publishes the recorded camera messages unchanged (the serialized bytes of the bag,
with their recorded headers):

* at the recorded rate, scaled by ``rate`` (as ``ros2 bag play --rate``): a node slower than the camera
  drops frames (its one-slot mailbox keeps the newest), as it would on a vehicle;
* with ``max_rate``: each frame as soon as the node has answered the previous one.

The node's ``/casnet/{panoptic,semantic,instances,detections}`` are received serialized, matched to
the frames by header stamp, and recorded by ``casnet_core.replay_recorder.ReplayRecorder`` as published. Each frame is
sent with a stamp no other frame in flight has (a frame whose recorded stamp is taken is sent 1 ns later, and
its outputs are recorded with its recorded stamp), so answers find their frame even when frames share a stamp.
A frame whose outputs never arrive, because the node answered a later frame first or did not answer within
``frame_timeout``, counts as dropped. Latency: from publishing a frame to receiving its four outputs.

SIGINT, SIGTERM or SIGHUP stop the replay in order: no more frames are sent, the answers already received are
recorded, the output bag is closed (readable, without metrics), the node is stopped; a second signal stops at
once. The node is stopped with SIGINT (killed after a timeout) in every case, runs in its own session (a Ctrl-C
at the terminal reaches the replay, which stops it), and gets SIGTERM when this process dies, even by SIGKILL;
its output is in ``DIR/casnet_node.log``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import rclpy
from builtin_interfaces.msg import Time
from casnet_msgs.msg import PanopticFrame
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from casnet_core import bags
from casnet_core.checkpoint import CheckpointError
from casnet_core.errors import one_line
from casnet_core.export import model_mode
from casnet_core.predict_command import thresholds_from_args
from casnet_core.child_processes import STOP_SIGNALS, child_process_options
from casnet_core.replay import (add_arguments, camera_topics, checkpoint_from_args, prepare_output, replay_inputs,
                                single_image_topic)
from casnet_core.replay_recorder import (OUTPUT_NAMESPACE, OUTPUT_TYPES, FrameResult, ReplayRecorder, format_summary,
                                         output_topics, prediction_from_outputs)
from casnet_ros import conversions, transport
from casnet_ros.autoware import AUTOWARE_OUTPUTS

LABEL_INFO_TOPIC = "/casnet/label_info"
# The rclpy class of each recorded output (OUTPUT_TYPES).
OUTPUT_MESSAGE_TYPES = {"panoptic": Image, "semantic": Image, "instances": PanopticFrame,
                        "detections": Detection2DArray, **AUTOWARE_OUTPUTS}
COMPRESSED_SUFFIX = "/compressed"


def label_info_topic(camera: str = "") -> str:
    """The node's latched ~/label_info for ``camera`` ("" for the single camera)."""
    return f"/{camera}{OUTPUT_NAMESPACE}/label_info" if camera else LABEL_INFO_TOPIC


def ros_environment(domain_id: int) -> dict[str, str]:
    """Environment variables that keep one run's DDS traffic on this host and in its own domain."""
    return {"ROS_DOMAIN_ID": str(domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}


class NodeProcess:
    """``python -m casnet_ros.node --ros-args ...`` as a child process, its output in a log file."""

    def __init__(self, ros_arguments: list[str], *, domain_id: int, log_path: Path) -> None:
        env = {**os.environ, **ros_environment(domain_id), "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self._log = open(log_path, "wb")
        # SIGINT back to the default in the child: a background job inherits it ignored, and stop() needs it.
        # Its own session, and SIGTERM when this process dies: the node never outlives the replay.
        self.process = subprocess.Popen([sys.executable, "-m", "casnet_ros.node", "--ros-args", *ros_arguments],
                                        env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        **child_process_options(default_sigint=True))

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def output(self, last_lines: int | None = None) -> str:
        if not self._log.closed:
            self._log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-last_lines:] if last_lines else lines)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGINT, then SIGKILL after ``timeout`` seconds; returns the exit status."""
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        self._log.close()
        return self.process.returncode


class LiveReplayError(RuntimeError):
    """The node did not come up, died, or stopped answering."""


class Interrupted(KeyboardInterrupt):
    """The replay was asked to stop (``stop`` set, by a signal): raised where stopping is safe."""


def node_arguments(checkpoint: str | os.PathLike, *, image_topic: str, compressed: bool, device: str = "auto",
                   precision: str = "fp32", thresholds: Mapping[str, float | int] | None = None,
                   cameras: Mapping[str, str] | None = None, tracking: bool = False) -> list[str]:
    """The ``--ros-args`` of a casnet_node that processes ``image_topic`` with reliable input; with ``cameras``
    ({name: topic}), of the batched node serving each camera from its topic (``image_topic`` unused; compressed
    topics end in /compressed, the node subscribes to ``<image_topic>/compressed``)."""
    arguments = ["-p", f"checkpoint:={Path(checkpoint).resolve()}", "-p", f"device:={device}",
                 "-p", f"precision:={precision}",
                 "-p", "input_reliability:=reliable", "-p", "publish_overlay:=false",
                 "-p", f"tracking:={'true' if tracking else 'false'}"]
    for name, value in (thresholds or {}).items():
        # Doubles need a decimal point, or the parameter arrives as an integer and is refused.
        arguments += ["-p", f"{name}:={float(value)!r}" if isinstance(value, float) else f"{name}:={int(value)}"]
    if cameras:
        arguments += ["-p", f"cameras:=[{', '.join(cameras)}]"]
        for name, topic in cameras.items():
            topic = topic[: -len(COMPRESSED_SUFFIX)] if compressed else topic
            arguments += ["-p", f"{name}.image_topic:={topic}"]
        if compressed:
            arguments += ["-p", "subscribe_compressed:=true"]
    elif compressed:
        arguments += ["-p", "subscribe_compressed:=true", "-r", f"~/image/compressed:={image_topic}"]
    else:
        arguments += ["-r", f"~/image:={image_topic}"]
    return arguments


def _with_stamp(data: bytes, stamp_ns: int) -> bytes:
    """A serialized message that starts with a std_msgs/Header (see ``bags.cdr_header_stamp_ns``), with its
    header stamp set to ``stamp_ns`` (same length: the bytes are patched)."""
    patched = bytearray(data)
    struct.pack_into("<iI" if data[1] & 1 else ">iI", patched, 4, stamp_ns // 10**9, stamp_ns % 10**9)
    return bytes(patched)


def _restamped_outputs(outputs: Mapping[str, bytes], stamp_ns: int) -> dict[str, bytes]:
    """The node's outputs for a frame sent with another stamp, every header (nested ones too) set back to the
    frame's recorded ``stamp_ns``."""
    stamp = Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    restamped = {}
    for name, data in outputs.items():
        message = deserialize_message(data, OUTPUT_MESSAGE_TYPES[name])
        headers = [message.header]
        if name == "instances":
            headers.append(message.panoptic.header)
        if name == "instance_mask":
            headers.append(message.image.header)
        if name == "detections":
            headers += [detection.header for detection in message.detections]
        for header in headers:
            header.stamp = stamp
        restamped[name] = serialize_message(message)
    return restamped


class _Client:
    """An rclpy node in its own context that publishes the camera messages (one publisher per camera of
    ``image_topics``, {camera: topic}, camera "" the single one) and collects the node's outputs (serialized)
    per camera and stamp; its executor spins in a background thread."""

    def __init__(self, domain_id: int, image_topics: Mapping[str, str], compressed: bool) -> None:
        self.context = rclpy.Context()
        # No rclpy signal handlers: Ctrl-C raises KeyboardInterrupt in the main thread, which stops the node.
        rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("casnet_replay", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._lock = threading.Lock()
        self.arrived = threading.Event()  # set when a frame's outputs are complete
        # (camera, stamp) -> output name -> (arrival, CDR)
        self._outputs: dict[tuple[str, int], dict[str, tuple[float, bytes]]] = {}
        self.complete: dict[tuple[str, int], dict[str, tuple[float, bytes]]] = {}
        self.label_info_seen: set[str] = set()
        self.cameras = list(image_topics)

        types = OUTPUT_MESSAGE_TYPES
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._subscriptions = []
        self.publishers: dict[str, Any] = {}
        for camera, image_topic in image_topics.items():
            self._subscriptions += [
                self.node.create_subscription(types[name], topic, self._keeper(camera, name), 10, raw=True)
                for name, (topic, _) in output_topics(camera).items()]
            self.node.create_subscription(LabelInfo, label_info_topic(camera), self._label_info_keeper(camera),
                                          latched)
            self.publishers[camera] = self.node.create_publisher(
                CompressedImage if compressed else Image, image_topic,
                QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self._thread = threading.Thread(target=self._spin, name="casnet-replay-executor", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def _label_info_keeper(self, camera: str) -> Callable[[Any], None]:
        def seen(msg: Any) -> None:
            self.label_info_seen.add(camera)
        return seen

    def _keeper(self, camera: str, name: str) -> Callable[[bytes], None]:
        def keep(data: bytes) -> None:
            arrival = time.monotonic()
            key = (camera, bags.cdr_header_stamp_ns(data))
            with self._lock:
                outputs = self._outputs.setdefault(key, {})
                outputs[name] = (arrival, data)
                if len(outputs) == len(OUTPUT_TYPES):
                    self.complete[key] = self._outputs.pop(key)
                    self.arrived.set()
        return keep

    def ready(self) -> bool:
        """The node is configured, subscribed to every camera topic, and its outputs are discovered."""
        return (len(self.label_info_seen) == len(self.cameras)
                and all(publisher.get_subscription_count() > 0 for publisher in self.publishers.values())
                and all(subscription.get_publisher_count() > 0 if hasattr(subscription, "get_publisher_count")
                        else self.node.count_publishers(subscription.topic_name) > 0
                        for subscription in self._subscriptions))

    def take_complete(self) -> dict[tuple[str, int], dict[str, tuple[float, bytes]]]:
        with self._lock:
            complete, self.complete = self.complete, {}
            self.arrived.clear()
            return complete

    def close(self) -> None:
        self.executor.shutdown()
        self._thread.join(timeout=10.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _prediction(outputs: Mapping[str, tuple[float, bytes]]) -> tuple[str, Any]:
    """(mode, Prediction) of the node's outputs for one frame."""
    frame = deserialize_message(outputs["instances"][1], PanopticFrame)
    semantic = deserialize_message(outputs["semantic"][1], Image)
    return frame.mode, prediction_from_outputs(conversions.image_to_panoptic(frame.panoptic),
                                               conversions.image_to_mono8(semantic), frame.instances)


class _Pending:
    """Frames of one camera sent and not answered yet, in sending order; resolves them as the node's answers
    arrive. Each frame is sent with a stamp no frame of the camera sent before had (``send_stamp``), so an answer
    names exactly one frame."""

    def __init__(self, recorder: ReplayRecorder, camera: str = "") -> None:
        self.recorder = recorder
        self.camera = camera
        self.frames: OrderedDict[int, tuple[bags.BagFrame, float]] = OrderedDict()  # index -> (frame, send time)
        self.index_of_stamp: dict[int, int] = {}  # stamp sent -> frame index, while pending
        self.stamp_sent: dict[int, int] = {}  # frame index -> stamp sent, while pending
        self._stamps_used: set[int] = set()
        self.last_answer = self.last_sent = time.monotonic()

    def send_stamp(self, frame: bags.BagFrame) -> int:
        """The stamp to send ``frame`` with: its own, or the next free nanosecond when a frame had it."""
        stamp = frame.stamp_ns
        while stamp in self._stamps_used:
            stamp += 1
        return stamp

    def add(self, frame: bags.BagFrame, sent: float, stamp: int) -> None:
        self.frames[frame.index] = (frame, sent)
        self.index_of_stamp[stamp] = frame.index
        self.stamp_sent[frame.index] = stamp
        self._stamps_used.add(stamp)
        self.last_sent = sent

    def resolve(self, complete: Mapping[int, Mapping[str, tuple[float, bytes]]]) -> None:
        """Records each answered frame (``complete``: stamp -> outputs, this camera's); frames sent before it and
        still unanswered were dropped (the node answers each camera in order)."""
        answered = []
        for stamp, outputs in complete.items():
            index = self.index_of_stamp.get(stamp)
            if index is not None:  # None: an answer to a frame of an earlier run, or already given up
                answered.append((index, outputs))
        for index, outputs in sorted(answered, key=lambda item: item[0]):
            while self.frames and next(iter(self.frames)) < index:
                self.drop_oldest()
            frame, sent = self.frames.pop(index)
            sent_stamp = self.stamp_sent.pop(index)
            del self.index_of_stamp[sent_stamp]
            mode, prediction = _prediction(outputs)
            self.recorder.mode = mode
            latency = max(arrival for arrival, _ in outputs.values()) - sent
            serialized = {name: data for name, (_, data) in outputs.items()}
            if sent_stamp != frame.stamp_ns:
                serialized = _restamped_outputs(serialized, frame.stamp_ns)
            self.recorder.add(FrameResult(frame, "processed", prediction=prediction, latency_s=latency,
                                          serialized=serialized, camera=self.camera))
            self.last_answer = time.monotonic()

    def drop_oldest(self) -> None:
        index, (frame, _) = self.frames.popitem(last=False)
        del self.index_of_stamp[self.stamp_sent.pop(index)]
        self.recorder.add(FrameResult(frame, "dropped", camera=self.camera))


def replay_live(
    bag: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike,
    image_topic: str | None = None,
    gt_topic: str | None = None,
    cameras: Mapping[str, str] | None = None,
    rate: float = 1.0,
    max_rate: bool = False,
    max_frames: int | None = None,
    storage: str | None = None,
    device: str = "auto",
    precision: str = "fp32",
    thresholds: Mapping[str, float | int] | None = None,
    domain_id: int | None = None,
    startup_timeout: float = 120.0,
    frame_timeout: float = 60.0,
    progress: bool = True,
    overwrite: bool = False,
    stop: threading.Event | None = None,
    tracking: bool = False,
) -> dict[str, Any]:
    """Plays ``bag`` to a casnet_node process over DDS and records its answers in ``out_dir`` (see
    ``casnet_core.replay``; ``cameras``: {name: topic} of several camera topics, played to one batched node
    serving those cameras, ``max_frames`` then per camera; ``overwrite``: replace an earlier replay there);
    returns the metrics. Raises
    bags.BagError, CheckpointError or ValueError (before the node starts), LiveReplayError, and Interrupted once
    ``stop`` is set (the bag then closed with the frames answered so far)."""
    if not rate > 0:
        raise ValueError(f"rate must be positive, got {rate}")
    stop = stop or threading.Event()
    inputs = replay_inputs(bag, image_topic=image_topic, gt_topic=gt_topic, cameras=cameras, max_frames=max_frames)
    image_types = set(inputs.image_types.values())
    compressed = bags.COMPRESSED_IMAGE_TYPE in image_types
    if inputs.cameras and len(image_types) > 1:
        raise ValueError(f"--image-topic: the cameras mix {' and '.join(sorted(image_types))}; the batched node "
                         "takes one kind for all")
    if inputs.cameras and compressed and not all(t.endswith(COMPRESSED_SUFFIX) for t in inputs.cameras.values()):
        raise ValueError("--image-topic: with several cameras a CompressedImage topic must end in /compressed "
                         "(the batched node reads <image_topic>/compressed)")
    mode = model_mode(checkpoint)  # checks the file (checkpoint or ONNX export) before a node is started for it
    domain_id = 1 + os.getpid() % 100 if domain_id is None else domain_id
    out_dir = prepare_output(out_dir, [("--bag", bag), ("--checkpoint", checkpoint)], overwrite=overwrite)
    os.environ.update(ros_environment(domain_id))  # this process's rclpy context reads them too
    transport.use_large_image_profile()  # before this process's first DDS participant
    # The output bag exists from the start: a replay stopped while the node still starts (a cold start exports
    # the ONNX model first) leaves an empty, readable bag, as it says.
    recorder = ReplayRecorder(out_dir, storage=storage or bags.bag_storage(bag), mode=mode,
                              total_frames=inputs.total_frames, gt_topic=inputs.gt_topic, progress=progress,
                              cameras=inputs.cameras)
    node = client = None
    try:
        node = NodeProcess(node_arguments(checkpoint, image_topic=inputs.image_topic or "", compressed=compressed,
                                          device=device, precision=precision, thresholds=thresholds,
                                          cameras=inputs.cameras, tracking=tracking),
                           domain_id=domain_id, log_path=out_dir / "casnet_node.log")
        client = _Client(domain_id, inputs.cameras or {"": inputs.image_topic}, compressed)
        _wait(lambda: client.ready(), node, startup_timeout, "casnet_node to come up", stop=stop)
        info = {"replay": "live", "bag": str(bag), **inputs.info(),
                "checkpoint": str(checkpoint), "device": device, "domain_id": domain_id,
                "pace": "max-rate" if max_rate else f"{rate:g} x recorded rate",
                "tracking": "on" if tracking else "off"}
        start = time.monotonic()
        _play(client, node, recorder, inputs.frames(bag, max_frames),
              rate=rate, max_rate=max_rate, frame_timeout=frame_timeout, stop=stop)
        wall_s = time.monotonic() - start
    except BaseException:
        recorder.abort()
        raise
    finally:
        if client is not None:
            client.close()
        code = node.stop() if node is not None else None
    if code not in (0, None):
        recorder.abort()
        raise LiveReplayError(f"casnet_node exited with status {code}; log: {node.log_path}")
    # Evaluated once the node is gone: the official evaluators then have the CPU to themselves.
    return recorder.close(wall_s, info)


def _wait(done: Callable[[], bool], node: NodeProcess, timeout: float, what: str, *, stop: threading.Event) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if stop.is_set():
            raise Interrupted
        if not node.alive():
            last = (node.output(last_lines=1) or "no output").strip()
            raise LiveReplayError(f"casnet_node exited ({node.process.returncode}) while waiting for {what}; "
                                  f"log: {node.log_path}, its last line: {last}")
        if time.monotonic() > deadline:
            raise LiveReplayError(f"timed out after {timeout:.0f} s waiting for {what}; log: {node.log_path}")
        time.sleep(0.02)


def _play(client: _Client, node: NodeProcess, recorder: ReplayRecorder, frames: Iterator[tuple[str, bags.BagFrame]],
          *, rate: float, max_rate: bool, frame_timeout: float, stop: threading.Event) -> None:
    """Plays ``frames`` ((camera, frame) in recorded order) and records the answers; each camera's frames pend on
    their own (the node keeps a newest-frame mailbox per camera and answers each camera in order)."""
    pendings = {camera: _Pending(recorder, camera) for camera in client.cameras}

    def resolve() -> None:
        by_camera: dict[str, dict[int, Mapping[str, tuple[float, bytes]]]] = {}
        for (camera, stamp), outputs in client.take_complete().items():
            by_camera.setdefault(camera, {})[stamp] = outputs
        for camera, complete in by_camera.items():
            pendings[camera].resolve(complete)

    def wait_until(deadline: float, done: Callable[[], bool] = lambda: False) -> None:
        """Records answers as they come until ``deadline`` (monotonic) or ``done()``; Interrupted once ``stop``
        is set, after recording the answers received by then."""
        while True:
            resolve()
            if stop.is_set():
                raise Interrupted
            if done() or time.monotonic() >= deadline:
                return
            if not node.alive():
                raise LiveReplayError(f"casnet_node exited ({node.process.returncode}) during the replay; "
                                      f"log: {node.log_path}")
            client.arrived.wait(min(0.05, max(0.0, deadline - time.monotonic())))

    first_time_ns = start = None
    for camera, frame in frames:
        pending = pendings[camera]
        if frame.image_rgb is None:  # not decodable here: the node would reject it too
            recorder.add(FrameResult(frame, "failed", error=frame.error, camera=camera))
            continue
        if max_rate:
            wait_until(time.monotonic() + frame_timeout, done=lambda: not pending.frames)
            while pending.frames:  # no answer within frame_timeout
                pending.drop_oldest()
        else:
            if first_time_ns is None:
                first_time_ns, start = frame.time_ns, time.monotonic()
            wait_until(start + (frame.time_ns - first_time_ns) * 1e-9 / rate)
        stamp = pending.send_stamp(frame)
        sent = time.monotonic()
        client.publishers[camera].publish(frame.rawdata if stamp == frame.stamp_ns
                                          else _with_stamp(frame.rawdata, stamp))
        pending.add(frame, sent, stamp)
    # The last frame sent to a camera is never replaced by a newer one: wait for its answer, or frame_timeout of
    # silence.
    for pending in pendings.values():
        while pending.frames:
            deadline = max(pending.last_answer, pending.last_sent) + frame_timeout
            if time.monotonic() >= deadline:
                while pending.frames:
                    pending.drop_oldest()
                break
            wait_until(deadline, done=lambda: not pending.frames)


class _StopOnSignals:
    """SIGINT, SIGTERM and SIGHUP set ``stop`` (the replay then stops in order); a second one raises
    KeyboardInterrupt at once. Restores the handlers on exit."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.signal = signum
        self.stop.set()

    def __enter__(self) -> "_StopOnSignals":
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    """``python -m casnet_ros.live_replay`` takes the options of ``casnet replay`` (which starts it for --live)."""
    parser = argparse.ArgumentParser(prog="casnet replay --live", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    # The panoptic evaluator's worker pool must not fork this process: a child forked while DDS (and onnxruntime)
    # threads hold locks can wait on them forever (seen: `make demo` hung in evaluation). forkserver forks from a
    # fresh server process instead.
    multiprocessing.set_start_method("forkserver", force=True)
    signals = _StopOnSignals()
    try:
        with signals:
            metrics = replay_live(args.bag, args.out, checkpoint=checkpoint_from_args(args),
                                  image_topic=single_image_topic(args.image_topic),
                                  cameras=camera_topics(args.image_topic), gt_topic=args.gt_topic,
                                  rate=args.rate or 1.0,
                                  max_rate=args.max_rate, max_frames=args.frames, storage=args.storage,
                                  device=args.device, precision=args.precision, thresholds=thresholds_from_args(args),
                                  domain_id=args.domain_id, overwrite=args.overwrite, stop=signals.stop,
                                  tracking=args.tracking == "on")
    except (bags.BagError, CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"casnet replay: error: {one_line(error)}", file=sys.stderr)
        return 2
    except LiveReplayError as error:
        print(f"casnet replay: error: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        signum = signals.signal or signal.SIGINT
        print(f"casnet replay: interrupted by {signal.Signals(signum).name}: {Path(args.out) / 'bag'} holds the "
              "frames processed so far (no metrics)", file=sys.stderr)
        return 128 + signum
    print(format_summary(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
