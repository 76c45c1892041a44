"""Losses of CASNet (paper, section III.B, equations 1-4), with the paper's terms and measured alternatives.

* Semantic: cross-entropy (paper); optionally the mean of the hardest ``semantic_top_k`` fraction of the
  pixel losses (Panoptic-DeepLab's hard pixel mining) and a larger weight on the pixels of small instances
  (Panoptic-DeepLab: 3x on instances under 64 x 64 pixels). Thin and small classes (poles, riders,
  bicycles) are a few percent of the pixels; a plain mean lets the large stuff classes drown them.
* Attributes, on thing cells: ``"l1"``, the L1 in stride units (paper); ``"giou"``, 1 - GIoU of the
  box decoded from the predicted distances with the target box (as FCOS trains its distances): the
  vote compares boxes by IoU, and an L1 lets large objects dominate while saying nothing about the IoU of
  small ones; ``"l1_log"``, the L1 of log-distances (scale-free).
* Box probability: BCE with the positive (central) cells weighted ``box_pos_weight`` (paper eq. 3, w_n).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from casnet_core.labels import IGNORE_INDEX

ATTRIBUTE_LOSSES = ("l1", "giou", "l1_log")
# l1_log: target distances can be exactly 0 (a box border through the cell point); floor, in strides.
_LOG_FLOOR = 0.1


def casnet_losses(
    outputs: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
    box_pos_weight: float = 1.0,
    attribute_loss: str = "l1",
    semantic_top_k: float = 1.0,
    small_instance_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Weighted sum alpha * semantic + beta * attributes + gamma * BCE, and its parts.

    Args:
        outputs: the model's dict ("semantic" optional, "attributes", "box_logits"), all (B, *, h, w).
        targets: "semantic" (B, h, w) int64 with IGNORE_INDEX, "attributes" (B, 4, h, w),
            "thing_mask" (B, h, w) bool, "box_prob" (B, 8, h, w) in {0, 1}; optional "semantic_full"
            (B, H, W) integer labels at the input resolution: when given, the cross-entropy is computed on
            the logits upsampled to it (bilinear, as the post-processing upsamples them), so every label
            pixel reaches the loss, not one in s^2. Optional "small_instance" (B, H, W) bool, or (B, h, w)
            without "semantic_full": pixels of small instances (weighted ``small_instance_weight``).
        box_pos_weight: weight of the positive (central) pixels in the BCE, the w_n of the paper's
            equation 3 (1.0: plain BCE). Centres are ~0.1% of pixels; a short training from scratch
            with plain BCE keeps every probability under the 0.5 seed threshold for a long time.
        attribute_loss: "l1" (paper), "giou" or "l1_log", see the module docstring.
        semantic_top_k: fraction (0, 1] of the non-void pixels of each image, those of the largest loss, whose
            mean is the image's semantic loss (1.0: the plain mean of the paper; Panoptic-DeepLab uses 0.2).
        small_instance_weight: weight of the pixels of small instances in the cross-entropy (1.0: off).

    Returns dict with "loss" (the total) and "semantic", "attributes", "box_prob" (unweighted).
    Without a semantic head (separated mode) the semantic loss is 0.
    """
    if attribute_loss not in ATTRIBUTE_LOSSES:
        raise ValueError(f"attribute_loss must be one of {ATTRIBUTE_LOSSES}, got {attribute_loss!r}")
    if not 0.0 < semantic_top_k <= 1.0:
        raise ValueError(f"semantic_top_k must be in (0, 1], got {semantic_top_k}")
    semantic_target = targets["semantic"]
    attributes = outputs["attributes"].float()
    box_logits = outputs["box_logits"].float()

    if "semantic" in outputs:
        semantic = semantic_loss(outputs["semantic"], targets, top_k=semantic_top_k,
                                 small_instance_weight=small_instance_weight)
    else:
        semantic = attributes.new_zeros(())

    # Over thing cells only: elsewhere the attribute is undefined.
    thing = targets["thing_mask"]
    if thing.any():
        predicted = attributes.permute(0, 2, 3, 1)[thing]  # (N, 4)
        target = targets["attributes"].float().permute(0, 2, 3, 1)[thing]
        attribute = attribute_regression_loss(predicted, target, kind=attribute_loss)
    else:
        attribute = attributes.sum() * 0.0  # keeps the head in the graph (DDP needs every parameter used)

    # BCE on every pixel that is not void.
    valid = (semantic_target != IGNORE_INDEX).unsqueeze(1).expand_as(box_logits)
    if valid.any():
        box_target = targets["box_prob"][valid].float()
        weight = 1.0 + (box_pos_weight - 1.0) * box_target
        box = F.binary_cross_entropy_with_logits(box_logits[valid], box_target, weight=weight)
    else:
        box = box_logits.sum() * 0.0

    total = alpha * semantic + beta * attribute + gamma * box
    return {"loss": total, "semantic": semantic.detach(), "attributes": attribute.detach(), "box_prob": box.detach()}


