"""Evaluation with the official cityscapesScripts evaluators:
``casnet eval --data DIR --split val --out DIR (--checkpoint CKPT | --oracle semantic | --oracle full)``.

Predictions are written in the official result formats under OUT, then the three official
evaluators run on them, in this process (their functions are called with args objects of our own,
so nothing is read from CITYSCAPES_DATASET / CITYSCAPES_RESULTS and nothing is written into the
installed package):

* panoptic (PQ, SQ, RQ over all / things / stuff): ``evalPanopticSemanticLabeling.evaluatePanoptic``
  on ``OUT/panoptic/cityscapes_panoptic_{split}.json`` + ``OUT/panoptic/cityscapes_panoptic_{split}/``
  (COCO panoptic PNGs, id = R + 256 G + 256^2 B, category ids = Cityscapes label ids).
  Its ground truth is made by the official ``csCreatePanopticImgs`` conversion
  (``createPanopticImgs.convert2panoptic``) of gtFine, cached beside it as the official tools expect,
  in ``DATA/gtFine/cityscapes_panoptic_{split}.json`` + folder, and redone when an instanceIds file is
  newer or the image set changed; when DATA is read-only the cache goes to ``OUT/gt_panoptic/``.
* instance (AP averaged over IoU 0.5:0.95, AP50): ``evalInstanceLevelSemanticLabeling.evaluateImgLists``
  on ``OUT/instance/{image}.txt`` (one line ``masks/{image}_{k}.png label_id confidence`` per
  instance, one binary mask PNG each). Its ground-truth cache ``gtInstances.json`` and its
  ``matches.json`` go to ``OUT/evaluators/`` (the latter is written to the working directory, so the
  call runs with that folder as working directory).
* pixel level (mIoU over the 19 classes, iIoU): ``evalPixelLevelSemanticLabeling.evaluateImgLists``
  on ``OUT/semantic/{image}_labelIds.png`` (Cityscapes label ids).

Everything the evaluators print goes to ``OUT/evaluators/evaluators.log``; their own JSON results
are in ``OUT/evaluators/``. ``OUT/metrics.json`` gathers the figures as fractions in [0, 1]:
``PQ SQ RQ PQ_th SQ_th RQ_th PQ_st SQ_st RQ_st AP AP50 mIoU iIoU`` and per-class tables.

Instance mode (a checkpoint of mode "instance") predicts no stuff: every stuff pixel is background
(void in the panoptic output, label id 0 in the semantic output). PQ_th, SQ_th, RQ_th (thing segments
are matched per class, and a prediction on void is not a false positive), AP, AP50 and the IoU of
thing classes (``mIoU_th``) remain meaningful; PQ, SQ, RQ, the stuff figures and mIoU are written as
null and listed under ``not_meaningful``.

Separated mode (``--semantic-dir DIR``): semantics come from another model, as Cityscapes label-id
PNGs found anywhere under DIR and named after the image as the official pixel-level results are:
``{city}_{seq}_{frame}*.png`` (e.g. ``..._gtFine_labelIds.png`` or ``..._leftImg8bit.png``), exactly
one per image.

Oracles (paper, tables III and IV):
* ``--oracle semantic``: ground-truth label ids replace the semantic head; the network still
  predicts attributes and box probability (needs ``--checkpoint``).
* ``--oracle full``: ground-truth semantics, attributes and box probability (``build_targets`` at
  stride 1), through the post-processing of ``casnet_core.postprocess`` alone: it measures the
  clustering itself. Its NMS suppresses only identical boxes and its area filters are off (exact
  targets have no noise to guard against); ``--nms-iou/--min-area/--stuff-area`` set them back.
  See ``full_oracle_prediction`` for why and for the cases where it cannot reach 1.0.

cityscapesScripts 2.3.0 predates NumPy 2: each evaluator call is wrapped so that ``np.in1d``
(removed in NumPy 2.4) exists and the scripts' JSON writer accepts NumPy integers (``_numpy2_compat``);
the instance evaluator runs with ``OUT/evaluators`` as working directory (it writes matches.json
there), the process's working directory being restored afterwards.

``panoptic_quality`` is a fast in-process PQ (numpy, no files) with the official matching rules, for
validation during training; it agrees with the official evaluator (tested).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

from casnet_core.labels import LABEL_DIVISOR
from casnet_core.predictor import DEFAULT_THRESHOLDS, add_threshold_arguments, thresholds_from_args

METRIC_KEYS = ("PQ", "SQ", "RQ", "PQ_th", "PQ_st", "AP", "AP50", "mIoU")
ORACLES = ("semantic", "full")
# Full oracle: NMS suppresses only identical seed boxes (see full_oracle_prediction).
ORACLE_NMS_IOU = 0.9999

_EVAL_LABELS = [lab for lab in _CS_LABELS if not lab.ignoreInEval and lab.id >= 0]
_EVAL_LABEL_IDS = frozenset(lab.id for lab in _EVAL_LABELS)
_THING_LABEL_IDS = frozenset(lab.id for lab in _EVAL_LABELS if lab.hasInstances)
_NAME_OF_ID = {lab.id: lab.name for lab in _CS_LABELS if lab.id >= 0}
# Panoptic maps hold ids up to 33 * 1000 + k; their category lookup table spans label ids 0..255.
_EVALUATED = np.zeros(256, dtype=bool)
_EVALUATED[list(_EVAL_LABEL_IDS)] = True


# ----------------------------------------------------------------------------------------------
# In-process panoptic quality
# ----------------------------------------------------------------------------------------------


def segment_label_ids(panoptic: np.ndarray) -> np.ndarray:
    """Cityscapes label id of every value of a panoptic / instanceIds map (same shape, int64)."""
    panoptic = np.asarray(panoptic, dtype=np.int64)
    return np.where(panoptic >= LABEL_DIVISOR, panoptic // LABEL_DIVISOR, panoptic)


def clean_panoptic(panoptic: np.ndarray) -> np.ndarray:
    """Sets to void (0) every pixel whose class is not evaluated (ignoreInEval or unknown ids),
    as ``csCreatePanopticImgs`` does for the ground truth. (H, W) int -> (H, W) int64."""
    panoptic = np.asarray(panoptic, dtype=np.int64)
    label = segment_label_ids(panoptic)
    keep = (label >= 0) & (label < 256) & _EVALUATED[np.clip(label, 0, 255)]
    return np.where(keep, panoptic, 0)


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
    gt_cat = {i: (i // LABEL_DIVISOR if i >= LABEL_DIVISOR else i) for i in gt_area}
    pred_cat = {i: (i // LABEL_DIVISOR if i >= LABEL_DIVISOR else i) for i in pred_area}
    # Crowd: a thing-class region without instance id (csCreatePanopticImgs: id < 1000 of a class with instances).
    gt_crowd = {i for i in gt_area if i < LABEL_DIVISOR and i in _THING_LABEL_IDS}

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

    all_ids = [lab.id for lab in _EVAL_LABELS]
    result: dict[str, Any] = {}
    for suffix, ids in (("", all_ids), ("_th", [i for i in all_ids if i in _THING_LABEL_IDS]),
                        ("_st", [i for i in all_ids if i not in _THING_LABEL_IDS])):
        averages, n = _average_pq(stats, ids)
        result.update({key + suffix: value for key, value in averages.items()})
        result["n" + suffix] = n
    per_class = {}
    for label_id in all_ids:
        s = stats.get(label_id, _ClassStat())
        denominator = s.tp + 0.5 * s.fp + 0.5 * s.fn
        per_class[_NAME_OF_ID[label_id]] = {
            "PQ": s.iou / denominator if denominator else 0.0,
            "SQ": s.iou / s.tp if s.tp else 0.0,
            "RQ": s.tp / denominator if denominator else 0.0,
            "tp": s.tp, "fp": s.fp, "fn": s.fn,
        }
    result["per_class"] = per_class
    return result


# ----------------------------------------------------------------------------------------------
# Writing predictions in the official formats
# ----------------------------------------------------------------------------------------------


def encode_panoptic_rgb(panoptic: np.ndarray) -> np.ndarray:
    """(H, W) segment ids -> (H, W, 3) uint8 RGB with id = R + 256 G + 256^2 B (COCO panoptic)."""
    ids = np.asarray(panoptic, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def _write_png(path: Path, image: np.ndarray) -> None:
    # Low compression: these files are read once by the evaluators, speed matters more than size.
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"cannot write {path}")


@dataclass
class EvalPrediction:
    """What the evaluators need of one image.

    panoptic: (H, W) int Cityscapes panoptic encoding (things label_id*1000+k, stuff label_id, void 0).
    semantic: (H, W) uint8 Cityscapes label ids, or None to derive them from ``panoptic``.
    scores: confidence per thing segment id (default 1.0), for the instance evaluator's ranking.
    """

    panoptic: np.ndarray
    semantic: np.ndarray | None = None
    scores: Mapping[int, float] = field(default_factory=dict)


class CityscapesResultWriter:
    """Writes predictions under ``out_dir`` in the three official result formats.

    ``out_dir/panoptic/cityscapes_panoptic_{split}.json`` + ``.../cityscapes_panoptic_{split}/{image}_panoptic.png``,
    ``out_dir/instance/{image}.txt`` + ``out_dir/instance/masks/{image}_{k}.png``,
    ``out_dir/semantic/{image}_labelIds.png``. ``close()`` writes the panoptic JSON.
    """

    def __init__(self, out_dir: str | os.PathLike, split: str) -> None:
        self.out_dir = Path(out_dir).resolve()
        self.split = split
        self.panoptic_json = self.out_dir / "panoptic" / f"cityscapes_panoptic_{split}.json"
        self.panoptic_dir = self.out_dir / "panoptic" / f"cityscapes_panoptic_{split}"
        self.instance_dir = self.out_dir / "instance"
        self.semantic_dir = self.out_dir / "semantic"
        # Stale files of an earlier run would be found by the evaluators' searches: start clean.
        for folder in (self.out_dir / "panoptic", self.instance_dir, self.semantic_dir):
            shutil.rmtree(folder, ignore_errors=True)
        self.panoptic_dir.mkdir(parents=True)
        (self.instance_dir / "masks").mkdir(parents=True)
        self.semantic_dir.mkdir(parents=True)
        self._annotations: list[dict[str, Any]] = []
        self.image_ids: list[str] = []

    def add(self, image_id: str, prediction: EvalPrediction) -> None:
        """``image_id``: the Cityscapes core name, e.g. "frankfurt_000000_000294"."""
        panoptic = clean_panoptic(prediction.panoptic)
        if panoptic.max(initial=0) >= 1 << 24:
            raise ValueError(f"{image_id}: panoptic ids must be below 2**24")
        labels = segment_label_ids(panoptic)

        # Panoptic: PNG of ids + the segments of the JSON (category = label id, as the ground truth).
        segment_ids = [int(i) for i in np.unique(panoptic) if i != 0]
        segments_info = [
            {"id": i, "category_id": i // LABEL_DIVISOR if i >= LABEL_DIVISOR else i} for i in segment_ids
        ]
        file_name = f"{image_id}_panoptic.png"
        _write_png(self.panoptic_dir / file_name, encode_panoptic_rgb(panoptic)[..., ::-1])  # RGB -> BGR
        self._annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": segments_info})

        # Instances: every thing segment with an instance id, one binary mask each.
        lines = []
        for k, i in enumerate(i for i in segment_ids if i >= LABEL_DIVISOR and i // LABEL_DIVISOR in _THING_LABEL_IDS):
            mask_name = f"masks/{image_id}_{k:03d}.png"
            _write_png(self.instance_dir / mask_name, (panoptic == i).astype(np.uint8) * 255)
            score = float(prediction.scores.get(i, 1.0))
            lines.append(f"{mask_name} {i // LABEL_DIVISOR} {score:.8g}\n")
        (self.instance_dir / f"{image_id}.txt").write_text("".join(lines))

        # Pixel level: label ids (void 0 where the prediction has none).
        semantic = prediction.semantic
        if semantic is None:
            semantic = labels
        semantic = np.asarray(semantic)
        if semantic.shape != panoptic.shape:
            raise ValueError(f"{image_id}: semantic {semantic.shape} and panoptic {panoptic.shape} differ in size")
        if semantic.min(initial=0) < 0 or semantic.max(initial=0) > max(_NAME_OF_ID):
            raise ValueError(f"{image_id}: semantic label ids outside 0..{max(_NAME_OF_ID)}")
        _write_png(self.semantic_dir / f"{image_id}_labelIds.png", semantic.astype(np.uint8))
        self.image_ids.append(image_id)

    def close(self) -> None:
        categories = _panoptic_categories()
        self.panoptic_json.write_text(json.dumps(
            {"annotations": self._annotations, "categories": categories}, indent=1))


def _panoptic_categories() -> list[dict[str, Any]]:
    # The same list as csCreatePanopticImgs writes into the ground-truth JSON.
    return [{"id": lab.id, "name": lab.name, "color": list(lab.color), "supercategory": lab.category,
             "isthing": int(lab.hasInstances)} for lab in _EVAL_LABELS]


# ----------------------------------------------------------------------------------------------
# Ground truth for the panoptic evaluator
# ----------------------------------------------------------------------------------------------


def prepare_panoptic_ground_truth(
    data_root: str | os.PathLike, split: str, *, fallback_dir: str | os.PathLike | None = None
) -> tuple[Path, Path]:
    """The COCO-format panoptic ground truth of ``split``, from the official ``csCreatePanopticImgs``.

    Cached where the official tools put it, ``DATA/gtFine/cityscapes_panoptic_{split}.json`` and the
    folder beside it, and reused while it covers exactly the split's ``*_instanceIds.png`` and is
    newer than all of them. If DATA is not writable the cache goes to ``fallback_dir``.
    Returns (json file, PNG folder).
    """
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    gt_fine = Path(data_root).resolve() / "gtFine"
    sources = sorted((gt_fine / split).glob("*/*_instanceIds.png"))
    if not sources:
        raise FileNotFoundError(f"no ground truth matching {gt_fine}/{split}/*/*_instanceIds.png")
    output = gt_fine
    if not os.access(gt_fine, os.W_OK):
        if fallback_dir is None:
            raise PermissionError(f"{gt_fine} is not writable and no fallback folder was given")
        output = Path(fallback_dir).resolve()
        output.mkdir(parents=True, exist_ok=True)
    json_file = output / f"cityscapes_panoptic_{split}.json"
    folder = output / f"cityscapes_panoptic_{split}"
    if not _panoptic_cache_is_fresh(json_file, folder, sources):
        with _redirect_output(None):
            convert2panoptic(cityscapesPath=str(gt_fine), outputFolder=str(output), setNames=[split])
    return json_file, folder


def _panoptic_cache_is_fresh(json_file: Path, folder: Path, sources: list[Path]) -> bool:
    if not json_file.is_file() or not folder.is_dir():
        return False
    if json_file.stat().st_mtime < max(p.stat().st_mtime for p in sources):
        return False
    try:
        cached = {ann["image_id"] for ann in json.loads(json_file.read_text())["annotations"]}
    except (ValueError, KeyError, TypeError):
        return False
    return cached == {p.name[: -len("_gtFine_instanceIds.png")] for p in sources}


# ----------------------------------------------------------------------------------------------
# The official evaluators
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _redirect_output(log_file: Path | None) -> Iterator[None]:
    """The official scripts print progress and tables; keep them in a log (or drop them)."""
    sys.stdout.flush()
    stream = open(log_file, "a") if log_file is not None else io.StringIO()
    try:
        with contextlib.redirect_stdout(stream):
            yield
            sys.stdout.flush()
    finally:
        stream.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.__dict__  # what the official writeDict2JSON does for everything it cannot encode


def _write_dict_to_json(data: Any, file_name: str) -> None:
    """``csHelpers.writeDict2JSON`` (same layout) that also encodes NumPy scalars."""
    with open(file_name, "w") as f:
        f.write(json.dumps(data, default=_json_default, sort_keys=True, indent=4))


@contextlib.contextmanager
def _numpy2_compat(module: Any) -> Iterator[None]:
    """cityscapesScripts 2.3.0 (its last release) predates NumPy 2; for the duration of one
    evaluator call, two gaps are bridged, nothing else changes:

    * ``np.in1d``, removed in NumPy 2.4: provided as its documented replacement, ``np.isin`` on
      the flattened input (the evaluators reshape the result themselves);
    * ``writeDict2JSON`` (imported into ``module``) fails on the NumPy integers that
      ``np.count_nonzero`` returns under NumPy 2: replaced in ``module`` by the same writer with
      NumPy scalars encoded as numbers.
    """
    added_in1d = not hasattr(np, "in1d")
    if added_in1d:
        def in1d(ar1, ar2, assume_unique=False, invert=False):
            return np.isin(np.ravel(ar1), ar2, assume_unique=assume_unique, invert=invert)

        np.in1d = in1d
    original_writer = getattr(module, "writeDict2JSON", None)
    if original_writer is not None:
        module.writeDict2JSON = _write_dict_to_json
    try:
        yield
    finally:
        if original_writer is not None:
            module.writeDict2JSON = original_writer
        if added_in1d:
            del np.in1d


@contextlib.contextmanager
def _official_errors(evaluator: str) -> Iterator[None]:
    """The scripts report errors with ``printError`` -> ``sys.exit(-1)``: turn that into an exception."""
    try:
        yield
    except SystemExit as error:
        raise RuntimeError(f"the official {evaluator} evaluator stopped (exit {error.code}); "
                           "its message is at the end of OUT/evaluators/evaluators.log") from error


def run_panoptic_evaluator(
    gt_json: Path, gt_folder: Path, pred_json: Path, pred_folder: Path, results_file: Path,
    *, image_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """``evalPanopticSemanticLabeling.evaluatePanoptic``; returns its results dict.

    ``image_ids``: evaluate only these images: the ground-truth JSON is filtered into a copy
    beside ``results_file`` (the evaluator wants a prediction for every ground-truth image).
    """
    from cityscapesscripts.evaluation import evalPanopticSemanticLabeling as official

    if image_ids is not None:
        wanted = set(image_ids)
        gt = json.loads(Path(gt_json).read_text())
        gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in wanted]
        gt["images"] = [i for i in gt.get("images", []) if i["id"] in wanted]
        missing = wanted - {a["image_id"] for a in gt["annotations"]}
        if missing:
            raise ValueError(f"no panoptic ground truth for {sorted(missing)[:3]}")
        gt_json = Path(results_file).parent / f"gt_{Path(gt_json).name}"
        gt_json.write_text(json.dumps(gt))
    with _official_errors("panoptic"):
        try:
            return official.evaluatePanoptic(str(gt_json), str(gt_folder), str(pred_json), str(pred_folder),
                                             str(results_file))
        except ZeroDivisionError as error:
            # pq_average divides by the number of classes present, for things and for stuff alike.
            raise RuntimeError("the official panoptic evaluator needs at least one thing and one stuff "
                               "segment in ground truth or prediction") from error


def _instance_args(results_root: Path, work_dir: Path, quiet: bool):
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as official

    args = official.CArgs()
    for name, value in vars(official.args).items():  # the defaults of the script ...
        setattr(args, name, value)
    # ... with every path pointed at our folders, never at the package or the environment.
    args.cityscapesPath = str(work_dir)
    args.exportFile = str(work_dir / "resultInstanceLevelSemanticLabeling.json")
    args.groundTruthSearch = ""
    args.gtInstancesFile = str(work_dir / "gtInstances.json")
    args.predictionPath = str(results_root)
    args.predictionWalk = None
    args.quiet = quiet
    args.colorized = False
    args.csv = False
    args.JSONOutput = True
    args.instLabels = []
    args.overlaps = np.arange(0.5, 1.0, 0.05)
    args.minRegionSizes = np.array([100, 1000, 1000])
    args.distanceThs = np.array([float("inf"), 100, 50])
    args.distanceConfs = np.array([-float("inf"), 0.5, 0.5])
    args.distanceAvailable = False
    return args


def run_instance_evaluator(
    prediction_files: Sequence[Path], gt_instance_files: Sequence[Path], results_root: Path, work_dir: Path,
    *, quiet: bool = True,
) -> dict[str, Any]:
    """``evalInstanceLevelSemanticLabeling.evaluateImgLists`` on explicit file lists.

    ``results_root`` holds the txt files and masks (the evaluator checks masks lie inside it);
    ``work_dir`` receives gtInstances.json (rebuilt every run: the official cache never notices a
    changed ground truth), matches.json and the result JSON.
    """
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as official

    args = _instance_args(Path(results_root).resolve(), Path(work_dir).resolve(), quiet)
    Path(args.gtInstancesFile).unlink(missing_ok=True)
    # Absolute before the chdir below; the evaluator also keys its ground truth by absolute path.
    predictions = [str(Path(p).resolve()) for p in prediction_files]
    ground_truth = [str(Path(p).resolve()) for p in gt_instance_files]
    with _official_errors("instance"), _numpy2_compat(official), contextlib.chdir(args.cityscapesPath):
        # evaluateImgLists writes matches.json into the working directory: make that work_dir.
        return official.evaluateImgLists(predictions, ground_truth, args)


def run_pixel_evaluator(
    prediction_files: Sequence[Path], gt_label_files: Sequence[Path], work_dir: Path, *, quiet: bool = True,
) -> dict[str, Any]:
    """``evalPixelLevelSemanticLabeling.evaluateImgLists`` on explicit file lists."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    args = official.CArgs()
    for name, value in vars(official.args).items():
        setattr(args, name, value)
    args.cityscapesPath = str(work_dir)
    args.exportFile = str(Path(work_dir).resolve() / "resultPixelLevelSemanticLabeling.json")
    args.groundTruthSearch = ""
    args.predictionPath = None
    args.predictionWalk = None
    args.evalInstLevelScore = True
    args.evalPixelAccuracy = False
    args.evalLabels = []
    args.quiet = quiet
    args.colorized = False
    args.bold = ""
    args.nocol = ""
    args.JSONOutput = True
    with _official_errors("pixel-level"), _numpy2_compat(official):
        return official.evaluateImgLists([str(p) for p in prediction_files], [str(p) for p in gt_label_files], args)


