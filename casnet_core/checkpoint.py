"""Checkpoints: self-describing, atomically written, safely loaded.

A checkpoint is a ``torch.save`` of plain containers and tensors only, so it loads with
``torch.load(weights_only=True)`` (no arbitrary pickle). It carries the builder arguments of the
model, its mode and class list, so loading needs nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from casnet_core.formats import atomic_write
from casnet_core.model import CASNet, build_casnet

FORMAT = "casnet-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the model it describes."""


def save_checkpoint(path: str | os.PathLike, model: CASNet, *, extra: dict[str, Any] | None = None) -> Path:
    """Writes ``model`` (unwrapped from DDP by the caller) and ``extra`` atomically to ``path``.

    ``extra`` may hold optimizer/scheduler state, step, epoch, training config: plain containers,
    numbers, strings and tensors only.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "config": dict(model.config),
        "mode": model.class_space.mode,
        "class_names": list(model.class_space.names),
        "model": model.state_dict(),
        **(extra or {}),
    }
    with atomic_write(path) as f:
        torch.save(payload, f)
    return path


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, checked for format; raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        # Not torch's message: several lines, and for a foreign pickle it advises weights_only=False, which
        # would run the file's code.
        raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch checkpoint, or truncated or corrupt "
                              f"({type(error).__name__}); checkpoints are written by `casnet train`, ONNX files "
                              "(.onnx) by `casnet export`") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a CASNet checkpoint (expected format {FORMAT!r})")
    return payload


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[CASNet, dict[str, Any]]:
    """Rebuilds the model a checkpoint describes and loads its weights strictly.

    Returns the model (in eval mode) and the checkpoint dict without the weights.
    """
    payload = read_checkpoint(path, map_location)
    state = payload.pop("model")
    try:
        model = build_casnet(**payload["config"])
    except (TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: cannot build the model it describes ({payload['config']}): {error}") from error
    if list(model.class_space.names) != list(payload["class_names"]):
        raise CheckpointError(f"{path}: class list {payload['class_names']} does not match mode {payload['mode']!r}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit the model {payload['config']}: {error}") from error
    return model.eval(), payload
