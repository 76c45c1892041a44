"""Training: ``casnet train --config FILE --data DIR --out DIR``.

One process per device. Several GPUs: ``torchrun --nproc_per_node=8 -m casnet_core.cli train ...``
(DDP over NCCL; gloo on the CPU). Under torchrun every process uses the GPU of its local rank, whatever
index ``--device`` names (choose GPUs with CUDA_VISIBLE_DEVICES). ``solver.batch_size`` is per process:
a step trains on batch_size x accumulation x processes images (the paper: 1 x 1 x 8), and its gradient
is the mean over those images. The schedule is in epochs, as the paper's, converted to optimizer steps;
``--max-iters`` stops early (for smoke runs).

Data order: every epoch is a permutation of the training images seeded by (seed, epoch), cut into
steps. The images of a step do not depend on how they are split over processes and micro-batches,
and the last step of an epoch takes what is left, so a dataset smaller than one step still trains
(with a smaller batch). Augmentation is drawn from (seed, epoch, image), see ``CityscapesDataset``.

Outputs in OUT:
* ``last.pt``: weights, optimizer, schedule, step, random states of every process: what ``--resume``
  needs. Written atomically before the first step, every ``solver.checkpoint_every`` steps and at the end,
  so a run killed at any moment (SIGKILL included) leaves one, and resumes to the same weights as a run
  never stopped. Resuming needs the images per step and the dataset size it was started with (the
  schedule is counted in their steps); the number of processes and the device type may change.
* ``model_final.pt`` at the end; ``best.pt``, the highest validation PQ, when validation is on.
* ``config.yaml``; ``log.jsonl``, one JSON row per logged step and one per validation; TensorBoard event
  files when tensorboard is installed.

Validation: every ``solver.eval_every`` steps (0: off) and at the end, on the first
``solver.eval_images`` images of ``data.val_split`` in ``--val-data`` (default: ``--data``), predicted
at full size by the Predictor as ``casnet eval`` does; PQ with the in-process
``casnet_core.evaluation.panoptic_quality``, and mIoU. Logged to the progress bar, log.jsonl
(``val_PQ``, ``val_mIoU``, ...) and TensorBoard.

An OUT that already holds a run is refused unless ``--resume`` continues it or ``--overwrite`` replaces
it. Bad data, configs and checkpoints stop with one line (``casnet train: ...``, exit status 2).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import sys
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

from casnet_core.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from casnet_core.config import ConfigError, check_config, load_config
from casnet_core.data import TARGET_KEYS, CityscapesDataset, Sample, list_samples
from casnet_core.device_targets import build_targets_torch
from casnet_core.errors import one_line
from casnet_core.formats import check_outputs_spare_inputs
from casnet_core.losses import casnet_losses
from casnet_core.model import build_casnet
from casnet_core.predictor import resolve_device

_LOSS_KEYS = ("loss", "semantic", "attributes", "box_prob")
# Solver settings held by the optimizer and scheduler states of last.pt: a resume must not change them.
RESUME_FIXED_SOLVER_KEYS = ("lr", "lr_steps", "lr_factor", "momentum", "weight_decay")
# Files that make OUT "a run": never overwritten without --resume or --overwrite.
_RUN_FILES = ("last.pt", "best.pt", "model_final.pt", "log.jsonl")


class TrainingError(RuntimeError):
    """A run that cannot start or go on: data, output folder, resume state, or a diverged loss."""


def train(
    config: dict[str, Any],
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    device: str = "auto",
    max_iters: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    val_root: str | os.PathLike | None = None,
    progress: bool = True,
    init: str | os.PathLike | None = None,
) -> Path:
    """Trains CASNet; returns the path of ``model_final.pt``. ``val_root``: the dataset that holds
    ``data.val_split`` (default ``data_root``). ``init``: a checkpoint whose weights the new run starts
    from (its model config and class space must be the config's); the optimizer, schedule and step start
    fresh. Raises ConfigError, CheckpointError, TrainingError (one-line messages) for bad inputs."""
    config = check_config(config)
    out_dir = Path(out_dir)
    if resume and overwrite:
        raise TrainingError("--resume continues the run in OUT, --overwrite replaces it: give one of them")
    if resume and init is not None:
        raise TrainingError("--init starts a new run from a checkpoint's weights, --resume continues the run in "
                            "OUT: give one of them")
    if max_iters is not None and max_iters < 1:
        raise TrainingError(f"--max-iters must be at least 1, got {max_iters}")
    try:  # a run never writes into what it reads
        check_outputs_spare_inputs([("--out", out_dir)], [("--data", data_root), ("--val-data", val_root),
                                                          ("--init", init)], command="train")
    except ValueError as error:
        raise TrainingError(str(error)) from None
    # Checked by every process before any of them writes, so all of them agree.
    _check_output_folder(out_dir, resume=resume, overwrite=overwrite)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = world > 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if distributed else None
    torch_device = process_device(device, local_rank=local_rank)
    if distributed:
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo")
    try:
        if distributed and dist.get_rank() == 0 and device not in ("auto", "cuda", "cpu"):
            print(f"--device {device} under torchrun: each process uses the GPU of its local rank")
        run = _Run(config, data_root, val_root or data_root, out_dir, torch_device, max_iters=max_iters,
                   progress=progress)
        if resume:
            run.resume()
        else:
            if init is not None:
                run.load_init(init)
            run.start(overwrite=overwrite)
        final = run.train()
        if distributed:
            dist.barrier()
        return final
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def process_device(device: str, *, local_rank: int | None) -> torch.device:
    """This process's device: ``device`` ("auto", "cpu", "cuda", "cuda:N") resolved; under torchrun
    (``local_rank`` given) any CUDA device becomes the local rank's GPU. Raises TrainingError without CUDA."""
    if device == "auto":
        requested = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            requested = torch.device(device)
        except RuntimeError as error:
            raise TrainingError(f"--device {device!r} is not a device (auto, cpu, cuda or cuda:N)") from error
    try:
        return resolve_device(rank_device(requested, local_rank))
    except ValueError as error:  # CUDA asked for where there is none
        raise TrainingError(str(error)) from error


def rank_device(requested: torch.device, local_rank: int | None) -> torch.device:
    """The device of the process of ``local_rank`` (None: not distributed) when ``requested`` was asked."""
    if requested.type == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank)
    return requested