def _fraction(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def run_official_evaluators(
    data_root: str | os.PathLike,
    split: str,
    writer: CityscapesResultWriter,
    *,
    mode: str = "panoptic",
) -> dict[str, Any]:
    """Runs the three official evaluators on what ``writer`` wrote (closed); returns the metrics dict
    of ``metrics.json`` (not written here)."""
    from casnet_core.data import list_samples

    data_root = Path(data_root).resolve()
    out_dir = writer.out_dir
    work_dir = out_dir / "evaluators"
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    log_file = work_dir / "evaluators.log"
    samples = {s.name: s for s in list_samples(data_root, split)}
    missing = [i for i in writer.image_ids if i not in samples]
    if missing:
        raise ValueError(f"predictions for images not in {data_root} {split}: {missing[:3]}")
    evaluated = [samples[i] for i in writer.image_ids]

    gt_json, gt_folder = prepare_panoptic_ground_truth(data_root, split, fallback_dir=out_dir / "gt_panoptic")
    with _redirect_output(log_file):
        panoptic = run_panoptic_evaluator(gt_json, gt_folder, writer.panoptic_json, writer.panoptic_dir,
                                          work_dir / "resultPanopticSemanticLabeling.json",
                                          image_ids=writer.image_ids)
        instance = run_instance_evaluator([writer.instance_dir / f"{i}.txt" for i in writer.image_ids],
                                          [s.instance_ids_path for s in evaluated], writer.instance_dir, work_dir,
                                          quiet=False)
        pixel = run_pixel_evaluator([writer.semantic_dir / f"{i}_labelIds.png" for i in writer.image_ids],
                                    [s.label_ids_path for s in evaluated], work_dir, quiet=False)

    metrics: dict[str, Any] = {}
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            metrics[key.upper() + suffix] = _fraction(panoptic[group][key])
    metrics["AP"] = _fraction(instance["averages"]["allAp"])
    metrics["AP50"] = _fraction(instance["averages"]["allAp50%"])
    metrics["mIoU"] = _fraction(pixel["averageScoreClasses"])
    metrics["iIoU"] = _fraction(pixel["averageScoreInstClasses"])
    thing_ious = [pixel["classScores"][_NAME_OF_ID[i]] for i in sorted(_THING_LABEL_IDS)]
    thing_ious = [v for v in thing_ious if not math.isnan(v)]
    metrics["mIoU_th"] = float(np.mean(thing_ious)) if thing_ious else None

    metrics["per_class"] = {
        "panoptic": {
            _NAME_OF_ID[label_id]: {k.upper(): float(v) for k, v in values.items()}
            for label_id, values in sorted(panoptic["per_class"].items())
        },
        "instance": {
            name: {"AP": _fraction(values["ap"]), "AP50": _fraction(values["ap50%"])}
            for name, values in instance["averages"]["classes"].items()
        },
        "iou": {_NAME_OF_ID[lab.id]: _fraction(pixel["classScores"][lab.name]) for lab in _EVAL_LABELS},
    }
    metrics["num_classes_averaged"] = {"PQ": panoptic["All"]["n"], "PQ_th": panoptic["Things"]["n"],
                                       "PQ_st": panoptic["Stuff"]["n"]}
    if mode == "instance":
        # No stuff is predicted: figures that average over stuff classes would only measure that.
        metrics["not_meaningful"] = ["PQ", "SQ", "RQ", "PQ_st", "SQ_st", "RQ_st", "mIoU", "iIoU"]
        for key in metrics["not_meaningful"]:
            metrics[key] = None
        metrics["per_class"]["panoptic"] = {k: v for k, v in metrics["per_class"]["panoptic"].items()
                                            if k in {_NAME_OF_ID[i] for i in _THING_LABEL_IDS}}
        metrics["per_class"]["iou"] = {k: v for k, v in metrics["per_class"]["iou"].items()
                                       if k in {_NAME_OF_ID[i] for i in _THING_LABEL_IDS}}
    metrics["num_images"] = len(writer.image_ids)
    metrics["split"] = split
    metrics["mode"] = mode
    return metrics


def format_metrics_table(metrics: Mapping[str, Any]) -> str:
    """A readable table of ``metrics`` (percentages)."""

    def pct(value: Any) -> str:
        return "    -" if value is None else f"{100 * value:5.1f}"

    lines = [f"{'':14s}|    PQ     SQ     RQ"]
    lines.append("-" * 36)
    for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        lines.append(f"{name:14s}| {pct(metrics.get('PQ' + suffix))}  {pct(metrics.get('SQ' + suffix))}  "
                     f"{pct(metrics.get('RQ' + suffix))}")
    lines.append("")
    lines.append(f"{'class':14s}|    PQ     AP   AP50    IoU")
    lines.append("-" * 43)
    per_class = metrics.get("per_class", {})
    for lab in _EVAL_LABELS:
        pq = per_class.get("panoptic", {}).get(lab.name, {}).get("PQ")
        inst = per_class.get("instance", {}).get(lab.name, {})
        iou = per_class.get("iou", {}).get(lab.name)
        if iou is None and inst.get("AP") is None:
            continue  # absent from ground truth and prediction alike
        lines.append(f"{lab.name:14s}| {pct(pq)}  {pct(inst.get('AP')) if inst else '     '}  "
                     f"{pct(inst.get('AP50')) if inst else '     '}  {pct(iou)}")
    lines.append("-" * 43)
    lines.append(f"AP {pct(metrics.get('AP'))}   AP50 {pct(metrics.get('AP50'))}   "
                 f"mIoU {pct(metrics.get('mIoU'))}   mIoU(things) {pct(metrics.get('mIoU_th'))}")
    lines.append(f"images: {metrics.get('num_images')}  split: {metrics.get('split')}  mode: {metrics.get('mode')}"
                 + (f"  source: {metrics['source']}" if "source" in metrics else ""))
    if metrics.get("not_meaningful"):
        lines.append("not meaningful in this mode (null): " + ", ".join(metrics["not_meaningful"]))
    return "\n".join(lines)


def write_metrics(metrics: Mapping[str, Any], path: str | os.PathLike) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=False))
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------------
# Prediction sources: checkpoint, separated semantics, oracles
# ----------------------------------------------------------------------------------------------


