"""The oracles of the paper (tables III and IV), and per-head oracles that tell which head holds PQ down.

* ``--oracle semantic``: ground-truth semantics, the network's attributes and box probability (handled by
  ``Predictor.predict(semantic_label_ids=...)``).
* Per-head oracles (``HEAD_ORACLES``, e.g. ``--oracle seeds+attributes``): the named heads of the network
  are replaced by their ground truth at the network's stride (``build_targets`` at ``output_stride``;
  "seeds" is the box probability, "semantic" the label ids at full resolution, as the semantic oracle),
  the others are the network's, through the post-processing with the predictor's thresholds.
  ``semantic+seeds+attributes`` uses no head of the network: it is ``full_oracle_prediction`` at the
  network's stride with those thresholds.
* ``--oracle full``: ground-truth semantics, attributes and box probability at stride 1 through the
  post-processing alone.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from scipy import ndimage

from casnet_core.evaluation.classes import NAME_OF_ID, segment_label_ids
from casnet_core.evaluation.writers import EvalPrediction
from casnet_core.labels import LABEL_DIVISOR, class_space
from casnet_core.postprocess import DEFAULT_THRESHOLDS, common_attribute_support
from casnet_core.predictor import Instance, Prediction, network_input_size
from casnet_core.targets import build_targets

HEADS = ("semantic", "seeds", "attributes")
#: Per-head oracles: every non-empty combination of HEADS but "semantic" alone (the Predictor's semantic oracle).
HEAD_ORACLES = ("seeds", "attributes", "semantic+seeds", "semantic+attributes", "seeds+attributes",
                "semantic+seeds+attributes")
ORACLES = ("semantic", *HEAD_ORACLES, "full")
# Full oracle: NMS suppresses only identical seed boxes (see full_oracle_prediction).
ORACLE_NMS_IOU = 0.9999


def oracle_heads(name: str) -> frozenset[str]:
    """The heads an oracle name (e.g. "seeds+attributes") replaces by ground truth; ValueError for others."""
    heads = frozenset(name.split("+"))
    if not heads or not heads <= set(HEADS) or "+".join(h for h in HEADS if h in heads) != name:
        raise ValueError(f"unknown oracle {name!r}, expected one of {ORACLES}")
    return heads


def full_oracle_prediction(
    label_ids: np.ndarray,
    instance_ids: np.ndarray,
    *,
    mode: str = "panoptic",
    stride: int = 1,
    **thresholds: Any,
) -> EvalPrediction:
    """The full oracle (paper, tables III and IV, one step further): ground-truth semantics,
    attributes and box probability, from ``build_targets`` at ``stride`` (1: exact; the network's
    stride: the best its heads could do), through ``casnet_core.postprocess.common_attribute_support``.
    It measures the post-processing (seeds, NMS, vote) alone.

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
        label_ids: (H, W) uint8 gtFine labelIds; H, W multiples of ``stride``.
        instance_ids: (H, W) int32 gtFine instanceIds.
        mode: class space ("panoptic"; "instance" predicts things only).
        stride: grid of the attribute and box-probability targets; semantics stay at full resolution.

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
    options = {**DEFAULT_THRESHOLDS, "nms_iou": ORACLE_NMS_IOU, "min_area": 0, "stuff_area": 0, **thresholds}
    targets = build_targets(np.asarray(label_ids, np.uint8), np.asarray(instance_ids, np.int32), mode=mode,
                            stride=stride)
    return _post_process(targets, label_ids.shape, mode=mode, stride=stride, panoptic=mode == "panoptic",
                         options=options)