def epoch_batches(
    num_images: int, *, batch_size: int, accumulation: int, world: int, rank: int, seed: int, epoch: int
) -> list[list[list[int]]]:
    """The micro-batches of one process for every step of an epoch: ``[step][micro_batch] -> image indices``.

    A permutation of the images seeded by (seed, epoch), its first images repeated at the end until
    its length is a multiple of ``world``, is cut into steps of ``batch_size * accumulation * world``
    images (the last step takes what is left). Process ``rank`` takes every ``world``-th image of a
    step from the ``rank``-th one, in micro-batches of up to ``batch_size``. Every process gets the
    same number of micro-batches of the same sizes, and for full steps the images of a step are the
    same whatever the split into processes and micro-batches.
    """
    if num_images < 1:
        raise ValueError("no images")
    order = np.random.default_rng((seed, epoch)).permutation(num_images)
    padded = -(-num_images // world) * world
    order = np.resize(order, padded).tolist()  # np.resize repeats from the start
    per_step = batch_size * accumulation * world
    steps = []
    for start in range(0, padded, per_step):
        mine = order[start : start + per_step][rank::world]
        steps.append([mine[i : i + batch_size] for i in range(0, len(mine), batch_size)])
    return steps


class _Run:
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
        self.dataset = _training_dataset(data_root, config, self.model, seed=self.seed, device=device)
        if data_cfg["cache"]:
            self.dataset.preload()  # before the DataLoader workers fork: they share the decoded scenes
        self.val_samples = _validation_samples(val_root, data_cfg["val_split"], solver["eval_images"]) \
            if solver["eval_every"] else []
        if self.is_main and solver["eval_every"] and not self.val_samples:
            print(f"validation off: no images in {val_root}/leftImg8bit/{data_cfg['val_split']}")

        self.batch_size, self.accumulation = solver["batch_size"], solver["accumulation"]
        self.images_per_step = self.batch_size * self.accumulation * self.world
        self.steps_per_epoch = -(-len(self.dataset) // self.images_per_step)
        self.total_steps = max_iters or solver["epochs"] * self.steps_per_epoch

        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=solver["lr"], momentum=solver["momentum"],
                                         weight_decay=solver["weight_decay"])
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=[e * self.steps_per_epoch for e in solver["lr_steps"]],
            gamma=solver["lr_factor"])
        self.use_amp = solver["amp"] and device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if solver["amp_dtype"] == "bfloat16" else torch.float16
        # bfloat16 has float32's range: no loss scaling.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.step = 0
        self.best: float | None = None  # best validation PQ so far
        self.last_path = out_dir / "last.pt"
        self.logger: _Logger | None = None

    # -- starting and resuming ---------------------------------------------------------------------

    def start(self, *, overwrite: bool) -> None:
        if self.is_main:
            if overwrite:
                _clear_run(self.out_dir)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))
        self._wrap()
        self._save_last()  # from here on OUT always holds a loadable last.pt
        if self.is_main:
            self.logger = _Logger(self.out_dir)

    def resume(self) -> None:
        state = read_checkpoint(self.last_path, map_location="cpu")
        if state["config"] != self.model.config:
            raise CheckpointError(f"{self.last_path} was trained with model {state['config']}, "
                                  f"not {self.model.config}: change the model config back or start a new OUT")
        self._check_schedule(state.get("schedule", {}))
        self._check_solver(state.get("train_config", {}).get("solver", {}))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        load_scaler_state(self.scaler, state.get("scaler", {}))
        self.step = int(state["step"])
        self.best = state.get("best_pq")
        random_states = state.get("random_states", [])
        if len(random_states) == self.world:  # another number of processes: fresh seeds instead
            _set_random_states(random_states[self.rank])
        if self.is_main:
            _remove_partial_writes(self.out_dir)
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))
            self.logger = _Logger(self.out_dir, resume_step=self.step)
            print(f"resumed from {self.last_path} at step {self.step}")
        self._wrap()

    def load_init(self, path: str | os.PathLike) -> None:
        """The weights of the checkpoint at ``path`` (weights only: optimizer, schedule and step start fresh).
        Raises CheckpointError when it predicts another class space or holds another model."""
        state = read_checkpoint(path, map_location="cpu")
        classes = self.model.class_space
        if state.get("mode") != classes.mode or list(state.get("class_names", [])) != list(classes.names):
            raise CheckpointError(f"--init {path} predicts the {state.get('mode')!r} class space "
                                  f"({len(state.get('class_names', []))} classes), this run trains {classes.mode!r} "
                                  f"({len(classes.names)} classes): give a checkpoint of the same class space")
        if state["config"] != self.model.config:
            raise CheckpointError(f"--init {path} holds the model {state['config']}, the config builds "
                                  f"{self.model.config}: set the config's model section to the checkpoint's")
        self.model.load_state_dict(state["model"])
        if self.is_main:
            print(f"initialised from the weights of {path}")

    def _check_solver(self, saved: dict[str, Any]) -> None:
        """The optimizer and schedule states of last.pt carry these settings: a changed one would be silently
        ignored by the resumed run while config.yaml claimed it, so it is refused."""
        for key in RESUME_FIXED_SOLVER_KEYS:
            if key in saved and saved[key] != self.solver[key]:
                raise TrainingError(
                    f"solver.{key} is {self.solver[key]!r} here but {saved[key]!r} in the run of {self.last_path}: "
                    f"--resume continues with the optimizer and schedule as they were; set solver.{key}="
                    f"{saved[key]!r} again, or start a new OUT (--init {self.last_path} keeps the weights)")

    def _check_schedule(self, saved: dict[str, Any]) -> None:
        """The schedule counts steps of ``images_per_step`` over ``dataset_size`` images: both must match."""
        if not saved:
            return  # a checkpoint from before the schedule was recorded
        if saved["images_per_step"] != self.images_per_step:
            raise TrainingError(
                f"{self.last_path} was trained with {saved['images_per_step']} images per step "
                f"(batch {saved['batch_size']} x accumulation {saved['accumulation']} x {saved['world_size']} "
                f"processes), this run has {self.images_per_step} (batch {self.batch_size} x accumulation "
                f"{self.accumulation} x {self.world}): set solver.batch_size / solver.accumulation so the product "
                f"is {saved['images_per_step']} again")
        if saved["dataset_size"] != len(self.dataset):
            raise TrainingError(f"{self.last_path} was trained on {saved['dataset_size']} images, --data now has "
                                f"{len(self.dataset)}: the epoch schedule would shift; start a new OUT")

    def _wrap(self) -> None:
        if self.distributed:
            if self.device.type == "cuda" and not self.solver["freeze_bn"]:
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
                self.bare_model = self.model
            self.model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self._train_mode()

    def _train_mode(self) -> None:
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
        # epoch, which draws its augmentation (_EpochItems).
        loader = DataLoader(
            _EpochItems(self.dataset), batch_sampler=_RunBatches(self, self.step),
            num_workers=self.config["data"]["workers"], pin_memory=self.device.type == "cuda",
            # Its own generator: workers' seeds never draw from (and shift) the global random state.
            generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.step),
        )
        batches = iter(loader)
        with tqdm(total=self.total_steps, initial=self.step, disable=not (self.is_main and self.progress),
                  desc="train", unit="step") as bar, _erased_on_error(bar):
            for epoch, micro_batches in self.schedule(self.step):
                started = time.perf_counter()
                losses = self._train_step(batches, [len(m) for m in micro_batches])
                speed = self.images_per_step / (time.perf_counter() - started)
                bar.update(1)
                postfix.update(loss=f"{losses['loss']:.3f}", img_s=f"{speed:.2f}")
                if self.logger and (self.step % solver["log_every"] == 0 or self.step in (1, self.total_steps)):
                    self.logger.log({"step": self.step, "epoch": epoch, "images_per_s": speed, **losses})
                if self.val_samples and (self.step % solver["eval_every"] == 0 or self.step == self.total_steps):
                    metrics = self._validate()
                    if metrics is not None:
                        postfix["PQ"] = f"{metrics['PQ']:.3f}"
                if self.step % solver["checkpoint_every"] == 0:
                    self._save_last()
                bar.set_postfix(postfix)
        del batches  # its workers end here

        final_path = self.out_dir / "model_final.pt"
        self._save_last()
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
        sums = torch.zeros(len(_LOSS_KEYS), dtype=torch.float64)
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
            sums += torch.stack([losses[k].detach().double().cpu() for k in _LOSS_KEYS]) * (size / images_in_step)
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

    # -- checkpoints and validation ----------------------------------------------------------------

    def _save_last(self) -> None:
        """last.pt with everything a resume needs; every process takes part (its random state is saved)."""
        random_states = _gather(_random_states(), self.distributed, self.world)
        if not self.is_main:
            return
        schedule = {"world_size": self.world, "batch_size": self.batch_size, "accumulation": self.accumulation,
                    "images_per_step": self.images_per_step, "dataset_size": len(self.dataset),
                    "steps_per_epoch": self.steps_per_epoch}
        save_checkpoint(self.last_path, self.bare_model, extra={
            "step": self.step, "train_config": self.config, "schedule": schedule, "best_pq": self.best,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "random_states": random_states,
        })

    def _validate(self) -> dict[str, float] | None:
        """Validation on the main process (the others wait); keeps best.pt. Returns the metrics there."""
        metrics = None
        if self.is_main:
            metrics = validate(self.bare_model, self.val_samples, device=self.device, fp16=self.use_amp)
            self._train_mode()
            self.logger.log({"step": self.step, **{f"val_{k}": v for k, v in metrics.items()}})
            # Instance mode predicts no stuff: its PQ is over things only.
            score = metrics["PQ"] if self.bare_model.class_space.mode == "panoptic" else metrics["PQ_th"]
            if math.isfinite(score) and (self.best is None or score > self.best):
                self.best = score
                save_checkpoint(self.out_dir / "best.pt", self.bare_model,
                                extra={"step": self.step, "train_config": self.config, "val": metrics})
        if self.distributed:
            dist.barrier()
        return metrics


