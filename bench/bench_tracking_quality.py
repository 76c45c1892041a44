"""Tracking quality on a generated drive: STQ, AQ, SQ (casnet_core.evaluation.stq) of the full oracle and of a
model, each with the instances tracked (casnet_core.tracking.Tracker, the node's defaults) and numbered per frame.

Targets (issue 29; a drive at 512x1024, 10 Hz, 60 frames, a seed never tuned on): oracle heads AQ >= 0.90 and
STQ >= 0.85. The oracle is ``casnet replay --oracle full``'s: every head from the ground truth at the model's
output stride (``casnet_core.evaluation.oracles.oracle_prediction``). "ceiling" is that oracle with each predicted
segment renamed to the ground-truth track it overlaps most: the AQ any tracker could reach on those segments
(the model's ceiling likewise, on its segments). The model runs once per frame; tracking on and off score the same
predictions.

    .venv/bin/python bench/bench_tracking_quality.py [--frames 60] [--seed 29] [--size 512x1024]
        [--checkpoint CKPT (default: the packaged model)] [--device auto] [--no-model] [--oracle-stride S]

``--oracle-stride`` builds the oracle's heads at another stride than the model's (1: exact heads), to tell what
the stride costs from what the tracker costs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from casnet_core import bags, default_model_path
from casnet_core.evaluation.oracles import oracle_prediction
from casnet_core.evaluation.stq import SegmentationTrackingQuality
from casnet_core.labels import LABEL_DIVISOR
from casnet_core.predictor import Predictor
from casnet_core.synth.drive import write_drive_bag
from casnet_core.tracking import Tracker

TARGETS = {"AQ": 0.90, "STQ": 0.85}


class PerfectAssociation:
    """The ceiling's tracker: each thing segment of a frame is numbered by the ground-truth track it overlaps most,
    the same number in every frame (its own class kept, so SQ is the prediction's); a segment on no ground-truth
    track gets a number of its own."""

    def __init__(self) -> None:
        self._numbers: dict[tuple[int, int], int] = {}  # (label id, ground-truth id or -1 - n) -> k
        self._used: dict[int, int] = {}  # label id -> numbers given
        self._strays = 0

    def __call__(self, panoptic: np.ndarray, ground_truth: np.ndarray) -> np.ndarray:
        renamed = panoptic.astype(np.int64)
        for segment in np.unique(panoptic[panoptic >= LABEL_DIVISOR]).tolist():
            inside = panoptic == segment
            ids, counts = np.unique(ground_truth[inside], return_counts=True)
            best = int(ids[counts.argmax()])
            label = segment // LABEL_DIVISOR
            if best < LABEL_DIVISOR:
                self._strays += 1
                best = -self._strays
            key = (label, best)
            if key not in self._numbers:
                number = self._used.get(label, 0)
                if number == LABEL_DIVISOR:  # a 1001st would read as the next label's id
                    raise ValueError(f"more than {LABEL_DIVISOR} segments of label id {label} to number")
                self._numbers[key], self._used[label] = number, number + 1
            renamed[inside] = label * LABEL_DIVISOR + self._numbers[key]
        return renamed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--seed", type=int, default=29)
    parser.add_argument("--size", default="512x1024")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-model", action="store_true", help="score the oracle only")
    parser.add_argument("--oracle-stride", type=int, default=None,
                        help="the oracle's heads at this stride (default: the model's output stride)")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.split("x"))
    if args.oracle_stride is not None and args.oracle_stride < 1:
        parser.error(f"--oracle-stride must be at least 1, got {args.oracle_stride}")
    if args.oracle_stride is not None and (height % args.oracle_stride or width % args.oracle_stride):
        parser.error(f"--oracle-stride {args.oracle_stride} does not divide the size {args.size}")
    checkpoint = args.checkpoint or str(default_model_path())
    predictor = Predictor.from_checkpoint(checkpoint, device=args.device)
    rows = {name: SegmentationTrackingQuality() for name in
            ("oracle, per frame", "oracle, tracked", "oracle, ceiling")}
    if not args.no_model:
        rows.update({name: SegmentationTrackingQuality() for name in
                     ("model, per frame", "model, tracked", "model, ceiling")})
    trackers = {"oracle": Tracker(), "model": Tracker()}
    ceilings = {"oracle": PerfectAssociation(), "model": PerfectAssociation()}
    oracle_stride = args.oracle_stride or predictor.model.output_stride
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        bag = write_drive_bag(Path(folder) / "drive", args.frames, seed=args.seed, height=height, width=width)
        for frame in bags.read_frames(bag):
            gt = frame.panoptic_gt
            sources = {"oracle": oracle_prediction(predictor, frame.image_rgb, gt, "full",
                                                   stride=oracle_stride)}
            if not args.no_model:
                sources["model"] = predictor.predict(frame.image_rgb)
            for source, prediction in sources.items():
                rows[f"{source}, per frame"].add(gt, prediction.panoptic)
                rows[f"{source}, tracked"].add(gt, trackers[source].track(prediction, stamp_ns=frame.stamp_ns,
                                                                               image=frame.image_rgb).panoptic)
            for source, prediction in sources.items():
                rows[f"{source}, ceiling"].add(gt, ceilings[source](prediction.panoptic, gt))
    print(f"drive: {args.frames} frames {height}x{width}, seed {args.seed}; oracle stride "
          f"{oracle_stride}; model {checkpoint} on {predictor.device}; "
          f"{time.perf_counter() - start:.0f} s")
    print(f"{'':<18} {'STQ':>6} {'AQ':>6} {'SQ':>6} {'tracks':>7}")
    missed = False
    for name, metric in rows.items():
        result = metric.result()
        print(f"{name:<18} " + " ".join(f"{100 * result[k]:>6.1f}" if result[k] is not None else f"{'-':>6}"
                                        for k in ("STQ", "AQ", "SQ")) + f" {result['tracks']:>7}")
        if name == "oracle, tracked":
            missed = any(result[k] is None or result[k] < target for k, target in TARGETS.items())
    print("targets (oracle, tracked): " + ", ".join(f"{k} >= {100 * v:.0f}" for k, v in TARGETS.items())
          + (": MISSED" if missed else ": ok"))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
