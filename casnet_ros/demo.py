"""The ROS step of ``make demo``: casnet_node as its own process, fed images over DDS, outputs saved.

Usage::

  .venv/bin/python -m casnet_ros.demo --checkpoint CKPT --images DIR_OR_GLOB... --out DIR \\
      [--domain-id N] [--rate HZ] [--timeout S]

It starts ``python -m casnet_ros.node`` (config/casnet.yaml, device cpu, reliable input, ``~/image``
remapped to /demo_camera/image_raw) on an isolated ROS domain (ROS_DOMAIN_ID from the pid unless
given, discovery limited to this host), waits until the node is configured (its latched
~/label_info arrives) and active, then publishes the images one at a time (rgb8, frame_id
"demo_camera", stamp = now) and waits for the ~/instances and ~/overlay replies carrying that stamp.
It writes to OUT, NAME being the image's file stem:

* ``NAME_overlay.png``: the ~/overlay image;
* ``NAME_instances.json``: the casnet_msgs/PanopticFrame's instances (the fields of
  ``casnet predict``'s instance JSON);
* ``summary.json``: per frame the instance count and latency (arrival time - stamp), in ms;
* ``casnet_node.log``: the node's output.

The node is stopped with SIGINT (killed after a timeout) in every case. Exit status 0 on success.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PARAMS = REPO_ROOT / "config" / "casnet.yaml"
CAMERA_TOPIC = "/demo_camera/image_raw"
FRAME_ID = "demo_camera"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


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
        self.process = subprocess.Popen([sys.executable, "-m", "casnet_ros.node", "--ros-args", *ros_arguments],
                                        env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

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


class DemoError(RuntimeError):
    pass


def find_images(patterns: list[str]) -> list[Path]:
    """Each argument is an image file, a folder (its images) or a glob pattern."""
    images: list[Path] = []
    for pattern in patterns:
        if Path(pattern).is_dir():
            images += sorted(p for p in Path(pattern).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            images += [Path(p) for p in sorted(glob.glob(pattern))]
    if not images:
        raise DemoError(f"no images found in {patterns}")
    stems = [p.stem for p in images]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise DemoError(f"several images would write the same outputs: {duplicates}")
    return images


def save_outputs(path: Path, frame: Any, overlay: Any, out: Path, stamp: float) -> int:
    """Writes NAME_overlay.png and NAME_instances.json of one reply; returns the number of instances."""
    import cv2
    import numpy as np

    from casnet_ros import conversions

    overlay_path = out / f"{path.stem}_overlay.png"
    if not cv2.imwrite(str(overlay_path), np.ascontiguousarray(conversions.image_to_rgb(overlay)[..., ::-1])):
        raise DemoError(f"cannot write {overlay_path}")
    instances = [{"id": i.id, "label_id": i.class_id, "class_name": i.class_name, "score": i.score,
                  "box": [i.x_min, i.y_min, i.x_max, i.y_max], "area": i.area,
                  "centroid": [i.centroid_x, i.centroid_y]} for i in frame.instances]
    document = {"image": str(path), "height": frame.panoptic.height, "width": frame.panoptic.width,
                "mode": frame.mode, "frame_id": frame.header.frame_id, "stamp": stamp, "instances": instances}
    (out / f"{path.stem}_instances.json").write_text(json.dumps(document, indent=1))
    return len(instances)


def run_demo(args: argparse.Namespace, node: NodeProcess) -> list[dict[str, Any]]:
    """Publishes every image to the running node and saves its replies; returns the summary rows."""
    import rclpy
    from casnet_msgs.msg import PanopticFrame
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from vision_msgs.msg import LabelInfo

    from casnet_core.data import read_image
    from casnet_ros import conversions

    context = rclpy.Context()
    # No rclpy signal handlers: Ctrl-C raises KeyboardInterrupt here, and main() stops the node.
    rclpy.init(context=context, domain_id=args.domain_id, signal_handler_options=SignalHandlerOptions.NO)
    client = rclpy.create_node("casnet_demo", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client)
    # topic -> {(stamp sec, nanosec): (arrival time, message)}
    replies: dict[str, dict[tuple[int, int], tuple[float, Any]]] = {"instances": {}, "overlay": {}, "label_info": {}}

    def keep(name: str) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
            replies[name][(msg.header.stamp.sec, msg.header.stamp.nanosec)] = (time.time(), msg)
        return callback

    def spin_until(done: Callable[[], Any], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if not node.alive():
                raise DemoError(f"casnet_node exited ({node.process.returncode}) while waiting for {what}; "
                                f"log tail:\n{node.output(last_lines=30)}")
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}; node log tail:\n"
                                f"{node.output(last_lines=30)}")
            executor.spin_once(timeout_sec=0.05)

    try:
        reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        client.create_subscription(PanopticFrame, "/casnet/instances", keep("instances"), 10)
        client.create_subscription(Image, "/casnet/overlay", keep("overlay"), 10)
        client.create_subscription(LabelInfo, "/casnet/label_info", keep("label_info"), latched)
        publisher = client.create_publisher(Image, CAMERA_TOPIC, reliable)
        start = time.monotonic()
        # Up = configured (label_info latched), active (subscribed to the camera) and its outputs discovered.
        spin_until(lambda: replies["label_info"] and publisher.get_subscription_count() > 0
                   and client.count_publishers("/casnet/instances") and client.count_publishers("/casnet/overlay"),
                   args.startup_timeout, "casnet_node to come up")
        print(f"casnet_node up after {time.monotonic() - start:.1f} s (ROS_DOMAIN_ID={args.domain_id})")

        rows: list[dict[str, Any]] = []
        print(f"{'image':<44} {'instances':>9} {'latency ms':>10}")
        for path in args.image_paths:
            try:
                rgb = read_image(path)
            except FileNotFoundError as error:
                raise DemoError(str(error)) from error
            header = Header(stamp=client.get_clock().now().to_msg(), frame_id=FRAME_ID)
            key, sent = (header.stamp.sec, header.stamp.nanosec), time.monotonic()
            publisher.publish(conversions.array_to_image(rgb, "rgb8", header))
            spin_until(lambda: key in replies["instances"] and key in replies["overlay"], args.timeout,
                       f"the node's reply to {path.name}")
            stamp = header.stamp.sec + header.stamp.nanosec * 1e-9
            instances_time, frame = replies["instances"].pop(key)
            overlay_time, overlay = replies["overlay"].pop(key)
            count = save_outputs(path, frame, overlay, args.out, stamp)
            rows.append({"image": str(path), "name": path.stem, "instances": count,
                         "latency_ms": round(1e3 * (instances_time - stamp), 2),
                         "overlay_latency_ms": round(1e3 * (overlay_time - stamp), 2)})
            print(f"{path.stem[:44]:<44} {count:>9} {rows[-1]['latency_ms']:>10.1f}", flush=True)
            if args.rate > 0:  # at most --rate frames per second
                time.sleep(max(0.0, sent + 1.0 / args.rate - time.monotonic()))
        return rows
    finally:
        executor.shutdown()
        client.destroy_node()
        rclpy.try_shutdown(context=context)


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m casnet_ros.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="CASNet checkpoint file")
    parser.add_argument("--images", nargs="+", required=True, help="image files, folders or glob patterns")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--domain-id", type=int, default=1 + os.getpid() % 100,
                        help="ROS_DOMAIN_ID (default: from the pid, 1..100)")
    parser.add_argument("--rate", type=float, default=0.0, help="at most this many frames per second (0: no limit)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the reply to one frame")
    parser.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for the node to come up")
    parser.add_argument("--params-file", type=Path, default=DEFAULT_PARAMS,
                        help="node parameters (default: config/casnet.yaml)")
    args = parser.parse_args(argv)
    try:
        args.image_paths = find_images(args.images)
    except DemoError as error:
        parser.error(str(error))
    if not Path(args.checkpoint).is_file():
        parser.error(f"no checkpoint file {args.checkpoint}")
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.update(ros_environment(args.domain_id))  # this process's own rclpy context reads them too

    node = NodeProcess(["--params-file", str(args.params_file), "-p", f"checkpoint:={Path(args.checkpoint).resolve()}",
                        "-p", "device:=cpu", "-p", "input_reliability:=reliable", "-r", f"~/image:={CAMERA_TOPIC}"],
                       domain_id=args.domain_id, log_path=args.out / "casnet_node.log")
    status = 1
    try:
        rows = run_demo(args, node)
        latencies = [row["latency_ms"] for row in rows]
        summary = {"checkpoint": str(args.checkpoint), "domain_id": args.domain_id, "frames": rows,
                   "latency_ms": {"mean": round(statistics.fmean(latencies), 2),
                                  "median": round(statistics.median(latencies), 2), "max": max(latencies)}}
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
        print(f"demo: {len(rows)} frames, latency mean {summary['latency_ms']['mean']:.1f} ms, "
              f"median {summary['latency_ms']['median']:.1f} ms; outputs in {args.out}")
        status = 0
    except DemoError as error:
        print(f"casnet_ros.demo: error: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        status = 130
    finally:
        code = node.stop()
        if code != 0 and status == 0:
            print(f"casnet_ros.demo: casnet_node exited with status {code}; log: {node.log_path}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
