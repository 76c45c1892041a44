"""The state of one training process (model, optimizer, schedule, data, logging), built from the config; the
rooms of the run (loop, checkpointing, schedule, validation) import it, and it imports none of them."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from casnet_core.errors import one_line
from casnet_core.model import build_casnet
from casnet_core.training.fake_quant import attach_fake_quant
from casnet_core.training.run_log import RunLog
from casnet_core.training.setup import TrainingError, training_dataset, validation_samples


def parameter_groups(model: torch.nn.Module, solver: dict[str, Any]) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: one at ``solver.lr``; with ``backbone_lr_factor`` != 1, the new layers
    first (the logged lr is theirs) and the backbone's second, at that fraction of it."""
    factor = solver["backbone_lr_factor"]
    if factor == 1.0:  # one group: the optimizer state of runs before the factor existed
        return [{"params": list(model.parameters())}]
    backbone = {id(p) for p in model.backbone.parameters()}
    return [{"params": [p for p in model.parameters() if id(p) not in backbone]},
            {"params": list(model.backbone.parameters()), "lr": solver["lr"] * factor}]


def build_optimizer(parameters, solver: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer of ``solver.optimizer``: SGD with momentum (the paper's) or AdamW (beta1 = momentum).
    ``parameters``: tensors or parameter groups (``parameter_groups``)."""
    if solver["optimizer"] == "adamw":
        return torch.optim.AdamW(parameters, lr=solver["lr"], betas=(solver["momentum"], 0.999),
                                 weight_decay=solver["weight_decay"])
    return torch.optim.SGD(parameters, lr=solver["lr"], momentum=solver["momentum"],
                           weight_decay=solver["weight_decay"])


def build_scheduler(optimizer: torch.optim.Optimizer, solver: dict[str, Any],
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The lr schedule, stepped once per optimizer step: x ``lr_factor`` at each epoch of ``lr_steps``, after a
    linear warm-up from ``warmup_factor`` x lr over ``warmup_steps`` steps when there is one (a fresh optimizer on
    trained weights, as with --init and AdamW, otherwise takes full-size steps on moments it has not estimated
    yet, and undoes much of what the weights knew)."""
    steps = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[e * steps_per_epoch for e in solver["lr_steps"]], gamma=solver["lr_factor"])
    if not solver["warmup_steps"]:
        return steps  # the schedule (and last.pt's scheduler state) of runs before the warm-up existed
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=solver["warmup_factor"],
                                               total_iters=solver["warmup_steps"])
    return torch.optim.lr_scheduler.ChainedScheduler([warmup, steps])


class TrainingRun:
    """The state of one training process: model, optimizer, schedule, data, logging. The rooms around it
    (``loop``, ``checkpointing``, ``schedule``, ``validation``) read and change it; it imports none of them."""

    def __init__(self, config: dict[str, Any], data_root: str | os.PathLike, val_root: str | os.PathLike,
                 out_dir: Path, device: torch.device, *, max_iters: int | None, progress: bool) -> None:
        self.config, self.out_dir, self.device, self.progress = config, out_dir, device, progress
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.is_main = self.rank == 0
        self.seed = config["seed"]
        data_cfg, solver = config["data"], config["solver"]
        self.solver = solver

        random.seed(self.seed + self.rank)
        np.random.seed(self.seed + self.rank)
        torch.manual_seed(self.seed + self.rank)
        try:
            self.model = build_casnet(**config["model"]).to(device)
        except (OSError, RuntimeError, ValueError) as error:  # unknown backbone, unreadable weights file
            raise TrainingError(f"cannot build the model {config['model']}: {one_line(error)}") from error
        if solver["fake_quant"]:
            attach_fake_quant(self.model)
        # channels_last: the layout tensor-core convolutions read without transposes (CUDA only).
        self.channels_last = solver["channels_last"] and (device.type == "cuda" or solver["channels_last_cpu"])
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop size: the fastest kernels, chosen once
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.bare_model = self.model
        self.dataset = training_dataset(data_root, config, self.model, seed=self.seed, device=device)
        if data_cfg["cache"]:
            self.dataset.preload()  # before the DataLoader workers fork: they share the decoded scenes
        self.val_samples = validation_samples(val_root, data_cfg["val_split"], solver["eval_images"]) \
            if solver["eval_every"] else []
        if self.is_main and solver["eval_every"] and not self.val_samples:
            print(f"validation off: no images in {val_root}/leftImg8bit/{data_cfg['val_split']}")

        self.batch_size, self.accumulation = solver["batch_size"], solver["accumulation"]
        self.images_per_step = self.batch_size * self.accumulation * self.world
        self.steps_per_epoch = -(-len(self.dataset) // self.images_per_step)
        self.total_steps = max_iters or solver["epochs"] * self.steps_per_epoch

        self.optimizer = build_optimizer(parameter_groups(self.model, solver), solver)
        self.scheduler = build_scheduler(self.optimizer, solver, self.steps_per_epoch)
        self.use_amp = solver["amp"] and device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if solver["amp_dtype"] == "bfloat16" else torch.float16
        # bfloat16 has float32's range: no loss scaling.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.step = 0
        self.best: float | None = None  # best validation PQ so far
        self.last_path = out_dir / "last.pt"
        self.logger: RunLog | None = None

    def wrap(self) -> None:
        """The model made ready to train: wrapped for DDP across processes, in training mode."""
        if self.distributed:
            if self.device.type == "cuda" and not self.solver["freeze_bn"]:
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
                self.bare_model = self.model
            self.model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.train_mode()

    def train_mode(self) -> None:
        self.model.train()
        frozen = self.bare_model if self.solver["freeze_bn"] else \
            self.bare_model.backbone if self.solver["freeze_backbone_bn"] else None
        if frozen is not None:
            for module in frozen.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