def head_oracle_prediction(
    predictor,
    image_rgb: np.ndarray,
    label_ids: np.ndarray,
    instance_ids: np.ndarray,
    *,
    heads: str,
) -> EvalPrediction:
    """The prediction of ``predictor`` (a ``casnet_core.predictor.Predictor``) on ``image_rgb`` with the
    heads named by ``heads`` (an entry of HEAD_ORACLES, or "semantic") replaced by the ground truth
    ``label_ids``, ``instance_ids`` (H, W) at the network's output stride, post-processed with the
    predictor's thresholds. The image is not resized (the network sees it padded to its size divisor):
    ValueError when the predictor would resize it (``input_size``, ``max_input_size``)."""
    replaced = oracle_heads(heads)
    height, width = image_rgb.shape[:2]
    if label_ids.shape != (height, width) or instance_ids.shape != (height, width):
        raise ValueError(f"ground truth {label_ids.shape} / {instance_ids.shape} does not match the image {(height, width)}")
    mode = predictor.class_space.mode
    stride = predictor.model.output_stride
    net_size = network_input_size(height, width, input_size=predictor.input_size,
                                  max_input_size=predictor.max_input_size)
    if net_size != (height, width):
        raise ValueError(f"per-head oracles need the image at the network's size: {(height, width)} is resized "
                         f"to {net_size} (predictor input_size / max_input_size)")
    with torch.inference_mode():
        outputs = predictor.model(_network_input(image_rgb, predictor.model, predictor.device))
    # Ground truth padded with void (label 0) as the network input is padded.
    padded = outputs["box_logits"].shape[-2] * stride, outputs["box_logits"].shape[-1] * stride
    pad = ((0, padded[0] - height), (0, padded[1] - width))
    targets = build_targets(np.pad(np.asarray(label_ids, np.uint8), pad), np.pad(np.asarray(instance_ids, np.int32), pad),
                            mode=mode, stride=stride)
    targets["semantic_full"] = targets["semantic_full"][:height, :width]
    device = predictor.device
    network = {
        "attributes": None if "attributes" in replaced else outputs["attributes"].float(),
        "box_logits": None if "seeds" in replaced else outputs["box_logits"].float(),
        "semantic_logits": None if "semantic" in replaced else outputs["semantic"].float(),
    }
    options = {k: getattr(predictor, k) for k in ("box_threshold", "nms_iou", "tie_margin", "min_area", "stuff_area",
                                                  "max_instances")}
    return _post_process(targets, (height, width), mode=mode, stride=stride, panoptic=predictor.mode == "panoptic",
                         options=options, network=network, device=device)


