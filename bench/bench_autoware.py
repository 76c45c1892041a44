"""Time of the node's Autoware outputs per frame, on a generated street scene's panoptic map.

Target: ``rle_encode`` of a 1024x2048 mask in well under 5 ms on the CPU (the issue asks for it; the mask is built
once per frame beside inference). Also timed: the class map over the panoptic ids, the instance mask, and the
whole ~/mask, ~/rois and ~/instance_mask messages with rclpy's classes (the node's ``autoware_outputs``).

    .venv/bin/python bench/bench_autoware.py [--size 1024x2048] [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np

from casnet_core import autoware
from casnet_core.labels import LABEL_DIVISOR
from casnet_core.synth import generate_scene


def milliseconds(function: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, minimum) milliseconds of ``function()`` over ``repeats`` calls after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1024x2048", help="HxW of the scene")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))

    _, _, panoptic = generate_scene(0, height=height, width=width)
    instance_ids = [int(i) for i in np.unique(panoptic) if i >= LABEL_DIVISOR]
    mask = autoware.panoptic_to_mask_classes(panoptic)
    encoded = autoware.rle_encode(mask)
    print(f"scene {height}x{width}: {len(instance_ids)} instances, {len(encoded) // 5} runs "
          f"({len(encoded)} bytes for {mask.size} pixels)")

    rows = {
        "rle_encode (target: well under 5 ms at 1024x2048)": lambda: autoware.rle_encode(mask),
        "panoptic_to_mask_classes": lambda: autoware.panoptic_to_mask_classes(panoptic, max(instance_ids, default=0)),
        "instance_index_mask": lambda: autoware.instance_index_mask(panoptic, instance_ids),
    }
    try:
        from types import SimpleNamespace

        from std_msgs.msg import Header

        from casnet_core.predictor import Prediction
        from casnet_ros.autoware import autoware_outputs

        instances = []
        for index, instance_id in enumerate(instance_ids):
            ys, xs = np.nonzero(panoptic == instance_id)
            instances.append(SimpleNamespace(id=instance_id, label_id=instance_id // LABEL_DIVISOR, score=0.5,
                                             box=(xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0)))
        prediction = Prediction(panoptic=panoptic, semantic=np.zeros_like(mask), instances=instances)
        for output in ("mask", "rois", "instance_mask"):
            rows[f"~/{output} message (rclpy)"] = lambda o=output: autoware_outputs(prediction, Header(), [o])
    except ImportError as error:  # no ROS wheels or interfaces in this venv: the casnet_core parts only
        print(f"(messages not timed: {error})")

    for name, function in rows.items():
        median, best = milliseconds(function, args.repeats)
        print(f"{name:55s} median {median:7.2f} ms   min {best:7.2f} ms")


if __name__ == "__main__":
    main()
