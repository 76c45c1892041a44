"""Validation during training: PQ and mIoU of the model on the first images of the validation split; best.pt."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.distributed as dist

from casnet_core.checkpoint import save_checkpoint
from casnet_core.data import Sample, read_image, read_instance_ids, read_label_ids
from casnet_core.evaluation import mean_iou, panoptic_quality
from casnet_core.predictor import Predictor
from casnet_core.training.run import TrainingRun


def validate(model, samples: Sequence[Sample], *, device: torch.device) -> dict[str, float]:
    """PQ, SQ, RQ (all, things, stuff) and mIoU of ``model`` on ``samples``, predicted at full size by the
    Predictor as ``casnet eval`` does. Leaves the model in eval mode. NaN where a figure has no class."""
    predictor = Predictor(model, device=device)
    panoptic, gt_panoptic, semantic, gt_semantic = [], [], [], []
    for sample in samples:
        prediction = predictor.predict(read_image(sample.image_path))
        panoptic.append(prediction.panoptic)
        semantic.append(prediction.semantic)
        gt_panoptic.append(read_instance_ids(sample.instance_ids_path))
        gt_semantic.append(read_label_ids(sample.label_ids_path))
    pq = panoptic_quality(panoptic, gt_panoptic)
    metrics = {k: float(pq[k]) for k in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st")}
    classes = [i for i in model.class_space.label_ids if i != 0]  # instance mode: background is not a class
    metrics["mIoU"] = mean_iou(semantic, gt_semantic, classes)
    metrics["images"] = len(samples)
    return metrics


def validate_run(run: TrainingRun) -> dict[str, float] | None:
    """Validation on the main process (the others wait); keeps best.pt. Returns the metrics there."""
    metrics = None
    if run.is_main:
        metrics = validate(run.bare_model, run.val_samples, device=run.device)
        # The Predictor puts a CUDA model in channels_last, in place: training goes on in its own memory format
        # (and on every rank in the same one, as DDP's gradient buckets expect).
        run.bare_model.to(memory_format=torch.channels_last if run.channels_last else torch.contiguous_format)
        run.train_mode()
        run.logger.log({"step": run.step, **{f"val_{k}": v for k, v in metrics.items()}})
        # Instance mode predicts no stuff: its PQ is over things only.
        score = metrics["PQ"] if run.bare_model.class_space.mode == "panoptic" else metrics["PQ_th"]
        if math.isfinite(score) and (run.best is None or score > run.best):
            run.best = score
            save_checkpoint(run.out_dir / "best.pt", run.bare_model,
                            extra={"step": run.step, "train_config": run.config, "val": metrics})
    if run.distributed:
        dist.barrier()
    return metrics