def semantic_loss(
    logits: torch.Tensor,
    targets: dict[str, torch.Tensor],
    *,
    top_k: float = 1.0,
    small_instance_weight: float = 1.0,
) -> torch.Tensor:
    """Cross-entropy of (B, C, h, w) ``logits``, at the resolution of ``targets["semantic_full"]`` when
    given (logits upsampled bilinearly), else of ``targets["semantic"]``: the mean over the non-void pixels, or
    with ``top_k`` < 1 the mean over the images of the mean of each image's ``top_k`` fraction of non-void
    pixels with the largest (weighted) loss. A scalar; 0 (in the graph) when every pixel is void."""
    logits = logits.float()
    labels = targets["semantic"]
    if "semantic_full" in targets:
        labels = targets["semantic_full"].long()
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    pixel_losses = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")  # (B, H, W)
    valid = labels != IGNORE_INDEX
    if small_instance_weight != 1.0:
        if "small_instance" not in targets:
            raise ValueError("small_instance_weight needs the 'small_instance' target (build_targets(small_instance_area=...))")
        pixel_losses = pixel_losses * (1.0 + (small_instance_weight - 1.0) * targets["small_instance"].float())
    if not valid.any():  # every pixel ignored: mean of nothing
        return logits.sum() * 0.0
    if top_k >= 1.0:
        return pixel_losses[valid].mean()
    # Per image: the mean of its hardest pixels, then the mean over the images that have pixels. Per image, so that
    # the loss of a batch does not depend on how it is split over processes and micro-batches.
    per_image, valid = pixel_losses.flatten(1), valid.flatten(1)
    counts = valid.sum(1)
    take = torch.where(counts > 0, (counts * top_k).round().long().clamp(min=1), 0)
    hardest = per_image.masked_fill(~valid, -1.0).topk(int(take.max()), dim=1).values  # losses are >= 0
    kept = torch.arange(hardest.shape[1], device=hardest.device)[None] < take[:, None]
    image_losses = (hardest * kept).sum(1) / take.clamp(min=1)
    return image_losses[counts > 0].mean()


def attribute_regression_loss(predicted: torch.Tensor, target: torch.Tensor, *, kind: str = "l1") -> torch.Tensor:
    """Mean loss between (N, 4) predicted and target distances (l, t, r, b) >= 0 from the same cell point.

    "l1": mean absolute difference per distance (paper). "giou": mean 1 - GIoU of the two boxes the
    distances decode to (both around the same point, so no coordinates are needed). "l1_log": mean
    absolute difference of log-distances, both floored at 0.1 strides.
    """
    if kind == "l1":
        return F.l1_loss(predicted, target)
    if kind == "l1_log":
        return F.l1_loss(torch.log(predicted.clamp_min(_LOG_FLOOR)), torch.log(target.clamp_min(_LOG_FLOOR)))
    if kind != "giou":
        raise ValueError(f"attribute loss must be one of {ATTRIBUTE_LOSSES}, got {kind!r}")
    return (1.0 - generalized_iou(predicted, target)).mean()


def generalized_iou(predicted: torch.Tensor, target: torch.Tensor, *, eps: float = 1e-6) -> torch.Tensor:
    """(N,) GIoU of the boxes given by (N, 4) distances (l, t, r, b) from one shared point each."""
    pred_area = (predicted[:, 0] + predicted[:, 2]) * (predicted[:, 1] + predicted[:, 3])
    target_area = (target[:, 0] + target[:, 2]) * (target[:, 1] + target[:, 3])
    inner = torch.minimum(predicted, target)
    intersection = (inner[:, 0] + inner[:, 2]) * (inner[:, 1] + inner[:, 3])
    union = pred_area + target_area - intersection
    outer = torch.maximum(predicted, target)
    enclosing = (outer[:, 0] + outer[:, 2]) * (outer[:, 1] + outer[:, 3])
    iou = intersection / (union + eps)
    return iou - (enclosing - union) / (enclosing + eps)
