"""Panoptic quality in memory (NumPy, no files), with the official Cityscapes matching rules: the fast
check for validation during training; it agrees with the official evaluator (tested)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from casnet_core.evaluation.classes import EVAL_LABELS, NAME_OF_ID, THING_LABEL_IDS, clean_panoptic, segment_label_id


@dataclass
class _ClassStat:
    iou: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0


def _accumulate_pq(pred: np.ndarray, gt: np.ndarray, stats: dict[int, _ClassStat]) -> None:
    """One image of ``pq_compute_single_core`` (evalPanopticSemanticLabeling), without files."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    pred, gt = clean_panoptic(pred), clean_panoptic(gt)
    gt_ids, gt_areas = np.unique(gt, return_counts=True)
    pred_ids, pred_areas = np.unique(pred, return_counts=True)
    gt_area = dict(zip(gt_ids.tolist(), gt_areas.tolist()))
    pred_area = dict(zip(pred_ids.tolist(), pred_areas.tolist()))
    gt_area.pop(0, None)
    pred_area.pop(0, None)
    gt_cat = {i: segment_label_id(i) for i in gt_area}
    pred_cat = {i: segment_label_id(i) for i in pred_area}
    # Crowd: a thing-class region without instance id (csCreatePanopticImgs: id < 1000 of a class with instances).
    gt_crowd = {i for i in gt_area if i in THING_LABEL_IDS}

    offset = np.int64(1 << 24)
    pairs, intersections = np.unique(gt * offset + pred, return_counts=True)
    overlap = {(int(p // offset), int(p % offset)): int(n) for p, n in zip(pairs, intersections)}

    gt_matched, pred_matched = set(), set()
    for (g, p), inter in overlap.items():
        if g == 0 or p == 0 or g in gt_crowd or gt_cat[g] != pred_cat[p]:
            continue
        union = pred_area[p] + gt_area[g] - inter - overlap.get((0, p), 0)
        iou = inter / union
        if iou > 0.5:
            stat = stats.setdefault(gt_cat[g], _ClassStat())
            stat.tp += 1
            stat.iou += iou
            gt_matched.add(g)
            pred_matched.add(p)

    crowd_of_category = {}
    for g in gt_area:
        if g in gt_matched:
            continue
        if g in gt_crowd:
            crowd_of_category[gt_cat[g]] = g
            continue
        stats.setdefault(gt_cat[g], _ClassStat()).fn += 1
    for p in pred_area:
        if p in pred_matched:
            continue
        # A prediction mostly on void or on a crowd region of its class is not a false positive.
        ignored = overlap.get((0, p), 0)
        if pred_cat[p] in crowd_of_category:
            ignored += overlap.get((crowd_of_category[pred_cat[p]], p), 0)
        if ignored / pred_area[p] > 0.5:
            continue
        stats.setdefault(pred_cat[p], _ClassStat()).fp += 1


def _average_pq(stats: Mapping[int, _ClassStat], label_ids: Sequence[int]) -> tuple[dict[str, float], int]:
    pq = sq = rq = 0.0
    n = 0
    for label_id in label_ids:
        s = stats.get(label_id)
        if s is None or s.tp + s.fp + s.fn == 0:
            continue  # as the official evaluator: classes absent from both sides do not count
        n += 1
        pq += s.iou / (s.tp + 0.5 * s.fp + 0.5 * s.fn)
        sq += s.iou / s.tp if s.tp else 0.0
        rq += s.tp / (s.tp + 0.5 * s.fp + 0.5 * s.fn)
    if n == 0:
        return {"PQ": math.nan, "SQ": math.nan, "RQ": math.nan}, 0
    return {"PQ": pq / n, "SQ": sq / n, "RQ": rq / n}, n


def panoptic_quality(
    pred_panoptic: Sequence[np.ndarray],
    gt_panoptic: Sequence[np.ndarray],
) -> dict[str, Any]:
    """Panoptic quality of a set of images, with the official Cityscapes rules, in memory.

    Args:
        pred_panoptic: per image, (H, W) int predicted panoptic map in the Cityscapes encoding
            (``Prediction.panoptic``: label_id * 1000 + k for things, label_id for stuff, 0 void).
        gt_panoptic: per image, (H, W) int ground truth in the same encoding: the gtFine
            ``*_instanceIds.png`` as read by ``casnet_core.data.read_instance_ids``.

    Same as ``csCreatePanopticImgs`` + ``evalPanopticSemanticLabeling``: classes with ignoreInEval
    are void; a thing-class region without instance id is crowd; a match needs IoU > 0.5 (void
    pixels of the prediction left out of the union); unmatched predictions more than half on void
    or on a crowd region of their class are not false positives; averages are over the classes
    present in ground truth or prediction.

    Returns: "PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st" as fractions
    (NaN where no class of the group is present), "n", "n_th", "n_st" (classes averaged), and
    "per_class": {class name: {"PQ", "SQ", "RQ", "tp", "fp", "fn"}}.
    """
    if len(pred_panoptic) != len(gt_panoptic):
        raise ValueError(f"{len(pred_panoptic)} predictions for {len(gt_panoptic)} ground-truth images")
    stats: dict[int, _ClassStat] = {}
    for pred, gt in zip(pred_panoptic, gt_panoptic):
        _accumulate_pq(np.asarray(pred), np.asarray(gt), stats)

    all_ids = [lab.id for lab in EVAL_LABELS]
    result: dict[str, Any] = {}
    for suffix, ids in (("", all_ids), ("_th", [i for i in all_ids if i in THING_LABEL_IDS]),
                        ("_st", [i for i in all_ids if i not in THING_LABEL_IDS])):
        averages, n = _average_pq(stats, ids)
        result.update({key + suffix: value for key, value in averages.items()})
        result["n" + suffix] = n
    per_class = {}
    for label_id in all_ids:
        s = stats.get(label_id, _ClassStat())
        denominator = s.tp + 0.5 * s.fp + 0.5 * s.fn
        per_class[NAME_OF_ID[label_id]] = {
            "PQ": s.iou / denominator if denominator else 0.0,
            "SQ": s.iou / s.tp if s.tp else 0.0,
            "RQ": s.tp / denominator if denominator else 0.0,
            "tp": s.tp, "fp": s.fp, "fn": s.fn,
        }
    result["per_class"] = per_class
    return result


def map_agreement(predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
    """How far the predictions of a set of images agree with reference predictions of the same images (another
    precision or backend): "semantic", the fraction of pixels with the same semantic label over all images, and
    "PQ", "PQ_th", "PQ_st" of the panoptic maps taken against the references' as the ground truth.

    Both: per image, an object with (H, W) ``semantic`` and ``panoptic`` arrays (``Prediction``)."""
    equal = sum(int((p.semantic == r.semantic).sum()) for p, r in zip(predictions, references))
    quality = panoptic_quality([p.panoptic for p in predictions], [r.panoptic for r in references])
    return {"semantic": equal / sum(r.semantic.size for r in references),
            **{key: quality[key] for key in ("PQ", "PQ_th", "PQ_st")}}
