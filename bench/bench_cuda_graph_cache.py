"""CUDA-graph captures of a batched node: how often the Predictor's graph cache captures again (issue 31, item 4).

A batched node with N cameras runs, per step, the frames of the cameras that had one: batch sizes 1..N in any
order. Each capture costs three warm-up forwards, a synchronize and an empty_cache; a cache that thrashes
captures on most steps. Printed: captures per STEPS steps with batch sizes drawn uniformly from 1..N (seeded),
for the cache of d6ec04d ("before": one graph per exact batch shape, 4 kept, the oldest inserted dropped; its
policy replayed here on shapes alone) and for casnet_core.cuda_graphs ("after": batches padded to a power of
two, 4 kept, least recently used dropped).

With CUDA (--device cuda[:N]) "after" runs the real Predictor (cuda_graph=True, a small random-weights CASNet at
--height x --width) and counts its real captures, with the seconds per step; without CUDA it runs the real
cache with a capture that only counts (no graph is made), which gives the same counts.

    python bench/bench_cuda_graph_cache.py [--cameras 6] [--steps 1000] [--device cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch

from casnet_core.cuda_graphs import MAX_CUDA_GRAPHS, CapturedGraph, CudaGraphs


def batch_sizes(steps: int, cameras: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(n) for n in rng.integers(1, cameras + 1, steps)]


def captures_before(sizes: list[int], max_graphs: int = MAX_CUDA_GRAPHS) -> int:
    """The cache of d6ec04d: keyed by the exact batch shape, the oldest inserted dropped first."""
    cache: dict[int, None] = {}
    captures = 0
    for size in sizes:
        if size not in cache:
            if len(cache) >= max_graphs:
                del cache[next(iter(cache))]
            cache[size] = None
            captures += 1
    return captures


def captures_after_counted(sizes: list[int]) -> int:
    """casnet_core.cuda_graphs.CudaGraphs with a capture that only counts (no CUDA needed)."""

    def capture(batch: torch.Tensor) -> CapturedGraph:
        class NoGraph:
            def replay(self) -> None:
                pass

        return CapturedGraph(batch.clone(), NoGraph(), {"out": batch.clone()})

    graphs = CudaGraphs(torch.device("cuda", 0), capture)
    real_device = torch.cuda.device
    torch.cuda.device = lambda device: contextlib.nullcontext()  # no CUDA here: nothing to make current
    try:
        for size in sizes:
            graphs(torch.zeros(size, 3, 4, 4))
    finally:
        torch.cuda.device = real_device
    return graphs.captures


def captures_after_on_cuda(sizes: list[int], device: str, height: int, width: int) -> tuple[int, float]:
    from casnet_core.model import build_casnet
    from casnet_core.predictor import Predictor

    torch.manual_seed(0)
    model = build_casnet("hrnet_w18_small", mode="panoptic", fusion_channels=32, head_channels=16).eval()
    predictor = Predictor(model, device=device, backend="torch", cuda_graph=True)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(max(sizes))]
    start = time.perf_counter()
    for size in sizes:
        predictor.predict_batch(images[:size])
    return predictor._graphs.captures, (time.perf_counter() - start) / len(sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=6)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cuda or cuda:N runs the real Predictor; cpu counts only")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    args = parser.parse_args()
    sizes = batch_sizes(args.steps, args.cameras, args.seed)
    print(f"{args.cameras} cameras, {args.steps} batched steps, batch sizes uniform in 1..{args.cameras} "
          f"(seed {args.seed}), {MAX_CUDA_GRAPHS} graphs kept")
    print(f"  before (exact shapes, oldest inserted dropped): {captures_before(sizes)} captures")
    if args.device.startswith("cuda"):
        captures, seconds = captures_after_on_cuda(sizes, args.device, args.height, args.width)
        print(f"  after (powers of two, LRU), real Predictor on {args.device} at {args.height}x{args.width}: "
              f"{captures} captures, {1e3 * seconds:.2f} ms per step")
    else:
        print(f"  after (powers of two, LRU), the cache with counted captures: {captures_after_counted(sizes)} captures")


if __name__ == "__main__":
    main()
