"""The classes the official Cityscapes evaluators score (label ids without ``ignoreInEval``) and the
helpers that read panoptic maps in their terms."""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

from casnet_core.labels import LABEL_DIVISOR

#: The 19 evaluated classes, in label-id order (the order of the official tables).
EVAL_LABELS = tuple(lab for lab in _CS_LABELS if not lab.ignoreInEval and lab.id >= 0)
EVAL_LABEL_IDS = frozenset(lab.id for lab in EVAL_LABELS)
THING_LABEL_IDS = frozenset(lab.id for lab in EVAL_LABELS if lab.hasInstances)
#: Name of every Cityscapes label id (evaluated or not).
NAME_OF_ID = {lab.id: lab.name for lab in _CS_LABELS if lab.id >= 0}
# Panoptic maps hold ids up to 33 * 1000 + k; their category lookup table spans label ids 0..255.
_EVALUATED = np.zeros(256, dtype=bool)
_EVALUATED[list(EVAL_LABEL_IDS)] = True


def segment_label_ids(panoptic: np.ndarray) -> np.ndarray:
    """Cityscapes label id of every value of a panoptic / instanceIds map (same shape, int64)."""
    panoptic = np.asarray(panoptic, dtype=np.int64)
    return np.where(panoptic >= LABEL_DIVISOR, panoptic // LABEL_DIVISOR, panoptic)


def segment_label_id(segment_id: int) -> int:
    """``segment_label_ids`` of one id: label_id * 1000 + k -> label_id; a stuff / crowd id is its label id."""
    return segment_id // LABEL_DIVISOR if segment_id >= LABEL_DIVISOR else segment_id


def clean_panoptic(panoptic: np.ndarray) -> np.ndarray:
    """Sets to void (0) every pixel whose class is not evaluated (ignoreInEval or unknown ids),
    as ``csCreatePanopticImgs`` does for the ground truth. (H, W) int -> (H, W) int64."""
    panoptic = np.asarray(panoptic, dtype=np.int64)
    label = segment_label_ids(panoptic)
    keep = (label >= 0) & (label < 256) & _EVALUATED[np.clip(label, 0, 255)]
    return np.where(keep, panoptic, 0)
