"""Soak: casnet_node fed a camera three times faster than it can process, for minutes.

    .venv/bin/python bench/bench_soak.py [--seconds 300] [--speedup 3] [--size 1024x2048]
                                         [--checkpoint model.pt] [--device cpu|cuda|auto]

The node runs as its own process with best-effort input (as from a camera), this process is the
camera and the subscriber of ~/panoptic, ~/instances and ~/detections (raw, as in bench_node.py),
both with the shipped Fast DDS profile. First a few closed-loop frames warm the node up and give
its processing time per frame (decode -> published, the median of the node's own /diagnostics);
the camera then runs at --speedup / that time for --seconds.

Reported:
* the node process's resident memory (VmRSS) after the warm-up and at the end (and its maximum);
  target: growth < 5 %;
* latency stamp -> received (the last of the three outputs), p50 and p99, against the processing
  time; target: p99 <= 2 x the processing time (newest frame only: a frame waits for at most the
  rest of the running one, never in a queue);
* frames sent, received by the node (the rest were lost by DDS), processed, dropped by the
  newest-frame mailbox (by design at this rate), and processed frames with an output lost.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_node import OUTPUTS, NodeUnderTest, image_message, random_checkpoint  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def warm_up(node: NodeUnderTest, messages: list, frames: int) -> float:
    """Closed loop over ``frames`` frames; the node's median processing time per frame, seconds."""
    totals = []
    for index in range(frames):
        processed_before = int(node.diagnostics()[-1]["frames_processed"])
        msg = messages[index % len(messages)]
        msg.header = node.header()
        node.publisher.publish(msg)
        if not node.client.spin_until(lambda: any(int(d["frames_processed"]) > processed_before
                                                  for d in node.diagnostics()), timeout=600):
            raise RuntimeError(f"no answer to warm-up frame {index}:\n{node.process.output()}")
        report = next(d for d in node.diagnostics() if int(d["frames_processed"]) > processed_before)
        totals.append(float(report["time_total_ms"]) / 1e3)
    return statistics.median(totals[1:] or totals)  # the first frame pays one-time costs


