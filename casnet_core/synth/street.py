"""A whole street scene: ``populate`` lays out a ``StreetScene`` and fills it, ``generate_scene`` renders one
(deterministic for a seed) with the thing classes it must show."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from casnet_core.labels import LABEL_DIVISOR, THING_LABEL_IDS, THING_NAMES
from casnet_core.synth.classes import CAR, PERSON
from casnet_core.synth.furniture import add_street_furniture
from casnet_core.synth.roadside import add_backdrop, add_roadside
from casnet_core.synth.scene import StreetScene
from casnet_core.synth.traffic import add_cross_traffic, add_cyclists, add_parked, add_pedestrians, add_traffic, force

DEFAULT_CLASSES = ("car", "person")
# Visible instances smaller than this are removed from the maps (set to void), as annotators would skip them.
MIN_INSTANCE_AREA = 10
# A required class counts as present from this many visible pixels on (at 512x1024, scaled with the area).
_MIN_CLASS_FRACTION = 2e-4
_MAX_ATTEMPTS = 20


def populate(scene: StreetScene, must_include: Sequence[int] = ()) -> None:
    """Lays out the street and adds everything on it: roadside, furniture, the required classes, traffic and
    people, and maybe the bonnet of the ego vehicle."""
    rng = scene.rng
    scene.layout_street()
    add_backdrop(scene)
    for side in (-1, 1):
        add_roadside(scene, side)
    add_street_furniture(scene)
    # Rarer required classes first, in clear view; the traffic placed afterwards keeps clear of them.
    for label_id in must_include:
        if label_id not in (CAR, PERSON):
            n_things, n_footprints = len(scene.things), len(scene.footprints)
            force(scene, label_id)
            scene.protected_points += [(x, z) for _, x, z in scene.things[n_things:]]
            scene.protected_footprints += scene.footprints[n_footprints:]
    add_parked(scene)
    add_traffic(scene)
    if scene.intersection is not None:
        add_cross_traffic(scene)
    add_pedestrians(scene)
    add_cyclists(scene)
    for label_id in must_include:
        if not any(c == label_id and scene.in_clear_view(x, z) for c, x, z in scene.things):
            force(scene, label_id)
    if rng.random() < 0.5:
        scene.add_ego_vehicle()


def remove_small_instances(label_ids: np.ndarray, instance_ids: np.ndarray, min_area: int) -> None:
    """Sets thing instances with fewer than ``min_area`` visible pixels to void (label 0, instance 0), in place."""
    if instance_ids.max() < LABEL_DIVISOR:
        return
    counts = np.bincount(instance_ids.ravel())
    small = (counts > 0) & (counts < min_area)
    small[:LABEL_DIVISOR] = False
    if small.any():
        mask = small[instance_ids]
        label_ids[mask] = 0
        instance_ids[mask] = 0


def _class_ids(names: Sequence[str]) -> list[int]:
    thing_ids = dict(zip(THING_NAMES, THING_LABEL_IDS))
    for name in names:
        if name not in thing_ids:
            raise ValueError(f"{name!r} is not a Cityscapes thing class; expected one of {THING_NAMES}")
    return [thing_ids[name] for name in names]


def generate_scene(
    seed: int, height: int = 512, width: int = 1024, *, must_include: Sequence[str] = DEFAULT_CLASSES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic street scene, deterministic for ``seed``.

    Args:
        seed: any non-negative integer.
        height, width: image size in pixels.
        must_include: thing class names that must be visible (re-drawn with a derived seed until they
            are, at most a few times); cars and persons by default.

    Returns:
        image: (H, W, 3) uint8 RGB.
        label_ids: (H, W) uint8 Cityscapes label ids.
        instance_ids: (H, W) int32 Cityscapes instance ids (label_id * LABEL_DIVISOR + k for thing instances,
            label_id elsewhere).
    """
    if height < 32 or width < 32:
        raise ValueError(f"image size {height}x{width} is too small (at least 32x32)")
    required = _class_ids(must_include)
    min_pixels = max(int(_MIN_CLASS_FRACTION * height * width), 20)
    for attempt in range(_MAX_ATTEMPTS):
        rng = np.random.default_rng([int(seed), attempt])
        scene = StreetScene(rng, height, width)
        populate(scene, required)
        image, label_ids, instance_ids = scene.render()
        remove_small_instances(label_ids, instance_ids, MIN_INSTANCE_AREA)
        counts = np.bincount(label_ids.ravel(), minlength=256)
        if all(counts[c] >= min_pixels for c in required):
            break
    return image, label_ids, instance_ids
