"""Training: ``casnet train --config FILE --data DIR --out DIR``.

One process per device. Several GPUs: ``torchrun --nproc_per_node=8 -m casnet_core.cli train ...``
(DDP over NCCL; gloo on the CPU). ``solver.batch_size`` is per process; the effective batch is
batch_size x accumulation x processes (the paper: 1 x 1 x 8). The schedule is in epochs, as the paper's,
converted to optimizer steps; ``--max-iters`` stops early (for smoke runs).

Outputs in OUT: ``last.pt`` (weights, optimizer, schedule, step: what ``--resume`` needs) written
atomically every ``solver.checkpoint_every`` steps and at the end, ``model_final.pt`` at the end,
``config.yaml``, ``log.jsonl`` (one JSON row per logged step) and TensorBoard event files when
tensorboard is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from casnet_core.checkpoint import read_checkpoint, save_checkpoint
from casnet_core.config import load_config
from casnet_core.data import CityscapesDataset
from casnet_core.losses import casnet_losses
from casnet_core.model import build_casnet
from casnet_core.predictor import resolve_device

_TARGET_KEYS = ("semantic", "attributes", "thing_mask", "box_prob")


def train(
    config: dict[str, Any],
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    device: str = "auto",
    max_iters: int | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Trains CASNet; returns the path of ``model_final.pt``."""
    out_dir = Path(out_dir)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = 0, 1
    torch_device = resolve_device(device)
    if distributed:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available() and device in ("auto", "cuda"):
            torch_device = torch.device("cuda", local_rank)
            torch.cuda.set_device(torch_device)
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    is_main = rank == 0

    seed = int(config["seed"])
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)

    model = build_casnet(**config["model"]).to(torch_device)
    data_cfg, solver, loss_cfg = config["data"], config["solver"], config["loss"]
    dataset = CityscapesDataset(
        data_root,
        data_cfg["train_split"],
        mode=model.class_space.mode,
        stride=model.output_stride,
        augment=True,
        short_side=data_cfg["short_side"],
        crop_size=data_cfg["crop_size"],
        flip=data_cfg["flip"],
        center_radius=data_cfg["center_radius"],
        size_divisor=model.size_divisor,
        seed=seed,
    )
    batch, accumulation = int(solver["batch_size"]), int(solver["accumulation"])
    images_per_step = batch * accumulation * world
    steps_per_epoch = max(1, len(dataset) // images_per_step)
    total_steps = int(max_iters) if max_iters else int(solver["epochs"]) * steps_per_epoch

    optimizer = torch.optim.SGD(
        model.parameters(), lr=solver["lr"], momentum=solver["momentum"], weight_decay=solver["weight_decay"]
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[int(e) * steps_per_epoch for e in solver["lr_steps"]], gamma=solver["lr_factor"]
    )
    use_amp = bool(solver["amp"]) and torch_device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    step = 0
    last_path = out_dir / "last.pt"
    if resume:
        state = read_checkpoint(last_path, map_location=torch_device)
        if state["config"] != model.config:
            raise ValueError(f"{last_path} was trained with model {state['config']}, not {model.config}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        if is_main:
            print(f"resumed from {last_path} at step {step}")

    if distributed:
        if torch_device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DistributedDataParallel(model, device_ids=[torch_device.index] if torch_device.type == "cuda" else None)
    bare_model = model.module if distributed else model

    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    logger = _Logger(out_dir) if is_main else None

    def checkpoint(path: Path, *, full: bool) -> None:
        extra: dict[str, Any] = {"step": step, "train_config": config}
        if full:
            extra.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), scaler=scaler.state_dict())
        save_checkpoint(path, bare_model, extra=extra)

    bar = tqdm(total=total_steps, initial=step, disable=not (is_main and progress), desc="train", unit="step")
    model.train()
    while step < total_steps:
        epoch, step_in_epoch = divmod(step, steps_per_epoch)
        dataset.set_epoch(epoch)
        # Reshuffled per epoch from the seed; a resumed run skips the batches it already trained on.
        order = _epoch_order(dataset, world, rank, seed, epoch)[step_in_epoch * batch * accumulation :]
        loader = DataLoader(
            dataset, batch_size=batch, sampler=order, num_workers=int(data_cfg["workers"]), drop_last=True,
            pin_memory=torch_device.type == "cuda", persistent_workers=False,
        )
        batches = iter(loader)
        while step < total_steps and step // steps_per_epoch == epoch:
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            sums = {"loss": 0.0, "semantic": 0.0, "attributes": 0.0, "box_prob": 0.0}
            for micro in range(accumulation):
                item = next(batches)
                images = item["image"].to(torch_device, non_blocking=True)
                targets = {k: item[k].to(torch_device, non_blocking=True) for k in _TARGET_KEYS}
                # DDP all-reduces gradients only on the last micro-batch of an accumulation.
                last = not distributed or micro == accumulation - 1
                with contextlib.nullcontext() if last else model.no_sync():
                    with torch.autocast(torch_device.type, dtype=torch.float16, enabled=use_amp):
                        losses = casnet_losses(model(images), targets, **loss_cfg)
                    scaler.scale(losses["loss"] / accumulation).backward()
                for key in sums:
                    sums[key] += float(losses[key].detach()) / accumulation
            if not math.isfinite(sums["loss"]):
                raise FloatingPointError(f"loss is {sums['loss']} at step {step}; lower solver.lr or check the data")
            scaler.unscale_(optimizer)
            if solver["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), solver["grad_clip"])
            scaler.step(optimizer)
            scaler.update()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step += 1
            speed = images_per_step / (time.perf_counter() - started)
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss']:.3f}", img_s=f"{speed:.2f}")
            if logger and (step % int(solver["log_every"]) == 0 or step == total_steps or step == 1):
                logger.log({"step": step, "epoch": epoch, "lr": lr, "images_per_s": speed, **sums})
            if is_main and step % int(solver["checkpoint_every"]) == 0:
                checkpoint(last_path, full=True)
    bar.close()

    final_path = out_dir / "model_final.pt"
    if is_main:
        checkpoint(last_path, full=True)
        checkpoint(final_path, full=False)
        logger.close()
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return final_path


def _epoch_order(dataset, world: int, rank: int, seed: int, epoch: int) -> list[int]:
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    return list(sampler)


class _Logger:
    """Scalars to OUT/log.jsonl, and to TensorBoard when it is installed."""

    def __init__(self, out_dir: Path) -> None:
        self._file = open(out_dir / "log.jsonl", "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out_dir / "tensorboard"))
        except ImportError:  # tensorboard is optional
            self._tb = None

    def log(self, row: dict[str, float]) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb:
            for key, value in row.items():
                if key != "step":
                    self._tb.add_scalar(key, value, row["step"])

    def close(self) -> None:
        self._file.close()
        if self._tb:
            self._tb.close()


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train CASNet", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (see config/)")
    parser.add_argument("--data", required=True, help="dataset root in the Cityscapes layout")
    parser.add_argument("--out", required=True, help="output folder for checkpoints and logs")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--max-iters", type=int, default=None, help="stop after this many optimizer steps")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. solver.lr=0.01")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    final = train(config, args.data, args.out, device=args.device, max_iters=args.max_iters, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {final}")
    return 0
