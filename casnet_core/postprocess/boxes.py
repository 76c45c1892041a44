"""Box geometry shared by the seeds and the vote: decoding, pairwise IoU, NMS per group.

Geometry (the project's convention): pixel (x, y) covers [x, x+1) x [y, y+1); cell (i, j) of a stride-s
grid sits at ((j + 0.5) s, (i + 0.5) s); boxes are (x0, y0, x1, y1) with x1, y1 exclusive; decoding is
(px - l s, py - t s, px + r s, py + b s). Output instance boxes are the tight boxes of the final masks in
output pixels ((min x, min y, max x + 1, max y + 1)): the final pixel range calibrates the box (paper III.C).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from casnet_core.postprocess.defaults import MAX_BOX_DISTANCE


def decode_boxes(attributes: Tensor, stride: int) -> Tensor:
    """(B, 4, h, w) distances (l, t, r, b) in units of ``stride`` -> (B, 4, h, w) boxes (x0, y0, x1, y1) in
    input pixels, cell (i, j) sitting at ((j + 0.5) * stride, (i + 0.5) * stride). Distances are clamped to
    [0, MAX_BOX_DISTANCE] (NaN stays NaN: :func:`sanitize_heads` first)."""
    _, _, h, w = attributes.shape
    distances = attributes.float().clamp(0, MAX_BOX_DISTANCE) * stride
    px = (torch.arange(w, device=attributes.device, dtype=torch.float32) + 0.5) * stride
    py = (torch.arange(h, device=attributes.device, dtype=torch.float32) + 0.5) * stride
    px, py = px.view(1, w), py.view(h, 1)
    return torch.stack(
        (px - distances[:, 0], py - distances[:, 1], px + distances[:, 2], py + distances[:, 3]), dim=1
    )


def box_iou_pairwise(boxes: Tensor, others: Tensor) -> Tensor:
    """IoU of boxes (..., 4) with others (..., 4) (broadcast), 0 where the union is empty."""
    iw = (torch.minimum(boxes[..., 2], others[..., 2]) - torch.maximum(boxes[..., 0], others[..., 0])).clamp(min=0)
    ih = (torch.minimum(boxes[..., 3], others[..., 3]) - torch.maximum(boxes[..., 1], others[..., 1])).clamp(min=0)
    inter = iw * ih
    area = (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)
    other_area = (others[..., 2] - others[..., 0]).clamp(min=0) * (others[..., 3] - others[..., 1]).clamp(min=0)
    return inter / (area + other_area - inter).clamp(min=1e-6)


def nms_per_group(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """``batched_nms`` that also accepts boxes with negative coordinates (seeds near the border decode
    boxes reaching outside the image; torchvision's coordinate-offset trick assumes coordinates >= 0 and
    could then suppress across groups). IoU is translation invariant, so shift everything to >= 0 first;
    in float64, so that the offsets of many groups times boxes up to MAX_BOX_DISTANCE strides long keep
    the small boxes exact. Returns kept indices, by decreasing score."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    boxes = boxes.double()
    return batched_nms(boxes - boxes.min(), scores.double(), groups, iou_threshold)