@contextlib.contextmanager
def _erased_on_error(bar: tqdm) -> Iterator[None]:
    """A progress bar that an error erases (the error's one line is then all that stderr shows)."""
    try:
        yield
    except BaseException:
        bar.leave = False
        raise


class _EpochItems(torch.utils.data.Dataset):
    """The training dataset indexed by (epoch, image index): the epoch, which draws an item's augmentation, travels
    with the index, so one DataLoader (and its workers) serves every epoch."""

    def __init__(self, dataset: CityscapesDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


class _RunBatches:
    """Batch sampler of a run from step ``start``: every micro-batch of every step, as (epoch, index) lists."""

    def __init__(self, run: "_Run", start: int) -> None:
        self.run, self.start = run, start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for epoch, micro_batches in self.run.schedule(self.start):
            for micro in micro_batches:
                yield [(epoch, index) for index in micro]


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
        parts = ", ".join(f"{k} {v:.4g}" for k, v in zip(_LOSS_KEYS, sums.tolist()))
        raise TrainingError(f"the loss is not finite at step {step} ({parts}, mean over processes): "
                            "lower solver.lr or check the data")
    return dict(zip(_LOSS_KEYS, sums.tolist()))


def loss_options(loss_config: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``casnet_losses`` in the ``loss`` config section (``small_instance_area``
    is a target option)."""
    return {k: v for k, v in loss_config.items() if k != "small_instance_area"}


def load_scaler_state(scaler: torch.amp.GradScaler, state: dict[str, Any]) -> None:
    """Loads a GradScaler state saved on any device type: a disabled scaler (CPU run) saves an empty
    state, which an enabled one (CUDA) cannot load: it then starts from its initial scale; a disabled
    scaler ignores any state."""
    if state and scaler.is_enabled():
        scaler.load_state_dict(state)


def validate(model, samples: Sequence[Sample], *, device: torch.device, fp16: bool = False) -> dict[str, float]:
    """PQ, SQ, RQ (all, things, stuff) and mIoU of ``model`` on ``samples``, predicted at full size by the
    Predictor as ``casnet eval`` does. Leaves the model in eval mode. NaN where a figure has no class."""
    from casnet_core.data import read_image, read_instance_ids, read_label_ids
    from casnet_core.evaluation import mean_iou, panoptic_quality
    from casnet_core.predictor import Predictor

    predictor = Predictor(model, device=device, fp16=fp16)
    panoptic, gt_panoptic, semantic, gt_semantic = [], [], [], []
    for sample in samples:
        prediction = predictor.predict(read_image(sample.image_path))
        panoptic.append(prediction.panoptic)
        semantic.append(prediction.semantic)
        gt_panoptic.append(read_instance_ids(sample.instance_ids_path))
        gt_semantic.append(read_label_ids(sample.label_ids_path))
    pq = panoptic_quality(panoptic, gt_panoptic)
    metrics = {k: float(pq[k]) for k in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st")}
    classes = [i for i in model.class_space.label_ids if i != 0]  # instance mode: background is not a class
    metrics["mIoU"] = mean_iou(semantic, gt_semantic, classes)
    metrics["images"] = len(samples)
    return metrics


# -- data, output folder, random state ---------------------------------------------------------------


def _device_targets(data_cfg: dict[str, Any], device: torch.device) -> bool:
    """Whether the targets are built on the training device (``data.device_targets``; default: on a GPU)."""
    choice = data_cfg["device_targets"]
    return device.type == "cuda" if choice is None else choice


def _training_dataset(data_root: str | os.PathLike, config: dict[str, Any], model, *, seed: int,
                      device: torch.device) -> CityscapesDataset:
    """The augmented training set; its items carry the targets (built by the workers), or the ground truth for
    targets built on the training device (``_Run._targets``, ``data.device_targets``)."""
    root = Path(data_root)
    data_cfg, loss = config["data"], config["loss"]
    if not root.is_dir():
        raise TrainingError(f"--data {root}: no such folder (expected a dataset in the Cityscapes layout)")
    try:
        dataset = CityscapesDataset(
            root, data_cfg["train_split"], mode=model.class_space.mode, stride=model.output_stride, augment=True,
            short_side=data_cfg["short_side"], crop_size=data_cfg["crop_size"], flip=data_cfg["flip"],
            center_radius=data_cfg["center_radius"], size_divisor=model.size_divisor, seed=seed,
            targets=not _device_targets(data_cfg, device), cache=data_cfg["cache"],
            small_instance_area=loss["small_instance_area"] if loss["small_instance_weight"] != 1.0 else None)
    except FileNotFoundError as error:
        raise TrainingError(f"--data {root}: {error}") from error
    except ValueError as error:
        raise TrainingError(f"data: {error}") from error
    missing = [s for s in dataset.samples if not (s.label_ids_path.is_file() and s.instance_ids_path.is_file())]
    if missing:
        raise TrainingError(f"--data {root}: {len(missing)} of {len(dataset)} training images have no gtFine "
                            f"labels, e.g. {missing[0].label_ids_path}")
    return dataset


def _validation_samples(data_root: str | os.PathLike, split: str | None, count: int) -> list[Sample]:
    if split is None:
        return []
    try:
        return list_samples(data_root, split)[:count]
    except FileNotFoundError:
        return []


def _check_output_folder(out_dir: Path, *, resume: bool, overwrite: bool) -> None:
    held = [name for name in _RUN_FILES if (out_dir / name).exists()]
    if held and not resume and not overwrite:
        raise TrainingError(f"{out_dir} already holds a run ({', '.join(held)}): add --resume to continue it, "
                            "--overwrite to replace it, or choose another --out")


def _clear_run(out_dir: Path) -> None:
    for name in _RUN_FILES:
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / "tensorboard", ignore_errors=True)
    _remove_partial_writes(out_dir)


def _remove_partial_writes(out_dir: Path) -> None:
    """Temporary files of checkpoint writes that a kill interrupted (see save_checkpoint)."""
    from casnet_core.formats import partial_writes

    for name in ("last.pt", "best.pt", "model_final.pt"):
        for partial in partial_writes(out_dir / name):
            partial.unlink(missing_ok=True)


def _random_states() -> dict[str, Any]:
    """The global random states of this process (torch, CUDA, numpy, python) as plain containers and
    tensors (checkpoints load with weights_only=True)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(python_state), "gauss": python_gauss},
    }


