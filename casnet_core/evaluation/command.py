"""``casnet eval``: evaluation with the official cityscapesScripts evaluators,
``casnet eval --data DIR --split val --out DIR [--checkpoint CKPT] [--oracle semantic | --oracle full]``
(the packaged default model when no checkpoint is given).

Predictions are written in the official result formats under OUT, then the three official
evaluators run on them, in this process (their functions are called with args objects of our own,
so nothing is read from CITYSCAPES_DATASET / CITYSCAPES_RESULTS and nothing is written into the
installed package):

* panoptic (PQ, SQ, RQ over all / things / stuff): ``evalPanopticSemanticLabeling.evaluatePanoptic``
  on ``OUT/panoptic/cityscapes_panoptic_{split}.json`` + ``OUT/panoptic/cityscapes_panoptic_{split}/``
  (COCO panoptic PNGs, id = R + 256 G + 256^2 B, category ids = Cityscapes label ids).
  Its ground truth is made by the official ``csCreatePanopticImgs`` conversion
  (``createPanopticImgs.convert2panoptic``) of gtFine, cached in ``OUT/gt_panoptic/`` (or the
  ``--cache-dir`` given, e.g. to share it between runs) as ``cityscapes_panoptic_{split}.json`` +
  folder, with a fingerprint (source folder, SHA-256 of every instanceIds file), and redone when
  the fingerprint differs: a cache shared between datasets is never reused for the wrong one.
* instance (AP averaged over IoU 0.5:0.95, AP50): ``evalInstanceLevelSemanticLabeling.evaluateImgLists``
  on ``OUT/instance/{image}.txt`` (one line ``masks/{image}_{k}.png label_id confidence`` per
  instance, one binary mask PNG each). Its ground-truth cache ``gtInstances.json`` and its
  ``matches.json`` go to ``OUT/evaluators/``.
* pixel level (mIoU over the 19 classes, iIoU): ``evalPixelLevelSemanticLabeling.evaluateImgLists``
  on ``OUT/semantic/{image}_labelIds.png`` (Cityscapes label ids).

Everything the evaluators print goes to ``OUT/evaluators/evaluators.log``; their own JSON results
are in ``OUT/evaluators/``. ``OUT/metrics.json`` gathers the figures as fractions in [0, 1]:
``PQ SQ RQ PQ_th SQ_th RQ_th PQ_st SQ_st RQ_st AP AP50 mIoU iIoU`` and per-class tables.

The inputs are never written: OUT/panoptic, OUT/instance, OUT/semantic and OUT/evaluators are
emptied on each run, so none of them (nor the cache folder) may be, contain or lie inside --data,
--semantic-dir or --checkpoint; such a command stops before touching anything.

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
* Per-head oracles, ``--oracle seeds``, ``attributes``, ``semantic+seeds``, ``semantic+attributes``,
  ``seeds+attributes``, ``semantic+seeds+attributes``: the named heads of the network are replaced by their
  ground truth at its output stride ("seeds": the box probability), the others are the network's, with the
  predictor's thresholds: which head holds PQ down (``casnet_core.evaluation.oracles``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from casnet_core.evaluation.metrics import format_metrics_table, write_metrics
from casnet_core.formats import check_outputs_spare_inputs
from casnet_core.evaluation.official import EVALUATORS_FOLDER, GT_CACHE_FOLDER, run_official_evaluators
from casnet_core.evaluation.oracles import HEAD_ORACLES, ORACLES, full_oracle_prediction, head_oracle_prediction
from casnet_core.evaluation.writers import CityscapesResultWriter, EvalPrediction, result_folders
from casnet_core.predict_command import add_precision_argument, add_threshold_arguments, thresholds_from_args
from casnet_core.predictor import Predictor


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


def evaluate(
    data_root: str | os.PathLike,
    split: str,
    out_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    oracle: str | None = None,
    semantic_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str = "auto",
    precision: str = "fp32",
    max_images: int | None = None,
    progress: bool = True,
    thresholds: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Predicts ``split`` of ``data_root``, writes the official formats under ``out_dir``, runs the
    official evaluators, writes ``out_dir/metrics.json`` and returns the metrics.

    The panoptic ground truth is cached in ``cache_dir`` (default ``out_dir/gt_panoptic``). Nothing
    is written into ``data_root``, ``semantic_dir`` or ``checkpoint``: outputs that would overlap
    them raise ValueError before anything is touched (a ``cache_dir`` given explicitly may lie
    inside ``data_root``, e.g. ``DATA/gtFine`` where ``csCreatePanopticImgs`` puts it).
    """
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
    if max_images is not None and max_images < 1:
        raise ValueError(f"--max-images must be at least 1, got {max_images}")
    thresholds = {k: v for k, v in (thresholds or {}).items() if v is not None}
    data_root = Path(data_root).resolve()
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} exists and is not a folder")
    if cache_dir is not None and Path(cache_dir).exists() and not Path(cache_dir).is_dir():
        raise ValueError(f"--cache-dir {cache_dir} exists and is not a folder")
    if not data_root.is_dir():
        raise ValueError(f"--data {data_root} is not a folder (expected a dataset in the Cityscapes layout)")
    for option, path in (("--checkpoint", checkpoint), ("--semantic-dir", semantic_dir)):
        if path is not None and not Path(path).exists():
            raise ValueError(f"{option} {path}: no such file or folder")
    inputs = [("--data", data_root), ("--semantic-dir", semantic_dir), ("--checkpoint", checkpoint)]
    emptied = [*result_folders(out_dir), out_dir / EVALUATORS_FOLDER]
    written = [("--out", path) for path in (*emptied, out_dir / "metrics.json")]
    if cache_dir is None:
        written.append(("--out", out_dir / GT_CACHE_FOLDER))
    check_outputs_spare_inputs(written, inputs, command="eval")
    if cache_dir is not None:
        # A cache folder named by the user may lie in the dataset (DATA/gtFine, where csCreatePanopticImgs
        # puts it), but neither in another input nor in an output folder that is emptied or holds predictions.
        check_outputs_spare_inputs([("--cache-dir", Path(cache_dir))],
                                   [*inputs[1:], *(("--out", path) for path in emptied)], command="eval")
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = list_samples(data_root, split)
    if max_images is not None:
        samples = samples[:max_images]
    semantic_files = find_semantic_files(semantic_dir, [s.name for s in samples]) if semantic_dir else {}

    predictor = None
    mode = "panoptic"
    if oracle != "full":
        predictor = Predictor.from_checkpoint(checkpoint, device=device, precision=precision, **thresholds)
        mode = predictor.mode
    source = "checkpoint" if oracle is None else f"oracle-{oracle}"
    if semantic_dir:
        source = "checkpoint+semantic-dir"

    writer = CityscapesResultWriter(out_dir, split)
    for sample in tqdm(samples, desc=f"predict {split}", disable=not progress, unit="img"):
        if oracle == "full":
            prediction = full_oracle_prediction(read_label_ids(sample.label_ids_path),
                                                read_instance_ids(sample.instance_ids_path), **thresholds)
        elif oracle in HEAD_ORACLES:
            prediction = head_oracle_prediction(predictor, read_image(sample.image_path),
                                                read_label_ids(sample.label_ids_path),
                                                read_instance_ids(sample.instance_ids_path), heads=oracle)
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

    metrics = run_official_evaluators(data_root, split, writer, mode=mode, cache_dir=cache_dir)
    metrics["source"] = source
    if checkpoint is not None:
        metrics["checkpoint"] = str(Path(checkpoint).resolve())
    write_metrics(metrics, out_dir / "metrics.json")
    return metrics


