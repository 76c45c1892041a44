"""Forward time and training throughput of CASNet per configuration and input size.

    .venv/bin/python bench/bench_model.py [--configs config/a.yaml ...] [--sizes 512x1024 1024x2048]
                                          [--devices cpu cuda] [--backends torch onnxruntime] [--iters 3]
                                          [--no-train]

Forward: batch 1, inference mode (fp16 autocast on CUDA when the config enables amp). With the
onnxruntime backend: the network exported to ONNX (``casnet_core.export``), run by onnxruntime in float32
on the device's provider, inputs and outputs bound to torch memory as the Predictor does.
Training (torch backend only): one optimizer step of batch 1 (forward, losses, backward, SGD) on random
targets, images/s.
Prints one row per (config, size, device, backend); the first iteration of each is a warm-up and not counted.
"""

from __future__ import annotations

import argparse
import time

import torch

from casnet_core.config import load_config
from casnet_core.labels import NUM_THING_CLASSES
from casnet_core.losses import casnet_losses
from casnet_core.model import build_casnet


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, iters: int, device: torch.device) -> float:
    fn()  # warm-up: allocator, cudnn autotune, lazy inits
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / iters


def bench_onnxruntime(config_path: str, height: int, width: int, device: torch.device, iters: int) -> dict[str, float]:
    """Forward time of the ONNX export of the config's model under onnxruntime."""
    from casnet_core.export import OnnxNetwork, export_onnx

    model = build_casnet(**load_config(config_path)["model"]).eval()
    network = OnnxNetwork(export_onnx(model), device=device)
    images = torch.rand(1, 3, height, width, device=device) * 255
    return {"forward_s": _timed(lambda: network(images), iters, device), "train_images_per_s": float("nan"),
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def bench(config_path: str, height: int, width: int, device: torch.device, iters: int,
          train: bool = True) -> dict[str, float]:
    config = load_config(config_path)
    model = build_casnet(**config["model"]).to(device)
    amp = bool(config["solver"]["amp"]) and device.type == "cuda"
    images = torch.rand(1, 3, height, width, device=device) * 255
    s = model.output_stride
    h, w = height // s, width // s
    targets = {
        "semantic": torch.randint(0, model.class_space.num_classes, (1, h, w), device=device),
        "attributes": torch.rand(1, 4, h, w, device=device) * 20,
        "thing_mask": torch.rand(1, h, w, device=device) > 0.7,
        "box_prob": (torch.rand(1, NUM_THING_CLASSES, h, w, device=device) > 0.99).float(),
    }
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def forward() -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            model(images)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = casnet_losses(model(images), targets)["loss"]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    model.eval()
    forward_s = _timed(forward, iters, device)
    model.train()
    step_s = _timed(train_step, iters, device) if train else float("inf")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"forward_s": forward_s, "train_images_per_s": 1.0 / step_s,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["config/synthetic_cpu.yaml", "config/cityscapes_hrnet_w48.yaml"])
    parser.add_argument("--sizes", nargs="+", default=["512x1024", "1024x2048"])
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--backends", nargs="+", choices=("torch", "onnxruntime"), default=["torch"])
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--no-train", action="store_true", help="forward only, no training step")
    args = parser.parse_args()
    versions = f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    if "onnxruntime" in args.backends:
        import onnxruntime

        versions += f", onnxruntime {onnxruntime.__version__}"
    print(versions + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print(f"{'config':36s} {'size':>10s} {'device':>6s} {'backend':>11s} {'params(M)':>9s} {'forward(s)':>10s} "
          f"{'train(img/s)':>12s}")
    for device_name in args.devices:
        for config_path in args.configs:
            for size in args.sizes:
                height, width = (int(v) for v in size.split("x"))
                for backend in args.backends:
                    if backend == "torch":
                        row = bench(config_path, height, width, torch.device(device_name), args.iters,
                                    train=not args.no_train)
                    else:
                        row = bench_onnxruntime(config_path, height, width, torch.device(device_name), args.iters)
                    images_per_s = row["train_images_per_s"]
                    train = f"{images_per_s:12.3f}" if images_per_s > 0 else f"{'-':>12s}"  # nan, 0: not run
                    print(f"{config_path:36s} {size:>10s} {device_name:>6s} {backend:>11s} {row['params_m']:9.1f} "
                          f"{row['forward_s']:10.3f} {train}", flush=True)


if __name__ == "__main__":
    main()
