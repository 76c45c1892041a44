"""Cost of the instance tracker (casnet_core.tracking) per frame, on the CPU.

Target: <= 2 ms per frame at 50 instances (``Tracker.update`` with the frame's panoptic map and image, as the node
calls it: the association, box and mask IoU, the instances' mean colours, and the numbering). Also printed: ``update``
on boxes alone (``mask_iou`` off, no image), and
``Tracker.track``, which renumbers the (H, W) panoptic map as well (one table lookup over the pixels).

The frames: N objects of the 8 thing classes with boxes 20..200 px wide in a 512x1024 image, each moving at its
own constant velocity (bouncing at the borders), listed in a random order every frame, scores 0.3..1.0; about
2 % of them missed in a frame (the tracker keeps their tracks), so both stages and the ageing run.

    .venv/bin/python bench/bench_tracker.py [--instances 10 50 150] [--frames 300] [--size 512x1024]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from casnet_core.predictor import Instance, Prediction
from casnet_core.tracking import Tracker

THING_LABEL_IDS = (24, 25, 26, 27, 28, 31, 32, 33)
TARGET_MS = 2.0


def moving_objects(count: int, frames: int, height: int, width: int, *, seed: int = 0):
    """Yields each frame's list of Instances (numbered per frame, as the Predictor numbers them)."""
    rng = np.random.default_rng(seed)
    sizes = rng.uniform(20, 200, size=(count, 1)) * np.array([[1.0, 0.6]])
    positions = rng.uniform(0, 1, size=(count, 2)) * (np.array([width, height]) - sizes)
    velocities = rng.uniform(-8, 8, size=(count, 2))
    labels = rng.choice(THING_LABEL_IDS, size=count)
    for _ in range(frames):
        positions += velocities
        for axis, limit in ((0, width), (1, height)):
            out = (positions[:, axis] < 0) | (positions[:, axis] + sizes[:, axis] > limit)
            velocities[out, axis] *= -1
            positions[:, axis] = np.clip(positions[:, axis], 0, limit - sizes[:, axis])
        seen = np.flatnonzero(rng.random(count) > 0.02)
        rng.shuffle(seen)
        numbers: dict[int, int] = {}
        instances = []
        for i in seen.tolist():
            label = int(labels[i])
            k = numbers[label] = numbers.get(label, -1) + 1
            x0, y0 = positions[i]
            x1, y1 = positions[i] + sizes[i]
            instances.append(Instance(id=label * 1000 + k, label_id=label, class_name="",
                                      score=float(rng.uniform(0.3, 1)),
                                      box=(float(x0), float(y0), float(x1), float(y1)), area=int(sizes[i].prod()),
                                      centroid=(float(x0 + x1) / 2, float(y0 + y1) / 2)))
        yield instances


def panoptic_of(instances: list[Instance], height: int, width: int) -> np.ndarray:
    panoptic = np.full((height, width), 7, dtype=np.int32)
    for instance in instances:
        x0, y0, x1, y1 = (int(v) for v in instance.box)
        panoptic[y0:y1, x0:x1] = instance.id
    return panoptic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, nargs="+", default=[10, 50, 150])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="512x1024", help="HxW of the panoptic map renumbered by track()")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.split("x"))
    print(f"{'instances':>9} {'update p50 ms':>13} {'update p90 ms':>13} {'update mean ms':>14} "
          f"{'boxes only p50':>14} {'track p50 ms':>12} {'target':>8}")
    failed = False
    for count in args.instances:
        frames = list(moving_objects(count, args.frames, height, width))
        maps = [panoptic_of(instances, height, width) for instances in frames]  # drawn beforehand, not timed
        image = np.random.default_rng(1).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        timings = {}
        for name, mask_iou in (("update", True), ("boxes only", False)):
            tracker = Tracker(mask_iou=mask_iou)
            samples = []
            for instances, panoptic in zip(frames, maps):
                start = time.perf_counter()
                if mask_iou:
                    tracker.update(instances, panoptic=panoptic, image=image)
                else:
                    tracker.update(instances)
                samples.append((time.perf_counter() - start) * 1e3)
            timings[name] = samples[5:] or samples
        tracker = Tracker()
        track_ms = []
        for instances, panoptic in list(zip(frames, maps))[:60]:
            prediction = Prediction(panoptic, np.zeros((1, 1), np.uint8), instances)
            start = time.perf_counter()
            tracker.track(prediction, image=image)
            track_ms.append((time.perf_counter() - start) * 1e3)
        warm = timings["update"]
        p50, p90 = np.percentile(warm, [50, 90])
        verdict = ""
        if count == 50:
            verdict = "ok" if p50 <= TARGET_MS else "MISSED"
            failed |= p50 > TARGET_MS
        print(f"{count:>9} {p50:>13.3f} {p90:>13.3f} {statistics.fmean(warm):>14.3f} "
              f"{statistics.median(timings['boxes only']):>14.3f} {statistics.median(track_ms):>12.3f} {verdict:>8}")
    print(f"target: Tracker.update p50 <= {TARGET_MS} ms per frame at 50 instances")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
