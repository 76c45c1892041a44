"""Evaluation of CASNet with the official Cityscapes evaluators, and ``casnet eval``.

One concept per module:

* ``classes``: the classes the official evaluators score, and panoptic maps read in their terms;
* ``pq``: panoptic quality in memory (no files), for validation during training;
* ``iou``: mean IoU of semantic maps in memory, likewise;
* ``writers``: predictions written in the three official result formats;
* ``official``: the official panoptic, instance-level and pixel-level evaluators, and their ground truth;
* ``compat``: what calling cityscapesScripts 2.3.0 in-process needs (NumPy 2, logs, working directory);
* ``metrics``: the figures of ``metrics.json`` and their printed table;
* ``oracles``: the semantic and full oracles of the paper;
* ``command``: ``evaluate`` and the ``casnet eval`` subcommand (its help holds the full description).

The panoptic PNG encoding shared with the Predictor is in ``casnet_core.formats``.
"""

from casnet_core.evaluation.classes import clean_panoptic, segment_label_ids
from casnet_core.evaluation.command import evaluate, find_semantic_files, register
from casnet_core.evaluation.iou import mean_iou
from casnet_core.evaluation.metrics import METRIC_KEYS, format_metrics_table, write_metrics
from casnet_core.evaluation.official import (
    prepare_panoptic_ground_truth,
    run_instance_evaluator,
    run_official_evaluators,
    run_panoptic_evaluator,
    run_pixel_evaluator,
)
from casnet_core.evaluation.oracles import ORACLE_NMS_IOU, ORACLES, full_oracle_prediction
from casnet_core.evaluation.pq import map_agreement, panoptic_quality
from casnet_core.evaluation.writers import CityscapesResultWriter, EvalPrediction

__all__ = [
    "METRIC_KEYS",
    "ORACLES",
    "ORACLE_NMS_IOU",
    "CityscapesResultWriter",
    "EvalPrediction",
    "clean_panoptic",
    "evaluate",
    "find_semantic_files",
    "format_metrics_table",
    "full_oracle_prediction",
    "map_agreement",
    "mean_iou",
    "panoptic_quality",
    "prepare_panoptic_ground_truth",
    "register",
    "run_instance_evaluator",
    "run_official_evaluators",
    "run_panoptic_evaluator",
    "run_pixel_evaluator",
    "segment_label_ids",
    "write_metrics",
]
