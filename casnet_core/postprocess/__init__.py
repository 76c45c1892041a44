"""Common attribute support (paper, section III.C): head outputs -> semantic, instance and panoptic maps.

Pure tensor functions: they run on the device of their inputs, take plain keyword arguments and never
leave torch (no numpy, no Python loop over pixels or seeds; the vote alone loops over the (image, class) groups,
at most B x K). Per-pixel work is a few whole-image passes (lookups, one count); everything else runs on the
stride-s grid or on the pixels of the few cells where classes meet (``grid``). On the CPU the whole of it takes a
fraction of the forward pass (``bench/bench_postprocess.py``). :func:`common_attribute_support`
(``support.py``) is a short composition of the stages below, each a function of its own in a module of its
stage (as detectron2's Panoptic-DeepLab splits ``find_instance_center`` / ``group_pixels`` /
``merge_semantic_and_instance``); every name below is importable from ``casnet_core.postprocess``:

0. ``heads``: :func:`sanitize_heads`, :func:`sanitize_semantic_logits`: non-finite head outputs get the
   meaning given there ("Any head output"), and are counted.
1. ``semantic``: argmax of the semantic logits, bilinearly upsampled to the output resolution (or label ids
   from another segmentation model: "separated" mode). :func:`upsample_semantic` gives exactly that argmax
   without building the (B, C, H, W) logits: it interpolates only near class borders.
2. ``pairs`` (:func:`thing_pairs`): every thing pixel votes through its (image, class, cell) pair, see
   "Resolution" there; :func:`pixel_values` brings what a pair gets back to its pixels, and
   :func:`pair_statistics` gives each pair's pixel count, sums and tight box without visiting every pixel.
   Box geometry (decoding, IoU, NMS) shared by the next stages: ``boxes``.
3. ``seeds`` (:func:`find_seeds`): box-probability cells above ``box_threshold`` that are local maxima
   (``nms_kernel`` max-pool), each decoding its box from its attributes; NMS over these boxes (box probability
   as score, per image and class) leaves the seed boxes.
4. ``seeds``, fallback (:func:`fallback_seeds`): a thing class that has pixels but no seed at all (its box
   probability never passed the threshold, e.g. a badly trained box head or a class the other model of the
   separated mode found where this one saw nothing) would leave holes. Its pixel boxes become the seed
   candidates instead: the cells of that class, scored by their (sub-threshold) box probability, go through
   the same NMS and vote. The best cell of every such class is always a candidate, whatever ``pre_nms_top_k``
   cuts, and NMS never removes the best box of a class: every (image, class) with pixels has a seed. This
   keeps the method's principle (pixels that predict the same box form one instance), runs on the device like
   the rest, and the low scores of such instances rank them last for AP. Connected components would need the
   CPU (OpenCV/SciPy) and would merge touching instances of one class.
5. ``seeds``, cap (:func:`select_seeds`): seeds of an (image, class) without pixels are dropped (nobody would
   vote for them); then each image keeps its ``max_instances`` best seeds and each (image, class) at most
   ``LABEL_DIVISOR`` (so that the ids ``label_id * 1000 + k`` never reach the next label), as
   Panoptic-DeepLab's ``top_k`` and FCOS's ``detections_per_img``. The lowest-scored seeds are the ones
   dropped, before the vote, so their pixels vote among the kept seeds of their class. The best seed of every
   (image, class) with pixels is always kept, so an image with more thing classes present than
   ``max_instances`` keeps one instance per class present.
6. ``voting`` (:func:`vote`): every pixel of the class decodes its own box from its (l, t, r, b) and joins the
   seed box of its class with the highest IoU. Seeds whose IoU is within ``tie_margin`` of the best are
   near-ties: the seed whose box centre is nearest to the centre of the pixel's box wins (then the higher seed
   score).
7. ``voting``, support (:func:`vote_with_support`): seeds with fewer than ``min_area`` pixels are dropped and
   their pixels vote again among the remaining seeds of their class. Dropping only moves pixels onto kept
   seeds, whose areas can only grow, so one re-vote settles it. The best-supported seed of a class is never
   dropped, so that every thing pixel keeps an instance.
8. Numbering, scores, statistics in ``instances`` (:func:`number_instances`, :func:`instance_scores`,
   :func:`mask_statistics`; the instance score is defined there), the panoptic map and its ids in ``maps``
   (:func:`panoptic_map`). Thresholds and bounds: ``defaults``.

Result: each thing pixel belongs to exactly one instance (no overlaps, no holes); stuff and void pixels to
none.
"""

from __future__ import annotations

from casnet_core.postprocess.boxes import box_iou_pairwise, decode_boxes, nms_per_group
from casnet_core.postprocess.defaults import (
    CHUNK_ELEMENTS,
    DEFAULT_THRESHOLDS,
    LOGIT_BOUND,
    MAX_BOX_DISTANCE,
    NMS_KERNEL,
    PRE_NMS_TOP_K,
    VOID_CHANNEL,
)
from casnet_core.postprocess.heads import sanitize_heads, sanitize_semantic_logits
from casnet_core.postprocess.instances import instance_scores, mask_statistics, number_instances, pair_class_probability
from casnet_core.postprocess.grid import Pieces, block_pixels, cell_blocks, pieces
from casnet_core.postprocess.maps import panoptic_map
from casnet_core.postprocess.pairs import (
    PairStatistics,
    ThingPairs,
    pair_statistics,
    pixel_cells,
    pixel_values,
    thing_pairs,
)
from casnet_core.postprocess.seeds import fallback_seeds, find_seeds, select_seeds
from casnet_core.postprocess.semantic import channel_tables, checked_semantic_channels, upsample_semantic
from casnet_core.postprocess.support import PanopticOutput, common_attribute_support
from casnet_core.postprocess.voting import vote, vote_with_support

__all__ = [
    "CHUNK_ELEMENTS",
    "DEFAULT_THRESHOLDS",
    "LOGIT_BOUND",
    "MAX_BOX_DISTANCE",
    "NMS_KERNEL",
    "PRE_NMS_TOP_K",
    "PanopticOutput",
    "PairStatistics",
    "Pieces",
    "ThingPairs",
    "VOID_CHANNEL",
    "block_pixels",
    "box_iou_pairwise",
    "cell_blocks",
    "channel_tables",
    "checked_semantic_channels",
    "common_attribute_support",
    "decode_boxes",
    "fallback_seeds",
    "find_seeds",
    "instance_scores",
    "mask_statistics",
    "nms_per_group",
    "number_instances",
    "pair_class_probability",
    "pair_statistics",
    "panoptic_map",
    "pieces",
    "pixel_cells",
    "pixel_values",
    "sanitize_heads",
    "sanitize_semantic_logits",
    "select_seeds",
    "thing_pairs",
    "upsample_semantic",
    "vote",
    "vote_with_support",
]
