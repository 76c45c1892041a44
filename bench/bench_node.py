"""casnet_node against the Predictor alone, on the same images: the cost of ROS is the difference.

    .venv/bin/python bench/bench_node.py [--checkpoint model.pt] [--device cpu|cuda|auto]
                                         [--size 1024x2048] [--frames 8] [--rate 10] [--seconds 20]

Without --checkpoint a random-weights CASNet of the default configuration (hrnet_w18_small) is
built and saved to a temporary file: timing does not depend on what the weights learnt, except for
the number of instances (reported; random weights give hundreds per frame, a trained model tens).

On generated street scenes (casnet_core.synth) at --size:

1. Paired, closed loop. For each frame: Predictor.predict on it in a thread of this process (as
   the node runs it; the node idles meanwhile), then the same frame through the node, the next sent
   once all its outputs came back. Pairs keep the comparison fair on a machine whose load varies. Reported: the Predictor's time; the node's
   stamp -> publish latency (its own measure in /diagnostics) and stages; stamp -> received by a
   subscriber here (the last of panoptic, semantic, instances, detections; no overlay).
2. Open loop: a camera at --rate Hz (faster than the node) for --seconds: output frames/s, frames
   dropped by the node (newest-frame mailbox), latency stamp -> received.

The node runs as its own process (python -m casnet_ros.node), discovery limited to this host, its
own ROS_DOMAIN_ID, input QoS reliable: Fast DDS loses multi-megabyte best-effort samples (one lost
fragment loses the frame). With Fast DDS's default profile an output sample is now and then lost on
the host and resent after the writer's 3 s heartbeat period: such frames show as +3 s outliers
(max vs median of the delivery); a Fast DDS XML profile with a shorter <heartbeat_period>
(FASTDDS_DEFAULT_PROFILES_FILE, inherited by the node) removes them.
"""

from __future__ import annotations

import argparse
import array
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "test"))

from ros_helpers import Client, NodeProcess, diagnostic_values, stamp_key  # noqa: E402

OUTPUTS = ("panoptic", "semantic", "instances", "detections")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def _image_msg(rgb: np.ndarray, header):
    from sensor_msgs.msg import Image

    msg = Image(header=header, height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0,
                step=rgb.shape[1] * 3)
    msg.data = array.array("B", np.ascontiguousarray(rgb).tobytes())
    return msg


def _predict_in_thread(predictor, image: np.ndarray):
    """predictor.predict(image) and its duration, run in a thread of its own as the node runs it
    (under CPU contention PyTorch's CPU threads behave differently in the main thread)."""
    result = {}

    def target() -> None:
        start = time.perf_counter()
        result["prediction"] = predictor.predict(image)
        result["seconds"] = time.perf_counter() - start

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    return result["prediction"], result["seconds"]


def run(checkpoint: Path, device: str, images: list[np.ndarray], frames: int, rate: float, seconds: float,
        domain_id: int, log_dir: Path) -> dict:
    from casnet_msgs.msg import PanopticFrame
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from vision_msgs.msg import Detection2DArray

    from casnet_core.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    process = NodeProcess(["-p", f"checkpoint:={checkpoint}", "-p", f"device:={device}",
                           "-p", "diagnostics_period:=0.25", "-p", "input_reliability:=reliable"],
                          domain_id=domain_id, log_path=log_dir / "casnet_node.log")
    client = Client(domain_id, node_name="casnet_bench")
    try:
        types = {"panoptic": Image, "semantic": Image, "instances": PanopticFrame, "detections": Detection2DArray}
        for name in OUTPUTS:
            client.record(f"/casnet/{name}", types[name], key=name)
        client.record("/diagnostics", DiagnosticArray, key="diagnostics")
        publisher = client.node.create_publisher(Image, "/casnet/image", 1)
        if not client.spin_until(lambda: publisher.get_subscription_count() > 0
                                 and all(client.node.count_publishers(f"/casnet/{n}") for n in OUTPUTS), 180):
            raise RuntimeError(f"casnet_node did not come up:\n{process.output()}")

        def header() -> Header:
            return Header(stamp=client.node.get_clock().now().to_msg(), frame_id="bench")

        def arrivals(key, name):
            return [arrival for arrival, msg in client.received.get(name, []) if stamp_key(msg.header) == key]

        def diagnostics() -> list[dict[str, str]]:
            return [d for d in (diagnostic_values(m) for m in client.messages("diagnostics")) if d]

        # 1. Paired closed loop; frame 0 warms both up and is not counted.
        rows = []
        for index in range(frames + 1):
            image = images[index % len(images)]
            prediction, alone = _predict_in_thread(predictor, image)

            h = header()
            key, sent = stamp_key(h), _seconds(h.stamp)
            publisher.publish(_image_msg(image, h))
            if not client.spin_until(lambda: all(arrivals(key, n) for n in OUTPUTS), timeout=300):
                raise RuntimeError(f"no answer to frame {index}:\n{process.output()}")
            received = max(arrivals(key, n)[0] for n in OUTPUTS) - sent
            # The node's own numbers for this frame: the diagnostics that first count it.
            client.spin_until(lambda: any(int(d["frames_processed"]) > index for d in diagnostics()), 5)
            report = next(d for d in diagnostics() if int(d["frames_processed"]) > index)
            if index:
                rows.append({"alone": alone, "alone_stages": dict(prediction.timings),
                             "instances": len(prediction.instances), "received": received,
                             "node": float(report["latency_ms_last"]) / 1e3,
                             "node_stages": {k[5:-3]: float(v) / 1e3 for k, v in report.items()
                                             if k.startswith("time_")}})

        # 2. Open loop: a camera faster than the node, then the tail of frames still in flight.
        dropped_before = int(diagnostics()[-1]["frames_dropped"])
        diagnostics_before = len(diagnostics())
        first_panoptic = len(client.received.get("panoptic", []))
        start, wall_start, sent_count = time.monotonic(), time.time(), 0
        while time.monotonic() - start < seconds:
            publisher.publish(_image_msg(images[sent_count % len(images)], header()))
            sent_count += 1
            client.spin_for(max(start + sent_count / rate - time.monotonic(), 0.0))
        elapsed = time.monotonic() - start
        client.spin_for(2.0 * _median([row["received"] for row in rows]) + 1.0)
        answered = [(arrival, msg) for arrival, msg in client.received["panoptic"][first_panoptic:]
                    if _seconds(msg.header.stamp) <= wall_start + elapsed]
        during = diagnostics()[diagnostics_before:]
        return {
            "device": str(predictor.device),
            "rows": rows,
            "open_sent": sent_count, "open_elapsed": elapsed, "open_answered": len(answered),
            "open_latency": [arrival - _seconds(m.header.stamp) for arrival, m in answered],
            "open_dropped": int(diagnostics()[-1]["frames_dropped"]) - dropped_before,
            "open_input_rate": _median([float(d["input_rate_hz"]) for d in during if float(d["input_rate_hz"]) > 0]),
        }
    finally:
        client.close()
        process.stop()


