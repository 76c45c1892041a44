"""Cityscapes-format data: the file layout, readers, and the training dataset with the paper's
augmentations (random short-side resize, random crop, horizontal flip).

Works unchanged on the real Cityscapes folders and on ``casnet synth`` output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from casnet_core.targets import build_targets

IMAGE_SUFFIX = "_leftImg8bit.png"
#: The targets of ``build_targets`` that items carry (and the losses read).
TARGET_KEYS = ("semantic", "semantic_full", "attributes", "thing_mask", "box_prob")


@dataclass(frozen=True)
class Sample:
    name: str  # e.g. "frankfurt_000000_000294"
    image_path: Path
    label_ids_path: Path
    instance_ids_path: Path


def list_samples(root: str | os.PathLike, split: str) -> list[Sample]:
    """All samples of a split, sorted by name; raises FileNotFoundError if there are none."""
    root = Path(root)
    images = sorted((root / "leftImg8bit" / split).glob(f"*/*{IMAGE_SUFFIX}"))
    if not images:
        raise FileNotFoundError(f"no images matching {root}/leftImg8bit/{split}/*/*{IMAGE_SUFFIX}")
    samples = []
    for image_path in images:
        name = image_path.name[: -len(IMAGE_SUFFIX)]
        gt_dir = root / "gtFine" / split / image_path.parent.name
        samples.append(
            Sample(name, image_path, gt_dir / f"{name}_gtFine_labelIds.png", gt_dir / f"{name}_gtFine_instanceIds.png")
        )
    return samples


# Every PNG ends with this IEND chunk (length 0, type, CRC): a file without it was cut short.
_PNG_SIGNATURE, _PNG_END = b"\x89PNG\r\n\x1a\n", b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _imread(path: str | os.PathLike, flags: int) -> np.ndarray | None:
    """cv2.imread, None for a file it cannot decode; a truncated PNG is found before libpng is handed it (libpng
    would print its own error on stderr besides ours)."""
    try:
        with open(path, "rb") as f:
            complete = True
            if f.read(len(_PNG_SIGNATURE)) == _PNG_SIGNATURE:
                f.seek(0, os.SEEK_END)
                f.seek(max(f.tell() - len(_PNG_END), 0))
                complete = f.read() == _PNG_END
    except OSError:  # missing, a folder, unreadable: the caller says which file
        return None
    if not complete:
        raise FileNotFoundError(f"cannot read image {path}: truncated PNG (no IEND chunk)")
    return cv2.imread(str(path), flags)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    image = _imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label_ids(path: str | os.PathLike) -> np.ndarray:
    """(H, W) uint8 Cityscapes label ids."""
    labels = _imread(path, cv2.IMREAD_UNCHANGED)
    if labels is None or labels.ndim != 2:
        raise FileNotFoundError(f"cannot read a single-channel label image {path}")
    return labels.astype(np.uint8)


def read_instance_ids(path: str | os.PathLike) -> np.ndarray:
    """(H, W) int32 Cityscapes instanceIds (16-bit PNG)."""
    ids = _imread(path, cv2.IMREAD_UNCHANGED)
    if ids is None or ids.ndim != 2:
        raise FileNotFoundError(f"cannot read a single-channel instance image {path}")
    return ids.astype(np.int32)


class CityscapesDataset(Dataset):
    """Images and CASNet targets.

    Training (``augment=True``): the short side is resized to a random length in ``short_side``,
    then a random ``crop_size`` (h, w) window is cut (padded with void where the image is smaller),
    then flipped with probability 0.5. Randomness is drawn from (seed, epoch, index), so an epoch
    is the same whatever the number of workers, and a resumed run sees the same data.

    Evaluation (``augment=False``): the image resized so its short side is ``short_side[0]`` when
    given, padded to a multiple of ``size_divisor``.

    Items: "image" (3, H, W) float32 RGB 0..255, the targets of ``build_targets`` as tensors
    ("semantic", "semantic_full", "attributes", "thing_mask", "box_prob"), and "name". With
    ``targets=False`` the items are the augmented ground truth instead, for targets built on the training
    device (``casnet_core.device_targets``): "image" (3, H, W) uint8, "label_ids" (H, W) uint8,
    "instance_ids" (H, W) int32, "name" (4x less to collate and copy than float images and targets).
    ``small_instance_area``: items also carry "small_instance" (see ``build_targets``).

    ``cache=True``: the decoded scenes are kept in memory as they are first read (``preload`` reads them
    all, in threads, e.g. before DataLoader workers fork and share them): RGB and label ids as uint8,
    instance ids as uint16 where they fit (Cityscapes ids are < 34000).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        *,
        mode: str = "panoptic",
        stride: int = 4,
        augment: bool = True,
        short_side: tuple[int, int] | None = (512, 1024),
        crop_size: tuple[int, int] = (640, 1280),
        flip: bool = True,
        center_radius: float = 1.5,
        size_divisor: int = 32,
        seed: int = 0,
        targets: bool = True,
        cache: bool = False,
        small_instance_area: int | None = None,
        photometric: bool = False,
    ) -> None:
        self.samples = list_samples(root, split)
        self.photometric = photometric
        self.targets = targets
        self.small_instance_area = small_instance_area
        self._cache: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] | None = \
            [None] * len(self.samples) if cache else None
        self.mode = mode
        self.stride = stride
        self.augment = augment
        self.short_side = tuple(short_side) if short_side else None
        self.crop_size = tuple(crop_size)
        self.flip = flip
        self.center_radius = center_radius
        self.size_divisor = size_divisor
        self.seed = seed
        self.epoch = 0
        if augment and (self.crop_size[0] % size_divisor or self.crop_size[1] % size_divisor):
            raise ValueError(f"crop size {self.crop_size} must be a multiple of {size_divisor}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def preload(self, *, threads: int = 8) -> None:
        """Reads every scene into the cache (``cache=True``), ``threads`` at a time (OpenCV decodes without
        the GIL)."""
        if self._cache is None:
            raise ValueError("preload needs a dataset made with cache=True")
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max(1, threads)) as pool:
            for index, scene in enumerate(pool.map(self._read_scene, range(len(self.samples)))):
                self._cache[index] = scene

    def _read_scene(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB, (H, W) uint8 label ids, (H, W) instance ids (uint16 where they fit, else int32)."""
        sample = self.samples[index]
        instances = read_instance_ids(sample.instance_ids_path)
        if instances.min(initial=0) >= 0 and instances.max(initial=0) <= np.iinfo(np.uint16).max:
            instances = instances.astype(np.uint16)
        return read_image(sample.image_path), read_label_ids(sample.label_ids_path), instances

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        sample = self.samples[index]
        if self._cache is None:
            image, labels, instances = self._read_scene(index)
        else:
            if self._cache[index] is None:
                self._cache[index] = self._read_scene(index)
            image, labels, instances = self._cache[index]
        if self.augment:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            image, labels, instances = self._augment(image, labels, instances, rng)
        else:
            if self.short_side:
                image, labels, instances = _resize_short_side(image, labels, instances, self.short_side[0])
            image, labels, instances = _pad_to(image, labels, instances, *_round_up(labels.shape, self.size_divisor))
        instances = instances.astype(np.int32, copy=False)
        if not self.targets:
            return {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                    "label_ids": torch.from_numpy(np.ascontiguousarray(labels)),
                    "instance_ids": torch.from_numpy(np.ascontiguousarray(instances)), "name": sample.name}
        targets = build_targets(labels, instances, mode=self.mode, stride=self.stride, center_radius=self.center_radius,
                                small_instance_area=self.small_instance_area)
        item: dict[str, torch.Tensor | str] = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float(),
            "name": sample.name,
        }
        for key in TARGET_KEYS + (("small_instance",) if self.small_instance_area is not None else ()):
            item[key] = torch.from_numpy(targets[key])
        return item

    def _augment(self, image, labels, instances, rng: np.random.Generator):
        if self.short_side:
            image, labels, instances = _resize_short_side(
                image, labels, instances, int(rng.integers(self.short_side[0], self.short_side[1] + 1))
            )
        crop_h, crop_w = self.crop_size
        image, labels, instances = _pad_to(image, labels, instances, max(crop_h, labels.shape[0]),
                                           max(crop_w, labels.shape[1]))
        top = int(rng.integers(0, labels.shape[0] - crop_h + 1))
        left = int(rng.integers(0, labels.shape[1] - crop_w + 1))
        window = (slice(top, top + crop_h), slice(left, left + crop_w))
        image, labels, instances = image[window], labels[window], instances[window]
        if self.flip and rng.random() < 0.5:
            image, labels, instances = image[:, ::-1], labels[:, ::-1], instances[:, ::-1]
        if self.photometric:
            image = photometric_augment(np.ascontiguousarray(image), rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(labels), np.ascontiguousarray(instances)


def photometric_augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 RGB with random brightness, contrast and saturation (x0.7..1.3 each), and, each with
    probability 0.3, Gaussian blur (sigma 0.3..1.5 px), Gaussian noise (sigma 2..8 levels) and JPEG compression
    (quality 40..90): a camera's look, which generated scenes lack. Labels are unchanged; returns a new array."""
    out = image.astype(np.float32)
    gray = out @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    out = gray[..., None] + (out - gray[..., None]) * rng.uniform(0.7, 1.3)  # saturation
    out = (out - gray.mean()) * rng.uniform(0.7, 1.3) + gray.mean() * rng.uniform(0.7, 1.3)  # contrast, brightness
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=float(rng.uniform(0.3, 1.5)))
    if rng.random() < 0.3:
        out = out + rng.normal(0.0, rng.uniform(2.0, 8.0), size=out.shape).astype(np.float32)
    out = np.clip(out, 0, 255).round().astype(np.uint8)
    if rng.random() < 0.3:
        ok, encoded = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 91))])
        out = np.ascontiguousarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]) if ok else out
    return out


def _resize_short_side(image, labels, instances, short: int):
    height, width = labels.shape
    scale = short / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # cv2 takes (w, h)
    return (
        cv2.resize(image, size, interpolation=cv2.INTER_LINEAR),
        # INTER_NEAREST_EXACT: centre-aligned, as the rest of the project (plain INTER_NEAREST shifts by
        # up to a pixel towards the origin).
        cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST_EXACT),
        cv2.resize(instances, size, interpolation=cv2.INTER_NEAREST_EXACT),
    )


def _pad_to(image, labels, instances, height: int, width: int):
    """Pads bottom/right; label id 0 ("unlabeled") is void, so padding is ignored by the losses."""
    pad = ((0, height - labels.shape[0]), (0, width - labels.shape[1]))
    if pad == ((0, 0), (0, 0)):
        return image, labels, instances
    return np.pad(image, pad + ((0, 0),)), np.pad(labels, pad), np.pad(instances, pad)


def _round_up(shape: tuple[int, int], divisor: int) -> tuple[int, int]:
    return tuple(-(-s // divisor) * divisor for s in shape)
