"""The three official cityscapesScripts evaluators (panoptic, instance-level, pixel-level), called
in-process on explicit file lists, and the panoptic ground truth they need (``csCreatePanopticImgs``)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as official_instance
from cityscapesscripts.evaluation import evalPanopticSemanticLabeling as official_panoptic
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official_pixel
from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

from casnet_core.data import list_samples
from casnet_core.evaluation.compat import (
    forkserver_workers,
    numpy2_compat,
    official_errors,
    redirect_output,
    working_directory,
)
from casnet_core.evaluation.metrics import metrics_from_official_results
from casnet_core.evaluation.writers import CityscapesResultWriter
from casnet_core.formats import atomic_write

#: Under the output folder: the evaluators' results and log (emptied on each run), and the default
#: cache of the panoptic ground truth.
EVALUATORS_FOLDER = "evaluators"
GT_CACHE_FOLDER = "gt_panoptic"


def prepare_panoptic_ground_truth(
    data_root: str | os.PathLike, split: str, *, cache_dir: str | os.PathLike
) -> tuple[Path, Path]:
    """The COCO-format panoptic ground truth of ``split``, from the official ``csCreatePanopticImgs``.

    Written to ``cache_dir`` (``cityscapes_panoptic_{split}.json`` and the folder of PNGs beside it,
    the names the official tools use), never into ``data_root``, and reused only while its fingerprint
    (``cityscapes_panoptic_{split}.fingerprint.json``: the source folder and the SHA-256 of each
    ``*_instanceIds.png``) matches the split's: a cache shared between datasets whose files have the same
    names is rebuilt, never reused. Returns (json file, PNG folder).
    """
    gt_fine = Path(data_root).resolve() / "gtFine"
    sources = sorted((gt_fine / split).glob("*/*_instanceIds.png"))
    if not sources:
        raise FileNotFoundError(f"no ground truth matching {gt_fine}/{split}/*/*_instanceIds.png")
    output = Path(cache_dir).resolve()
    output.mkdir(parents=True, exist_ok=True)
    json_file = output / f"cityscapes_panoptic_{split}.json"
    folder = output / f"cityscapes_panoptic_{split}"
    fingerprint_file = output / f"cityscapes_panoptic_{split}.fingerprint.json"
    fingerprint = _ground_truth_fingerprint(gt_fine / split, sources)
    if not _panoptic_cache_is_fresh(json_file, folder, fingerprint_file, fingerprint):
        fingerprint_file.unlink(missing_ok=True)  # a conversion cut short leaves no cache that looks valid
        with redirect_output(None):
            convert2panoptic(cityscapesPath=str(gt_fine), outputFolder=str(output), setNames=[split])
        with atomic_write(fingerprint_file) as f:
            f.write(json.dumps(fingerprint, indent=1).encode())
    return json_file, folder


def _ground_truth_fingerprint(source: Path, files: Sequence[Path]) -> dict[str, Any]:
    """What the panoptic ground truth is made of: the source folder and the SHA-256 of each file (by name)."""
    digests = {}
    for path in files:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digests[str(path.relative_to(source))] = digest.hexdigest()
    return {"source": str(source), "files": digests}


def _panoptic_cache_is_fresh(json_file: Path, folder: Path, fingerprint_file: Path, fingerprint: dict[str, Any]) -> bool:
    if not json_file.is_file() or not folder.is_dir() or not fingerprint_file.is_file():
        return False
    try:
        return json.loads(fingerprint_file.read_text()) == fingerprint
    except ValueError:  # a damaged fingerprint: rebuild
        return False


def run_panoptic_evaluator(
    gt_json: Path, gt_folder: Path, pred_json: Path, pred_folder: Path, results_file: Path,
    *, image_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """``evalPanopticSemanticLabeling.evaluatePanoptic``; returns its results dict.

    ``image_ids``: evaluate only these images: the ground-truth JSON is filtered into a copy
    beside ``results_file`` (the evaluator wants a prediction for every ground-truth image).
    """
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
    with official_errors("panoptic"), forkserver_workers(official_panoptic):
        try:
            return official_panoptic.evaluatePanoptic(str(gt_json), str(Path(gt_folder).resolve()), str(pred_json),
                                                      str(Path(pred_folder).resolve()), str(results_file))
        except ZeroDivisionError as error:
            # pq_average divides by the number of classes present, for things and for stuff alike.
            raise RuntimeError("the official panoptic evaluator needs at least one thing and one stuff "
                               "segment in ground truth or prediction") from error


def _instance_args(results_root: Path, work_dir: Path, quiet: bool):
    args = official_instance.CArgs()
    for name, value in vars(official_instance.args).items():  # the defaults of the script ...
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
    args = _instance_args(Path(results_root).resolve(), Path(work_dir).resolve(), quiet)
    Path(args.gtInstancesFile).unlink(missing_ok=True)
    # Absolute before the chdir below; the evaluator also keys its ground truth by absolute path.
    predictions = [str(Path(p).resolve()) for p in prediction_files]
    ground_truth = [str(Path(p).resolve()) for p in gt_instance_files]
    with official_errors("instance"), numpy2_compat(official_instance), working_directory(args.cityscapesPath):
        # evaluateImgLists writes matches.json into the working directory: make that work_dir.
        return official_instance.evaluateImgLists(predictions, ground_truth, args)


def run_pixel_evaluator(
    prediction_files: Sequence[Path], gt_label_files: Sequence[Path], work_dir: Path, *, quiet: bool = True,
) -> dict[str, Any]:
    """``evalPixelLevelSemanticLabeling.evaluateImgLists`` on explicit file lists."""
    args = official_pixel.CArgs()
    for name, value in vars(official_pixel.args).items():
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
    with official_errors("pixel-level"), numpy2_compat(official_pixel):
        return official_pixel.evaluateImgLists([str(p) for p in prediction_files], [str(p) for p in gt_label_files],
                                               args)


def run_official_evaluators(
    data_root: str | os.PathLike,
    split: str,
    writer: CityscapesResultWriter,
    *,
    mode: str = "panoptic",
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Runs the three official evaluators on what ``writer`` wrote (closed); returns the metrics dict
    of ``metrics.json`` (not written here).

    Their results and logs go to ``writer.out_dir/evaluators/`` (emptied first); the panoptic ground
    truth is cached in ``cache_dir`` (default ``writer.out_dir/gt_panoptic``).
    """
    data_root = Path(data_root).resolve()
    out_dir = writer.out_dir
    work_dir = out_dir / EVALUATORS_FOLDER
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    log_file = work_dir / "evaluators.log"
    samples = {s.name: s for s in list_samples(data_root, split)}
    missing = [i for i in writer.image_ids if i not in samples]
    if missing:
        raise ValueError(f"predictions for images not in {data_root} {split}: {missing[:3]}")
    evaluated = [samples[i] for i in writer.image_ids]

    if cache_dir is None:
        cache_dir = out_dir / GT_CACHE_FOLDER
    gt_json, gt_folder = prepare_panoptic_ground_truth(data_root, split, cache_dir=cache_dir)
    with redirect_output(log_file):
        panoptic = run_panoptic_evaluator(gt_json, gt_folder, writer.panoptic_json, writer.panoptic_dir,
                                          work_dir / "resultPanopticSemanticLabeling.json",
                                          image_ids=writer.image_ids)
        instance = run_instance_evaluator([writer.instance_dir / f"{i}.txt" for i in writer.image_ids],
                                          [s.instance_ids_path for s in evaluated], writer.instance_dir, work_dir,
                                          quiet=False)
        pixel = run_pixel_evaluator([writer.semantic_dir / f"{i}_labelIds.png" for i in writer.image_ids],
                                    [s.label_ids_path for s in evaluated], work_dir, quiet=False)

    return metrics_from_official_results(panoptic, instance, pixel, mode=mode, num_images=len(writer.image_ids),
                                         split=split)