def find_semantic_files(semantic_dir: str | os.PathLike, image_ids: Sequence[str]) -> dict[str, Path]:
    """Per image id, its label-id PNG under ``semantic_dir`` (searched recursively), matched as the
    official pixel-level evaluator matches results: ``{city}_{seq}_{frame}*.png``, exactly one."""
    semantic_dir = Path(semantic_dir)
    if not semantic_dir.is_dir():
        raise FileNotFoundError(f"semantic folder {semantic_dir} does not exist")
    by_id: dict[str, list[Path]] = {}
    wanted = set(image_ids)
    for path in semantic_dir.rglob("*.png"):
        parts = path.name.split("_")
        core = "_".join(parts[:3]) if len(parts) >= 3 else path.stem
        core = core.removesuffix(".png")
        if core in wanted:
            by_id.setdefault(core, []).append(path)
    found = {}
    for image_id in image_ids:
        paths = by_id.get(image_id, [])
        if len(paths) != 1:
            raise FileNotFoundError(f"expected one {image_id}*.png under {semantic_dir}, found {len(paths)}: "
                                    f"{[str(p) for p in paths[:3]]}")
        found[image_id] = paths[0]
    return found


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
    import torch

    from casnet_core.labels import class_space
    from casnet_core.postprocess import common_attribute_support
    from casnet_core.targets import build_targets

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


