"""Per-frame time of the Predictor (what the node runs): preprocess, forward, post-processing, total.

    .venv/bin/python bench/bench_predictor.py [--models default hrnet_w18_small_v2 ...] [--size 1024x2048]
                                              [--device auto|cpu|cuda] [--precisions fp32 fp16 bf16]
                                              [--cuda-graph] [--frames 20]

A model is ``default`` (the shipped checkpoint), a checkpoint path, or a timm backbone name (random
weights: the time does not depend on them). The image is a generated street scene resized to the size
asked, so the post-processing sees a realistic number of instances with a trained model. Each precision
runs with the torch backend (the weights cast, channels_last on CUDA); ``--cuda-graph`` adds a row per
precision with the forward pass replayed as a CUDA graph (CUDA only). Prints one row per (model,
precision) with medians over the frames after two warm-ups.
Targets (issue 15, H200, default model, 1024x2048): total <= 16.7 ms (>= 60 FPS), half precision faster
than fp32, post-processing <= 3 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

import cv2
import torch

from casnet_core import default_model_path
from casnet_core.model import build_casnet
from casnet_core.predictor import PRECISIONS, Predictor
from casnet_core.synth import generate_scene


def make_predictor(name: str, device: str, precision: str, cuda_graph: bool) -> Predictor:
    options = dict(device=device, precision=precision, cuda_graph=cuda_graph)
    if name == "default":
        return Predictor.from_checkpoint(str(default_model_path()), backend="torch", **options)
    if Path(name).is_file():
        return Predictor.from_checkpoint(name, backend="torch", **options)
    return Predictor(build_casnet(backbone=name), **options)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["default", "hrnet_w18_small_v2"])
    parser.add_argument("--size", default="1024x2048")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "bf16"], choices=list(PRECISIONS))
    parser.add_argument("--cuda-graph", action="store_true", help="also each precision with a CUDA graph")
    parser.add_argument("--frames", type=int, default=20)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    scene, _, _ = generate_scene(7, 512, 1024)
    image = cv2.resize(scene, (width, height), interpolation=cv2.INTER_LINEAR)

    device_name = "cpu"
    print(f"torch {torch.__version__}, {args.size}, CPU threads {torch.get_num_threads()}")
    print(f"{'model':24} {'precision':9} {'device':28} {'preproc ms':>10} {'forward ms':>10} {'post ms':>8} "
          f"{'total ms':>9} {'FPS':>6} {'instances':>9}")
    for model_name in args.models:
        runs = [(precision, False) for precision in args.precisions]
        runs += [(precision, True) for precision in args.precisions] if args.cuda_graph else []
        for precision, cuda_graph in runs:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # cuda_graph off the GPU: the row is skipped below
                predictor = make_predictor(model_name, args.device, precision, cuda_graph)
            if cuda_graph and not predictor.cuda_graph:
                continue  # a CUDA path
            label = precision + ("+graph" if cuda_graph else "")
            device = predictor.device
            device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
            rows = {"preprocess": [], "forward": [], "postprocess": [], "total": []}
            found = 0
            for frame in range(args.frames + 2):
                prediction = predictor.predict(image)
                if frame < 2:
                    continue  # warm-up: allocator, cudnn autotune, lazy inits
                for key in ("preprocess", "forward", "postprocess"):
                    rows[key].append(prediction.timings[key] * 1e3)
                rows["total"].append(sum(prediction.timings[k] for k in ("preprocess", "forward", "postprocess")) * 1e3)
                found = len(prediction.instances)
            median = {key: statistics.median(values) for key, values in rows.items()}
            print(f"{model_name[-24:]:24} {label:9} {device_name[:28]:28} {median['preprocess']:>10.1f} "
                  f"{median['forward']:>10.1f} {median['postprocess']:>8.1f} {median['total']:>9.1f} "
                  f"{1e3 / median['total']:>6.1f} {found:>9}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
