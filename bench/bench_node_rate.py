"""casnet_node measured the way ros2_benchmark measures a graph: latency at a fixed input rate, and the highest
input rate the node sustains.

    .venv/bin/python bench/bench_node_rate.py [--checkpoint default|model.pt] [--device cuda] [--size 1024x2048]
                                              [--rate 30] [--seconds 20] [--probe-rates 30 45 60 90 120]
                                              [--probe-seconds 8] [--max-drop 0.05] [--json FILE]

The real node runs as its own process (``python -m casnet_ros.node``, best-effort input as from a camera, the
shipped Fast DDS shared-memory profile); this process is the camera, publishing generated street scenes
(``casnet_core.synth``) at a fixed rate, and the subscriber of ~/panoptic, ~/instances and ~/detections
(``bench_node.NodeUnderTest``). A frame is answered when all three outputs came back; it is dropped otherwise
(by DDS or by the node's newest-frame mailbox, which keeps the node real-time when the camera is faster).

1. Fixed rate (``--rate`` Hz for ``--seconds``): latency stamp -> last output received, p50 / p90 / p99 / max
   over the answered frames, and the fraction dropped.
2. Throughput: ``--probe-rates`` in increasing order, ``--probe-seconds`` each; the highest rate whose dropped
   fraction is below ``--max-drop`` (5 %), then one bisection between it and the first rate that failed. A
   probe whose camera could not publish at 95 % of the asked rate (the publisher's own limit) stops the sweep
   unjudged, and the result says so (``camera_limited``).

Prints a table; ``--json`` writes every figure (rates in Hz, latencies in ms).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_node import NodeUnderTest, open_loop  # noqa: E402  (a sibling script, not a package)

#: A probe passes when fewer than this fraction of the frames sent went unanswered (ros2_benchmark's 5 %).
DEFAULT_MAX_DROP = 0.05
#: The camera kept up when it sent at least this fraction of the frames the rate asks for.
CAMERA_KEEPS_UP = 0.95


def percentiles_ms(latencies_s: list[float]) -> dict[str, float | None]:
    """p50, p90, p99 and max of latencies in seconds, in milliseconds (None without any)."""
    if not latencies_s:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    values = np.asarray(latencies_s) * 1e3
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(values.max())}


def run_at(node: NodeUnderTest, images: list[np.ndarray], rate: float, seconds: float, settle: float) -> dict:
    """The camera at ``rate`` Hz for ``seconds``: frames sent, answered, dropped fraction, latency percentiles."""
    loop = open_loop(node, images, rate, seconds, settle)
    sent = loop["sent"]
    return {
        "rate_hz": rate,
        "seconds": loop["elapsed"],
        "sent": sent,
        "sent_rate_hz": sent / loop["elapsed"] if loop["elapsed"] > 0 else 0.0,
        "received_by_node": loop["received_by_node"],
        "processed": loop["processed"],
        "dropped_by_mailbox": loop["dropped"],
        "answered": loop["answered"],
        "drop_fraction": 1.0 - loop["answered"] / sent if sent else 1.0,
        "latency_ms": percentiles_ms(loop["latency"]),
    }


def sweep(measure, rates: list[float], *, max_drop: float = DEFAULT_MAX_DROP) -> dict:
    """The highest rate of ``rates`` (increasing) whose probe ``measure(rate)`` drops fewer than ``max_drop`` of
    the frames, refined by one bisection towards the first failing rate. ``measure`` returns ``run_at``'s dict.
    A probe whose camera sent less than ``CAMERA_KEEPS_UP`` of the rate ends the sweep unjudged
    (``camera_limited``): the publisher, not the node, was the limit."""
    probes: list[dict] = []
    best: float | None = None
    failed: float | None = None
    camera_limited = False

    def probe(rate: float) -> bool | None:
        nonlocal camera_limited
        result = measure(rate)
        probes.append(result)
        if result["sent_rate_hz"] < CAMERA_KEEPS_UP * rate:
            camera_limited = True
            result["passed"] = None
        else:
            result["passed"] = result["drop_fraction"] < max_drop
        return result["passed"]

    for rate in sorted(rates):
        passed = probe(rate)
        if passed is None:
            break
        if not passed:
            failed = rate
            break
        best = rate
    if best is not None and failed is not None:
        middle = round((best + failed) / 2, 1)
        if best < middle < failed and probe(middle):
            best = middle
    return {"max_rate_hz": best, "first_failed_rate_hz": failed, "max_drop": max_drop,
            "camera_limited": camera_limited, "probes": probes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="default", help="'default' (the shipped model) or a checkpoint")
    parser.add_argument("--device", default="cuda", help="the node's device: auto, cpu, cuda, cuda:N")
    parser.add_argument("--size", default="1024x2048", help="HxW of the camera images")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16", "int8"),
                        help="the node's precision parameter")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime"),
                        help="the node's backend parameter")
    parser.add_argument("--cuda-graph", action="store_true", help="the node's cuda_graph parameter")
    parser.add_argument("--rate", type=float, default=30.0, help="fixed input rate of the latency run, Hz")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of the latency run")
    parser.add_argument("--probe-rates", type=float, nargs="+", default=[30.0, 45.0, 60.0, 90.0, 120.0],
                        help="input rates of the throughput sweep, Hz (none: no sweep)")
    parser.add_argument("--probe-seconds", type=float, default=8.0, help="duration of each probe")
    parser.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP, help="dropped fraction a probe may have")
    parser.add_argument("--warmup-seconds", type=float, default=5.0, help="a 5 Hz run before measuring")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: from the pid)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this file")
    args = parser.parse_args(argv)
    try:
        height, width = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size is HxW, e.g. 1024x2048, got {args.size!r}")

    from casnet_core import default_model_path
    from casnet_core.synth import generate_scene

    checkpoint = default_model_path() if args.checkpoint == "default" else Path(args.checkpoint)
    if not checkpoint.is_file():
        parser.error(f"checkpoint not found: {checkpoint}")
    images = [generate_scene(seed, height=height, width=width)[0] for seed in range(3)]
    domain_id = args.domain_id if args.domain_id is not None else 1 + os.getpid() % 100
    with tempfile.TemporaryDirectory(prefix="bench_node_rate_") as tmp:
        node = NodeUnderTest(checkpoint, args.device, "best_effort", domain_id, Path(tmp),
                             ("-p", f"precision:={args.precision}", "-p", f"cuda_graph:={str(args.cuda_graph).lower()}",
                              "-p", f"backend:={args.backend}"))
        try:
            node.wait_until_up()
            settle = 2.0
            run_at(node, images, 5.0, args.warmup_seconds, settle)  # allocator, cudnn autotune, DDS buffers
            fixed = run_at(node, images, args.rate, args.seconds, settle)
            throughput = sweep(lambda rate: run_at(node, images, rate, args.probe_seconds, settle),
                               args.probe_rates, max_drop=args.max_drop) if args.probe_rates else None
            configured = [line for line in node.process.output().splitlines() if "configured:" in line]
        finally:
            node.close()
    result = {"checkpoint": str(checkpoint), "device": args.device, "size": [height, width],
              "precision": args.precision, "backend": args.backend, "cuda_graph": args.cuda_graph,
              "node_log_configured": configured[-1] if configured else "",
              "load_average": list(os.getloadavg()), "fixed_rate": fixed, "throughput": throughput}
    latency = fixed["latency_ms"]
    print(f"casnet_node, {height}x{width}, device {args.device}, precision {args.precision}, cuda_graph "
          f"{args.cuda_graph}, machine load {os.getloadavg()[0]:.1f}")
    print(f"  at {args.rate:g} Hz for {args.seconds:g} s: sent {fixed['sent']}, answered {fixed['answered']}, "
          f"dropped {100 * fixed['drop_fraction']:.1f} %")
    if latency["p50"] is not None:
        print(f"  latency stamp -> last output, ms: p50 {latency['p50']:.1f}  p90 {latency['p90']:.1f}  "
              f"p99 {latency['p99']:.1f}  max {latency['max']:.1f}")
    if throughput is not None:
        for row in throughput["probes"]:
            print(f"  probe {row['rate_hz']:g} Hz (camera sent {row['sent_rate_hz']:.1f} Hz): dropped "
                  f"{100 * row['drop_fraction']:.1f} % -> "
                  + {True: "pass", False: "FAIL", None: "camera too slow, not judged"}[row["passed"]])
        print(f"  highest rate with < {100 * args.max_drop:g} % dropped: {throughput['max_rate_hz']} Hz"
              + (" (the camera could not publish faster)" if throughput["camera_limited"] else ""))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
