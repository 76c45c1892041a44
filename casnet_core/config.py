"""Training configuration: a YAML file of four sections, defaults below, ``key.sub=value`` overrides.

Sections: ``model`` (the keyword arguments of ``build_casnet``), ``data`` (augmentation),
``loss`` (alpha, beta, gamma), ``solver`` (optimisation schedule), plus ``seed``.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "model": {"backbone": "hrnet_w18_small", "mode": "panoptic", "semantic_head": True,
              "fusion_channels": 128, "head_channels": 64, "output_stride": 4, "weights_path": None},
    "data": {"train_split": "train", "val_split": "val", "short_side": [512, 1024], "crop_size": [640, 1280],
             "flip": True, "center_radius": 1.5, "workers": 2},
    "loss": {"alpha": 1.0, "beta": 1.0, "gamma": 1.0, "box_pos_weight": 1.0},
    "solver": {"lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4, "epochs": 24, "lr_steps": [18, 22],
               "lr_factor": 0.1, "batch_size": 1, "accumulation": 1, "amp": True, "grad_clip": 10.0,
               "log_every": 10, "checkpoint_every": 500},
}


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> dict[str, Any]:
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        with open(path) as f:
            _merge(config, yaml.safe_load(f) or {}, where=str(path))
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise ValueError(f"override {override!r} is not key.sub=value")
        node = {}
        leaf = node
        parts = key.split(".")
        for part in parts[:-1]:
            leaf = leaf.setdefault(part, {})
        leaf[parts[-1]] = yaml.safe_load(value)
        _merge(config, node, where=f"override {override!r}")
    return config


def _merge(base: dict[str, Any], update: dict[str, Any], *, where: str, prefix: str = "") -> None:
    """Merges ``update`` into ``base``; unknown keys are errors, so a typo never silently does nothing."""
    for key, value in update.items():
        if key not in base:
            raise ValueError(f"{where}: unknown config key {prefix + key!r}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"{where}: {prefix + key!r} must be a mapping")
            _merge(base[key], value, where=where, prefix=f"{prefix}{key}.")
        else:
            base[key] = value
