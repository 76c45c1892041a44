"""The run of one training process (its model, optimizer, schedule and data, built from the config) and its
step loop; checkpointing, validation and the log are the rooms beside it."""

from __future__ import annotations

import contextlib
import os
import random
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from casnet_core.checkpoint import save_checkpoint
from casnet_core.data import TARGET_KEYS
from casnet_core.device_targets import build_targets_torch
from casnet_core.errors import one_line
from casnet_core.losses import casnet_losses
from casnet_core.model import build_casnet
from casnet_core.training.checkpointing import clear_run, load_last, remove_partial_writes, save_last
from casnet_core.training.run_log import RunLog
from casnet_core.training.schedule import EpochItems, RunBatches, epoch_batches
from casnet_core.training.setup import TrainingError, training_dataset
from casnet_core.training.validation import validate_run, validation_samples

LOSS_KEYS = ("loss", "semantic", "attributes", "box_prob")


def build_optimizer(parameters, solver: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer of ``solver.optimizer``: SGD with momentum (the paper's) or AdamW (beta1 = momentum)."""
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
    """The state of one training process: model, optimizer, schedule, data, logging."""

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
        # channels_last: the layout tensor-core convolutions read without transposes (CUDA only).
        self.channels_last = solver["channels_last"] and device.type == "cuda"
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

        self.optimizer = build_optimizer(self.model.parameters(), solver)
        self.scheduler = build_scheduler(self.optimizer, solver, self.steps_per_epoch)
        self.use_amp = solver["amp"] and device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if solver["amp_dtype"] == "bfloat16" else torch.float16
        # bfloat16 has float32's range: no loss scaling.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.step = 0
        self.best: float | None = None  # best validation PQ so far
        self.last_path = out_dir / "last.pt"
        self.logger: RunLog | None = None

    # -- starting and resuming ---------------------------------------------------------------------

    def start(self, *, overwrite: bool) -> None:
        if self.is_main:
            if overwrite:
                clear_run(self.out_dir)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))
        self._wrap()
        save_last(self)  # from here on OUT always holds a loadable last.pt
        if self.is_main:
            self.logger = RunLog(self.out_dir)

    def resume(self) -> None:
        load_last(self)
        if self.is_main:
            remove_partial_writes(self.out_dir)
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))
            self.logger = RunLog(self.out_dir, resume_step=self.step)
            print(f"resumed from {self.last_path} at step {self.step}")
        self._wrap()

    def _wrap(self) -> None:
        if self.distributed:
            if self.device.type == "cuda" and not self.solver["freeze_bn"]:
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
                self.bare_model = self.model
            self.model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.train_mode()

    def train_mode(self) -> None:
        self.model.train()
        if self.solver["freeze_bn"]:
            for module in self.model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()

    # -- the loop ----------------------------------------------------------------------------------

    def train(self) -> Path:
        solver = self.solver
        postfix: dict[str, str] = {}
        # One loader, one iterator for the whole run: its worker processes start once, not once per epoch (with
        # a few images an epoch is a few steps, and each re-spawn cost more than a step); each item carries its
        # epoch, which draws its augmentation (EpochItems).
        loader = DataLoader(
            EpochItems(self.dataset), batch_sampler=RunBatches(self, self.step),
            num_workers=self.config["data"]["workers"], pin_memory=self.device.type == "cuda",
            # Its own generator: workers' seeds never draw from (and shift) the global random state.
            generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.step),
        )
        batches = iter(loader)
        with tqdm(total=self.total_steps, initial=self.step, disable=not (self.is_main and self.progress),
                  desc="train", unit="step") as bar, erased_on_error(bar):
            for epoch, micro_batches in self.schedule(self.step):
                started = time.perf_counter()
                losses = self._train_step(batches, [len(m) for m in micro_batches])
                speed = self.images_per_step / (time.perf_counter() - started)
                bar.update(1)
                postfix.update(loss=f"{losses['loss']:.3f}", img_s=f"{speed:.2f}")
                if self.logger and (self.step % solver["log_every"] == 0 or self.step in (1, self.total_steps)):
                    self.logger.log({"step": self.step, "epoch": epoch, "images_per_s": speed, **losses})
                if self.val_samples and (self.step % solver["eval_every"] == 0 or self.step == self.total_steps):
                    metrics = validate_run(self)
                    if metrics is not None:
                        postfix["PQ"] = f"{metrics['PQ']:.3f}"
                if self.step % solver["checkpoint_every"] == 0:
                    save_last(self)
                bar.set_postfix(postfix)
        del batches  # its workers end here

        final_path = self.out_dir / "model_final.pt"
        save_last(self)
        if self.is_main:
            save_checkpoint(final_path, self.bare_model, extra={"step": self.step, "train_config": self.config})
            self.logger.close()
        return final_path

    def schedule(self, start: int) -> Iterator[tuple[int, list[list[int]]]]:
        """(epoch, micro-batches of image indices) of each step of this process from step ``start`` to the end."""
        step = start
        while step < self.total_steps:
            epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
            for micro_batches in epoch_batches(len(self.dataset), batch_size=self.batch_size,
                                               accumulation=self.accumulation, world=self.world, rank=self.rank,
                                               seed=self.seed, epoch=epoch)[step_in_epoch:]:
                if step >= self.total_steps:
                    return
                yield epoch, micro_batches
                step += 1

    def _train_step(self, batches, micro_sizes: Sequence[int]) -> dict[str, float]:
        """One optimizer step over the given micro-batches; returns the losses averaged over all processes."""
        self.optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(len(LOSS_KEYS), dtype=torch.float64)
        images_in_step = sum(micro_sizes)
        for index, size in enumerate(micro_sizes):
            try:
                item = next(batches)
            except (OSError, ValueError) as error:  # an unreadable or truncated sample, here or in a worker
                # A worker's error carries the worker's traceback as text: its last line is the message.
                lines = [line for line in str(error).splitlines() if line.strip()]
                raise TrainingError(f"data: {one_line(lines[-1] if lines else error)}") from None
            images = item["image"].to(self.device, non_blocking=True).float()  # uint8 on the way: 4x less to copy
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = self._targets(item)
            # DDP all-reduces gradients only on the last micro-batch of a step.
            last = not self.distributed or index == len(micro_sizes) - 1
            with contextlib.nullcontext() if last else self.model.no_sync():
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                    losses = casnet_losses(self.model(images), targets, **loss_options(self.config["loss"]))
                # Each micro-batch's mean loss weighs by its share of the step's images.
                self.scaler.scale(losses["loss"] * (size / images_in_step)).backward()
            sums += torch.stack([losses[k].detach().double().cpu() for k in LOSS_KEYS]) * (size / images_in_step)
        means = agree_on_losses(sums, step=self.step + 1)
        self.scaler.unscale_(self.optimizer)
        if self.solver["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.solver["grad_clip"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.step += 1
        return {**means, "lr": lr}

    def _targets(self, item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss targets of a batch: built by the workers (CPU training: they run beside the main process), or
        on the training device from the batch's augmented ground truth (CUDA: the GPU builds them in a few kernels
        while the workers only decode and augment)."""
        if "label_ids" not in item:
            return {k: v.to(self.device, non_blocking=True) for k, v in item.items()
                    if k in TARGET_KEYS or k == "small_instance"}
        loss = self.config["loss"]
        return build_targets_torch(
            item["label_ids"].to(self.device, non_blocking=True), item["instance_ids"].to(self.device, non_blocking=True),
            mode=self.bare_model.class_space.mode, stride=self.bare_model.output_stride,
            center_radius=self.config["data"]["center_radius"],
            small_instance_area=loss["small_instance_area"] if loss["small_instance_weight"] != 1.0 else None)


@contextlib.contextmanager
def erased_on_error(bar: tqdm) -> Iterator[None]:
    """A progress bar that an error erases (the error's one line is then all that stderr shows)."""
    try:
        yield
    except BaseException:
        bar.leave = False
        raise


def agree_on_losses(sums: torch.Tensor, *, step: int) -> dict[str, float]:
    """``sums`` (the loss parts of this process, float64) averaged over all processes.

    Raises TrainingError on every process alike when the loss of any of them is not finite: a
    raise on one process alone would leave the others waiting in the next all-reduce.
    """
    if dist.is_available() and dist.is_initialized():
        reduced = sums.to("cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(reduced)  # a NaN or inf anywhere makes the sum non-finite everywhere
        sums = reduced.cpu() / dist.get_world_size()
    if not torch.isfinite(sums).all():
        parts = ", ".join(f"{k} {v:.4g}" for k, v in zip(LOSS_KEYS, sums.tolist()))
        raise TrainingError(f"the loss is not finite at step {step} ({parts}, mean over processes): "
                            "lower solver.lr or check the data")
    return dict(zip(LOSS_KEYS, sums.tolist()))


def loss_options(loss_config: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``casnet_losses`` in the ``loss`` config section (``small_instance_area``
    is a target option)."""
    return {k: v for k, v in loss_config.items() if k != "small_instance_area"}