def _network_input(image_rgb: np.ndarray, model, device: torch.device) -> torch.Tensor:
    """(1, 3, H', W') float 0..255: the image padded bottom/right to the model's size divisor with its mean
    colour, as the Predictor pads (0 after the normalisation)."""
    height, width = image_rgb.shape[:2]
    divisor = model.size_divisor
    padded = -(-height // divisor) * divisor, -(-width // divisor) * divisor
    images = torch.from_numpy(np.ascontiguousarray(image_rgb)).to(device).permute(2, 0, 1)[None].float()
    if padded != (height, width):
        fill = model.pixel_mean.view(1, 3, 1, 1).to(images).expand(1, 3, *padded).clone()
        fill[:, :, :height, :width] = images
        images = fill
    return images


def _post_process(
    targets: Mapping[str, np.ndarray],
    size: tuple[int, int],
    *,
    mode: str,
    stride: int,
    panoptic: bool,
    options: Mapping[str, Any],
    network: Mapping[str, torch.Tensor | None] | None = None,
    device: torch.device | str = "cpu",
) -> EvalPrediction:
    """``common_attribute_support`` on the ground-truth heads of ``targets`` (``build_targets`` at ``stride``),
    each replaced by the tensor of ``network`` where one is given ("attributes", "box_logits": (1, *, h, w);
    "semantic_logits": (1, C, h, w), else the full-resolution ground truth ``targets["semantic_full"]``)."""
    network = network or {}
    classes = class_space(mode)
    attributes = network.get("attributes")
    if attributes is None:
        attributes = torch.from_numpy(targets["attributes"])[None].to(device)
    box_logits = network.get("box_logits")
    if box_logits is None:
        # {0, 1} probabilities as logits (the post-processing applies the sigmoid).
        box_logits = torch.logit(torch.from_numpy(targets["box_prob"])[None].clamp(1e-6, 1 - 1e-6)).to(device)
    semantic_logits = network.get("semantic_logits")
    semantic = None
    if semantic_logits is None:
        semantic = torch.from_numpy(targets["semantic_full"].astype(np.int64))[None].to(device)
    with torch.no_grad():
        output = common_attribute_support(
            attributes,
            box_logits,
            thing_classes=classes.thing_classes,
            label_ids=classes.label_ids,
            semantic_logits=semantic_logits,
            semantic=semantic,
            stride=stride,
            output_size=tuple(size),
            panoptic=panoptic,
            **options,
        )
    scores = dict(zip(output.instance_ids.tolist(), output.instance_scores.tolist()))
    return EvalPrediction(output.panoptic[0].cpu().numpy(), output.semantic[0].cpu().numpy(), scores)


def oracle_prediction(predictor, image_rgb: np.ndarray, panoptic_gt: np.ndarray, oracle: str, *,
                      stride: int | None = None) -> Prediction:
    """The ``Prediction`` of an oracle (an entry of ORACLES) on one frame with Cityscapes panoptic ground truth
    ``panoptic_gt`` (H, W) (a drive's ground-truth topic), for ``casnet replay --oracle``: "semantic" and the
    per-head oracles as ``casnet eval`` runs them with ``predictor``; "full" the ground-truth heads at the
    network's stride (``full_oracle_prediction`` with its oracle thresholds), so that grouping, and tracking
    after it, are measured without the network (``stride``: at that stride instead, e.g. 1 for exact heads).
    Instances as the Predictor gives them (``instances_of``)."""
    label_ids = segment_label_ids(panoptic_gt).astype(np.uint8)
    instance_ids = np.asarray(panoptic_gt, dtype=np.int32)
    if oracle == "semantic":
        return predictor.predict(image_rgb, semantic_label_ids=label_ids)
    if oracle == "full":
        result = full_oracle_prediction(label_ids, instance_ids, mode=predictor.class_space.mode,
                                        stride=stride or predictor.model.output_stride)
    else:
        result = head_oracle_prediction(predictor, image_rgb, label_ids, instance_ids, heads=oracle)
    panoptic = np.asarray(result.panoptic, dtype=np.int32)
    return Prediction(panoptic, np.asarray(result.semantic, dtype=np.uint8), instances_of(panoptic, result.scores))


def instances_of(panoptic: np.ndarray, scores: Mapping[int, float]) -> list[Instance]:
    """The thing instances (ids >= 1000) of an (H, W) panoptic map, with box, area and centroid as the Predictor
    computes them and the score of ``scores`` (id -> score; 1.0 for an id without one), by decreasing score."""
    flat = np.asarray(panoptic, dtype=np.int64).ravel()
    areas = np.bincount(flat)
    ids = np.flatnonzero(areas[LABEL_DIVISOR:]) + LABEL_DIVISOR
    if ids.size == 0:
        return []
    height, width = panoptic.shape
    sum_x = np.bincount(flat, weights=np.tile(np.arange(width, dtype=np.float64) + 0.5, height))
    sum_y = np.bincount(flat, weights=np.repeat(np.arange(height, dtype=np.float64) + 0.5, width))
    slices = ndimage.find_objects(np.asarray(panoptic, dtype=np.int32), max_label=int(ids[-1]))
    instances = []
    for segment in ids.tolist():
        rows, columns = slices[segment - 1]
        label = segment // LABEL_DIVISOR
        instances.append(Instance(
            id=segment, label_id=label, class_name=NAME_OF_ID.get(label, str(label)),
            score=float(scores.get(segment, 1.0)),
            box=(float(columns.start), float(rows.start), float(columns.stop), float(rows.stop)),
            area=int(areas[segment]), centroid=(sum_x[segment] / areas[segment], sum_y[segment] / areas[segment])))
    return sorted(instances, key=lambda instance: (-instance.score, instance.id))
