"""Post-processing time against the forward time of the model, per device and resolution.

Targets: on each device, common attribute support takes less time than the forward pass of
`build_casnet("hrnet_w18_small")` at the same resolution; on the CPU (issue 30) at most 60 ms at 1024x2048 with
150 instances, so that it stays a small part of a frame once int8 halves the forward pass.

The inputs are ground-truth-like head outputs of a synthetic scene: random elliptic things (log-uniform
sizes, random thing classes, later ones occluding earlier ones) over road/building/sky, turned into targets
by ``casnet_core.targets.build_targets`` at stride 4 and made imperfect (noisy attributes, box
probabilities and semantic logits). "visible" counts the things left visible, "found" the instances
post-processing returns (stray noisy pixels of a thing class also make instances).

    .venv/bin/python bench/bench_postprocess.py [--sizes 512x1024 1024x2048] [--instances 10 50 150]
        [--threads N (forward)] [--postprocess-threads N (default: the Predictor's, 1 on the CPU)]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import casnet_core  # noqa: F401  (first: its OpenMP wait policy applies before torch loads OpenMP)
import numpy as np
import torch

from casnet_core.labels import class_space
from casnet_core.model import build_casnet
from casnet_core.postprocess import common_attribute_support
from casnet_core.predictor import POSTPROCESS_THREADS, cpu_threads
from casnet_core.targets import build_targets

STRIDE = 4
CPU_TARGET_S = 0.060  # post-processing at 1024x2048 with 150 instances on the CPU (issue 30)


def synthetic_scene(height: int, width: int, num_instances: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cityscapes-like ground truth (label ids, instanceIds) of random elliptic things over road/building/sky.

    Box widths are log-uniform in [16, width / 4] px, aspect 0.5..2; later things occlude earlier ones.
    """
    rng = np.random.default_rng(seed)
    label_ids = np.full((height, width), 7, dtype=np.uint8)  # road
    label_ids[: height // 3] = 23  # sky
    label_ids[height // 3 : height // 2] = 11  # building
    instance_ids = label_ids.astype(np.int32)
    thing_label_ids = class_space("panoptic").label_ids
    thing_label_ids = [thing_label_ids[c] for c in class_space("panoptic").thing_classes]
    ys, xs = np.mgrid[0:height, 0:width]
    count = {}
    for _ in range(num_instances):
        box_w = float(np.exp(rng.uniform(np.log(16), np.log(width / 4))))
        box_h = min(height * 0.6, box_w * rng.uniform(0.5, 2.0))
        cx = rng.uniform(0, width)
        cy = rng.uniform(height / 3, height)
        x0, x1 = max(0, int(cx - box_w / 2)), min(width, int(cx + box_w / 2) + 1)
        y0, y1 = max(0, int(cy - box_h / 2)), min(height, int(cy + box_h / 2) + 1)
        dx = (xs[y0:y1, x0:x1] + 0.5 - cx) / (box_w / 2)
        dy = (ys[y0:y1, x0:x1] + 0.5 - cy) / (box_h / 2)
        inside = dx**2 + dy**2 <= 1
        label = int(rng.choice(thing_label_ids))
        k = count.get(label, 0)
        count[label] = k + 1
        label_ids[y0:y1, x0:x1][inside] = label
        instance_ids[y0:y1, x0:x1][inside] = label * 1000 + k
    return label_ids, instance_ids


def synthetic_heads(height: int, width: int, num_instances: int, *, seed: int = 0,
                    device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], int]:
    """Panoptic-mode head outputs (batch 1, stride 4) of a synthetic scene, and its number of visible things.

    The targets of ``casnet_core.targets.build_targets`` made imperfect: attributes with 5 % multiplicative
    noise, box probability 0.9 on the positives and 0.02 elsewhere (times noise), semantic logits a
    one-hot of 10 plus Gaussian noise of 2.
    """
    label_ids, instance_ids = synthetic_scene(height, width, num_instances, seed=seed)
    targets = build_targets(label_ids, instance_ids, mode="panoptic", stride=STRIDE)
    generator = torch.Generator().manual_seed(seed)
    attributes = torch.from_numpy(targets["attributes"])
    attributes = attributes * (1 + 0.05 * torch.randn(attributes.shape, generator=generator))
    box_prob = torch.from_numpy(targets["box_prob"]) * 0.88 + 0.02
    box_prob = (box_prob * (1 + 0.05 * torch.randn(box_prob.shape, generator=generator))).clamp(1e-4, 1 - 1e-4)
    semantic = torch.from_numpy(targets["semantic"])
    num_classes = class_space("panoptic").num_classes
    semantic_logits = 2.0 * torch.randn((num_classes,) + semantic.shape, generator=generator)
    semantic_logits.scatter_add_(0, semantic.clamp(max=num_classes - 1)[None], torch.full((1,) + semantic.shape, 10.0))
    heads = {"semantic": semantic_logits[None], "attributes": attributes[None],
             "box_logits": torch.logit(box_prob)[None]}
    visible = len(np.unique(instance_ids[instance_ids >= 1000]))
    return {k: v.to(device) for k, v in heads.items()}, visible


def interleaved_medians(functions: list, device: torch.device, repeats: int) -> list[float]:
    """Median seconds of each function. Rounds run every function once, so that all of them see the
    same conditions (the machine may be shared) and their ratios stay fair; one warm-up round first."""
    times: list[list[float]] = [[] for _ in functions]
    for round_index in range(repeats + 1):
        for fn, samples in zip(functions, times):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if round_index:
                samples.append(time.perf_counter() - start)
    return [statistics.median(samples) for samples in times]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["512x1024", "1024x2048"])
    parser.add_argument("--instances", nargs="+", type=int, default=[10, 50, 150])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of torch for the forward pass (default: its own choice)")
    parser.add_argument("--postprocess-threads", type=int, default=POSTPROCESS_THREADS,
                        help="CPU threads of the post-processing (default: the Predictor's, %(default)s)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    space = class_space("panoptic")
    model = build_casnet(backbone="hrnet_w18_small", mode="panoptic").eval()

    print(f"torch {torch.__version__}, CPU threads: forward {torch.get_num_threads()}, "
          f"post-processing {args.postprocess_threads}")
    print(f"{'device':8} {'size':>10} {'instances':>9} {'visible':>7} {'found':>6} {'postprocess s':>14} "
          f"{'forward s':>10} {'ratio':>6}")
    failures = 0
    cpu_budget = None
    for device_name in devices:
        device = torch.device(device_name)
        model.to(device)
        for size in args.sizes:
            height, width = (int(v) for v in size.split("x"))
            images = torch.rand(1, 3, height, width, device=device) * 255
            cases = [synthetic_heads(height, width, n, seed=n, device=device) for n in args.instances]

            def postprocess(heads):
                # On the threads the Predictor gives it (one on the CPU; the forward pass keeps all).
                with cpu_threads(args.postprocess_threads, device):
                    return common_attribute_support(
                        heads["attributes"], heads["box_logits"], semantic_logits=heads["semantic"],
                        thing_classes=space.thing_classes, label_ids=space.label_ids, stride=STRIDE)

            with torch.inference_mode():
                functions = [lambda: model(images)] + [lambda heads=heads: postprocess(heads) for heads, _ in cases]
                forward_s, *post_times = interleaved_medians(functions, device, args.repeats)
                for num_instances, (heads, visible), post_s in zip(args.instances, cases, post_times):
                    found = postprocess(heads).instance_ids.numel()
                    ratio = post_s / forward_s
                    failures += int(ratio >= 1)
                    if device_name == "cpu" and (height, width, num_instances) == (1024, 2048, 150):
                        cpu_budget = post_s
                    print(f"{device_name:8} {size:>10} {num_instances:>9} {visible:>7} {found:>6} {post_s:>14.3f} "
                          f"{forward_s:>10.3f} {ratio:>6.2f}", flush=True)
    print("target met: post-processing faster than the forward pass everywhere" if failures == 0
          else f"target missed in {failures} case(s)")
    if cpu_budget is not None:
        print(f"CPU, 1024x2048, 150 instances: {cpu_budget * 1000:.1f} ms (target <= {CPU_TARGET_S * 1000:.0f} ms: "
              f"{'met' if cpu_budget <= CPU_TARGET_S else 'missed'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
