"""What a training run is built from: this process's device and the training set; the run's error type."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from casnet_core.data import CityscapesDataset, Sample, list_samples
from casnet_core.predictor import resolve_device


class TrainingError(RuntimeError):
    """A run that cannot start or go on: data, output folder, resume state, or a diverged loss."""


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


def use_device_targets(data_cfg: dict[str, Any], device: torch.device) -> bool:
    """Whether the targets are built on the training device (``data.device_targets``; default: on a GPU)."""
    choice = data_cfg["device_targets"]
    return device.type == "cuda" if choice is None else choice


def training_dataset(data_root: str | os.PathLike, config: dict[str, Any], model, *, seed: int,
                     device: torch.device) -> CityscapesDataset:
    """The augmented training set; its items carry the targets (built by the workers), or the ground truth for
    targets built on the training device (``loop.batch_targets``, ``data.device_targets``)."""
    root = Path(data_root)
    data_cfg, loss = config["data"], config["loss"]
    if not root.is_dir():
        raise TrainingError(f"--data {root}: no such folder (expected a dataset in the Cityscapes layout)")
    try:
        dataset = CityscapesDataset(
            root, data_cfg["train_split"], mode=model.class_space.mode, stride=model.output_stride, augment=True,
            short_side=data_cfg["short_side"], crop_size=data_cfg["crop_size"], flip=data_cfg["flip"],
            photometric=data_cfg["photometric"],
            center_radius=data_cfg["center_radius"], size_divisor=model.size_divisor, seed=seed,
            targets=not use_device_targets(data_cfg, device), cache=data_cfg["cache"],
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


def validation_samples(data_root: str | os.PathLike, split: str | None, count: int) -> list[Sample]:
    if split is None:
        return []
    try:
        return list_samples(data_root, split)[:count]
    except FileNotFoundError:
        return []
