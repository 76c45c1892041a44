"""N cameras from one batched casnet_node process against N casnet_node processes, one per camera.

    .venv/bin/python bench/bench_multicamera.py [--checkpoint model.pt] [--device cpu|cuda|auto]
        [--height 1024] [--width 2048] [--cameras 1,2,4,8] [--frames 30] [--json PATH]

Without --checkpoint a random-weights CASNet of the default configuration (hrnet_w18_small,
bench_node.random_checkpoint) is used: timing does not depend on what the weights learnt, except for the
number of instances.

For each N, both set-ups run in turn on the same machine in the same run, with the same model and
parameters (reliable input, overlay off):

* batched: one process, ``cameras: [cam0, ..., camN-1]`` (casnet_ros.node), frames of all cameras
  run as one batch;
* separate: N processes, process k in namespace /camk (today's launch with ``cameras:=``).

Both publish the same topics (/camk/casnet/image in, /camk/casnet/panoptic out). This process is
every camera and the subscriber of each camera's panoptic output, closed loop per camera: a camera
sends its next frame (a new stamp) as soon as the panoptic image of its previous one arrived, so each
set-up runs as fast as it can serve all N cameras. After --warmup answered frames per camera, --frames
frames per camera are measured:

* aggregate frames/s: answers of all cameras / seconds from the first measured send to the last answer;
* per-camera latency: stamp (the send) -> panoptic received here, p50 and p99 over each camera's
  frames; the table shows the median of the cameras' p50 and the worst camera's p99.

The ratio batched / separate of the aggregate frames/s is printed per N. The cameras are one Python process
(messages built once, only the header set per frame): at high aggregate rates of large images it can become
the limit of both set-ups alike. Every participant uses the
shipped Fast DDS profile, discovery is limited to this host, and the ROS domain is this run's own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_node import image_message, random_checkpoint
from casnet_core.bags import cdr_header_stamp_ns
from casnet_ros.client import Client
from casnet_ros.live_replay import NodeProcess

STARTUP_TIMEOUT_S = 600.0
ANSWER_TIMEOUT_S = 120.0


def _percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1e3, q)) if values else float("nan")


class Cameras:
    """This process as N cameras and as the subscriber of their panoptic outputs (raw: only the stamp matters)."""

    def __init__(self, domain_id: int, count: int) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.client = Client(domain_id, node_name="casnet_bench_cameras")
        self.names = [f"cam{k}" for k in range(count)]
        self.answered: dict[str, dict[int, float]] = {name: {} for name in self.names}  # stamp ns -> arrival
        self.publishers = {}
        self.subscriptions = []
        for name in self.names:
            self.publishers[name] = self.client.node.create_publisher(
                Image, f"/{name}/casnet/image", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
            self.subscriptions.append(self.client.node.create_subscription(
                Image, f"/{name}/casnet/panoptic", self._keeper(name), 10, raw=True))

    def _keeper(self, name: str):
        def keep(serialized: bytes) -> None:
            self.answered[name][cdr_header_stamp_ns(serialized)] = time.monotonic()
        return keep

    def ready(self) -> bool:
        return all(self.publishers[name].get_subscription_count() > 0
                   and self.client.node.count_publishers(f"/{name}/casnet/panoptic") > 0 for name in self.names)

    def run(self, images: list[np.ndarray], frames: int) -> tuple[dict[str, list[float]], float]:
        """Closed loop per camera until each has ``frames`` answers: ({camera: latencies s}, seconds)."""
        from std_msgs.msg import Header

        latencies: dict[str, list[float]] = {name: [] for name in self.names}
        in_flight: dict[str, tuple[int, float]] = {}  # camera -> (stamp ns, sent)
        # Built once: per frame only the header changes, so this one process can feed N cameras.
        messages = [image_message(image, None) for image in images]
        counter = 0

        def send(name: str) -> None:
            nonlocal counter
            stamp = self.client.node.get_clock().now()
            msg = messages[counter % len(messages)]
            msg.header = Header(stamp=stamp.to_msg(), frame_id=name)
            counter += 1
            in_flight[name] = (stamp.nanoseconds, time.monotonic())
            self.publishers[name].publish(msg)

        start = time.monotonic()
        for name in self.names:
            send(name)
        last_answer = start
        while any(len(latencies[name]) < frames for name in self.names):
            self.client.executor.spin_once(timeout_sec=0.01)
            for name in self.names:
                stamp_ns, sent = in_flight[name]
                arrival = self.answered[name].pop(stamp_ns, None)
                if arrival is not None:
                    latencies[name].append(arrival - sent)
                    last_answer = arrival
                    if len(latencies[name]) < frames:
                        send(name)
                elif time.monotonic() - sent > ANSWER_TIMEOUT_S:
                    raise RuntimeError(f"{name}: no answer within {ANSWER_TIMEOUT_S:.0f} s")
        return latencies, last_answer - start

    def close(self) -> None:
        self.client.close()


def measure(mode: str, count: int, *, checkpoint: Path, device: str, images: list[np.ndarray], frames: int,
            warmup: int, domain_id: int, log_dir: Path) -> dict:
    common = ["-p", f"checkpoint:={checkpoint}", "-p", f"device:={device}", "-p", "input_reliability:=reliable",
              "-p", "publish_overlay:=false"]
    names = [f"cam{k}" for k in range(count)]
    if mode == "batched":
        arguments = [[*common, "-p", f"cameras:=[{', '.join(names)}]"]]
    else:
        arguments = [[*common, "-r", f"__ns:=/{name}"] for name in names]
    processes = [NodeProcess(args, domain_id=domain_id, log_path=log_dir / f"{mode}_{count}_{k}.log")
                 for k, args in enumerate(arguments)]
    cameras = None
    try:
        cameras = Cameras(domain_id, count)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not cameras.ready():
            if time.monotonic() > deadline or not all(process.alive() for process in processes):
                raise RuntimeError(f"{mode} x{count}: nodes did not come up:\n{processes[0].output(last_lines=20)}")
            cameras.client.executor.spin_once(timeout_sec=0.05)
        cameras.run(images, warmup)
        latencies, seconds = cameras.run(images, frames)
    finally:
        if cameras is not None:
            cameras.close()
        for process in processes:
            process.stop()
    p50 = [_percentile_ms(values, 50) for values in latencies.values()]
    p99 = [_percentile_ms(values, 99) for values in latencies.values()]
    return {"mode": mode, "cameras": count, "processes": len(processes), "frames_per_camera": frames,
            "fps": count * frames / seconds, "p50_ms": float(np.median(p50)), "p99_ms": max(p99),
            "per_camera": {name: {"p50_ms": a, "p99_ms": b} for name, a, b in zip(latencies, p50, p99)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="CASNet checkpoint (default: random weights)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--cameras", default="1,2,4,8", help="comma-separated camera counts")
    parser.add_argument("--frames", type=int, default=30, help="measured frames per camera")
    parser.add_argument("--warmup", type=int, default=3, help="answered frames per camera before measuring")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    try:
        counts = [int(value) for value in args.cameras.split(",") if value.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1 or args.frames < 1 or args.warmup < 0 or min(args.height, args.width) < 32:
        print("bench_multicamera: --cameras needs positive counts, --frames >= 1, --warmup >= 0, a size >= 32",
              file=sys.stderr)
        return 2
    from casnet_core.synth import generate_scene

    images = [generate_scene(seed, height=args.height, width=args.width)[0] for seed in range(4)]
    domain_id = 1 + (os.getpid() + 37) % 100
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_multicamera_") as tmp:
        checkpoint = args.checkpoint or random_checkpoint(Path(tmp))
        for count in counts:
            for mode in ("batched", "separate"):
                try:
                    row = measure(mode, count, checkpoint=checkpoint, device=args.device, images=images,
                                  frames=args.frames, warmup=args.warmup, domain_id=domain_id, log_dir=Path(tmp))
                except RuntimeError as error:  # a node that did not come up or stopped answering
                    print(f"bench_multicamera: {str(error).splitlines()[0]}", file=sys.stderr)
                    return 1
                rows.append(row)
                print(f"{mode:>8} x{count}: {row['fps']:7.2f} frames/s, latency p50 {row['p50_ms']:8.1f} ms, "
                      f"p99 {row['p99_ms']:8.1f} ms", flush=True)
    fps = {(row["mode"], row["cameras"]): row["fps"] for row in rows}
    ratios = {count: fps[("batched", count)] / fps[("separate", count)] for count in counts}
    print(f"\n{args.height}x{args.width}, device {args.device}, {args.frames} frames per camera")
    print("| cameras | batched frames/s | separate frames/s | ratio | batched p50 / p99 ms | separate p50 / p99 ms |")
    print("|---|---|---|---|---|---|")
    for count in counts:
        batched, separate = (next(r for r in rows if r["mode"] == m and r["cameras"] == count)
                             for m in ("batched", "separate"))
        print(f"| {count} | {batched['fps']:.2f} | {separate['fps']:.2f} | {ratios[count]:.2f} | "
              f"{batched['p50_ms']:.0f} / {batched['p99_ms']:.0f} | {separate['p50_ms']:.0f} / {separate['p99_ms']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "height": args.height, "width": args.width,
                                         "checkpoint": str(args.checkpoint or "random weights"), "rows": rows,
                                         "ratio_batched_over_separate": ratios}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
