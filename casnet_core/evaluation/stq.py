"""Segmentation and tracking quality (STQ; Weber et al. 2021, "STEP: Segmenting and Tracking Every Pixel"), the
metric of KITTI-STEP and deeplab2, for panoptic predictions over video sequences.

Written from the paper's definition (no maintained package provides it; deeplab2's copy needs TensorFlow):

* SQ, the segmentation quality: the class mean IoU over every pixel of every frame of a sequence (over all
  sequences for the total); pixels whose ground truth is void are left out, a predicted void on a labelled
  pixel is a miss of its class; classes with an empty union do not count.
* AQ, the association quality, over the ground-truth tracks g (thing ids ``label_id * 1000 + k`` of the whole
  sequence; Cityscapes crowd regions, a thing label without an instance id, are no track) and the predicted
  thing ids p::

      AQ = 1 / |tracks| * sum_g 1 / |g| * sum_{p, |p & g| > 0} TPA(p, g) * TPA(p, g) / (TPA + FPA + FNA)(p, g)

  with TPA = |p & g|, FPA = |p| - TPA, FNA = |g| - TPA, in pixels over all frames of the sequence; pixels whose
  ground truth is void or crowd are left out of the predicted areas. No IoU threshold, no matching: every
  overlap counts, weighted by its size. AQ over several sequences sums over the tracks of all of them.
* STQ = sqrt(AQ * SQ).

Panoptic maps are Cityscapes ids: ``label_id * 1000 + k`` for thing instances, ``label_id`` for stuff (and
crowd), 0 for void.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable

import numpy as np

from casnet_core.evaluation.classes import EVAL_LABEL_IDS, THING_LABEL_IDS, segment_label_ids
from casnet_core.labels import LABEL_DIVISOR

STQ_KEYS = ("STQ", "AQ", "SQ")
# Intersections are keyed gt_id * _OFFSET + predicted id; ids are below 256 * 1000.
_OFFSET = 1 << 20


class _Sequence:
    def __init__(self, num_classes: int) -> None:
        self.confusion = np.zeros((num_classes, num_classes + 1), dtype=np.int64)  # gt class x predicted (+ void)
        self.gt_areas: Counter = Counter()
        self.predicted_areas: Counter = Counter()
        self.intersections: Counter = Counter()
        self.frames = 0

    def association(self) -> float:
        """sum_g 1/|g| sum_p TPA * IoU(p, g) over this sequence's tracks (AQ before dividing by their number)."""
        total = 0.0
        per_track: dict[int, float] = {}
        for key, tpa in self.intersections.items():
            gt_id, predicted_id = divmod(key, _OFFSET)
            gt_area, predicted_area = self.gt_areas[gt_id], self.predicted_areas[predicted_id]
            per_track[gt_id] = per_track.get(gt_id, 0.0) + tpa * tpa / (gt_area + predicted_area - tpa)
        for gt_id, inner in per_track.items():
            total += inner / self.gt_areas[gt_id]
        return total


def _class_mean_iou(confusion: np.ndarray) -> float | None:
    """(C, C + 1) confusion (gt rows, predicted columns, the last one void) -> mean IoU over classes with a
    non-empty union; None without any."""
    classes = confusion.shape[0]
    tp = np.diagonal(confusion[:, :classes])
    union = confusion.sum(axis=1) + confusion[:, :classes].sum(axis=0) - tp
    counted = union > 0
    if not counted.any():
        return None
    return float(np.mean(tp[counted] / union[counted]))


class SegmentationTrackingQuality:
    """Accumulates the frames of one or several sequences (e.g. cameras) and gives STQ, AQ and SQ.

    Args:
        label_ids: the Cityscapes label ids scored (default: the 19 evaluated classes); any other is void.
        thing_label_ids: those of them with instances (default: the 8 evaluated thing classes).
    """

    def __init__(self, label_ids: Iterable[int] = EVAL_LABEL_IDS,
                 thing_label_ids: Iterable[int] = THING_LABEL_IDS) -> None:
        label_ids = sorted(int(i) for i in label_ids)
        self._class_of = np.full(256, -1, dtype=np.int64)  # label id -> class index, -1 void
        self._class_of[label_ids] = np.arange(len(label_ids))
        self._is_thing = np.zeros(256, dtype=bool)
        self._is_thing[[i for i in thing_label_ids if i in label_ids]] = True
        self._num_classes = len(label_ids)
        self._sequences: dict[str, _Sequence] = {}

    def _classes(self, panoptic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labels = segment_label_ids(panoptic)
        inside = (labels >= 0) & (labels < 256)
        labels = np.where(inside, labels, 0)
        return np.where(inside, self._class_of[labels], -1), np.where(inside, self._is_thing[labels], False)

    def add(self, ground_truth: np.ndarray, prediction: np.ndarray, sequence: str = "") -> None:
        """One frame: (H, W) ground-truth and predicted panoptic ids of the same size, of ``sequence``."""
        ground_truth, prediction = np.asarray(ground_truth, np.int64), np.asarray(prediction, np.int64)
        if ground_truth.shape != prediction.shape:
            raise ValueError(f"ground truth {ground_truth.shape} and prediction {prediction.shape} differ in size")
        state = self._sequences.setdefault(sequence, _Sequence(self._num_classes))
        state.frames += 1
        gt_class, gt_thing = self._classes(ground_truth)
        predicted_class, predicted_thing = self._classes(prediction)
        labelled = gt_class >= 0
        columns = np.where(predicted_class >= 0, predicted_class, self._num_classes)
        state.confusion += np.bincount(gt_class[labelled] * (self._num_classes + 1) + columns[labelled],
                                       minlength=self._num_classes * (self._num_classes + 1)
                                       ).reshape(self._num_classes, self._num_classes + 1)
        crowd = gt_thing & (ground_truth < LABEL_DIVISOR)
        in_track = gt_thing & ~crowd
        predicted = predicted_thing & labelled & ~crowd
        _count(state.gt_areas, ground_truth[in_track])
        _count(state.predicted_areas, prediction[predicted])
        both = in_track & predicted
        _count(state.intersections, ground_truth[both] * _OFFSET + prediction[both])

    def result(self) -> dict[str, Any]:
        """{"STQ", "AQ", "SQ", "tracks", "frames"} over all sequences, and "sequences": the same per sequence.
        AQ and STQ are None without a ground-truth track, SQ (and STQ) without a labelled pixel."""
        per_sequence = {}
        association, tracks, frames = 0.0, 0, 0
        confusion = np.zeros((self._num_classes, self._num_classes + 1), dtype=np.int64)
        for name, state in self._sequences.items():
            inner = state.association()
            per_sequence[name] = _figures(inner, len(state.gt_areas), _class_mean_iou(state.confusion), state.frames)
            association, tracks, frames = association + inner, tracks + len(state.gt_areas), frames + state.frames
            confusion += state.confusion
        return {**_figures(association, tracks, _class_mean_iou(confusion), frames), "sequences": per_sequence}


def _figures(association: float, tracks: int, sq: float | None, frames: int) -> dict[str, Any]:
    aq = association / tracks if tracks else None
    stq = math.sqrt(aq * sq) if aq is not None and sq is not None else None
    return {"STQ": stq, "AQ": aq, "SQ": sq, "tracks": tracks, "frames": frames}


def _count(counter: Counter, ids: np.ndarray) -> None:
    values, counts = np.unique(ids, return_counts=True)
    for value, count in zip(values.tolist(), counts.tolist()):
        counter[value] += count