def report(result: dict, height: int, width: int, rate: float, seconds: float) -> None:
    rows = result["rows"]

    def median_ms(values) -> str:
        return f"{1e3 * _median(list(values)):.1f}"

    stage_names = list(rows[0]["node_stages"])
    inference = [sum(r["node_stages"].get(s, 0.0) for s in ("preprocess", "forward", "postprocess")) for r in rows]
    print(f"\ncasnet_node vs Predictor alone: {height}x{width}, device {result['device']}, "
          f"{len(rows)} paired frames, instances per frame {statistics.mean(r['instances'] for r in rows):.0f}; "
          f"medians over the frames")
    table = [
        ("Predictor.predict alone: ms/frame", median_ms(r["alone"] for r in rows)),
        ("Predictor.predict alone: frames/s", f"{1 / _median([r['alone'] for r in rows]):.2f}"),
        *[(f"  stage {name}: ms", median_ms(r["alone_stages"][name] for r in rows))
          for name in rows[0]["alone_stages"]],
        ("node: stamp -> publish (node's measure): ms", median_ms(r["node"] for r in rows)),
        *[(f"  node stage {name}: ms", median_ms(r["node_stages"][name] for r in rows)) for name in stage_names],
        ("  ROS work in the node (decode + build and publish): ms",
         median_ms(r["node_stages"].get("decode", 0.0) + r["node_stages"].get("publish", 0.0) for r in rows)),
        ("  input transfer + hand-over (stamp -> publish - total): ms",
         median_ms(r["node"] - r["node_stages"].get("total", 0.0) for r in rows)),
        ("node: stamp -> received by a subscriber: ms", median_ms(r["received"] for r in rows)),
        ("  output delivery (received - published): ms", median_ms(r["received"] - r["node"] for r in rows)),
        ("  output delivery, max: ms", f"{1e3 * max(r['received'] - r['node'] for r in rows):.1f}"),
        ("ROS overhead: received - node inference: ms", median_ms(r["received"] - i for r, i in zip(rows, inference))),
        ("ROS overhead: received - Predictor alone (paired): ms", median_ms(r["received"] - r["alone"] for r in rows)),
        (f"open loop, camera at {rate:g} Hz for {seconds:g} s: frames sent", str(result["open_sent"])),
        ("open loop: input rate seen by the node: Hz", f"{result['open_input_rate']:.2f}"),
        ("open loop: output frames/s", f"{result['open_answered'] / result['open_elapsed']:.2f}"),
        ("open loop: frames dropped in the node (mailbox)", str(result["open_dropped"])),
        ("open loop: stamp -> received, median: ms", median_ms(result["open_latency"])),
        ("open loop: stamp -> received, max: ms",
         f"{1e3 * max(result['open_latency']):.1f}" if result["open_latency"] else "n/a"),
    ]
    print(f"{'measure':60s} {'value':>10s}")
    for name, value in table:
        print(f"{name:60s} {value:>10s}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="CASNet checkpoint (default: random weights)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (node and Predictor)")
    parser.add_argument("--size", default="1024x2048", help="HxW of the images")
    parser.add_argument("--frames", type=int, default=8, help="paired frames of the closed loop")
    parser.add_argument("--rate", type=float, default=10.0,
                        help="camera rate of the open-loop run, Hz (above the node's frame rate)")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of the open-loop run")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: from the pid)")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))

    from casnet_core.synth import generate_scene

    images = [generate_scene(seed, height=height, width=width)[0] for seed in range(3)]
    domain_id = args.domain_id if args.domain_id is not None else 1 + os.getpid() % 100
    with tempfile.TemporaryDirectory(prefix="bench_node_") as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            import torch

            from casnet_core.checkpoint import save_checkpoint
            from casnet_core.model import build_casnet

            torch.manual_seed(0)
            checkpoint = save_checkpoint(Path(tmp) / "random.pt", build_casnet("hrnet_w18_small").eval())
        result = run(checkpoint, args.device, images, args.frames, args.rate, args.seconds, domain_id, Path(tmp))
    print(f"machine load average (1, 5, 15 min): {os.getloadavg()}")
    report(result, height, width, args.rate, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
