"""Thresholds, bounds and defaults of the post-processing, shared by its stages and read by the Predictor,
the CLI, the evaluation and the ROS node."""

from __future__ import annotations

VOID_CHANNEL = 255  # semantic channel of void / ignored pixels (casnet_core.labels.IGNORE_INDEX)
MAX_BOX_DISTANCE = 1e4  # strides; attributes are clamped to [0, this] (huge and +inf distances end here)
LOGIT_BOUND = 1e30  # semantic logits are clamped to +-this; -LOGIT_BOUND is "no evidence"

#: Post-processing thresholds and their defaults, read by the keyword defaults of the stages, the Predictor,
#: the CLI, the evaluation and the ROS node.
DEFAULT_THRESHOLDS: dict[str, float | int] = {
    # Seeds: tuned for the default model on 30 generated scenes of a seed of their own (README, "Thresholds");
    # the paper's 0.5 and NMS at 0.6 leave this CPU-trained model's less confident seeds out and its
    # duplicate seeds in (tuning scenes: PQ_th 26.8 -> 37.2, AP 20.7 -> 24.8).
    "box_threshold": 0.3,  # seed box probability (paper: 0.5)
    "nms_iou": 0.4,  # NMS IoU between seed boxes
    "tie_margin": 0.05,  # IoU margin within which the vote is a near-tie, broken by the centre
    "min_area": 32,  # instances with fewer pixels are dropped, their pixels re-vote
    "stuff_area": 2048,  # stuff segments with fewer pixels become void (Panoptic-DeepLab's Cityscapes value)
    "max_instances": 200,  # instances per image at most (Panoptic-DeepLab's Cityscapes top_k); see select_seeds
}
NMS_KERNEL = 3  # max-pool window of the seed candidates
PRE_NMS_TOP_K = 2000  # seed candidates per image entering NMS
CHUNK_ELEMENTS = 1 << 18  # pair x seed entries compared at once in the vote (small enough to stay in the CPU cache)
