"""Losses of CASNet (paper, section III.B, equations 1-4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from casnet_core.labels import IGNORE_INDEX


def casnet_losses(
    outputs: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
    box_pos_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Weighted sum alpha * CE + beta * L1 + gamma * BCE, and its parts.

    Args:
        outputs: the model's dict ("semantic" optional, "attributes", "box_logits"), all (B, *, h, w).
        targets: "semantic" (B, h, w) int64 with IGNORE_INDEX, "attributes" (B, 4, h, w),
            "thing_mask" (B, h, w) bool, "box_prob" (B, 8, h, w) in {0, 1}; optional "semantic_full"
            (B, H, W) integer labels at the input resolution: when given, the cross-entropy is computed on
            the logits upsampled to it (bilinear, as the post-processing upsamples them), so every label
            pixel reaches the loss, not one in s^2.

        box_pos_weight: weight of the positive (central) pixels in the BCE, the w_n of the paper's
            equation 3 (1.0: plain BCE). Centres are ~0.1% of pixels; a short training from scratch
            with plain BCE keeps every probability under the 0.5 seed threshold for a long time.

    Returns dict with "loss" (the total) and "semantic", "attributes", "box_prob" (unweighted).
    Without a semantic head (separated mode) the semantic loss is 0.
    """
    semantic_target = targets["semantic"]
    attributes = outputs["attributes"].float()
    box_logits = outputs["box_logits"].float()

    if "semantic" in outputs:
        logits, labels = outputs["semantic"].float(), semantic_target
        if "semantic_full" in targets:
            labels = targets["semantic_full"].long()
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        semantic = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
        if not torch.isfinite(semantic):  # every pixel ignored: mean of nothing
            semantic = outputs["semantic"].sum() * 0.0
    else:
        semantic = attributes.new_zeros(())

    # L1 over thing pixels only: elsewhere the attribute is undefined.
    thing = targets["thing_mask"].unsqueeze(1).expand_as(attributes)
    if thing.any():
        attribute = F.l1_loss(attributes[thing], targets["attributes"][thing])
    else:
        attribute = attributes.sum() * 0.0  # keeps the head in the graph (DDP needs every parameter used)

    # BCE on every pixel that is not void.
    valid = (semantic_target != IGNORE_INDEX).unsqueeze(1).expand_as(box_logits)
    if valid.any():
        box_target = targets["box_prob"][valid]
        weight = 1.0 + (box_pos_weight - 1.0) * box_target
        box = F.binary_cross_entropy_with_logits(box_logits[valid], box_target, weight=weight)
    else:
        box = box_logits.sum() * 0.0

    total = alpha * semantic + beta * attribute + gamma * box
    return {"loss": total, "semantic": semantic.detach(), "attributes": attribute.detach(), "box_prob": box.detach()}
