"""The figures of ``metrics.json``: gathered from the results of the official evaluators as fractions
in [0, 1], printed as a table, written atomically."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from casnet_core.evaluation.classes import EVAL_LABELS, NAME_OF_ID, THING_LABEL_IDS
from casnet_core.formats import atomic_write

#: The headline figures, each a fraction in [0, 1] (null where not meaningful, see ``NOT_MEANINGFUL_IN_INSTANCE_MODE``).
METRIC_KEYS = ("PQ", "SQ", "RQ", "PQ_th", "PQ_st", "AP", "AP50", "mIoU")
# Instance mode predicts no stuff: figures that average over stuff classes would only measure that.
NOT_MEANINGFUL_IN_INSTANCE_MODE = ("PQ", "SQ", "RQ", "PQ_st", "SQ_st", "RQ_st", "mIoU", "iIoU")


def _fraction(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def metrics_from_official_results(
    panoptic: Mapping[str, Any],
    instance: Mapping[str, Any],
    pixel: Mapping[str, Any],
    *,
    mode: str = "panoptic",
    num_images: int,
    split: str,
) -> dict[str, Any]:
    """The metrics dict of ``metrics.json`` from the result dicts of ``evaluatePanoptic`` (panoptic)
    and of the instance-level and pixel-level ``evaluateImgLists``: ``PQ SQ RQ PQ_th SQ_th RQ_th PQ_st
    SQ_st RQ_st AP AP50 mIoU iIoU mIoU_th``, ``per_class`` tables, ``num_classes_averaged``, and in
    instance mode ``not_meaningful`` (those figures are None)."""
    metrics: dict[str, Any] = {}
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            metrics[key.upper() + suffix] = _fraction(panoptic[group][key])
    metrics["AP"] = _fraction(instance["averages"]["allAp"])
    metrics["AP50"] = _fraction(instance["averages"]["allAp50%"])
    metrics["mIoU"] = _fraction(pixel["averageScoreClasses"])
    metrics["iIoU"] = _fraction(pixel["averageScoreInstClasses"])
    thing_ious = [pixel["classScores"][NAME_OF_ID[i]] for i in sorted(THING_LABEL_IDS)]
    thing_ious = [v for v in thing_ious if not math.isnan(v)]
    metrics["mIoU_th"] = float(np.mean(thing_ious)) if thing_ious else None

    metrics["per_class"] = {
        "panoptic": {
            NAME_OF_ID[label_id]: {k.upper(): float(v) for k, v in values.items()}
            for label_id, values in sorted(panoptic["per_class"].items())
        },
        "instance": {
            name: {"AP": _fraction(values["ap"]), "AP50": _fraction(values["ap50%"])}
            for name, values in instance["averages"]["classes"].items()
        },
        "iou": {NAME_OF_ID[lab.id]: _fraction(pixel["classScores"][lab.name]) for lab in EVAL_LABELS},
    }
    metrics["num_classes_averaged"] = {"PQ": panoptic["All"]["n"], "PQ_th": panoptic["Things"]["n"],
                                       "PQ_st": panoptic["Stuff"]["n"]}
    if mode == "instance":
        metrics["not_meaningful"] = list(NOT_MEANINGFUL_IN_INSTANCE_MODE)
        for key in metrics["not_meaningful"]:
            metrics[key] = None
        metrics["per_class"]["panoptic"] = {k: v for k, v in metrics["per_class"]["panoptic"].items()
                                            if k in {NAME_OF_ID[i] for i in THING_LABEL_IDS}}
        metrics["per_class"]["iou"] = {k: v for k, v in metrics["per_class"]["iou"].items()
                                       if k in {NAME_OF_ID[i] for i in THING_LABEL_IDS}}
    metrics["num_images"] = num_images
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
    for lab in EVAL_LABELS:
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
    """Writes ``metrics`` as JSON to ``path`` atomically, so a reader never sees half of it."""
    with atomic_write(path) as f:
        f.write(json.dumps(metrics, indent=2, sort_keys=False).encode())
    return Path(path)