def _set_random_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])  # on another device type the CUDA state is moot
    numpy_state = states["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))
    python_state = states["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss"]))


def _gather(value: Any, distributed: bool, world: int) -> list[Any]:
    if not distributed:
        return [value]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, value)
    return gathered


class _Logger:
    """Scalars to OUT/log.jsonl, and to TensorBoard when it is installed.

    ``resume_step``: rows (and TensorBoard events) after this step are dropped: a killed run may have
    logged steps that its last.pt does not hold, and the resumed run logs them again.
    """

    def __init__(self, out_dir: Path, *, resume_step: int | None = None) -> None:
        path = out_dir / "log.jsonl"
        if resume_step is not None and path.exists():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by the kill
                    continue
                if row.get("step", 0) <= resume_step:
                    kept.append(line + "\n")
            path.write_text("".join(kept))
        self._file = open(path, "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=purge)
        except ImportError:  # tensorboard is optional
            self._tb = None

    def log(self, row: dict[str, float]) -> None:
        # NaN is not JSON: a figure without classes is written as null.
        row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb:
            for key, value in row.items():
                if key != "step" and value is not None:
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
    parser.add_argument("--val-data", default=None,
                        help="dataset root holding data.val_split for validation (default: --data)")
    parser.add_argument("--out", required=True, help="output folder for checkpoints and logs")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--max-iters", type=int, default=None, help="stop after this many optimizer steps")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue the run in OUT from OUT/last.pt")
    start.add_argument("--overwrite", action="store_true", help="replace the run that OUT holds")
    parser.add_argument("--init", metavar="CKPT", default=None,
                        help="start a new run from the weights of this checkpoint (same model and class space; "
                             "fresh optimizer and schedule), e.g. the shipped default model")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. solver.lr=0.01")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, args.overrides)
        final = train(config, args.data, args.out, device=args.device, max_iters=args.max_iters,
                      resume=args.resume, overwrite=args.overwrite, val_root=args.val_data, init=args.init)
    except (ConfigError, CheckpointError, TrainingError) as error:
        print(f"casnet train: {one_line(error)}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {final}")
    return 0