def _main(args: argparse.Namespace) -> int:
    from casnet_core.errors import one_line

    thresholds = thresholds_from_args(args)
    try:
        checkpoint = args.checkpoint
        if checkpoint is None and args.oracle != "full":
            from casnet_core import default_model_path

            checkpoint = default_model_path()
        metrics = evaluate(args.data, args.split, args.out, checkpoint=checkpoint, oracle=args.oracle,
                           semantic_dir=args.semantic_dir, cache_dir=args.cache_dir, device=args.device,
                           precision=args.precision, max_images=args.max_images, thresholds=thresholds)
    except (ValueError, FileNotFoundError) as error:  # bad arguments or inputs: a message, not a traceback
        print(f"casnet eval: error: {one_line(error)}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # an official evaluator that cannot score this split (e.g. no thing at all)
        print(f"casnet eval: error: {one_line(error)}", file=sys.stderr)
        return 1
    print(format_metrics_table(metrics))
    print(f"metrics: {Path(args.out) / 'metrics.json'}; evaluator logs: {Path(args.out) / EVALUATORS_FOLDER}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate with the official Cityscapes evaluators (PQ, AP, mIoU)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset root in the Cityscapes layout (only read)")
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    parser.add_argument("--out", required=True, help="output folder for predictions, evaluator results and metrics.json")
    parser.add_argument("--checkpoint", help="CASNet checkpoint (default: the packaged default model; none with --oracle full)")
    parser.add_argument("--oracle", choices=ORACLES,
                        help="semantic: ground-truth semantics with the network's attributes; "
                             "seeds, attributes, semantic+seeds, ...: those heads replaced by their ground truth "
                             "at the network's stride (seeds = box probability), the others the network's; "
                             "full: ground-truth semantics, attributes and box probability (post-processing alone)")
    parser.add_argument("--semantic-dir", help="separated mode: folder of label-id PNGs named {city}_{seq}_{frame}*.png")
    parser.add_argument("--cache-dir", default=None,
                        help=f"folder for the panoptic ground-truth conversion (default: OUT/{GT_CACHE_FOLDER})")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images of the split")
    add_precision_argument(parser)
    # Defaults are the Predictor's; the full oracle changes three of them (see full_oracle_prediction).
    add_threshold_arguments(parser)
    parser.set_defaults(func=_main)