def soak(node: NodeUnderTest, messages: list, rate: float, seconds: float, sample_every: float = 10.0) -> dict:
    pid = node.process.process.pid
    before = node.diagnostics()[-1]
    rss = [(0.0, rss_mb(pid))]  # (seconds into the soak, MB)
    sent: dict[tuple, float] = {}
    arrivals: dict[str, dict[tuple, float]] = {name: {} for name in OUTPUTS}
    diagnostics_seen = len(node.diagnostics())

    def collect() -> None:
        for name in OUTPUTS:
            arrivals[name].update((key, arrival) for arrival, key, _ in node.received[name] if key in sent)

    start = time.monotonic()
    next_sample = start + sample_every
    while time.monotonic() - start < seconds:
        msg = messages[len(sent) % len(messages)]
        msg.header = node.header()
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id)
        sent[key] = key[0] + key[1] * 1e-9
        node.publisher.publish(msg)
        node.client.spin_for(max(start + len(sent) / rate - time.monotonic(), 0.0))
        collect()
        if time.monotonic() >= next_sample:
            rss.append((time.monotonic() - start, rss_mb(pid)))
            next_sample += sample_every
    elapsed = time.monotonic() - start
    node.client.spin_for(15.0)  # the frame still running, and its outputs
    collect()
    rss.append((time.monotonic() - start, rss_mb(pid)))
    after = node.diagnostics()[-1]
    windows = [d for d in node.diagnostics()[diagnostics_seen:] if "time_total_ms" in d]
    complete = set.intersection(*(set(a) for a in arrivals.values()))
    processed = int(after["frames_processed"]) - int(before["frames_processed"])
    return {
        "elapsed": elapsed, "sent": len(sent),
        "received_by_node": int(after["frames_received"]) - int(before["frames_received"]),
        "processed": processed,
        "dropped": int(after["frames_dropped"]) - int(before["frames_dropped"]),
        "outputs_lost": processed - len(complete),
        "latency": [max(arrivals[name][key] for name in OUTPUTS) - sent[key] for key in complete],
        "processing": [float(d["time_total_ms"]) / 1e3 for d in windows],
        "rss": rss,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="CASNet checkpoint (default: random weights)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--size", default="1024x2048", help="HxW of the camera")
    parser.add_argument("--seconds", type=float, default=300.0, help="duration of the soak")
    parser.add_argument("--speedup", type=float, default=3.0, help="camera rate / the node's frame rate")
    parser.add_argument("--warmup-frames", type=int, default=3, help="closed-loop frames before the soak")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: from the pid)")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))

    from casnet_core.synth import generate_scene

    messages = [image_message(generate_scene(seed, height=height, width=width)[0], None) for seed in range(3)]
    domain_id = args.domain_id if args.domain_id is not None else 1 + os.getpid() % 100
    with tempfile.TemporaryDirectory(prefix="bench_soak_") as tmp:
        checkpoint = args.checkpoint or random_checkpoint(Path(tmp))
        node = NodeUnderTest(checkpoint, args.device, "best_effort", domain_id, Path(tmp))
        try:
            node.wait_until_up()
            processing = warm_up(node, messages, args.warmup_frames)
            rate = args.speedup / processing
            print(f"node processing time {1e3 * processing:.0f} ms/frame: camera at {rate:.3f} Hz "
                  f"for {args.seconds:g} s", flush=True)
            result = soak(node, messages, rate, args.seconds)
        finally:
            node.close()

    latency = result["latency"]
    times, rss = np.array([t for t, _ in result["rss"]]), [mb for _, mb in result["rss"]]
    # Steady growth (a leak) vs the allocator's ups and downs: the slope of a straight line through the samples.
    slope = float(np.polyfit(times / 60.0, rss, 1)[0]) if len(rss) > 2 else float("nan")
    processing = statistics.median(result["processing"]) if result["processing"] else processing
    growth = 100.0 * (rss[-1] - rss[0]) / rss[0]
    p50, p99 = percentile(latency, 50), percentile(latency, 99)
    print(f"machine load average (1, 5, 15 min): {os.getloadavg()}")
    print(f"\nsoak of casnet_node: {height}x{width}, camera {args.speedup:g}x the node's frame rate "
          f"({rate:.3f} Hz) for {result['elapsed']:.0f} s, outputs {', '.join(OUTPUTS)}")
    table = [
        ("node RSS after warm-up: MB", f"{rss[0]:.0f}"),
        ("node RSS at the end: MB", f"{rss[-1]:.0f}"),
        ("node RSS max: MB", f"{max(rss):.0f}"),
        ("RSS growth: % (target < 5)", f"{growth:+.1f}"),
        ("RSS trend (straight-line fit through the samples): MB/min", f"{slope:+.1f}"),
        ("processing time per frame (node, median): ms", f"{1e3 * processing:.0f}"),
        ("latency stamp -> received, p50: ms", f"{1e3 * p50:.0f}"),
        ("latency stamp -> received, p99: ms", f"{1e3 * p99:.0f}"),
        ("p99 latency / processing time (target <= 2)", f"{p99 / processing:.2f}"),
        ("frames sent", str(result["sent"])),
        ("frames received by the node (lost by DDS: the rest)", str(result["received_by_node"])),
        ("frames processed", str(result["processed"])),
        ("frames dropped by the newest-frame mailbox", str(result["dropped"])),
        ("processed frames with an output lost", str(result["outputs_lost"])),
    ]
    print(f"{'measure':56s} {'value':>10s}")
    for name, value in table:
        print(f"{name:56s} {value:>10s}")
    met = growth < 5.0 and p99 <= 2.0 * processing
    print(f"targets {'met' if met else 'NOT met'}")
    print("node RSS samples (s: MB): " + ", ".join(f"{t:.0f}: {mb:.0f}" for t, mb in zip(times, rss)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