def evaluate(
    data_root: str | os.PathLike,
    split: str,
    out_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    oracle: str | None = None,
    semantic_dir: str | os.PathLike | None = None,
    device: str = "auto",
    max_images: int | None = None,
    progress: bool = True,
    thresholds: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Predicts ``split`` of ``data_root``, writes the official formats under ``out_dir``, runs the
    official evaluators, writes ``out_dir/metrics.json`` and returns the metrics."""
    from tqdm import tqdm

    from casnet_core.data import list_samples, read_image, read_instance_ids, read_label_ids

    if oracle not in (None, *ORACLES):
        raise ValueError(f"unknown oracle {oracle!r}, expected one of {ORACLES}")
    if oracle != "full" and checkpoint is None:
        raise ValueError("a checkpoint is needed (only --oracle full works without one)")
    if oracle is not None and semantic_dir is not None:
        raise ValueError("--semantic-dir and --oracle both replace the semantics: give one")
    if oracle == "full" and checkpoint is not None:
        raise ValueError("--oracle full uses no network: leave out --checkpoint")
    thresholds = {k: v for k, v in (thresholds or {}).items() if v is not None}
    data_root = Path(data_root).resolve()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = list_samples(data_root, split)
    if max_images is not None:
        samples = samples[:max_images]
    semantic_files = find_semantic_files(semantic_dir, [s.name for s in samples]) if semantic_dir else {}

    predictor = None
    mode = "panoptic"
    if oracle != "full":
        from casnet_core.predictor import Predictor

        predictor = Predictor.from_checkpoint(checkpoint, device=device, **thresholds)
        mode = predictor.mode
    source = {None: "checkpoint", "semantic": "oracle-semantic", "full": "oracle-full"}[oracle]
    if semantic_dir:
        source = "checkpoint+semantic-dir"

    writer = CityscapesResultWriter(out_dir, split)
    for sample in tqdm(samples, desc=f"predict {split}", disable=not progress, unit="img"):
        if oracle == "full":
            prediction = full_oracle_prediction(read_label_ids(sample.label_ids_path),
                                                read_instance_ids(sample.instance_ids_path), **thresholds)
        else:
            semantic = None
            if oracle == "semantic":
                semantic = read_label_ids(sample.label_ids_path)
            elif semantic_dir:
                semantic = read_label_ids(semantic_files[sample.name])
            result = predictor.predict(read_image(sample.image_path), semantic_label_ids=semantic)
            prediction = EvalPrediction(result.panoptic, result.semantic,
                                        {inst.id: inst.score for inst in result.instances})
        writer.add(sample.name, prediction)
    writer.close()

    metrics = run_official_evaluators(data_root, split, writer, mode=mode)
    metrics["source"] = source
    if checkpoint is not None:
        metrics["checkpoint"] = str(Path(checkpoint).resolve())
    write_metrics(metrics, out_dir / "metrics.json")
    return metrics


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def _main(args: argparse.Namespace) -> int:
    thresholds = thresholds_from_args(args)
    try:
        metrics = evaluate(args.data, args.split, args.out, checkpoint=args.checkpoint, oracle=args.oracle,
                           semantic_dir=args.semantic_dir, device=args.device, max_images=args.max_images,
                           thresholds=thresholds)
    except (ValueError, FileNotFoundError) as error:  # bad arguments or inputs: a message, not a traceback
        print(f"casnet eval: error: {error}", file=sys.stderr)
        return 2
    print(format_metrics_table(metrics))
    print(f"metrics: {Path(args.out) / 'metrics.json'}; evaluator logs: {Path(args.out) / 'evaluators'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate with the official Cityscapes evaluators (PQ, AP, mIoU)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset root in the Cityscapes layout")
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    parser.add_argument("--out", required=True, help="output folder for predictions, evaluator results and metrics.json")
    parser.add_argument("--checkpoint", help="CASNet checkpoint (needed except with --oracle full)")
    parser.add_argument("--oracle", choices=ORACLES,
                        help="semantic: ground-truth semantics with the network's attributes; "
                             "full: ground-truth semantics, attributes and box probability (post-processing alone)")
    parser.add_argument("--semantic-dir", help="separated mode: folder of label-id PNGs named {city}_{seq}_{frame}*.png")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images of the split")
    # Defaults are the Predictor's; the full oracle changes three of them (see full_oracle_prediction).
    add_threshold_arguments(parser)
    parser.set_defaults(func=_main)
