"""The generated dataset on disk, in the layout and encodings of Cityscapes: ``leftImg8bit/`` images and
``gtFine/`` label, instance and colour annotations."""

from __future__ import annotations

import multiprocessing
import os
import zlib
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from casnet_core.labels import LABEL_COLORS
from casnet_core.synth.street import DEFAULT_CLASSES, generate_scene

CITIES = {"train": "synthA", "val": "synthV", "test": "synthT"}
# Cityscapes names the annotated frame of every sequence "..._000019".
ANNOTATED_FRAME = 19


def sample_name(split: str, index: int) -> str:
    """Cityscapes-style image prefix, e.g. ``synthA_000003_000019``."""
    return f"{CITIES.get(split, 'synth' + split[:1].upper())}_{index:06d}_{ANNOTATED_FRAME:06d}"


def _scene_seed(seed: int, split: str, index: int) -> int:
    state = np.random.SeedSequence([int(seed), zlib.crc32(split.encode()), int(index)]).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


# Rarer classes, two per image in turn (shifted by split), so any three consecutive images of a split, and
# a few images of each split together, hold all eight thing classes.
_FEATURED = ("rider", "truck", "bus", "train", "motorcycle", "bicycle")
_SPLIT_OFFSET = {"train": 0, "val": 3, "test": 1}


def _featured_classes(split: str, index: int) -> tuple[str, ...]:
    k = 2 * index + _SPLIT_OFFSET.get(split, 0)
    return DEFAULT_CLASSES + (_FEATURED[k % 6], _FEATURED[(k + 1) % 6])


# (256, 4) uint8: label id -> official Cityscapes colour, as OpenCV's BGRA.
_COLOR_LUT_BGRA = np.concatenate([LABEL_COLORS[:, ::-1], np.full((256, 1), 255, np.uint8)], axis=1)


def _write_png(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")


def _generate_sample(task: tuple[str, str, int, int, int, int]) -> str:
    root_str, split, index, seed, height, width = task
    root = Path(root_str)
    name = sample_name(split, index)
    city = name.split("_")[0]
    image, label_ids, instance_ids = generate_scene(
        _scene_seed(seed, split, index), height, width, must_include=_featured_classes(split, index)
    )
    image_dir = root / "leftImg8bit" / split / city
    gt_dir = root / "gtFine" / split / city
    _write_png(image_dir / f"{name}_leftImg8bit.png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    _write_png(gt_dir / f"{name}_gtFine_labelIds.png", label_ids)
    _write_png(gt_dir / f"{name}_gtFine_instanceIds.png", instance_ids.astype(np.uint16))
    # Cityscapes colour annotations are RGBA.
    _write_png(gt_dir / f"{name}_gtFine_color.png", _COLOR_LUT_BGRA[label_ids])
    return name


def generate_dataset(
    out_dir: str | os.PathLike,
    *,
    num_train: int,
    num_val: int,
    height: int = 512,
    width: int = 1024,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Writes ``num_train`` + ``num_val`` scenes in the Cityscapes layout under ``out_dir``:
    ``leftImg8bit/{split}/{city}/{city}_{seq:06d}_000019_leftImg8bit.png`` and
    ``gtFine/{split}/{city}/..._gtFine_{labelIds,instanceIds,color}.png``, city "synthA" (train) or
    "synthV" (val). Image i of a split is a function of (seed, split, i) alone, so files are
    byte-identical across runs and worker counts. Returns ``out_dir`` as a Path."""
    if num_train < 0 or num_val < 0:
        raise ValueError("image counts must be non-negative")
    root = Path(out_dir)
    tasks = []
    for split, count in (("train", num_train), ("val", num_val)):
        if count == 0:
            continue
        for sub in ("leftImg8bit", "gtFine"):
            (root / sub / split / CITIES[split]).mkdir(parents=True, exist_ok=True)
        tasks += [(str(root), split, i, int(seed), int(height), int(width)) for i in range(count)]
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    with tqdm(total=len(tasks), desc="synth", unit="img", disable=not progress) as bar:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                _generate_sample(task)
                bar.update(1)
        else:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for _ in pool.imap_unordered(_generate_sample, tasks):
                    bar.update(1)
    return root
