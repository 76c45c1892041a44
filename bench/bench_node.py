"""casnet_node against the Predictor alone, on the same images: the cost of ROS is the difference.

    .venv/bin/python bench/bench_node.py [--checkpoint model.pt] [--device cpu|cuda|auto]
                                         [--size 1024x2048] [--frames 8] [--rate 2] [--seconds 20]
                                         [--input-reliability best_effort|reliable]

Without --checkpoint a random-weights CASNet of the default configuration (hrnet_w18_small) is
built and saved to a temporary file: timing does not depend on what the weights learnt, except for
the number of instances (reported; random weights give up to max_instances per frame).

The node runs as its own process (python -m casnet_ros.node, best-effort input as from a camera);
this process is the camera and the subscriber of ~/panoptic, ~/instances and ~/detections (what a
tracker or planner reads). Both use the shipped Fast DDS profile (config/fastdds_shm.xml),
discovery is limited to this host, with a ROS_DOMAIN_ID of their own. The subscriptions are raw
(serialized bytes; only the header is decoded): "received" is when DDS handed the sample to the
subscriber, whatever language the subscriber is written in. What a Python subscriber then spends
turning the bytes into rclpy messages is reported on its own (a C++ subscriber spends ~1 ms).

On generated street scenes (casnet_core.synth) at --size:

1. Paired, closed loop. For each frame: Predictor.predict on it in a thread of this process (as
   the node runs it; the node idles meanwhile), then the same frame through the node, the next sent
   once all its outputs came back. Reported, medians over the frames: the Predictor alone; the
   node's split (its /diagnostics of exactly that frame):
     in        stamp -> the node's subscription callback (the camera's publish call, DDS transfer,
               deserialisation; the camera's share is reported too)
     decode    the image message -> RGB array
     predict   the Predictor inside the node (preprocess + forward + postprocess)
     build     the output messages
     publish   the publish calls
     delivery  published -> the last of the three outputs received here
   and the overhead = stamp -> received - the node's own Predictor time (target <= 25 ms).
2. Open loop: a camera at --rate Hz for --seconds: frames sent, frames the node received (the
   difference was lost by DDS), processed, dropped by the node's newest-frame mailbox (by design,
   when the camera is faster than the Predictor), outputs lost, latency stamp -> received.
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

from casnet_ros.client import Client, diagnostic_values, stamp_key
from casnet_ros.live_replay import NodeProcess

OUTPUTS = ("panoptic", "instances", "detections")
PREDICT_STAGES = ("preprocess", "forward", "postprocess")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def image_message(rgb: np.ndarray, header):
    """A camera's rgb8 sensor_msgs/Image (array.array: the setter takes it without a per-byte check)."""
    from sensor_msgs.msg import Image

    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0,
                step=rgb.shape[1] * 3)
    msg.data = array.array("B", np.ascontiguousarray(rgb).tobytes())
    if header is not None:
        msg.header = header
    return msg


def predict_in_thread(predictor, image: np.ndarray):
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


class NodeUnderTest:
    """casnet_node as its own process, and this process as its camera and as the subscriber of OUTPUTS."""

    def __init__(self, checkpoint: Path, device: str, reliability: str, domain_id: int, log_dir: Path,
                 extra_parameters: tuple[str, ...] = ()) -> None:
        from casnet_msgs.msg import PanopticFrame
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from vision_msgs.msg import Detection2DArray

        self.process = NodeProcess(["-p", f"checkpoint:={checkpoint}", "-p", f"device:={device}",
                                    "-p", "diagnostics_period:=0.25", "-p", f"input_reliability:={reliability}",
                                    *extra_parameters],
                                   domain_id=domain_id, log_path=log_dir / "casnet_node.log")
        self.client = Client(domain_id, node_name="casnet_bench")
        self.types = {"panoptic": Image, "instances": PanopticFrame, "detections": Detection2DArray}
        self.received: dict[str, list[tuple[float, tuple, bytes]]] = {name: [] for name in OUTPUTS}
        for name in OUTPUTS:
            self.client.node.create_subscription(self.types[name], f"/casnet/{name}", self._keeper(name), 10, raw=True)
        self.client.record("/diagnostics", DiagnosticArray, key="diagnostics")
        policy = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
        self.publisher = self.client.node.create_publisher(Image, "/casnet/image",
                                                           QoSProfile(depth=1, reliability=policy))

    def _keeper(self, name: str):
        from rclpy.serialization import deserialize_message
        from std_msgs.msg import Header

        store = self.received[name]

        def keep(serialized: bytes) -> None:
            # Every output starts with its std_msgs/Header: decode that prefix only.
            header = deserialize_message(serialized[:256], Header)
            store.append((time.time(), stamp_key(header), serialized))
            del store[:-64]  # keep the recent ones: the payloads are megabytes

        return keep

    def deserialization_ms(self) -> dict[str, float]:
        """What a Python subscriber spends turning the last received sample of each output into a message."""
        from rclpy.serialization import deserialize_message

        times = {}
        for name in OUTPUTS:
            serialized = self.received[name][-1][2]
            start = time.perf_counter()
            deserialize_message(serialized, self.types[name])
            times[name] = 1e3 * (time.perf_counter() - start)
        return times

    def wait_until_up(self, timeout: float = 300.0) -> None:
        client = self.client
        if not client.spin_until(lambda: self.publisher.get_subscription_count() > 0
                                 and all(client.node.count_publishers(f"/casnet/{n}") for n in OUTPUTS)
                                 and self.diagnostics(), timeout):
            raise RuntimeError(f"casnet_node did not come up:\n{self.process.output()}")

    def header(self):
        from std_msgs.msg import Header

        return Header(stamp=self.client.node.get_clock().now().to_msg(), frame_id="bench")

    def arrivals(self, key, name: str) -> list[float]:
        return [arrival for arrival, received_key, _ in self.received[name] if received_key == key]

    def diagnostics(self) -> list[dict[str, str]]:
        return [d for d in (diagnostic_values(m) for m in self.client.messages("diagnostics")) if d]

    def close(self) -> None:
        self.client.close()
        self.process.stop()


