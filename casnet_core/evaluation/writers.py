"""Writers of predictions in the three official Cityscapes result formats (panoptic, instance-level,
pixel-level), as the cityscapesScripts evaluators read them."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from casnet_core.evaluation.classes import (
    EVAL_LABELS,
    NAME_OF_ID,
    THING_LABEL_IDS,
    clean_panoptic,
    segment_label_id,
    segment_label_ids,
)
from casnet_core.formats import MAX_PANOPTIC_ID, encode_panoptic_rgb, write_png
from casnet_core.labels import LABEL_DIVISOR

# Low compression: these files are read once by the evaluators, speed matters more than size.
_PNG_COMPRESSION = 1


def result_folders(out_dir: str | os.PathLike) -> tuple[Path, Path, Path]:
    """The folders under ``out_dir`` that ``CityscapesResultWriter`` empties and fills."""
    out_dir = Path(out_dir).resolve()
    return out_dir / "panoptic", out_dir / "instance", out_dir / "semantic"


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
        for folder in result_folders(self.out_dir):
            shutil.rmtree(folder, ignore_errors=True)
        self.panoptic_dir.mkdir(parents=True)
        (self.instance_dir / "masks").mkdir(parents=True)
        self.semantic_dir.mkdir(parents=True)
        self._annotations: list[dict[str, Any]] = []
        self.image_ids: list[str] = []

    def add(self, image_id: str, prediction: EvalPrediction) -> None:
        """``image_id``: the Cityscapes core name, e.g. "frankfurt_000000_000294"."""
        panoptic = clean_panoptic(prediction.panoptic)
        if panoptic.max(initial=0) > MAX_PANOPTIC_ID:
            raise ValueError(f"{image_id}: panoptic ids must be below 2**24")
        labels = segment_label_ids(panoptic)

        # Panoptic: PNG of ids + the segments of the JSON (category = label id, as the ground truth).
        segment_ids = [int(i) for i in np.unique(panoptic) if i != 0]
        segments_info = [{"id": i, "category_id": segment_label_id(i)} for i in segment_ids]
        file_name = f"{image_id}_panoptic.png"
        write_png(self.panoptic_dir / file_name, encode_panoptic_rgb(panoptic), compression=_PNG_COMPRESSION)
        self._annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": segments_info})

        # Instances: every thing segment with an instance id, one binary mask each.
        lines = []
        instance_ids = [i for i in segment_ids if i >= LABEL_DIVISOR and i // LABEL_DIVISOR in THING_LABEL_IDS]
        for k, i in enumerate(instance_ids):
            mask_name = f"masks/{image_id}_{k:03d}.png"
            mask = (panoptic == i).astype(np.uint8) * 255
            write_png(self.instance_dir / mask_name, mask, compression=_PNG_COMPRESSION)
            score = float(prediction.scores.get(i, 1.0))
            lines.append(f"{mask_name} {segment_label_id(i)} {score:.8g}\n")
        (self.instance_dir / f"{image_id}.txt").write_text("".join(lines))

        # Pixel level: label ids (void 0 where the prediction has none).
        semantic = prediction.semantic
        if semantic is None:
            semantic = labels
        semantic = np.asarray(semantic)
        if semantic.shape != panoptic.shape:
            raise ValueError(f"{image_id}: semantic {semantic.shape} and panoptic {panoptic.shape} differ in size")
        if semantic.min(initial=0) < 0 or semantic.max(initial=0) > max(NAME_OF_ID):
            raise ValueError(f"{image_id}: semantic label ids outside 0..{max(NAME_OF_ID)}")
        write_png(self.semantic_dir / f"{image_id}_labelIds.png", semantic.astype(np.uint8),
                  compression=_PNG_COMPRESSION)
        self.image_ids.append(image_id)

    def close(self) -> None:
        categories = _panoptic_categories()
        self.panoptic_json.write_text(json.dumps(
            {"annotations": self._annotations, "categories": categories}, indent=1))


def _panoptic_categories() -> list[dict[str, Any]]:
    # The same list as csCreatePanopticImgs writes into the ground-truth JSON.
    return [{"id": lab.id, "name": lab.name, "color": list(lab.color), "supercategory": lab.category,
             "isthing": int(lab.hasInstances)} for lab in EVAL_LABELS]
