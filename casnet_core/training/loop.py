"""The step loop of a training run (``casnet_core.training.run.TrainingRun``): starting or resuming it, its steps,
the losses agreed over processes; checkpointing, validation and the log are the rooms beside it."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from casnet_core.checkpoint import save_checkpoint
from casnet_core.data import TARGET_KEYS
from casnet_core.device_targets import build_targets_torch
from casnet_core.errors import one_line
from casnet_core.losses import casnet_losses
from casnet_core.training.checkpointing import clear_run, load_last, remove_partial_writes, save_last
from casnet_core.training.run import TrainingRun
from casnet_core.training.run_log import RunLog
from casnet_core.training.schedule import EpochItems, RunBatches, run_steps
from casnet_core.training.setup import TrainingError
from casnet_core.training.validation import validate_run

LOSS_KEYS = ("loss", "semantic", "attributes", "box_prob")


def start(run: TrainingRun, *, overwrite: bool) -> None:
    """A new run in OUT (cleared first with ``overwrite``): config.yaml, a first last.pt, the log."""
    if run.is_main:
        if overwrite:
            clear_run(run.out_dir)
        run.out_dir.mkdir(parents=True, exist_ok=True)
        (run.out_dir / "config.yaml").write_text(yaml.safe_dump(run.config, sort_keys=False))
    run.wrap()
    save_last(run)  # from here on OUT always holds a loadable last.pt
    if run.is_main:
        run.logger = RunLog(run.out_dir)


def resume(run: TrainingRun) -> None:
    """The run of OUT/last.pt continued: its weights, optimizer, schedule and step."""
    load_last(run)
    if run.is_main:
        remove_partial_writes(run.out_dir)
        (run.out_dir / "config.yaml").write_text(yaml.safe_dump(run.config, sort_keys=False))
        run.logger = RunLog(run.out_dir, resume_step=run.step)
        print(f"resumed from {run.last_path} at step {run.step}")
    run.wrap()


def train(run: TrainingRun) -> Path:
    """The step loop from ``run.step`` to the end; checkpoints, validation, the log; returns model_final.pt."""
    solver = run.solver
    postfix: dict[str, str] = {}
    # One loader, one iterator for the whole run: its worker processes start once, not once per epoch (with
    # a few images an epoch is a few steps, and each re-spawn cost more than a step); each item carries its
    # epoch, which draws its augmentation (EpochItems).
    loader = DataLoader(
        EpochItems(run.dataset), batch_sampler=RunBatches(run, run.step),
        num_workers=run.config["data"]["workers"], pin_memory=run.device.type == "cuda",
        # Its own generator: workers' seeds never draw from (and shift) the global random state.
        generator=torch.Generator().manual_seed(run.seed * 1_000_003 + run.step),
    )
    batches = iter(loader)
    with tqdm(total=run.total_steps, initial=run.step, disable=not (run.is_main and run.progress),
              desc="train", unit="step") as bar, erased_on_error(bar):
        for epoch, micro_batches in run_steps(run, run.step):
            started = time.perf_counter()
            losses = train_step(run, batches, [len(m) for m in micro_batches])
            speed = run.images_per_step / (time.perf_counter() - started)
            bar.update(1)
            postfix.update(loss=f"{losses['loss']:.3f}", img_s=f"{speed:.2f}")
            if run.logger and (run.step % solver["log_every"] == 0 or run.step in (1, run.total_steps)):
                run.logger.log({"step": run.step, "epoch": epoch, "images_per_s": speed, **losses})
            if run.val_samples and (run.step % solver["eval_every"] == 0 or run.step == run.total_steps):
                metrics = validate_run(run)
                if metrics is not None:
                    postfix["PQ"] = f"{metrics['PQ']:.3f}"
            if run.step % solver["checkpoint_every"] == 0:
                save_last(run)
            bar.set_postfix(postfix)
    del batches  # its workers end here

    final_path = run.out_dir / "model_final.pt"
    save_last(run)
    if run.is_main:
        save_checkpoint(final_path, run.bare_model, extra={"step": run.step, "train_config": run.config})
        run.logger.close()
    return final_path


def train_step(run: TrainingRun, batches, micro_sizes: Sequence[int]) -> dict[str, float]:
    """One optimizer step over the given micro-batches; returns the losses averaged over all processes."""
    run.optimizer.zero_grad(set_to_none=True)
    sums = torch.zeros(len(LOSS_KEYS), dtype=torch.float64)
    images_in_step = sum(micro_sizes)
    for index, size in enumerate(micro_sizes):
        try:
            item = next(batches)
        except (OSError, ValueError) as error:  # an unreadable or truncated sample, here or in a worker
            # A worker's error carries the worker's traceback as text: its last line is the message.
            lines = [line for line in str(error).splitlines() if line.strip()]
            raise TrainingError(f"data: {one_line(lines[-1] if lines else error)}") from None
        images = item["image"].to(run.device, non_blocking=True).float()  # uint8 on the way: 4x less to copy
        if run.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = batch_targets(run, item)
        # DDP all-reduces gradients only on the last micro-batch of a step.
        last = not run.distributed or index == len(micro_sizes) - 1
        with contextlib.nullcontext() if last else run.model.no_sync():
            with torch.autocast(run.device.type, dtype=run.amp_dtype, enabled=run.use_amp):
                losses = casnet_losses(run.model(images), targets, **loss_options(run.config["loss"]))
            # Each micro-batch's mean loss weighs by its share of the step's images.
            run.scaler.scale(losses["loss"] * (size / images_in_step)).backward()
        sums += torch.stack([losses[k].detach().double().cpu() for k in LOSS_KEYS]) * (size / images_in_step)
    means = agree_on_losses(sums, step=run.step + 1)
    run.scaler.unscale_(run.optimizer)
    if run.solver["grad_clip"]:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.solver["grad_clip"])
    run.scaler.step(run.optimizer)
    run.scaler.update()
    lr = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    run.step += 1
    return {**means, "lr": lr}


def batch_targets(run: TrainingRun, item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The loss targets of a batch: built by the workers (CPU training: they run beside the main process), or
    on the training device from the batch's augmented ground truth (CUDA: the GPU builds them in a few kernels
    while the workers only decode and augment)."""
    if "label_ids" not in item:
        return {k: v.to(run.device, non_blocking=True) for k, v in item.items()
                if k in TARGET_KEYS or k == "small_instance"}
    loss = run.config["loss"]
    return build_targets_torch(
        item["label_ids"].to(run.device, non_blocking=True), item["instance_ids"].to(run.device, non_blocking=True),
        mode=run.bare_model.class_space.mode, stride=run.bare_model.output_stride,
        center_radius=run.config["data"]["center_radius"],
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
