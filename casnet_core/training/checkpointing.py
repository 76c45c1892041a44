"""Checkpoints of a run: last.pt (everything a resume needs) written and read back, --init's weights, and the
output folder's run files."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from casnet_core.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from casnet_core.config import DEFAULTS
from casnet_core.formats import partial_writes
from casnet_core.model import complete_config
from casnet_core.training.run import TrainingRun
from casnet_core.training.setup import TrainingError


# Solver settings held by the optimizer and scheduler states of last.pt: a resume must not change them.
RESUME_FIXED_SOLVER_KEYS = ("optimizer", "lr", "lr_steps", "lr_factor", "momentum", "weight_decay", "warmup_steps",
                            "warmup_factor", "backbone_lr_factor")
# Files that make OUT "a run": never overwritten without --resume or --overwrite.
RUN_FILES = ("last.pt", "best.pt", "model_final.pt", "log.jsonl")


def save_last(run: TrainingRun) -> None:
    """last.pt with everything a resume needs; every process takes part (its random state is saved)."""
    random_states = gather(capture_random_states(), run.distributed, run.world)
    if not run.is_main:
        return
    schedule = {"world_size": run.world, "batch_size": run.batch_size, "accumulation": run.accumulation,
                "images_per_step": run.images_per_step, "dataset_size": len(run.dataset),
                "steps_per_epoch": run.steps_per_epoch}
    save_checkpoint(run.last_path, run.bare_model, extra={
        "step": run.step, "train_config": run.config, "schedule": schedule, "best_pq": run.best,
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(), "random_states": random_states,
    })


def load_last(run: TrainingRun) -> None:
    """The state of ``run`` (weights, optimizer, schedule, step, best PQ, random states) from its last.pt, after
    checking that the run can go on with it (same model, schedule and solver settings)."""
    state = read_checkpoint(run.last_path, map_location="cpu")
    if complete_config(state["config"]) != run.model.config:
        raise CheckpointError(f"{run.last_path} was trained with model {state['config']}, "
                              f"not {run.model.config}: change the model config back or start a new OUT")
    check_schedule(run, state.get("schedule", {}))
    check_solver(run, state.get("train_config", {}).get("solver", {}))
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    load_scaler_state(run.scaler, state.get("scaler", {}))
    run.step = int(state["step"])
    run.best = state.get("best_pq")
    random_states = state.get("random_states", [])
    if len(random_states) == run.world:  # another number of processes: fresh seeds instead
        set_random_states(random_states[run.rank])


def load_init_weights(run: TrainingRun, path: str | os.PathLike) -> None:
    """The weights of the checkpoint at ``path`` (weights only: optimizer, schedule and step start fresh).
    Raises CheckpointError when it predicts another class space or holds another model."""
    state = read_checkpoint(path, map_location="cpu")
    classes = run.model.class_space
    if state.get("mode") != classes.mode or list(state.get("class_names", [])) != list(classes.names):
        raise CheckpointError(f"--init {path} predicts the {state.get('mode')!r} class space "
                              f"({len(state.get('class_names', []))} classes), this run trains {classes.mode!r} "
                              f"({len(classes.names)} classes): give a checkpoint of the same class space")
    if complete_config(state["config"]) != run.model.config:
        raise CheckpointError(f"--init {path} holds the model {state['config']}, the config builds "
                              f"{run.model.config}: set the config's model section to the checkpoint's")
    run.model.load_state_dict(state["model"])
    if run.is_main:
        print(f"initialised from the weights of {path}")


def check_solver(run: TrainingRun, saved: dict[str, Any]) -> None:
    """The optimizer and schedule states of last.pt carry these settings: a changed one would be silently
    ignored by the resumed run while config.yaml claimed it, so it is refused."""
    if not saved:
        return  # a checkpoint without its training config: nothing to compare
    for key in RESUME_FIXED_SOLVER_KEYS:
        # A key the run's release did not have yet: that run used what is now its default.
        saved_value = saved.get(key, DEFAULTS["solver"][key])
        if saved_value != run.solver[key]:
            raise TrainingError(
                f"solver.{key} is {run.solver[key]!r} here but {saved_value!r} in the run of {run.last_path}: "
                f"--resume continues with the optimizer and schedule as they were; set solver.{key}="
                f"{saved_value!r} again, or start a new OUT (--init {run.last_path} keeps the weights)")


def check_schedule(run: TrainingRun, saved: dict[str, Any]) -> None:
    """The schedule counts steps of ``images_per_step`` over ``dataset_size`` images: both must match."""
    if not saved:
        return  # a checkpoint from before the schedule was recorded
    if saved["images_per_step"] != run.images_per_step:
        raise TrainingError(
            f"{run.last_path} was trained with {saved['images_per_step']} images per step "
            f"(batch {saved['batch_size']} x accumulation {saved['accumulation']} x {saved['world_size']} "
            f"processes), this run has {run.images_per_step} (batch {run.batch_size} x accumulation "
            f"{run.accumulation} x {run.world}): set solver.batch_size / solver.accumulation so the product "
            f"is {saved['images_per_step']} again")
    if saved["dataset_size"] != len(run.dataset):
        raise TrainingError(f"{run.last_path} was trained on {saved['dataset_size']} images, --data now has "
                            f"{len(run.dataset)}: the epoch schedule would shift; start a new OUT")


def load_scaler_state(scaler: torch.amp.GradScaler, state: dict[str, Any]) -> None:
    """Loads a GradScaler state saved on any device type: a disabled scaler (CPU run) saves an empty
    state, which an enabled one (CUDA) cannot load: it then starts from its initial scale; a disabled
    scaler ignores any state."""
    if state and scaler.is_enabled():
        scaler.load_state_dict(state)


def check_output_folder(out_dir: Path, *, resume: bool, overwrite: bool) -> None:
    held = [name for name in RUN_FILES if (out_dir / name).exists()]
    if held and not resume and not overwrite:
        raise TrainingError(f"{out_dir} already holds a run ({', '.join(held)}): add --resume to continue it, "
                            "--overwrite to replace it, or choose another --out")


def clear_run(out_dir: Path) -> None:
    for name in RUN_FILES:
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / "tensorboard", ignore_errors=True)
    remove_partial_writes(out_dir)


def remove_partial_writes(out_dir: Path) -> None:
    """Temporary files of checkpoint writes that a kill interrupted (see save_checkpoint)."""
    for name in ("last.pt", "best.pt", "model_final.pt"):
        for partial in partial_writes(out_dir / name):
            partial.unlink(missing_ok=True)


def capture_random_states() -> dict[str, Any]:
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


def set_random_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])  # on another device type the CUDA state is moot
    numpy_state = states["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))
    python_state = states["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss"]))


def gather(value: Any, distributed: bool, world: int) -> list[Any]:
    if not distributed:
        return [value]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, value)
    return gathered
