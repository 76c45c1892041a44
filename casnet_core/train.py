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
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from casnet_core.checkpoint import CheckpointError
from casnet_core.config import ConfigError, check_config, load_config
from casnet_core.errors import one_line
from casnet_core.formats import check_outputs_spare_inputs
from casnet_core.training.checkpointing import (
    RESUME_FIXED_SOLVER_KEYS,
    check_output_folder,
    load_init_weights,
    load_scaler_state,
)
from casnet_core.training import loop
from casnet_core.training.loop import agree_on_losses, loss_options
from casnet_core.training.run import TrainingRun
from casnet_core.training.schedule import epoch_batches
from casnet_core.training.setup import TrainingError, process_device, rank_device
from casnet_core.training.validation import validate

# The names other modules and the tests import from here; the code behind them lives in casnet_core/training/
# (setup, schedule, loop, checkpointing, validation, run_log, fake_quant).
__all__ = [
    "RESUME_FIXED_SOLVER_KEYS", "TrainingError", "agree_on_losses", "check_config", "epoch_batches",
    "load_scaler_state", "loss_options", "process_device", "rank_device", "register", "train", "validate",
]


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
    check_output_folder(out_dir, resume=resume, overwrite=overwrite)

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
        run = TrainingRun(config, data_root, val_root or data_root, out_dir, torch_device, max_iters=max_iters,
                          progress=progress)
        if resume:
            loop.resume(run)
        else:
            if init is not None:
                load_init_weights(run, init)
            loop.start(run, overwrite=overwrite)
        final = loop.train(run)
        if distributed:
            dist.barrier()
        return final
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


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
