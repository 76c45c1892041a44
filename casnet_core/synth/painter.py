"""The painter: draws primitives into the RGB image and, at the same time, into the segment map from which
the label and instance maps are read, so the maps hold exactly the visible pixels."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import cv2
import numpy as np

from casnet_core.labels import LABEL_DIVISOR
from casnet_core.synth.classes import THING_IDS

Color = tuple[int, int, int]


@dataclass(frozen=True)
class Region:
    """What a painted primitive writes into the maps."""

    label_id: int
    instance_id: int
    segment_id: int


_SHIFT = 4  # fixed-point bits of OpenCV drawing: sub-pixel accurate polygon edges
_FIXED_ONE = float(1 << _SHIFT)


def _fixed(points: np.ndarray) -> np.ndarray:
    """Pixel coordinates (..., 2) -> OpenCV fixed point. Everything drawn lies at depth >= 0.3 m (a drive's
    near plane), so coordinates stay far inside the int32 range."""
    # OpenCV puts integer coordinates on pixel centres; ours put them on pixel corners.
    p = np.asarray(points, dtype=np.float64) * _FIXED_ONE - 0.5 * _FIXED_ONE
    return np.rint(p).astype(np.int32)


def _rgb(color: Sequence[float]) -> Color:
    return tuple(int(min(max(c, 0.0), 255.0)) for c in color)  # type: ignore[return-value]


class InstanceNumbers:
    """The k of every thing across the frames of a drive, so that an object keeps its instance id
    ``label_id * LABEL_DIVISOR + k``: each class numbers its objects in the order they are first drawn."""

    def __init__(self) -> None:
        self._numbers: dict[tuple[int, Hashable], int] = {}
        self._count: dict[int, int] = {}

    def number(self, label_id: int, key: Hashable) -> int:
        """k of the object ``key`` (the same in every frame) of class ``label_id``."""
        if (label_id, key) not in self._numbers:
            k = self._count.get(label_id, 0)
            if k >= LABEL_DIVISOR:
                raise ValueError(f"more than {LABEL_DIVISOR} instances of label id {label_id} in one drive")
            self._count[label_id] = k + 1
            self._numbers[label_id, key] = k
        return self._numbers[label_id, key]


class Painter:
    """Draws every primitive into the RGB image and, for labelled primitives, its segment id into the
    segment map; labels and instance ids are looked up from the segment ids at the end, so the maps always
    agree with the visible pixels."""

    def __init__(
        self, height: int, width: int, rng: np.random.Generator, instance_numbers: InstanceNumbers | None = None
    ) -> None:
        self.height, self.width = height, width
        self.rng = rng
        self.image = np.zeros((height, width, 3), np.uint8)
        self.segment = np.zeros((height, width), np.int32)
        self.light = np.ones((height, width), np.float32)  # cast shadows, only on segments that receive them
        # Per segment (0 = void): label id, instance id, whether shadows fall on it, and a linear gain
        # field gain(u, v) = c + a * u + b * v for its shading gradient.
        self._labels: list[int] = [0]
        self._instances: list[int] = [0]
        self._receives_shadow: list[bool] = [False]
        self._gradients: list[tuple[float, float, float]] = [(0.0, 0.0, 1.0)]
        self._next_instance: dict[int, int] = {}
        # A drive numbers things by (the object being drawn, its how-manieth thing region), not by drawing order.
        self.instance_numbers = instance_numbers
        self._object: Hashable = None
        self._object_regions = 0

    def begin_object(self, key: Hashable) -> None:
        """The regions created from now on belong to object ``key`` (only a drive's numbering cares)."""
        self._object, self._object_regions = key, 0

    def new_region(
        self,
        label_id: int,
        center: tuple[float, float] = (0.0, 0.0),
        size: float = 1.0,
        strength: float = 0.25,
        gradient: tuple[float, float] | None = None,
        receives_shadow: bool = False,
    ) -> Region:
        """A new segment; things also get a new instance id. ``strength`` is the largest relative brightness
        change of the random gradient across ``size`` pixels around ``center``."""
        if label_id in THING_IDS:
            if self.instance_numbers is None:
                k = self._next_instance.get(label_id, 0)
                self._next_instance[label_id] = k + 1
            else:
                k = self.instance_numbers.number(label_id, (self._object, self._object_regions))
                self._object_regions += 1
            instance_id = label_id * LABEL_DIVISOR + k
        else:
            instance_id = label_id
        if gradient is None:
            theta = self.rng.uniform(0.0, 2.0 * math.pi)
            amount = self.rng.uniform(0.0, strength) / max(size, 1.0)
            gradient = (amount * math.cos(theta), amount * math.sin(theta))
        a, b = gradient
        self._gradients.append((a, b, 1.0 - a * center[0] - b * center[1]))
        self._labels.append(label_id)
        self._instances.append(instance_id)
        self._receives_shadow.append(receives_shadow)
        return Region(label_id, instance_id, len(self._labels) - 1)

    def maps(self) -> tuple[np.ndarray, np.ndarray]:
        """(label_ids uint8, instance_ids int32) of the visible pixels."""
        labels = np.asarray(self._labels, dtype=np.uint8)
        instances = np.asarray(self._instances, dtype=np.int32)
        return labels[self.segment], instances[self.segment]

    def gain(self) -> np.ndarray:
        """(H, W) float32 brightness gain: per-segment gradients times cast shadows."""
        table = np.asarray(self._gradients, dtype=np.float32)
        seg = self.segment
        u = np.arange(self.width, dtype=np.float32)[None, :] + 0.5
        v = np.arange(self.height, dtype=np.float32)[:, None] + 0.5
        gain = table[:, 0][seg] * u
        gain += table[:, 1][seg] * v
        gain += table[:, 2][seg]
        np.clip(gain, 0.4, 1.6, out=gain)
        shadowed = np.asarray(self._receives_shadow)[seg]
        gain[shadowed] *= self.light[shadowed]
        return gain

    def _paint(self, draw: Callable[[np.ndarray, object], None], color: Sequence[float], region: Region | None) -> None:
        draw(self.image, _rgb(color))
        if region is not None:
            draw(self.segment, region.segment_id)

    def poly(self, points: np.ndarray, color: Sequence[float], region: Region | None = None) -> None:
        if len(points) < 3:  # clipped away by the near plane of a moving camera
            return
        pts = [_fixed(points).reshape(-1, 2)]
        self._paint(lambda canvas, value: cv2.fillPoly(canvas, pts, value, cv2.LINE_8, _SHIFT), color, region)

    def polys(
        self, polygons: np.ndarray | Sequence[np.ndarray], color: Sequence[float], region: Region | None = None
    ) -> None:
        """Several polygons in one call, a list or an (N, K, 2) array; they must not overlap (OpenCV fills
        by parity). Polygons of fewer than 3 points (clipped away by a moving camera) are skipped."""
        if isinstance(polygons, np.ndarray):
            pts = list(_fixed(polygons))
        else:
            pts = [_fixed(p) for p in polygons if len(p) >= 3]
        if not pts:
            return
        self._paint(lambda canvas, value: cv2.fillPoly(canvas, pts, value, cv2.LINE_8, _SHIFT), color, region)

    def ellipse(
        self,
        center: Sequence[float],
        axes: Sequence[float],
        color: Sequence[float],
        region: Region | None = None,
        angle: float = 0.0,
        thickness: int = -1,
    ) -> None:
        c = tuple(int(x) for x in _fixed(center).reshape(2))
        ax = (max(int(round(axes[0] * _FIXED_ONE)), 1), max(int(round(axes[1] * _FIXED_ONE)), 1))
        self._paint(
            lambda canvas, value: cv2.ellipse(canvas, c, ax, angle, 0, 360, value, thickness, cv2.LINE_8, _SHIFT),
            color,
            region,
        )

    def shadow(self, points: np.ndarray, factor: float) -> None:
        if len(points) < 3:
            return
        cv2.fillPoly(self.light, [_fixed(points).reshape(-1, 2)], float(factor), cv2.LINE_8, _SHIFT)
