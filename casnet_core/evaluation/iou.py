"""Mean IoU of semantic label-id maps in memory (no files), with the rules of the official pixel-level
evaluator, for validation during training."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from casnet_core.labels import class_space


def mean_iou(pred_label_ids: Sequence[np.ndarray], gt_label_ids: Sequence[np.ndarray],
             label_ids: Sequence[int]) -> float:
    """Mean over ``label_ids`` of the IoU of Cityscapes label-id maps, as the official pixel-level
    evaluator: ground-truth pixels of classes that are not evaluated are left out; a prediction of any
    other id on an evaluated pixel is a miss. Classes absent from both are not averaged (NaN if none)."""
    evaluated = np.zeros(256, dtype=bool)
    evaluated[list(class_space("panoptic").label_ids)] = True
    index = np.full(256, len(label_ids), dtype=np.int64)  # the last index: any other id
    index[list(label_ids)] = np.arange(len(label_ids))
    n = len(label_ids) + 1
    confusion = np.zeros((n, n), dtype=np.int64)
    for pred, gt in zip(pred_label_ids, gt_label_ids):
        gt = np.asarray(gt, dtype=np.int64)
        keep = evaluated[gt]
        pairs = index[gt[keep]] * n + index[np.asarray(pred, dtype=np.int64)[keep].clip(0, 255)]
        confusion += np.bincount(pairs, minlength=n * n).reshape(n, n)
    hits = np.diag(confusion)[:-1].astype(np.float64)
    unions = confusion.sum(0)[:-1] + confusion.sum(1)[:-1] - hits
    present = unions > 0
    return float((hits[present] / unions[present]).mean()) if present.any() else math.nan
