"""The oracles of the paper (tables III and IV): ``--oracle semantic`` (ground-truth semantics, the
network's attributes; handled by ``Predictor.predict(semantic_label_ids=...)``) and ``--oracle full``
(ground-truth semantics, attributes and box probability through the post-processing alone)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from casnet_core.evaluation.writers import EvalPrediction
from casnet_core.labels import class_space
from casnet_core.postprocess import DEFAULT_THRESHOLDS, common_attribute_support
from casnet_core.targets import build_targets

ORACLES = ("semantic", "full")
# Full oracle: NMS suppresses only identical seed boxes (see full_oracle_prediction).
ORACLE_NMS_IOU = 0.9999


def full_oracle_prediction(
    label_ids: np.ndarray,
    instance_ids: np.ndarray,
    *,
    mode: str = "panoptic",
    **thresholds: Any,
) -> EvalPrediction:
    """The full oracle (paper, tables III and IV, one step further): ground-truth semantics,
    attributes and box probability, from ``build_targets`` at stride 1, through
    ``casnet_core.postprocess.common_attribute_support``. It measures the post-processing (seeds,
    NMS, vote) alone.

    Thresholds are those of ``Predictor`` except three guards against noisy network outputs that,
    fed exact targets, could only delete or merge true segments (``thresholds`` override any of
    them, e.g. ``nms_iou=0.6, min_area=32, stuff_area=2048`` measure the real settings):

    * ``nms_iou`` = ORACLE_NMS_IOU: NMS exists to merge the seeds of one instance, whose boxes a
      network predicts slightly differently. With exact attributes at stride 1 every seed of an
      instance decodes bit-identically the instance's box (IoU exactly 1), while the boxes of two
      instances differ by at least one pixel (IoU <= 1 - 1/2048 for any box in a 2048-pixel image),
      so only identical boxes are suppressed. At 0.6 NMS also merges distinct instances of one class
      whose boxes overlap that much (parked bicycles, groups of persons).
    * ``min_area=0``, ``stuff_area=0``: every seed and every stuff region of the ground truth is
      real; the filters are also in absolute pixels (tuned for 1024x2048), which would make the
      oracle depend on the image size.

    Args:
        label_ids: (H, W) uint8 gtFine labelIds.
        instance_ids: (H, W) int32 gtFine instanceIds.
        mode: class space ("panoptic"; "instance" predicts things only).

    Why it is not always exactly 1.0, each a property of the post-processing, not of the evaluation:

    * Two instances of one class with identical boxes (e.g. a person standing exactly inside another
      person's box) keep one seed after NMS: the pixels of both vote for it and they come out merged.
      With ``nms_iou`` below 1 (the real 0.6), so do instances whose boxes overlap above it.
    * Crowd regions (a thing class without instance id, e.g. Cityscapes' car groups) have no
      attribute target (zeros, an empty box): their pixels tie on every seed and join the nearest
      instance of the class, which grows (lower IoU, possibly below a match). Generated data has none.
    * With ``min_area`` > 0: instances supported by fewer pixels lose their seed; their pixels re-vote
      and join another instance of the class. With ``stuff_area`` > 0: smaller stuff regions become void.
    * Seeds are local maxima of the box probability in a 3x3 window; with exact targets every
      instance has one (``build_targets`` guarantees a positive cell on the instance itself).
    What the evaluators ignore is no error of the oracle: instances under 100 pixels (the instance
    evaluator's ``minRegionSizes[0]``; they still count for PQ) and predictions lying mostly on void
    or on a crowd region of their class.
    """
    classes = class_space(mode)
    targets = build_targets(np.asarray(label_ids, np.uint8), np.asarray(instance_ids, np.int32), mode=mode, stride=1)
    box_prob = torch.from_numpy(targets["box_prob"])[None]
    # {0, 1} probabilities as logits (the post-processing applies the sigmoid).
    box_logits = torch.logit(box_prob.clamp(1e-6, 1 - 1e-6))
    options = {**DEFAULT_THRESHOLDS, "nms_iou": ORACLE_NMS_IOU, "min_area": 0, "stuff_area": 0, **thresholds}
    with torch.no_grad():
        output = common_attribute_support(
            torch.from_numpy(targets["attributes"])[None],
            box_logits,
            thing_classes=classes.thing_classes,
            label_ids=classes.label_ids,
            semantic=torch.from_numpy(targets["semantic"])[None],
            stride=1,
            panoptic=mode == "panoptic",
            **options,
        )
    scores = dict(zip(output.instance_ids.tolist(), output.instance_scores.tolist()))
    return EvalPrediction(output.panoptic[0].numpy(), output.semantic[0].numpy(), scores)