def closed_loop(node: NodeUnderTest, predictor, images: list[np.ndarray], frames: int) -> list[dict]:
    """Paired frames (see the module docstring); frame 0 warms both up and is not counted."""
    rows = []
    for index in range(frames + 1):
        image = images[index % len(images)]
        prediction, alone = predict_in_thread(predictor, image)
        processed_before = int(node.diagnostics()[-1]["frames_processed"])

        # Stamped when published, as a driver stamps its frame (its pixels are ready by then).
        msg = image_message(image, None)
        msg.header = node.header()
        key, sent = stamp_key(msg.header), _seconds(msg.header.stamp)
        publish_start = time.perf_counter()
        node.publisher.publish(msg)
        camera_publish = time.perf_counter() - publish_start
        if not node.client.spin_until(lambda: all(node.arrivals(key, n) for n in OUTPUTS), timeout=300):
            raise RuntimeError(f"no answer to frame {index}:\n{node.process.output()}")
        received = max(node.arrivals(key, n)[0] for n in OUTPUTS) - sent
        # The node's own numbers for this frame: the diagnostics whose window holds it.
        node.client.spin_until(
            lambda: any(int(d["frames_processed"]) > processed_before for d in node.diagnostics()), 5)
        report = next(d for d in node.diagnostics() if int(d["frames_processed"]) > processed_before)
        stages = {k[5:-3]: float(v) / 1e3 for k, v in report.items() if k.startswith("time_")}
        if index:
            rows.append({"alone": alone, "alone_stages": dict(prediction.timings),
                         "instances": len(prediction.instances), "received": received,
                         "published": float(report["latency_ms_last"]) / 1e3, "stages": stages,
                         "camera_publish": camera_publish})
    return rows


def open_loop(node: NodeUnderTest, images: list[np.ndarray], rate: float, seconds: float, settle: float) -> dict:
    """A camera at ``rate`` Hz for ``seconds``; then ``settle`` seconds for the frames still in flight."""
    before = node.diagnostics()[-1]
    arrivals: dict[str, dict[tuple, float]] = {name: {} for name in OUTPUTS}
    sent_keys = []
    start = time.monotonic()
    messages = [image_message(image, None) for image in images]
    sent: set[tuple] = set()

    def collect() -> None:
        for name in OUTPUTS:
            arrivals[name].update((key, arrival) for arrival, key, _ in node.received[name] if key in sent)

    while time.monotonic() - start < seconds:
        msg = messages[len(sent_keys) % len(messages)]
        msg.header = node.header()
        sent_keys.append(stamp_key(msg.header))
        sent.add(sent_keys[-1])
        node.publisher.publish(msg)
        node.client.spin_for(max(start + len(sent_keys) / rate - time.monotonic(), 0.0))
        collect()
    elapsed = time.monotonic() - start
    node.client.spin_for(settle)
    collect()
    after = node.diagnostics()[-1]
    answered = arrivals
    processed = int(after["frames_processed"]) - int(before["frames_processed"])
    complete = set.intersection(*(set(a) for a in answered.values()))
    stamps = {key: key[0] + key[1] * 1e-9 for key in complete}
    return {
        "sent": len(sent_keys), "elapsed": elapsed,
        "received_by_node": int(after["frames_received"]) - int(before["frames_received"]),
        "processed": processed,
        "dropped": int(after["frames_dropped"]) - int(before["frames_dropped"]),
        "answered": len(complete),
        "outputs_lost": processed - len(complete),
        "latency": [max(answered[n][key] for n in OUTPUTS) - stamps[key] for key in complete],
    }


