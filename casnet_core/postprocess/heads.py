"""Stage 0: head outputs of any values -> finite tensors, the non-finite values counted.

The result of :func:`casnet_core.postprocess.common_attribute_support` holds whatever the heads output;
non-finite values (an under-trained model, an fp16 overflow) mean "no evidence" and are counted in
``PanopticOutput.nonfinite``:

* attributes: NaN is a distance of 0 (the box side sits on its cell); every distance is clamped to
  [0, ``MAX_BOX_DISTANCE``] strides, so negative and -inf ones are 0 and +inf or huge ones reach
  ``MAX_BOX_DISTANCE`` strides from the cell;
* box logits: NaN is a box probability of 0 (never a seed); +inf is 1, -inf is 0;
* semantic logits: NaN and -inf are no evidence for their class (-``LOGIT_BOUND``), +inf is
  ``LOGIT_BOUND``; a cell without evidence for any class (all its logits NaN / -inf) is void, and so are
  the output pixels that take more than half of their interpolation weight from such cells.
"""

from __future__ import annotations

import torch
from torch import Tensor

from casnet_core.postprocess.defaults import LOGIT_BOUND


def _within(values: Tensor, low: float, high: float) -> Tensor:
    """0-d bool tensor: every entry of ``values`` lies in (low, high); one min/max pass (NaN propagates through
    it, so a NaN makes it False). Kept on the device: the caller decides when to read it (one host sync)."""
    if values.numel() == 0:
        return torch.ones((), dtype=torch.bool, device=values.device)
    smallest, largest = torch.aminmax(values)
    return (smallest > low) & (largest < high)


def _count_nonfinite(values: Tensor) -> int:
    """NaN / inf entries of ``values`` (a full count: only called once :func:`_within` found some)."""
    return int(values.numel() - torch.isfinite(values).sum())


def sanitize_heads(attributes: Tensor, box_logits: Tensor) -> tuple[Tensor, Tensor, int]:
    """Box heads of any values -> finite float32 attributes and box probabilities.

    Args:
        attributes: (B, 4, h, w) distances (l, t, r, b) in strides, any values.
        box_logits: (B, K, h, w) box-probability logits, any values.

    Returns:
        attributes (B, 4, h, w) float32 without NaN (NaN -> 0; :func:`decode_boxes` clamps the range),
        box probabilities (B, K, h, w) float32 in [0, 1] (sigmoid; NaN -> 0), and the number of non-finite
        values found in both.
    """
    attributes, box_logits = attributes.float(), box_logits.float()
    box_prob = torch.sigmoid(box_logits)
    # One host sync for the usual case of finite heads (each sync stalls a GPU's launch queue).
    all_finite = _within(attributes, -float("inf"), float("inf")) & _within(box_logits, -float("inf"), float("inf"))
    if bool(all_finite):
        return attributes, box_prob, 0
    nonfinite_attributes, nonfinite_box = _count_nonfinite(attributes), _count_nonfinite(box_logits)
    if nonfinite_attributes:
        attributes = attributes.nan_to_num(nan=0.0)
    if nonfinite_box:
        box_prob = box_prob.nan_to_num(nan=0.0)
    return attributes, box_prob, nonfinite_attributes + nonfinite_box


def sanitize_semantic_logits(semantic_logits: Tensor) -> tuple[Tensor, Tensor | None, int]:
    """Semantic logits of any values -> float32 logits in [-LOGIT_BOUND, LOGIT_BOUND].

    Args:
        semantic_logits: (B, C, h, w), any values.

    Returns:
        logits (B, C, h, w) float32 (NaN and -inf -> -LOGIT_BOUND, +inf -> LOGIT_BOUND, finite values
        clamped), void cells (B, h, w) bool, the cells without evidence for any class (every logit at
        -LOGIT_BOUND; their logits become 0, a uniform class probability), or None when there are none,
        and the number of non-finite values found.
    """
    logits = semantic_logits.float()
    if logits.numel() == 0:
        return logits, None, 0
    if bool(_within(logits, -LOGIT_BOUND, LOGIT_BOUND)):
        return logits, None, 0
    nonfinite = _count_nonfinite(logits)
    logits = logits.nan_to_num(nan=-LOGIT_BOUND, posinf=LOGIT_BOUND, neginf=-LOGIT_BOUND)
    logits = logits.clamp(-LOGIT_BOUND, LOGIT_BOUND)
    void_cells = logits.amax(dim=1) <= -LOGIT_BOUND
    if not bool(void_cells.any()):
        return logits, None, nonfinite
    # Neutral class logits: near a void cell the classes of the other cells still compare on their own
    # values (-LOGIT_BOUND everywhere would round every class to the same value there).
    return logits.masked_fill(void_cells[:, None], 0.0), void_cells, nonfinite