def report(rows: list[dict], loop: dict, device: str, height: int, width: int, rate: float, seconds: float,
           reliability: str, deserialization: dict[str, float]) -> None:
    def median_ms(values) -> str:
        return f"{1e3 * _median(list(values)):.1f}"

    def predict(row) -> float:
        return sum(row["stages"].get(s, 0.0) for s in PREDICT_STAGES)

    print(f"\ncasnet_node vs Predictor alone: {height}x{width}, device {device}, input {reliability}, "
          f"{len(rows)} paired frames, instances per frame {statistics.mean(r['instances'] for r in rows):.0f}; "
          f"outputs {', '.join(OUTPUTS)}; medians over the frames")
    table = [
        ("Predictor.predict alone: ms/frame", median_ms(r["alone"] for r in rows)),
        *[(f"  stage {name}: ms", median_ms(r["alone_stages"][name] for r in rows)) for name in PREDICT_STAGES],
        ("node split: in (stamp -> callback): ms", median_ms(r["stages"].get("receive", 0.0) for r in rows)),
        ("  of which the camera's own publish call (rclpy, Python): ms", median_ms(r["camera_publish"] for r in rows)),
        ("node split: decode: ms", median_ms(r["stages"].get("decode", 0.0) for r in rows)),
        ("node split: wait (callback -> worker): ms", median_ms(r["stages"].get("wait", 0.0) for r in rows)),
        ("node split: predict (the node's Predictor, its own stages): ms", median_ms(predict(r) for r in rows)),
        ("  predict call, wall: ms", median_ms(r["stages"].get("predict", 0.0) for r in rows)),
        ("node split: build: ms", median_ms(r["stages"].get("build", 0.0) for r in rows)),
        ("node split: publish: ms", median_ms(r["stages"].get("publish", 0.0) for r in rows)),
        ("node split: delivery (published -> received): ms", median_ms(r["received"] - r["published"] for r in rows)),
        ("  delivery, max: ms", f"{1e3 * max(r['received'] - r['published'] for r in rows):.1f}"),
        ("stamp -> received by the subscriber: ms", median_ms(r["received"] for r in rows)),
        ("OVERHEAD: stamp -> received - the node's Predictor time: ms",
         median_ms(r["received"] - predict(r) for r in rows)),
        ("  overhead vs the Predictor alone (paired): ms", median_ms(r["received"] - r["alone"] for r in rows)),
        *[(f"a Python subscriber's deserialization of ~/{name}: ms", f"{ms:.1f}")
          for name, ms in deserialization.items()],
        (f"open loop, camera at {rate:g} Hz for {seconds:g} s: frames sent", str(loop["sent"])),
        ("open loop: frames received by the node (lost by DDS: the rest)", str(loop["received_by_node"])),
        ("open loop: frames processed", str(loop["processed"])),
        ("open loop: frames dropped by the newest-frame mailbox", str(loop["dropped"])),
        ("open loop: processed frames with an output lost", str(loop["outputs_lost"])),
        ("open loop: stamp -> received, median: ms", median_ms(loop["latency"])),
        ("open loop: stamp -> received, max: ms", f"{1e3 * max(loop['latency']):.1f}" if loop["latency"] else "n/a"),
    ]
    print(f"{'measure':64s} {'value':>10s}")
    for name, value in table:
        print(f"{name:64s} {value:>10s}")


def random_checkpoint(directory: Path) -> Path:
    import torch

    from casnet_core.checkpoint import save_checkpoint
    from casnet_core.model import build_casnet

    torch.manual_seed(0)
    return save_checkpoint(directory / "random.pt", build_casnet("hrnet_w18_small").eval())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="CASNet checkpoint (default: random weights)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (node and Predictor)")
    parser.add_argument("--size", default="1024x2048", help="HxW of the images")
    parser.add_argument("--frames", type=int, default=8, help="paired frames of the closed loop")
    parser.add_argument("--rate", type=float, default=2.0, help="camera rate of the open-loop run, Hz")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of the open-loop run")
    parser.add_argument("--input-reliability", choices=("best_effort", "reliable"), default="best_effort")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: from the pid)")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))

    from casnet_core.predictor import Predictor
    from casnet_core.synth import generate_scene

    images = [generate_scene(seed, height=height, width=width)[0] for seed in range(3)]
    domain_id = args.domain_id if args.domain_id is not None else 1 + os.getpid() % 100
    with tempfile.TemporaryDirectory(prefix="bench_node_") as tmp:
        checkpoint = args.checkpoint or random_checkpoint(Path(tmp))
        predictor = Predictor.from_checkpoint(checkpoint, device=args.device)
        node = NodeUnderTest(checkpoint, args.device, args.input_reliability, domain_id, Path(tmp))
        try:
            node.wait_until_up()
            rows = closed_loop(node, predictor, images, args.frames)
            settle = 2.0 * _median([row["received"] for row in rows]) + 1.0
            loop = open_loop(node, images, args.rate, args.seconds, settle)
            deserialization = node.deserialization_ms()
        finally:
            node.close()
    print(f"machine load average (1, 5, 15 min): {os.getloadavg()}")
    report(rows, loop, str(predictor.device), height, width, args.rate, args.seconds, args.input_reliability,
           deserialization)
    return 0


if __name__ == "__main__":
    sys.exit(main())
