"""Synthetic street scenes written in the on-disk format of Cityscapes.

Each scene is a straight street seen by a forward-looking pinhole camera at driver height: road with
lane markings (and sometimes a crossing street with a zebra crossing and traffic lights), sidewalks,
terrain, building facades with windows, parks behind walls, fences and hedges, trees, street lamps,
traffic signs, a far skyline and the sky. Things stand on the ground plane and are projected by the
same camera, so scale follows depth (far = small and near the horizon, near = large and low):
rows of parked cars, traffic in the lanes, cross traffic, groups of pedestrians, cyclists and
motorcyclists (rider and bike are separate instances of different classes), parked bicycles.

Everything is drawn far to near (painter's algorithm) into the image and, at the same time, into the
label, instance and segment maps, so the maps hold exactly the visible pixels. Colours come from
overlapping palettes per instance and are then shaded (per-face light, per-segment gradients, cast
shadows, low-frequency texture, blur, brightness/contrast/gamma, colour cast, Gaussian noise), so colour
alone does not give the class.

Label ids come from ``cityscapesscripts.helpers.labels``; instance ids follow Cityscapes
(``label_id * 1000 + k`` for thing instances, ``label_id`` elsewhere).
"""

from __future__ import annotations

import argparse
import colorsys
import math
import os
import statistics
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import id2label, name2label

from casnet_core.labels import LABEL_DIVISOR, THING_NAMES

__all__ = ["generate_scene", "generate_dataset", "register", "sample_name", "CITIES"]

CITIES = {"train": "synthA", "val": "synthV", "test": "synthT"}
# Cityscapes names the annotated frame of every sequence "..._000019".
ANNOTATED_FRAME = 19
DEFAULT_CLASSES = ("car", "person")
# Visible instances smaller than this are removed from the maps (set to void), as annotators would skip them.
MIN_INSTANCE_AREA = 10
# A required class counts as present from this many visible pixels on (at 512x1024, scaled with the area).
_MIN_CLASS_FRACTION = 2e-4
_MAX_ATTEMPTS = 20


def _label_id(name: str) -> int:
    return name2label[name].id


EGO_VEHICLE = _label_id("ego vehicle")
ROAD = _label_id("road")
SIDEWALK = _label_id("sidewalk")
BUILDING = _label_id("building")
WALL = _label_id("wall")
FENCE = _label_id("fence")
POLE = _label_id("pole")
TRAFFIC_LIGHT = _label_id("traffic light")
TRAFFIC_SIGN = _label_id("traffic sign")
VEGETATION = _label_id("vegetation")
TERRAIN = _label_id("terrain")
SKY = _label_id("sky")
PERSON = _label_id("person")
RIDER = _label_id("rider")
CAR = _label_id("car")
TRUCK = _label_id("truck")
BUS = _label_id("bus")
TRAIN = _label_id("train")
MOTORCYCLE = _label_id("motorcycle")
BICYCLE = _label_id("bicycle")
_THING_IDS = frozenset(_label_id(name) for name in THING_NAMES)

Color = tuple[int, int, int]
# Standard normal quantiles of 256 equiprobable bins: maps uniform random bytes to Gaussian noise.
_NORMAL_QUANTILES = np.array([statistics.NormalDist().inv_cdf((i + 0.5) / 256.0) for i in range(256)])


# ----------------------------------------------------------------------------------------------
# Camera and painter
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Camera:
    """Pinhole camera at (0, height, 0) looking along +z. World points are (x right, h up from the ground,
    z forward) in metres; pixels are continuous coordinates (pixel (u, v) covers [u, u+1) x [v, v+1))."""

    focal: float
    cx: float
    cy: float
    height: float

    def project(self, points: np.ndarray | Sequence) -> np.ndarray:
        """(N, 3) world points -> (N, 2) pixel coordinates (u, v). All z must be > 0."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        scale = self.focal / p[:, 2]
        out = np.empty((len(p), 2))
        out[:, 0] = self.cx + p[:, 0] * scale
        out[:, 1] = self.cy + (self.height - p[:, 1]) * scale
        return out

    def point(self, x: float, h: float, z: float) -> tuple[float, float]:
        """One world point -> pixel (u, v)."""
        scale = self.focal / z
        return self.cx + x * scale, self.cy + (self.height - h) * scale

    def horizon_v(self, z: float) -> float:
        """Image row of the ground at depth z."""
        return self.cy + self.focal * self.height / z


@dataclass(frozen=True)
class _Region:
    """What a painted primitive writes into the maps."""

    label_id: int
    instance_id: int
    segment_id: int


_SHIFT = 4  # fixed-point bits of OpenCV drawing: sub-pixel accurate polygon edges
_FIXED_ONE = float(1 << _SHIFT)


def _fixed(points: np.ndarray) -> np.ndarray:
    """Pixel coordinates (..., 2) -> OpenCV fixed point. Everything drawn lies at depth >= 0.3 m, so
    coordinates stay far inside the int32 range."""
    # OpenCV puts integer coordinates on pixel centres; ours put them on pixel corners.
    p = np.asarray(points, dtype=np.float64) * _FIXED_ONE - 0.5 * _FIXED_ONE
    return np.rint(p).astype(np.int32)


class _Painter:
    """Draws every primitive into the RGB image and, for labelled primitives, its segment id into the
    segment map; labels and instance ids are looked up from the segment ids at the end, so the maps always
    agree with the visible pixels."""

    def __init__(self, height: int, width: int, rng: np.random.Generator) -> None:
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

    def new_region(
        self,
        label_id: int,
        center: tuple[float, float] = (0.0, 0.0),
        size: float = 1.0,
        strength: float = 0.25,
        gradient: tuple[float, float] | None = None,
        receives_shadow: bool = False,
    ) -> _Region:
        """A new segment; things also get a new instance id. ``strength`` is the largest relative brightness
        change of the random gradient across ``size`` pixels around ``center``."""
        if label_id in _THING_IDS:
            k = self._next_instance.get(label_id, 0)
            self._next_instance[label_id] = k + 1
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
        return _Region(label_id, instance_id, len(self._labels) - 1)

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

    def _paint(self, draw: Callable[[np.ndarray, object], None], color: Sequence[float], region: _Region | None) -> None:
        draw(self.image, _rgb(color))
        if region is not None:
            draw(self.segment, region.segment_id)

    def poly(self, points: np.ndarray, color: Sequence[float], region: _Region | None = None) -> None:
        pts = [_fixed(points).reshape(-1, 2)]
        self._paint(lambda canvas, value: cv2.fillPoly(canvas, pts, value, cv2.LINE_8, _SHIFT), color, region)

    def polys(
        self, polygons: np.ndarray | Sequence[np.ndarray], color: Sequence[float], region: _Region | None = None
    ) -> None:
        """Several polygons in one call, a list or an (N, K, 2) array; they must not overlap (OpenCV fills
        by parity)."""
        if len(polygons) == 0:
            return
        pts = list(_fixed(polygons)) if isinstance(polygons, np.ndarray) else [_fixed(p) for p in polygons]
        self._paint(lambda canvas, value: cv2.fillPoly(canvas, pts, value, cv2.LINE_8, _SHIFT), color, region)

    def ellipse(
        self,
        center: Sequence[float],
        axes: Sequence[float],
        color: Sequence[float],
        region: _Region | None = None,
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
        cv2.fillPoly(self.light, [_fixed(points).reshape(-1, 2)], float(factor), cv2.LINE_8, _SHIFT)


def _rgb(color: Sequence[float]) -> Color:
    return tuple(int(min(max(c, 0.0), 255.0)) for c in color)  # type: ignore[return-value]


def _scaled(color: Sequence[float], factor: float) -> np.ndarray:
    return np.clip(np.asarray(color, dtype=np.float64) * factor, 0.0, 255.0)


def _mix(a: Sequence[float], b: Sequence[float], t: float) -> np.ndarray:
    return (1.0 - t) * np.asarray(a, dtype=np.float64) + t * np.asarray(b, dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# Palettes: deliberately overlapping between classes
# ----------------------------------------------------------------------------------------------


def _hsv(
    rng: np.random.Generator, hue: tuple[float, float], sat: tuple[float, float], val: tuple[float, float]
) -> np.ndarray:
    """A random colour, uniform in the given hue, saturation and value ranges (hue wraps around 1)."""
    u = rng.random(3)
    h = (hue[0] + u[0] * (hue[1] - hue[0])) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, sat[0] + u[1] * (sat[1] - sat[0]), val[0] + u[2] * (val[1] - val[0]))
    return np.array([r, g, b]) * 255.0


def _paint_color(rng: np.random.Generator) -> np.ndarray:
    """Vehicle paint and clothes: many greys, whites and blacks, plus any hue."""
    if rng.random() < 0.45:
        return _hsv(rng, (0.0, 1.0), (0.0, 0.1), (0.06, 0.95))
    return _hsv(rng, (0.0, 1.0), (0.25, 0.9), (0.15, 0.9))


def _building_color(rng: np.random.Generator) -> np.ndarray:
    return _hsv(rng, (0.0, 1.0), (0.0, 0.45), (0.25, 0.9))


def _ground_color(rng: np.random.Generator, sat: float, val: tuple[float, float]) -> np.ndarray:
    return _hsv(rng, (0.0, 1.0), (0.0, sat), val)


def _green(rng: np.random.Generator) -> np.ndarray:
    return _hsv(rng, (0.1, 0.42), (0.25, 0.85), (0.1, 0.6))


def _skin(rng: np.random.Generator) -> np.ndarray:
    return _hsv(rng, (0.02, 0.1), (0.2, 0.65), (0.25, 0.95))


def _hair(rng: np.random.Generator) -> np.ndarray:
    return _hsv(rng, (0.02, 0.12), (0.0, 0.7), (0.05, 0.85))


def _glass(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.2:  # a reflection of the sky
        return _hsv(rng, (0.5, 0.65), (0.0, 0.4), (0.5, 0.9))
    return _hsv(rng, (0.5, 0.7), (0.0, 0.4), (0.04, 0.35))


# ----------------------------------------------------------------------------------------------
# Geometry helpers
# ----------------------------------------------------------------------------------------------

# A planar rectangle: origin, first edge, second edge (world metres).
_Face = tuple[str, np.ndarray, np.ndarray, np.ndarray]


def _box_faces(cam_height: float, x0: float, x1: float, h0: float, h1: float, z0: float, z1: float) -> list[_Face]:
    """The faces of an axis-aligned box that the camera sees (back face never, z0 > 0)."""
    faces: list[_Face] = []
    dx, dh, dz = np.array([x1 - x0, 0, 0.0]), np.array([0, h1 - h0, 0.0]), np.array([0, 0, z1 - z0])
    if x0 > 0:
        faces.append(("left", np.array([x0, h0, z0]), dz, dh))
    if x1 < 0:
        faces.append(("right", np.array([x1, h0, z0]), dz, dh))
    if h1 < cam_height:
        faces.append(("top", np.array([x0, h1, z0]), dx, dz))
    if h0 > cam_height:
        faces.append(("bottom", np.array([x0, h0, z0]), dx, dz))
    faces.append(("front", np.array([x0, h0, z0]), dx, dh))
    return faces


_RECT_A = np.array([0, 1, 1, 0])
_RECT_B = np.array([2, 2, 3, 3])


def _face_rects(face: _Face, rects: np.ndarray | Sequence) -> np.ndarray:
    """Sub-rectangles (a0, a1, b0, b1) in face coordinates (0..1 along each edge) -> (N, 4, 3) corners."""
    _, origin, e1, e2 = face
    r = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    a = r[:, _RECT_A][..., None]
    b = r[:, _RECT_B][..., None]
    return origin + a * e1 + b * e2


class _Billboard:
    """A vertical plane facing the camera at ground point (x, z): shapes are given in metres (dx right,
    dh up from the ground), mirrored when ``mirror``."""

    def __init__(self, cam: _Camera, x: float, z: float, mirror: bool = False) -> None:
        self.scale = cam.focal / z
        self.u0, self.v0 = cam.point(x, 0.0, z)
        self.scale_x = -self.scale if mirror else self.scale

    def point(self, dx: float, dh: float) -> tuple[float, float]:
        return self.u0 + self.scale_x * dx, self.v0 - self.scale * dh

    def pts(self, metres: Sequence) -> np.ndarray:
        """(N, 2) pixel coordinates of N (dx, dh) points."""
        return np.array([(self.u0 + self.scale_x * dx, self.v0 - self.scale * dh) for dx, dh in metres])

    def px(self, metres: float) -> float:
        return metres * self.scale

    def limb(self, p: Sequence[float], q: Sequence[float], width_p: float, width_q: float | None = None) -> np.ndarray:
        """A quadrilateral from p to q, at least one pixel wide."""
        ax, ay = self.point(*p)
        bx, by = self.point(*q)
        norm = max(math.hypot(bx - ax, by - ay), 1e-6)
        nx, ny = (ay - by) / norm, (bx - ax) / norm
        wp = max(width_p * self.scale, 1.0) / 2.0
        wq = max((width_p if width_q is None else width_q) * self.scale, 1.0) / 2.0
        return np.array([(ax + nx * wp, ay + ny * wp), (bx + nx * wq, by + ny * wq),
                         (bx - nx * wq, by - ny * wq), (ax - nx * wp, ay - ny * wp)])

    def rect(self, x0: float, x1: float, h0: float, h1: float) -> np.ndarray:
        return self.pts([(x0, h0), (x1, h0), (x1, h1), (x0, h1)])


# ----------------------------------------------------------------------------------------------
# The scene
# ----------------------------------------------------------------------------------------------


@dataclass
class _Item:
    depth: float  # painter key: larger is drawn first
    lateral: float  # tie-break: further from the optical axis is drawn first
    draw: Callable[[], None]


class _StreetScene:
    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.rng = rng
        self.height, self.width = height, width
        self.cam = _Camera(
            focal=width * rng.uniform(0.95, 1.25),
            cx=width * rng.uniform(0.47, 0.53),
            cy=height * rng.uniform(0.36, 0.47),
            height=rng.uniform(1.15, 1.45),
        )
        self.painter = _Painter(height, width, rng)
        self.items: list[_Item] = []
        self.ground_shadows: list[tuple[np.ndarray, float]] = []
        # Things placed so far, (label id, x, z), and the ground footprints (x0, x1, z0, z1) of vehicles, to
        # tell which things the camera sees and where a required one can still be put in clear view.
        self.things: list[tuple[int, float, float]] = []
        self.footprints: list[tuple[float, float, float, float]] = []
        self.protected_points: list[tuple[float, float]] = []
        self.protected_footprints: list[tuple[float, float, float, float]] = []
        # Light: the sun is on the left (-1) or right (+1); faces turned to it are lit.
        self.sun_side = float(rng.choice([-1.0, 1.0]))
        self.shadow_factor = rng.uniform(0.45, 0.8)
        self.face_light = {
            "front": rng.uniform(0.8, 0.98),
            "top": rng.uniform(1.02, 1.2),
            "bottom": rng.uniform(0.45, 0.65),
            "lit": rng.uniform(0.95, 1.12),
            "dark": rng.uniform(0.55, 0.8),
        }
        # Objects further than this would be under ~6 pixels tall.
        self.max_object_z = min(150.0, self.cam.focal * 1.6 / 6.0)

    # ---------------------------------------------------------------- layout
    def build(self, must_include: Sequence[int]) -> None:
        rng = self.rng
        self._layout_street()
        self._add_backdrop()
        for side in (-1, 1):
            self._add_roadside(side)
        self._add_street_furniture()
        # Rarer required classes first, in clear view; the traffic placed afterwards keeps clear of them.
        for label_id in must_include:
            if label_id not in (CAR, PERSON):
                n_things, n_footprints = len(self.things), len(self.footprints)
                self._force(label_id)
                self.protected_points += [(x, z) for _, x, z in self.things[n_things:]]
                self.protected_footprints += self.footprints[n_footprints:]
        self._add_parked()
        self._add_traffic()
        if self.intersection is not None:
            self._add_cross_traffic()
        self._add_pedestrians()
        self._add_cyclists()
        for label_id in must_include:
            if not any(c == label_id and self._in_clear_view(x, z) for c, x, z in self.things):
                self._force(label_id)
        if rng.random() < 0.5:
            self._add_ego_vehicle()

    def _layout_street(self) -> None:
        rng = self.rng
        lane_width = rng.uniform(3.0, 3.6)
        n_lanes = int(rng.integers(2, 5))
        n_oncoming = 0 if rng.random() < 0.2 else max(1, n_lanes // 2)
        park_left = 2.2 if rng.random() < 0.5 else 0.0
        park_right = 2.2 if rng.random() < 0.85 else 0.0
        median = rng.uniform(1.5, 3.0) if (n_oncoming > 0 and rng.random() < 0.25) else 0.0
        # Lane centres from the left road edge, then shifted so the camera sits in a lane of its direction.
        centres, x = [], park_left
        for i in range(n_lanes):
            if i == n_oncoming and n_oncoming > 0:
                x += median
            centres.append((x + lane_width / 2.0, -1 if i < n_oncoming else 1))
            x += lane_width
        road_width = x + park_right
        own = [c for c, d in centres if d > 0]
        camera_x = own[int(rng.integers(len(own)))] + rng.uniform(-0.4, 0.4)
        self.lanes = [(c - camera_x, d) for c, d in centres]
        self.lane_width = lane_width
        self.road_left, self.road_right = -camera_x, road_width - camera_x
        self.park_left, self.park_right = park_left, park_right
        self.median = None
        if median > 0:
            m0 = park_left + n_oncoming * lane_width - camera_x
            self.median = (m0, m0 + median)
        self.sidewalk = {-1: rng.uniform(2.0, 5.0), 1: rng.uniform(2.0, 5.0)}
        self.verge = {s: (0.0 if rng.random() < 0.6 else rng.uniform(1.0, 4.0)) for s in (-1, 1)}
        self.building_line = {
            -1: self.road_left - self.sidewalk[-1] - self.verge[-1],
            1: self.road_right + self.sidewalk[1] + self.verge[1],
        }
        self.z_end = rng.uniform(150.0, 400.0)
        self.intersection = None
        if rng.random() < 0.65:
            z_i = rng.uniform(18.0, min(60.0, self.max_object_z * 0.6))
            self.intersection = (z_i, rng.uniform(8.0, 16.0), rng.uniform(2.5, 4.0))  # start, width, sidewalk

    def curb_x(self, side: int) -> float:
        return self.road_right if side > 0 else self.road_left

    def in_crossing(self, z0: float, z1: float, margin: float = 0.0) -> bool:
        if self.intersection is None:
            return False
        z_i, w, sw = self.intersection
        return z1 > z_i - sw - margin and z0 < z_i + w + sw + margin

    def _add_item(self, depth: float, lateral: float, draw: Callable[[], None]) -> None:
        self.items.append(_Item(depth, abs(lateral), draw))

    def _center_size(self, x: float, h: float, z: float, size_m: float) -> tuple[tuple[float, float], float]:
        return self.cam.point(x, h, z), self.cam.focal * size_m / z

    # ---------------------------------------------------------------- ground
    def _ground_quad(self, x0: float, x1: float, z0: float, z1: float) -> np.ndarray:
        point = self.cam.point
        return np.array([point(x0, 0.0, z0), point(x1, 0.0, z0), point(x1, 0.0, z1), point(x0, 0.0, z1)])

    def _add_ground(self) -> None:
        """Everything flat: drawn before any item, so it needs no depth order."""
        rng, p, cam = self.rng, self.painter, self.cam
        W, H = self.width, self.height
        self.road_color = _ground_color(rng, 0.12, (0.18, 0.55))
        self.sidewalk_color = _ground_color(rng, 0.3, (0.3, 0.78))
        terrain_color = _hsv(rng, (0.06, 0.35), (0.2, 0.75), (0.18, 0.6))
        full = (W / 2.0, H * 0.75)

        def fill(quad: np.ndarray, color: np.ndarray, label_id: int, strength: float = 0.3) -> None:
            region = p.new_region(label_id, full, max(W, H), strength, receives_shadow=True)
            p.poly(quad, color, region)

        v_far = cam.horizon_v(self.z_end)
        fill(np.array([(-1.0, v_far), (W + 1.0, v_far), (W + 1.0, H + 1.0), (-1.0, H + 1.0)]), terrain_color, TERRAIN)
        z0, z1 = 0.3, self.z_end
        far = 600.0
        fill(self._ground_quad(self.road_left, self.road_right, z0, z1), self.road_color, ROAD)
        for side in (-1, 1):
            c = self.curb_x(side)
            fill(self._ground_quad(*sorted((c, c + side * self.sidewalk[side])), z0, z1), self.sidewalk_color, SIDEWALK)
        if self.median is not None:
            m0, m1 = self.median
            kind = SIDEWALK if rng.random() < 0.5 else TERRAIN
            color = self.sidewalk_color if kind == SIDEWALK else terrain_color
            fill(self._ground_quad(m0, m1, z0, z1), color, kind)
        if self.intersection is not None:
            z_i, w, sw = self.intersection
            fill(self._ground_quad(-far, far, z_i, z_i + w), _scaled(self.road_color, rng.uniform(0.9, 1.1)), ROAD)
            for zz0, zz1 in ((z_i - sw, z_i), (z_i + w, z_i + w + sw)):
                fill(self._ground_quad(-far, self.road_left, zz0, zz1), self.sidewalk_color, SIDEWALK)
                fill(self._ground_quad(self.road_right, far, zz0, zz1), self.sidewalk_color, SIDEWALK)
        # Curbs: a lighter or darker line, same label as the sidewalk.
        curb_color = _scaled(self.sidewalk_color, rng.uniform(0.7, 1.3))
        for side in (-1, 1):
            c = self.curb_x(side)
            for za, zb in self._open_spans(z0, z1):
                p.poly(self._ground_quad(*sorted((c, c + side * 0.18)), za, zb), curb_color)
        self._add_markings()
        # Patches of repaired asphalt and stains break up the road colour.
        for _ in range(int(rng.integers(0, 6))):
            x = rng.uniform(self.road_left, self.road_right)
            z = rng.uniform(5.0, 60.0)
            quad = self._ground_quad(x, x + rng.uniform(0.5, 4.0), z, z + rng.uniform(0.5, 8.0))
            p.poly(quad, _scaled(self.road_color, rng.uniform(0.7, 1.3)))

    def _open_spans(self, z0: float, z1: float) -> list[tuple[float, float]]:
        """[z0, z1] without the crossing street."""
        if self.intersection is None:
            return [(z0, z1)]
        z_i, w, sw = self.intersection
        return [(z0, z_i - sw), (z_i + w + sw, z1)]

    def _add_markings(self) -> None:
        rng, p = self.rng, self.painter
        paint = _hsv(rng, (0.1, 0.16), (0.0, 0.12), (0.6, 0.98))
        if rng.random() < 0.2:
            paint = _hsv(rng, (0.1, 0.15), (0.5, 0.9), (0.6, 0.95))  # yellow
        dash, gap, half = rng.uniform(2.0, 4.0), rng.uniform(4.0, 9.0), rng.uniform(0.06, 0.1)
        z_max = min(self.z_end, 250.0)
        boundaries = [(a[0] + b[0]) / 2.0 for a, b in zip(self.lanes[:-1], self.lanes[1:])]
        directions = [a[1] != b[1] for a, b in zip(self.lanes[:-1], self.lanes[1:])]
        polys = []
        for x, divide in zip(boundaries, directions):
            if self.median is not None and divide:
                continue
            for za, zb in self._open_spans(1.0, z_max):
                if divide:  # solid line between the directions
                    polys.append(self._ground_quad(x - half, x + half, za, zb))
                    continue
                z = za + rng.uniform(0, gap)
                while z < zb:
                    polys.append(self._ground_quad(x - half, x + half, z, min(z + dash, zb)))
                    z += dash + gap
        edges = ((self.road_left + self.park_left, self.park_left), (self.road_right - self.park_right, self.park_right))
        for edge, park in edges:
            if park > 0:
                for za, zb in self._open_spans(1.0, z_max):
                    polys.append(self._ground_quad(edge - half, edge + half, za, zb))
        p.polys(polys, _scaled(paint, rng.uniform(0.8, 1.0)))
        if self.intersection is not None:
            z_i, _, _ = self.intersection
            stripes, x = [], self.road_left + 0.3
            width = rng.uniform(0.4, 0.6)
            while x + width < self.road_right - 0.3:
                stripes.append(self._ground_quad(x, x + width, z_i - 4.0, z_i - 0.8))
                x += 2 * width
            # The stop line spans the lanes of the camera's direction.
            own_left = min(x for x, d in self.lanes if d > 0) - self.lane_width / 2.0
            stripes.append(self._ground_quad(own_left, self.road_right - self.park_right, z_i - 5.0, z_i - 4.6))
            p.polys(stripes, _scaled(paint, rng.uniform(0.8, 1.05)))

    # ---------------------------------------------------------------- boxes (buildings, vehicles, walls)
    def _draw_box(
        self,
        box: tuple[float, float, float, float, float, float],
        color: np.ndarray,
        region: _Region,
        details: Callable[[_Face], None] | None = None,
    ) -> list[_Face]:
        x0, x1, h0, h1, z0, z1 = box
        faces = _box_faces(self.cam.height, x0, x1, h0, h1, z0, z1)
        for face in faces:
            name = face[0]
            if name in ("left", "right"):
                lit = (name == "left") == (self.sun_side < 0)
                factor = self.face_light["lit" if lit else "dark"]
            else:
                factor = self.face_light[name]
            _, o, e1, e2 = face
            corners = np.array([o, o + e1, o + e1 + e2, o + e2])
            self.painter.poly(self.cam.project(corners), _scaled(color, factor), region)
            if details is not None:
                details(face)
        return faces

    def _face_detail(self, face: _Face, rects: Sequence, color: np.ndarray) -> None:
        corners = _face_rects(face, rects)
        if len(corners):
            self.painter.polys(self.cam.project(corners.reshape(-1, 3)).reshape(-1, 4, 2), color)

    # ---------------------------------------------------------------- background
    def _add_backdrop(self) -> None:
        """A skyline at the end of the street, behind everything."""
        rng, z = self.rng, self.z_end
        x_span = z * self.width / self.cam.focal * 0.7 + 20.0
        x = -x_span
        blocks = []
        while x < x_span:
            w = rng.uniform(8.0, 40.0)
            if rng.random() < 0.3:
                blocks.append(("trees", x, x + w, rng.uniform(6.0, 18.0)))
            else:
                blocks.append(("building", x, x + w, rng.uniform(8.0, 55.0)))
            x += w
        haze = rng.uniform(0.1, 0.5)
        sky_tint = _hsv(rng, (0.55, 0.65), (0.0, 0.3), (0.6, 0.95))

        def draw() -> None:
            p = self.painter
            for kind, xa, xb, h in blocks:
                if kind == "building":
                    color = _mix(_building_color(rng), sky_tint, haze)
                    center, size = self._center_size((xa + xb) / 2, h / 2, z, max(h, xb - xa))
                    self._draw_box((xa, xb, 0.0, h, z, z + 20.0), color, p.new_region(BUILDING, center, size, 0.2))
                else:
                    center, size = self._center_size((xa + xb) / 2, h / 2, z, h)
                    region = p.new_region(VEGETATION, center, size, 0.2)
                    bb = _Billboard(self.cam, (xa + xb) / 2.0, z)
                    half = (xb - xa) / 2.0
                    for _ in range(int(rng.integers(3, 8))):
                        cx = rng.uniform(-half, half)
                        r = rng.uniform(0.3, 0.6) * h
                        p.ellipse(bb.point(cx, h - r), (bb.px(rng.uniform(0.6, 1.0) * half), bb.px(r)),
                                  _mix(_green(rng), sky_tint, haze), region)
                    p.poly(bb.rect(-half, half, 0.0, h * 0.5), _mix(_green(rng), sky_tint, haze), region)

        self._add_item(z + 1000.0, 0.0, draw)

    def _add_roadside(self, side: int) -> None:
        """Buildings, parks, walls, fences and hedges along one side, and the cross street's buildings."""
        rng = self.rng
        xb = self.building_line[side]
        z = 0.3
        segments = []
        while z < self.z_end:
            length = rng.uniform(6.0, 30.0)
            z_next = min(z + length, self.z_end)
            if self.intersection is not None:
                z_i, w, sw = self.intersection
                if z < z_i - sw < z_next:
                    z_next = z_i - sw
                elif z_i - sw <= z < z_i + w + sw:
                    z = z_i + w + sw
                    continue
            segments.append((z, z_next))
            z = z_next
        for z0, z1 in segments:
            r = rng.random()
            if r < 0.68:
                self._add_building(side, xb, z0, z1)
            else:
                self._add_park(side, xb, z0, z1)
        if self.intersection is not None:
            z_i, w, sw = self.intersection
            zf = z_i + w + sw
            x = xb + side * rng.uniform(8.0, 16.0)
            while abs(x) < 250.0:
                length = rng.uniform(10.0, 40.0)
                xa, xe = sorted((x, x + side * length))
                self._add_building_box(xa, xe, zf, zf + rng.uniform(10.0, 20.0), facade="front")
                x += side * length

    def _add_building(self, side: int, xb: float, z0: float, z1: float) -> None:
        depth = self.rng.uniform(10.0, 20.0)
        xa, xe = sorted((xb, xb + side * depth))
        self._add_building_box(xa, xe, z0, z1, facade="left" if side > 0 else "right")

    def _add_building_box(self, xa: float, xe: float, z0: float, z1: float, facade: str) -> None:
        rng = self.rng
        h = rng.uniform(6.0, 26.0)
        color = _building_color(rng)
        floor = rng.uniform(2.8, 3.6)
        win_w = rng.uniform(0.25, 0.6)
        win_h = rng.uniform(0.35, 0.65)
        glass_dark, glass_light = _glass(rng), _glass(rng)
        shop = rng.random() < 0.5
        shop_color = _paint_color(rng)
        key_x = xa if abs(xa) < abs(xe) else xe
        center, size = self._center_size(key_x, h / 2, (z0 + z1) / 2, max(h, z1 - z0))
        region = self.painter.new_region(BUILDING, center, size, 0.35)

        def details(face: _Face) -> None:
            name = face[0]
            if name not in (facade, "front") or self.cam.focal * floor / face[1][2] < 4.0:
                return  # windows would be under a few pixels
            length = float(np.linalg.norm(face[2]))
            n_cols = max(int(length / rng.uniform(2.2, 3.5)), 1)
            n_rows = max(int(h / floor), 1)
            first = 1 if shop else 0
            cols = (np.arange(n_cols) + 0.5) / n_cols
            rows = (np.arange(first, n_rows) + 0.5) * floor / h
            half_a = win_w / n_cols / 2.0
            half_b = win_h * floor / h / 2.0
            aa, bb = np.meshgrid(cols, rows)
            rects = np.stack([aa - half_a, aa + half_a, bb - half_b, bb + half_b], axis=-1).reshape(-1, 4)
            lit = rng.random(len(rects)) < 0.3
            self._face_detail(face, rects[~lit], glass_dark)
            self._face_detail(face, rects[lit], glass_light)
            if shop:
                self._face_detail(face, [(0.0, 1.0, 0.0, min(0.9 * floor / h, 1.0))], _scaled(shop_color, 0.8))
                n_win = max(int(length / 6.0), 1)
                a = (np.arange(n_win) + 0.5) / n_win
                shop_rects = np.stack([a - 0.35 / n_win, a + 0.35 / n_win, np.full(n_win, 0.05 * floor / h),
                                       np.full(n_win, 0.7 * floor / h)], axis=-1)
                self._face_detail(face, shop_rects, glass_dark)

        self._add_item(z1, max(abs(xa), abs(xe)) if facade == "front" else 0.0,
                       lambda: self._draw_box((xa, xe, 0.0, h, z0, z1), color, region, details))

    def _add_park(self, side: int, xb: float, z0: float, z1: float) -> None:
        """A wall, fence or hedge on the building line, trees and maybe a building behind it."""
        rng, p = self.rng, self.painter
        if rng.random() < 0.6:
            back = xb + side * rng.uniform(12.0, 25.0)
            depth = rng.uniform(10.0, 20.0)
            xa, xe = sorted((back, back + side * depth))
            before = len(self.items)
            self._add_building_box(xa, xe, z0, z1, facade="left" if side > 0 else "right")
            self.items[before].depth = z1 + 0.002
        for _ in range(int(rng.integers(1, 4 + int((z1 - z0) / 8)))):
            self._add_tree(xb + side * rng.uniform(1.0, 9.0), rng.uniform(z0, z1), depth=z1 + 0.001)
        kind = rng.choice(["wall", "fence", "hedge", "none"], p=[0.3, 0.35, 0.25, 0.1])
        if kind == "none":
            return
        height = rng.uniform(0.8, 2.2)
        thickness = 0.3 if kind != "hedge" else rng.uniform(0.6, 1.2)
        xa, xe = sorted((xb, xb + side * thickness))
        if kind == "wall":
            label_id, color = WALL, _building_color(rng)
        elif kind == "fence":
            label_id, color = FENCE, _hsv(rng, (0.0, 1.0), (0.0, 0.5), (0.1, 0.7))
        else:
            label_id, color = VEGETATION, _green(rng)
        center, size = self._center_size(xb, height / 2, (z0 + z1) / 2, z1 - z0)
        region = p.new_region(label_id, center, size, 0.3)
        bar_color = _scaled(color, rng.uniform(0.4, 1.6))

        def details(face: _Face) -> None:
            if face[0] in ("front", "top"):
                return
            length = float(np.linalg.norm(face[2]))
            if kind == "fence":  # posts and a rail, the rest shows the fence's darker mesh colour
                n = max(int(length / rng.uniform(0.15, 2.5)), 1)
                a = np.arange(n) / n
                rects = np.stack([a, a + 0.3 / n, np.zeros(n), np.ones(n)], axis=-1)
                self._face_detail(face, rects, bar_color)
                self._face_detail(face, [(0, 1, 0.85, 0.95)], bar_color)
            elif kind == "hedge":
                n = max(int(length / 1.5), 1)
                a = rng.random(n)
                b = rng.uniform(0.1, 0.8, n)
                rects = np.stack([a, a + 0.3 / n, b, b + 0.15], axis=-1)
                self._face_detail(face, rects, _scaled(color, rng.uniform(0.6, 1.4)))

        self._add_item(z1, 0.0, lambda: self._draw_box((xa, xe, 0.0, height, z0, z1), color, region, details))

    def _add_tree(self, x: float, z: float, depth: float | None = None) -> None:
        rng, p = self.rng, self.painter
        trunk_h = rng.uniform(1.5, 4.0)
        crown_r = rng.uniform(1.2, 3.5)
        greens = [_green(rng) for _ in range(3)]
        trunk_color = _hsv(rng, (0.02, 0.12), (0.2, 0.6), (0.1, 0.45))
        blobs = [(rng.uniform(-0.6, 0.6) * crown_r, trunk_h + crown_r * rng.uniform(0.6, 1.4),
                  crown_r * rng.uniform(0.45, 0.8), crown_r * rng.uniform(0.4, 0.75), int(rng.integers(3)))
                 for _ in range(int(rng.integers(4, 9)))]
        corners = ((-1, -0.4), (1, -0.4), (1.2, 0.6), (-1.2, 0.6))
        shadow = self.cam.project([(x + a * crown_r, 0.0, z + b * crown_r) for a, b in corners])
        self.ground_shadows.append((shadow, self.shadow_factor))

        def draw() -> None:
            center, size = self._center_size(x, trunk_h + crown_r, z, 2 * crown_r + trunk_h)
            region = p.new_region(VEGETATION, center, size, 0.4)
            bb = _Billboard(self.cam, x, z)
            p.poly(bb.limb((0.0, 0.0), (0.0, trunk_h + crown_r * 0.5), 0.35, 0.2), trunk_color, region)
            for bx, bh, rx, rh, g in blobs:
                p.ellipse(bb.point(bx, bh), (bb.px(rx), bb.px(rh)), greens[g], region)

        self._add_item(z if depth is None else depth, x, draw)

    # ---------------------------------------------------------------- poles, signs, lights, street trees
    def _add_street_furniture(self) -> None:
        rng = self.rng
        z_lim = min(self.max_object_z, self.z_end - 5.0)
        for side in (-1, 1):
            curb = self.curb_x(side)
            # Street lamps at regular spacing.
            spacing = rng.uniform(18.0, 35.0)
            z = rng.uniform(3.0, spacing)
            x = curb + side * rng.uniform(0.3, 0.7)
            while z < z_lim:
                if not self.in_crossing(z, z, 1.0):
                    self._add_lamp(x, z, side)
                z += spacing
            # Signs.
            for _ in range(int(rng.integers(0, 4))):
                z = rng.uniform(5.0, z_lim * 0.6)
                if not self.in_crossing(z, z, 1.0):
                    self._add_sign_pole(curb + side * rng.uniform(0.3, 1.0), z)
            # Street trees on wide sidewalks.
            if self.sidewalk[side] > 3.0 and rng.random() < 0.5:
                spacing = rng.uniform(8.0, 16.0)
                z = rng.uniform(4.0, spacing)
                while z < min(z_lim, 90.0):
                    if not self.in_crossing(z, z, 2.0):
                        self._add_tree(curb + side * rng.uniform(1.2, 1.8), z)
                    z += spacing
        if self.median is not None:
            m = sum(self.median) / 2.0
            z = rng.uniform(8.0, 30.0)
            while z < z_lim * 0.7:
                if not self.in_crossing(z, z, 1.0):
                    self._add_sign_pole(m, z) if rng.random() < 0.5 else self._add_lamp(m, z, 0)
                z += rng.uniform(10.0, 30.0)
        if self.intersection is not None:
            z_i, w, sw = self.intersection
            self.corner_poles = []
            for side in (-1, 1):
                x = self.curb_x(side) + side * rng.uniform(0.4, 0.8)
                zp = z_i - rng.uniform(0.8, sw - 0.2)
                self._add_traffic_light_pole(x, zp, side, mast=rng.random() < 0.4)
                self.corner_poles.append((x, zp))
                if rng.random() < 0.7:
                    self._add_traffic_light_pole(x, z_i + w + rng.uniform(0.5, sw), side, mast=False)
        else:
            self.corner_poles = []

    def _pole_color(self) -> np.ndarray:
        rng = self.rng
        if rng.random() < 0.2:
            return _hsv(rng, (0.25, 0.45), (0.3, 0.7), (0.15, 0.45))
        return _hsv(rng, (0.0, 1.0), (0.0, 0.1), (0.15, 0.75))

    def _add_lamp(self, x: float, z: float, side: int) -> None:
        rng, p = self.rng, self.painter
        h = rng.uniform(6.0, 9.5)
        arm = rng.uniform(0.8, 2.0) * (-side if side != 0 else float(rng.choice([-1.0, 1.0])))
        width = rng.uniform(0.12, 0.22)
        color = self._pole_color()
        lamp_color = _hsv(rng, (0.0, 1.0), (0.0, 0.2), (0.3, 0.95))

        def draw() -> None:
            center, size = self._center_size(x, h / 2, z, h)
            region = p.new_region(POLE, center, size, 0.3)
            bb = _Billboard(self.cam, x, z)
            p.poly(bb.limb((0.0, 0.0), (0.0, h), width, width * 0.7), color, region)
            p.poly(bb.limb((0.0, h - 0.2), (arm, h), width * 0.5), color, region)
            p.poly(bb.rect(arm - 0.3 * np.sign(arm), arm + 0.2 * np.sign(arm), h - 0.25, h - 0.05), lamp_color, region)

        self._add_item(z, x, draw)

    def _add_sign_pole(self, x: float, z: float) -> None:
        rng, p = self.rng, self.painter
        n_signs = int(rng.integers(1, 3))
        top = rng.uniform(2.4, 3.3)
        width = rng.uniform(0.06, 0.1)
        color = self._pole_color()
        signs = []
        h = top
        for _ in range(n_signs):
            shape = str(rng.choice(["circle", "triangle", "square", "plate", "octagon"]))
            size = rng.uniform(0.55, 0.85) if shape != "plate" else rng.uniform(0.25, 0.45)
            face = _hsv(rng, (0.0, 1.0), (0.0, 0.9), (0.5, 1.0))
            if rng.random() < 0.6:
                rim = _hsv(rng, (0.95, 1.05), (0.6, 1.0), (0.5, 0.95))  # red
            else:
                rim = _hsv(rng, (0.55, 0.7), (0.5, 1.0), (0.4, 0.9))  # blue
            signs.append((shape, h, size, face, rim))
            h -= size + 0.05

        def draw() -> None:
            center, size = self._center_size(x, top / 2, z, top)
            region = p.new_region(POLE, center, size, 0.3)
            bb = _Billboard(self.cam, x, z)
            p.poly(bb.limb((0.0, 0.0), (0.0, top), width), color, region)
            for shape, hs, s, face, rim in signs:
                r = s / 2.0
                c = (0.0, hs - r)
                sc, ss = self._center_size(x, hs - r, z, s)
                sign_region = p.new_region(TRAFFIC_SIGN, sc, ss, 0.3)
                if shape == "circle":
                    p.ellipse(bb.point(*c), (bb.px(r), bb.px(r)), rim, sign_region)
                    p.ellipse(bb.point(*c), (bb.px(r * 0.75), bb.px(r * 0.75)), face)
                elif shape == "triangle":
                    tri = [(c[0] - r, c[1] - 0.8 * r), (c[0] + r, c[1] - 0.8 * r), (c[0], c[1] + r)]
                    p.poly(bb.pts(tri), rim, sign_region)
                    inner = [(c[0] - 0.6 * r, c[1] - 0.55 * r), (c[0] + 0.6 * r, c[1] - 0.55 * r), (c[0], c[1] + 0.5 * r)]
                    p.poly(bb.pts(inner), face)
                elif shape == "octagon":
                    ang = np.arange(8) * math.pi / 4 + math.pi / 8
                    p.poly(bb.pts(np.stack([c[0] + r * np.cos(ang), c[1] + r * np.sin(ang)], 1)), rim, sign_region)
                    p.poly(bb.rect(-0.6 * r, 0.6 * r, c[1] - 0.15 * r, c[1] + 0.15 * r), face)
                elif shape == "square":
                    p.poly(bb.rect(-r, r, c[1] - r, c[1] + r), face, sign_region)
                    p.poly(bb.rect(-0.3 * r, 0.3 * r, c[1] - 0.5 * r, c[1] + 0.5 * r), rim)
                else:  # a street-name plate, wide and flat
                    p.poly(bb.rect(-2.5 * r, 2.5 * r, c[1] - r, c[1] + r), face, sign_region)
                    p.poly(bb.rect(-2.2 * r, 2.2 * r, c[1] - 0.2 * r, c[1] + 0.2 * r), rim)

        self._add_item(z, x, draw)

    def _add_traffic_light_pole(self, x: float, z: float, side: int, mast: bool) -> None:
        rng, p = self.rng, self.painter
        h = rng.uniform(3.2, 4.5) if not mast else rng.uniform(5.5, 6.5)
        width = rng.uniform(0.1, 0.18)
        color = self._pole_color()
        housing = _hsv(rng, (0.1, 0.16), (0.0, 0.9), (0.05, 0.8))
        lamps = [(0.9, 0.1, 0.05), (0.95, 0.7, 0.05), (0.1, 0.9, 0.4)]
        on = int(rng.integers(3))
        boxes = [(0.0, h - rng.uniform(0.1, 1.4))] if not mast else []
        arm = 0.0
        if mast:
            arm = -side * rng.uniform(3.0, 7.0)
            boxes = [(arm * t, h - 0.2) for t in (0.55, 1.0)][: int(rng.integers(1, 3))]

        def draw() -> None:
            center, size = self._center_size(x, h / 2, z, h)
            region = p.new_region(POLE, center, size, 0.3)
            bb = _Billboard(self.cam, x, z)
            p.poly(bb.limb((0.0, 0.0), (0.0, h), width, width * 0.8), color, region)
            if mast:
                p.poly(bb.limb((0.0, h - 0.1), (arm, h - 0.1), width * 0.6), color, region)
            for bx, top in boxes:
                lc, ls = self._center_size(x + bx, top - 0.45, z, 1.0)
                light_region = p.new_region(TRAFFIC_LIGHT, lc, ls, 0.2)
                p.poly(bb.rect(bx - 0.17, bx + 0.17, top - 0.95, top), housing, light_region)
                for i, lamp in enumerate(lamps):
                    level = 1.0 if i == on else 0.25
                    p.ellipse(bb.point(bx, top - 0.18 - 0.3 * i), (bb.px(0.1), bb.px(0.1)),
                              np.asarray(lamp) * 255.0 * level)

        self._add_item(z, x, draw)

    # ---------------------------------------------------------------- vehicles
    def _vehicle_parts(self, kind: int) -> tuple[float, float, list[dict], list[float], float]:
        """Length, width, part boxes in vehicle coordinates (l from the rear, w across, h up), axle
        positions and wheel radius."""
        rng = self.rng
        paint = _paint_color(rng)
        parts: list[dict] = []
        if kind == CAR:
            length, width = rng.uniform(3.7, 4.9), rng.uniform(1.65, 1.95)
            tall = rng.random() < 0.25  # vans and SUVs
            body_top = rng.uniform(0.8, 1.0) if not tall else rng.uniform(0.95, 1.15)
            roof = rng.uniform(1.35, 1.55) if not tall else rng.uniform(1.7, 2.0)
            cab0, cab1 = (rng.uniform(0.12, 0.25), rng.uniform(0.7, 0.8)) if not tall else (0.04, rng.uniform(0.75, 0.85))
            parts.append(dict(role="body", l=(0.0, length), w=(-width / 2, width / 2), h=(0.28, body_top), color=paint))
            parts.append(dict(role="cabin", l=(cab0 * length, cab1 * length), w=(-width / 2 + 0.1, width / 2 - 0.1),
                              h=(body_top, roof), color=paint))
            return length, width, parts, [0.17 * length, 0.82 * length], rng.uniform(0.3, 0.36)
        if kind == TRUCK:
            width = rng.uniform(2.2, 2.55)
            cab_len = rng.uniform(1.8, 2.4)
            cargo_len = rng.uniform(3.5, 9.0)
            length = cab_len + 0.2 + cargo_len
            cargo_color = paint if rng.random() < 0.4 else _paint_color(rng)
            parts.append(dict(role="cargo", l=(0.0, cargo_len), w=(-width / 2, width / 2), h=(0.9, rng.uniform(2.8, 3.9)),
                              color=cargo_color))
            parts.append(dict(role="cab", l=(cargo_len + 0.2, length), w=(-width / 2 + 0.05, width / 2 - 0.05),
                              h=(0.5, rng.uniform(2.6, 3.1)), color=paint))
            return length, width, parts, [0.12 * length, 0.45 * length if length > 8 else 0.3 * length, length - 1.0], 0.5
        if kind == BUS:
            length, width = rng.uniform(10.0, 13.5), 2.5
            parts.append(dict(role="bus", l=(0.0, length), w=(-width / 2, width / 2), h=(0.3, rng.uniform(2.9, 3.3)),
                              color=paint))
            return length, width, parts, [0.2 * length, 0.78 * length], 0.5
        # A tram: articulated cars on a dark skirt; Cityscapes labels trams "train".
        width = rng.uniform(2.3, 2.65)
        n_cars = int(rng.integers(2, 5))
        car_len = rng.uniform(6.5, 9.0)
        length = n_cars * car_len
        top = rng.uniform(3.2, 3.6)
        for i in range(n_cars):
            parts.append(dict(role="tram", l=(i * car_len + 0.08, (i + 1) * car_len - 0.08), w=(-width / 2, width / 2),
                              h=(0.45, top), color=paint))
        parts.append(dict(role="skirt", l=(0.2, length - 0.2), w=(-width / 2 + 0.15, width / 2 - 0.15), h=(0.0, 0.5),
                          color=_scaled(paint, 0.25)))
        parts.append(dict(role="roof", l=(0.3 * length, 0.45 * length), w=(-0.6, 0.6), h=(top, top + 0.35),
                          color=_scaled(paint, 0.6)))
        return length, width, parts, [], 0.4

    def _add_vehicle(
        self, kind: int, x: float, z: float, yaw90: bool, heading: int, avoid_protected: bool = True
    ) -> tuple[float, bool]:
        """A vehicle whose nearest face is at depth z, centred laterally on x. Heading +1 drives away (yaw 0)
        or to the right (yaw 90). Returns (length, placed): not placed where it would hide or hit a
        protected (required) thing."""
        rng, cam, p = self.rng, self.cam, self.painter
        length, width, parts, axles, radius = self._vehicle_parts(kind)

        def to_world(l0: float, l1: float, w0: float, w1: float) -> tuple[float, float, float, float]:
            if not yaw90:
                zs = (z + l0, z + l1) if heading > 0 else (z + length - l1, z + length - l0)
                xs = (x + w0, x + w1)
            else:
                rear = x - length / 2 if heading > 0 else x + length / 2
                xs = (rear + l0, rear + l1) if heading > 0 else (rear - l1, rear - l0)
                zs = (z + width / 2 + w0, z + width / 2 + w1)
            return xs[0], xs[1], zs[0], zs[1]

        boxes = []
        for part in parts:
            x0, x1, z0, z1 = to_world(*part["l"], *part["w"])
            boxes.append(((x0, x1, part["h"][0], part["h"][1], z0, z1), part))
        # Far parts first; side by side, the outer one first (its inner side face is hidden).
        boxes.sort(key=lambda b: (-b[0][5], -abs((b[0][0] + b[0][1]) / 2)))
        wheels = []
        if not yaw90:
            for la in axles:
                for w0, w1 in ((-width / 2 + 0.02, -width / 2 + 0.27), (width / 2 - 0.27, width / 2 - 0.02)):
                    x0, x1, z0, z1 = to_world(la - radius * 0.9, la + radius * 0.9, w0, w1)
                    wheels.append((x0, x1, 0.0, 2 * radius, z0, z1))
            wheels.sort(key=lambda b: -b[5])
        tyre = _hsv(rng, (0.0, 1.0), (0.0, 0.1), (0.03, 0.15))
        rim = _hsv(rng, (0.0, 1.0), (0.0, 0.1), (0.3, 0.85))
        glass = _glass(rng)
        light_red = _hsv(rng, (0.97, 1.02), (0.7, 1.0), (0.5, 1.0))
        light_white = _hsv(rng, (0.1, 0.16), (0.0, 0.3), (0.7, 1.0))
        stripe = _paint_color(rng) if rng.random() < 0.5 else None
        n_windows = max(int(length / rng.uniform(1.3, 2.0)), 2)

        def role_of(face_name: str) -> str:
            if face_name in ("top", "bottom"):
                return face_name
            if not yaw90:
                if face_name == "front":
                    return "tail" if heading > 0 else "nose"
                return "side"
            if face_name == "front":
                return "side"
            if face_name == "left":
                return "tail" if heading > 0 else "nose"
            return "nose" if heading > 0 else "tail"

        def details_for(part: dict) -> Callable[[_Face], None]:
            role_part = part["role"]

            def details(face: _Face) -> None:
                role = role_of(face[0])
                if role in ("top", "bottom"):
                    return
                if role_part == "cabin":
                    if role == "side":
                        self._face_detail(face, [(0.05, 0.47, 0.12, 0.88), (0.53, 0.95, 0.12, 0.88)], glass)
                    else:
                        self._face_detail(face, [(0.08, 0.92, 0.1, 0.9)], glass)
                elif role_part == "body":
                    if role == "tail":
                        self._face_detail(face, [(0.03, 0.18, 0.5, 0.78), (0.82, 0.97, 0.5, 0.78)], light_red)
                        self._face_detail(face, [(0.38, 0.62, 0.15, 0.35)], light_white)
                    elif role == "nose":
                        self._face_detail(face, [(0.04, 0.22, 0.55, 0.8), (0.78, 0.96, 0.55, 0.8)], light_white)
                        self._face_detail(face, [(0.3, 0.7, 0.35, 0.7)], _scaled(tyre, 1.5))
                    elif stripe is not None:
                        self._face_detail(face, [(0.0, 1.0, 0.0, 0.15)], _scaled(stripe, 0.5))
                elif role_part == "cab":
                    if role == "nose":
                        self._face_detail(face, [(0.06, 0.94, 0.55, 0.9)], glass)
                        self._face_detail(face, [(0.05, 0.2, 0.1, 0.2), (0.8, 0.95, 0.1, 0.2)], light_white)
                    elif role == "side":
                        self._face_detail(face, [(0.15, 0.85, 0.55, 0.88)], glass)
                    else:
                        self._face_detail(face, [(0.3, 0.7, 0.6, 0.85)], glass)
                elif role_part == "cargo":
                    if role == "tail":
                        self._face_detail(face, [(0.49, 0.51, 0.0, 1.0)], _scaled(part["color"], 0.4))
                        self._face_detail(face, [(0.02, 0.12, 0.02, 0.1), (0.88, 0.98, 0.02, 0.1)], light_red)
                    elif role == "side" and stripe is not None:
                        self._face_detail(face, [(0.0, 1.0, 0.35, 0.6)], stripe)
                elif role_part in ("bus", "tram"):
                    if role == "side":
                        a = (np.arange(n_windows) + 0.5) / n_windows
                        half = 0.4 / n_windows
                        rects = np.stack([a - half, a + half, np.full(n_windows, 0.45), np.full(n_windows, 0.86)], -1)
                        self._face_detail(face, rects, glass)
                        if stripe is not None:
                            self._face_detail(face, [(0.0, 1.0, 0.25, 0.38)], stripe)
                    elif role == "nose":
                        self._face_detail(face, [(0.05, 0.95, 0.42, 0.92)], glass)
                        self._face_detail(face, [(0.05, 0.2, 0.1, 0.18), (0.8, 0.95, 0.1, 0.18)], light_white)
                    else:
                        self._face_detail(face, [(0.12, 0.88, 0.55, 0.88)], glass)
                        self._face_detail(face, [(0.05, 0.15, 0.1, 0.25), (0.85, 0.95, 0.1, 0.25)], light_red)

            return details

        z_near = min(b[0][4] for b in boxes)
        z_far = max(b[0][5] for b in boxes)
        x_min = min(b[0][0] for b in boxes)
        x_max = max(b[0][1] for b in boxes)
        height = max(b[0][3] for b in boxes)
        if avoid_protected and self._conflicts(x_min, x_max, z_near, z_far):
            return length, False
        center, size = self._center_size((x_min + x_max) / 2, height / 2, z_near, max(height, x_max - x_min))
        region = p.new_region(kind, center, size, 0.35)
        self.things.append((kind, (x_min + x_max) / 2, z_near))
        self.footprints.append((x_min, x_max, z_near, z_far))
        # A soft shadow under the vehicle, a little larger than its footprint.
        pad = 0.25
        self.ground_shadows.append((self._ground_quad(x_min - pad, x_max + pad, z_near - pad, z_far + pad), 0.35))

        def draw() -> None:
            for box in wheels:
                self._draw_box(box, tyre, region)
            for box, part in boxes:
                self._draw_box(box, part["color"], region, details_for(part))
            if yaw90:
                for la in axles:
                    xa, xb, _, _ = to_world(la, la, 0.0, 0.0)
                    c = cam.point(xa, radius, z_near - 0.01)
                    r_px = cam.focal * radius / (z_near - 0.01)
                    p.ellipse(c, (r_px, r_px), tyre, region)
                    p.ellipse(c, (r_px * 0.55, r_px * 0.55), rim)

        self._add_item(z_near, (x_min + x_max) / 2 if yaw90 else x, draw)
        return length, True

    # ---------------------------------------------------------------- people and two-wheelers
    def _person_colors(self) -> dict:
        rng = self.rng
        return dict(skin=_skin(rng), hair=_hair(rng), top=_paint_color(rng), bottom=_paint_color(rng),
                    shoes=_hsv(rng, (0.0, 1.0), (0.0, 0.3), (0.03, 0.5)), bag=_paint_color(rng))

    def _add_person(self, x: float, z: float, view: str, facing: int = 1, height: float | None = None) -> None:
        """A pedestrian. view: "front", "back" (walking along the street) or "side" (across)."""
        rng, p = self.rng, self.painter
        H = height if height is not None else (rng.uniform(1.55, 1.95) if rng.random() > 0.1 else rng.uniform(1.0, 1.4))
        colors = self._person_colors()
        phase = rng.uniform(-1.0, 1.0)
        coat = rng.random() < 0.25
        bag = rng.random() < 0.3
        self.things.append((PERSON, x, z))
        self.ground_shadows.append((self._ground_quad(x - 0.3, x + 0.3, z - 0.25, z + 0.25), 0.45))

        def draw() -> None:
            center, size = self._center_size(x, H / 2, z, H)
            region = p.new_region(PERSON, center, size, 0.35)
            bb = _Billboard(self.cam, x, z, mirror=facing < 0)
            legs, shirt = colors["bottom"], colors["top"]
            if view == "side":
                stride = 0.16 * H * phase
                for foot, shade in ((-stride, 0.75), (stride, 1.0)):
                    knee = (foot / 2 + 0.03 * H, 0.27 * H)
                    p.poly(bb.limb((0.0, 0.5 * H), knee, 0.085 * H, 0.065 * H), _scaled(legs, shade), region)
                    p.poly(bb.limb(knee, (foot, 0.03 * H), 0.065 * H, 0.05 * H), _scaled(legs, shade), region)
                    shoe = bb.limb((foot - 0.02 * H, 0.015 * H), (foot + 0.06 * H, 0.015 * H), 0.035 * H)
                    p.poly(shoe, colors["shoes"], region)
                p.poly(bb.limb((0.0, 0.79 * H), (-stride * 0.6, 0.46 * H), 0.05 * H), _scaled(shirt, 0.75), region)
                bottom = 0.3 * H if coat else 0.47 * H
                torso = [(-0.07 * H, bottom), (0.07 * H, bottom), (0.065 * H, 0.82 * H), (-0.06 * H, 0.82 * H)]
                p.poly(bb.pts(torso), shirt, region)
                if bag:
                    p.poly(bb.rect(-0.12 * H, -0.06 * H, 0.55 * H, 0.78 * H), colors["bag"], region)
                p.poly(bb.limb((0.01 * H, 0.79 * H), (stride * 0.6, 0.46 * H), 0.05 * H), shirt, region)
                p.poly(bb.rect(-0.02 * H, 0.025 * H, 0.8 * H, 0.87 * H), colors["skin"], region)
                p.ellipse(bb.point(0.012 * H, 0.925 * H), (bb.px(0.055 * H), bb.px(0.068 * H)), colors["skin"], region)
                p.ellipse(bb.point(-0.012 * H, 0.95 * H), (bb.px(0.05 * H), bb.px(0.045 * H)), colors["hair"], region)
                return
            spread = 0.02 * H * phase
            for sgn in (-1.0, 1.0):
                hip = (sgn * 0.05 * H, 0.5 * H)
                foot = (sgn * (0.06 * H + spread), 0.03 * H)
                p.poly(bb.limb(hip, foot, 0.085 * H, 0.06 * H), legs, region)
                p.poly(bb.limb((foot[0], 0.015 * H), (foot[0] + 0.001, 0.015 * H), 0.06 * H), colors["shoes"], region)
            bottom = 0.3 * H if coat else 0.46 * H
            p.poly(bb.pts([(-0.1 * H, bottom), (0.1 * H, bottom), (0.125 * H, 0.8 * H), (0.09 * H, 0.83 * H),
                           (-0.09 * H, 0.83 * H), (-0.125 * H, 0.8 * H)]), shirt, region)
            for sgn in (-1.0, 1.0):
                hand = (sgn * (0.15 * H + 0.01 * H * phase), 0.46 * H)
                p.poly(bb.limb((sgn * 0.12 * H, 0.79 * H), hand, 0.05 * H, 0.04 * H), _scaled(shirt, 0.85), region)
                p.ellipse(bb.point(hand[0], 0.45 * H), (bb.px(0.025 * H), bb.px(0.03 * H)), colors["skin"], region)
            if bag and view == "back":
                p.poly(bb.rect(-0.08 * H, 0.08 * H, 0.56 * H, 0.78 * H), colors["bag"], region)
            p.poly(bb.rect(-0.025 * H, 0.025 * H, 0.8 * H, 0.87 * H), colors["skin"], region)
            head = bb.point(0.0, 0.925 * H)
            face = colors["skin"] if view == "front" else colors["hair"]
            p.ellipse(head, (bb.px(0.055 * H), bb.px(0.068 * H)), face, region)
            if view == "front":
                p.ellipse(bb.point(0.0, 0.96 * H), (bb.px(0.057 * H), bb.px(0.035 * H)), colors["hair"], region)

        self._add_item(z, x, draw)

    def _add_two_wheeler(self, kind: int, x: float, z: float, view: str, facing: int = 1, ridden: bool = True) -> None:
        """A bicycle or motorcycle, with a rider as a separate instance when ``ridden``. view: "side" (facing
        +1 to the right) or "rear" (seen from behind or in front, driving along the street)."""
        rng, p = self.rng, self.painter
        paint = _paint_color(rng)
        tyre = _hsv(rng, (0.0, 1.0), (0.0, 0.1), (0.03, 0.2))
        metal = _hsv(rng, (0.0, 1.0), (0.0, 0.1), (0.3, 0.9))
        colors = self._person_colors()
        helmet = _paint_color(rng)
        rack = rng.random() < 0.5
        bag_color = _paint_color(rng)
        light_red = _hsv(rng, (0.97, 1.02), (0.7, 1.0), (0.5, 1.0))
        light_white = _hsv(rng, (0.1, 0.16), (0.0, 0.3), (0.7, 1.0))
        self.things.append((kind, x, z))
        if ridden:
            self.things.append((RIDER, x, z))
        self.ground_shadows.append((self._ground_quad(x - 0.5, x + 0.5, z - 0.4, z + 0.4), 0.45))
        moto = kind == MOTORCYCLE

        def draw_bike(bb: _Billboard, region: _Region) -> None:
            if view == "side" and not moto:
                r = 0.34
                rear, front = (-0.52, r), (0.52, r)
                ring = max(int(round(bb.px(0.05))), 1)
                for hub in (rear, front):
                    p.ellipse(bb.point(*hub), (bb.px(r), bb.px(r)), tyre, region, thickness=ring)
                bracket, seat, head = (-0.03, 0.3), (-0.2, 0.9), (0.36, 0.88)
                tubes = ((bracket, seat), (bracket, head), ((-0.19, 0.82), head), (seat, rear), (bracket, rear), (head, front))
                for a, b in tubes:
                    p.poly(bb.limb(a, b, 0.04), paint, region)
                p.poly(bb.limb(head, (0.32, 1.02), 0.035), metal, region)
                p.poly(bb.limb((0.26, 1.02), (0.42, 1.03), 0.035), metal, region)
                p.poly(bb.limb((-0.32, 0.93), (-0.1, 0.94), 0.06), tyre, region)
            elif view == "side":
                r = 0.31
                for hub in ((-0.72, r), (0.72, r)):
                    p.ellipse(bb.point(*hub), (bb.px(r), bb.px(r)), tyre, region)
                    p.ellipse(bb.point(*hub), (bb.px(r * 0.55), bb.px(r * 0.55)), metal)
                p.poly(bb.pts([(-0.3, 0.28), (0.3, 0.28), (0.42, 0.62), (-0.38, 0.66)]), _scaled(metal, 0.5), region)
                p.poly(bb.limb((-0.3, 0.35), (-0.85, 0.45), 0.08), metal, region)
                p.poly(bb.pts([(-0.95, 0.72), (-0.35, 0.8), (0.0, 0.95), (0.42, 0.98), (0.6, 0.95), (0.5, 0.72),
                               (-0.2, 0.62), (-0.8, 0.6)]), paint, region)
                p.poly(bb.limb((0.55, 0.98), (0.72, r), 0.07), metal, region)
                p.poly(bb.limb((0.5, 1.05), (0.64, 1.12), 0.04), metal, region)
                p.ellipse(bb.point(0.66, 0.9), (bb.px(0.07), bb.px(0.08)), _hsv(rng, (0.1, 0.16), (0.0, 0.3), (0.7, 1.0)))
            elif not moto:  # seen from behind: handlebar and front wheel, the rest comes after the rider
                p.poly(bb.rect(-0.025, 0.025, 0.0, 0.5), tyre, region)
                p.poly(bb.limb((-0.29, 1.02), (0.29, 1.02), 0.035), metal, region)
                p.poly(bb.limb((0.0, 0.68), (0.0, 1.0), 0.04), paint, region)
            else:
                p.poly(bb.rect(-0.06, 0.06, 0.0, 0.5), tyre, region)
                p.poly(bb.pts([(-0.3, 0.4), (0.3, 0.4), (0.36, 0.8), (-0.36, 0.8)]), paint, region)
                p.poly(bb.limb((-0.42, 1.12), (0.42, 1.12), 0.04), metal, region)
                for sgn in (-1, 1):
                    p.ellipse(bb.point(sgn * 0.42, 1.2), (bb.px(0.05), bb.px(0.04)), metal, region)

        def draw_bike_rear(bb: _Billboard, region: _Region) -> None:
            """The parts of a bike seen from behind that are nearer than its rider."""
            if not moto:
                p.poly(bb.rect(-0.03, 0.03, 0.0, 0.68), tyre, region)
                p.poly(bb.rect(-0.05, 0.05, 0.55, 0.72), paint, region)  # mudguard
                if rack:
                    p.poly(bb.rect(-0.09, 0.09, 0.72, 0.8), metal, region)
                    p.poly(bb.rect(-0.2, -0.06, 0.38, 0.75), bag_color, region)
                    p.poly(bb.rect(0.06, 0.2, 0.38, 0.75), bag_color, region)
                p.poly(bb.rect(-0.025, 0.025, 0.62, 0.66), light_red)
            else:
                p.poly(bb.rect(-0.09, 0.09, 0.0, 0.62), tyre, region)
                p.poly(bb.pts([(-0.15, 0.55), (0.15, 0.55), (0.2, 0.95), (-0.2, 0.95)]), paint, region)
                p.poly(bb.rect(-0.1, 0.1, 0.6, 0.68), light_white)  # plate
                p.poly(bb.rect(-0.08, 0.08, 0.84, 0.9), light_red)
                if rack:
                    p.poly(bb.rect(-0.22, 0.22, 0.95, 1.3), bag_color, region)  # top case

        def draw_rider(bb: _Billboard, region: _Region) -> None:
            legs, shirt, skin = colors["bottom"], colors["top"], colors["skin"]
            head_color = helmet if (moto or rng.random() < 0.4) else colors["hair"]
            head_r = 0.14 if moto else 0.11
            if view == "side":
                if moto:
                    hip, shoulder, head = (-0.25, 0.9), (0.05, 1.42), (0.13, 1.6)
                else:
                    hip, shoulder, head = (-0.2, 0.97), (0.1, 1.48), (0.19, 1.65)
                hand = (0.55, 1.08) if moto else (0.36, 1.04)
                knee, foot = ((0.22, 0.84), (0.1, 0.42)) if moto else ((0.12, 0.72), (0.02, 0.24))
                p.poly(bb.limb(hip, knee, 0.15, 0.11), _scaled(legs, 0.75), region)
                p.poly(bb.limb(knee, foot, 0.11, 0.08), _scaled(legs, 0.75), region)
                p.poly(bb.limb(hip, shoulder, 0.34, 0.3), shirt, region)
                p.poly(bb.limb(shoulder, hand, 0.09, 0.07), _scaled(shirt, 0.85), region)
                p.poly(bb.limb(hip, (knee[0] - 0.1, knee[1] - 0.08), 0.15, 0.11), legs, region)
                p.poly(bb.limb((knee[0] - 0.1, knee[1] - 0.08), (foot[0] - 0.1, foot[1] + 0.15), 0.11, 0.08), legs, region)
                p.ellipse(bb.point(*head), (bb.px(head_r), bb.px(head_r * 1.1)), head_color, region)
                p.ellipse(bb.point(head[0] + 0.06, head[1] - 0.02), (bb.px(0.04), bb.px(0.06)), skin, region)
                return
            spread = 0.22 if moto else 0.15
            for sgn, lift in ((-1.0, 0.0), (1.0, 0.25 if not moto else 0.0)):
                knee = (sgn * spread * 1.1, 0.7 + lift * 0.4)
                foot = (sgn * spread, (0.45 if moto else 0.3) + lift)
                p.poly(bb.limb((sgn * 0.1, 0.95), knee, 0.14, 0.11), legs, region)
                p.poly(bb.limb(knee, foot, 0.11, 0.08), legs, region)
            p.poly(bb.pts([(-0.15, 0.92), (0.15, 0.92), (0.2, 1.45), (-0.2, 1.45)]), shirt, region)
            for sgn in (-1.0, 1.0):
                hand = (sgn * (0.38 if moto else 0.27), 1.06)
                p.poly(bb.limb((sgn * 0.18, 1.42), hand, 0.08, 0.07), _scaled(shirt, 0.85), region)
            p.ellipse(bb.point(0.0, 1.6), (bb.px(head_r), bb.px(head_r * 1.1)), head_color, region)

        def draw() -> None:
            bb = _Billboard(self.cam, x, z, mirror=facing < 0)
            center, size = self._center_size(x, 0.6, z, 1.8)
            bike_region = p.new_region(kind, center, size, 0.3)
            draw_bike(bb, bike_region)
            if ridden:
                center, size = self._center_size(x, 1.2, z, 1.0)
                draw_rider(bb, p.new_region(RIDER, center, size, 0.3))
            if view == "rear":
                draw_bike_rear(bb, bike_region)

        self._add_item(z, x, draw)

    # ---------------------------------------------------------------- traffic and people layout
    def _random_vehicle_kind(self) -> int:
        r = self.rng.random()
        if r < 0.74:
            return CAR
        if r < 0.86:
            return TRUCK
        if r < 0.96:
            return BUS
        return TRAIN

    def _add_parked(self) -> None:
        rng = self.rng
        sides = [s for s, park in ((1, self.park_right), (-1, self.park_left)) if park > 0]
        z_lim = min(self.max_object_z * 0.7, 100.0)
        for side in sides:
            x = self.curb_x(side) - side * rng.uniform(1.0, 1.3)
            z = rng.uniform(4.5, 14.0) if side > 0 else rng.uniform(5.0, 30.0)
            heading = int(rng.choice([-1, 1]))
            while z < z_lim:
                n_cars = int(rng.integers(2, 7))
                for _ in range(n_cars):
                    if self.in_crossing(z, z + 6.0, 4.0):
                        break
                    r = rng.random()
                    if r < 0.06:
                        facing = int(rng.choice([-1, 1]))
                        self._add_two_wheeler(MOTORCYCLE, x + side * 0.3, z + 0.5, "side", facing, ridden=False)
                        z += 1.2 + rng.uniform(0.3, 1.0)
                        continue
                    kind = TRUCK if r < 0.12 else CAR
                    length, _ = self._add_vehicle(kind, x + rng.uniform(-0.15, 0.15), z, False, heading)
                    z += length + rng.uniform(0.3, 1.5)
                z += rng.uniform(5.0, 40.0)
                if self.intersection is not None and self.in_crossing(z, z + 6.0, 4.0):
                    z_i, w, sw = self.intersection
                    z = z_i + w + sw + 4.0

    def _add_traffic(self) -> None:
        rng = self.rng
        z_lim = min(self.max_object_z, 140.0, self.z_end - 10.0)
        for lane_x, direction in self.lanes:
            own = abs(lane_x) < self.lane_width / 2
            z = rng.uniform(8.0, 30.0) if own else rng.uniform(5.0, 25.0)
            while z < z_lim:
                if rng.random() < 0.55 and not self.in_crossing(z, z + 12.0, 3.0):
                    r = rng.random()
                    if r < 0.06:
                        self._add_two_wheeler(MOTORCYCLE, lane_x + rng.uniform(-0.8, 0.8), z, "rear")
                        z += 2.0
                    else:
                        kind = self._random_vehicle_kind()
                        length, _ = self._add_vehicle(kind, lane_x + rng.uniform(-0.3, 0.3), z, False, direction)
                        z += length
                z += rng.uniform(4.0, 30.0)

    def _add_cross_traffic(self) -> None:
        """Vehicles on the crossing street, side on; the first one passes behind a corner pole so that the
        pole cuts it in two."""
        rng = self.rng
        z_i, w, _ = self.intersection
        n = int(rng.integers(1, 4))
        for i in range(n):
            heading = int(rng.choice([-1, 1]))
            lane_z = z_i + w * (0.28 if heading > 0 else 0.72)
            r = rng.random()
            kind = CAR if r < 0.5 else TRUCK if r < 0.65 else BUS if r < 0.82 else TRAIN
            width = 2.5 if kind != CAR else 1.8
            z = lane_z - width / 2
            if i == 0 and self.corner_poles:
                px, pz = self.corner_poles[int(rng.integers(len(self.corner_poles)))]
                x = px * (z / pz)  # on the line of sight through the pole
                length_guess = {CAR: 4.3, TRUCK: 7.0, BUS: 11.0, TRAIN: 25.0}[kind]
                x += rng.uniform(-0.3, 0.3) * length_guess
            else:
                x = rng.uniform(-30.0, 30.0)
            self._add_vehicle(kind, x, z, True, heading)

    def _sidewalk_x(self, side: int) -> float:
        curb = self.curb_x(side)
        return curb + side * self.rng.uniform(0.5, max(self.sidewalk[side] - 0.3, 0.6))

    def _add_person_group(self, x: float, z: float, n: int, view: str | None = None) -> None:
        rng = self.rng
        facing = int(rng.choice([-1, 1]))
        group_view = view or str(rng.choice(["front", "back", "side"], p=[0.35, 0.35, 0.3]))
        for i in range(n):
            # Shoulder to shoulder: close enough that neighbours touch or overlap in the image.
            dx = (i - (n - 1) / 2) * rng.uniform(0.3, 0.55)
            self._add_person(x + dx, z + rng.uniform(-0.4, 0.4), group_view, facing)

    def _add_pedestrians(self) -> None:
        rng = self.rng
        z_lim = min(self.max_object_z * 0.8, 90.0)
        for side in (-1, 1):
            for _ in range(int(rng.integers(1, 5))):
                z = rng.uniform(5.0, z_lim)
                self._add_person_group(self._sidewalk_x(side), z, int(rng.integers(1, 5)))
        if self.intersection is not None and rng.random() < 0.85:
            z_i, _, _ = self.intersection
            for _ in range(int(rng.integers(1, 3))):
                x = rng.uniform(self.road_left + 1.0, self.road_right - 1.0)
                self._add_person_group(x, z_i - rng.uniform(1.2, 3.6), int(rng.integers(1, 5)), "side")
        elif rng.random() < 0.4:
            x = rng.uniform(self.road_left + 1.0, self.road_right - 1.0)
            self._add_person_group(x, rng.uniform(8.0, 30.0), int(rng.integers(1, 3)), "side")

    def _add_cyclists(self) -> None:
        rng = self.rng
        if rng.random() < 0.45:
            x = self.road_right - self.park_right - rng.uniform(0.5, 1.0)
            self._add_two_wheeler(BICYCLE, x, rng.uniform(8.0, 50.0), "rear")
        if self.intersection is not None and rng.random() < 0.3:
            z_i, _, _ = self.intersection
            x = rng.uniform(self.road_left + 1.0, self.road_right - 1.0)
            self._add_two_wheeler(BICYCLE, x, z_i - rng.uniform(1.0, 3.5), "side", int(rng.choice([-1, 1])))
        if rng.random() < 0.35:  # a bicycle stand: parked bicycles side by side
            side = int(rng.choice([-1, 1]))
            x = self.curb_x(side) + side * rng.uniform(0.8, 1.5)
            z = rng.uniform(6.0, 35.0)
            facing = int(rng.choice([-1, 1]))
            for i in range(int(rng.integers(2, 6))):
                xi, zi = x + rng.uniform(-0.15, 0.15), z + i * rng.uniform(0.4, 0.7)
                self._add_two_wheeler(BICYCLE, xi, zi, "side", facing, ridden=False)
        if rng.random() < 0.2:
            side = int(rng.choice([-1, 1]))
            self._add_two_wheeler(MOTORCYCLE, self.curb_x(side) + side * 0.9, rng.uniform(6.0, 40.0), "side",
                                  int(rng.choice([-1, 1])), ridden=False)

    def _in_clear_view(self, x: float, z: float, max_z: float = 50.0) -> bool:
        """Whether ground point (x, z) is inside the image, near enough, and no vehicle footprint lies on the
        line of sight."""
        if z > max_z or abs(self.cam.cx + self.cam.focal * x / z - self.width / 2) > 0.42 * self.width:
            return False
        for x0, x1, z0, z1 in self.footprints:
            if z0 >= z - 0.5:
                continue
            za, zb = z0, min(z1, z - 0.5)
            lo, hi = sorted((x * za / z, x * zb / z))
            if hi > x0 - 0.2 and lo < x1 + 0.2:
                return False
        return True

    def _is_free(self, x0: float, x1: float, z0: float, z1: float) -> bool:
        return all(x1 < a - 0.5 or x0 > b + 0.5 or z1 < c - 1.0 or z0 > d + 1.0 for a, b, c, d in self.footprints)

    def _conflicts(self, x0: float, x1: float, z0: float, z1: float) -> bool:
        """Whether a vehicle footprint would hit a protected vehicle or hide a protected thing."""
        for a, b, c, d in self.protected_footprints:
            if not (x1 < a - 0.5 or x0 > b + 0.5 or z1 < c - 1.0 or z0 > d + 1.0):
                return True
        for px, pz in self.protected_points:
            if z0 < pz - 0.5:
                lo, hi = sorted((px * z0 / pz, px * min(z1, pz - 0.5) / pz))
                if hi > x0 - 0.3 and lo < x1 + 0.3:
                    return True
        return False

    def _force(self, label_id: int) -> None:
        """Adds an object of a class the scene must contain, where the camera sees it (if such a place is found)."""
        rng = self.rng
        for _ in range(30):
            lane_x, direction = self.lanes[int(rng.integers(len(self.lanes)))]
            lane_x += rng.uniform(-0.3, 0.3)
            if label_id == PERSON:
                if rng.random() < 0.5:
                    x, z = rng.uniform(self.road_left + 1.0, self.road_right - 1.0), rng.uniform(7.0, 30.0)
                else:
                    side = int(rng.choice([-1, 1]))
                    x, z = self.curb_x(side) + side * rng.uniform(0.5, 1.5), rng.uniform(6.0, 30.0)
                if self._in_clear_view(x, z) and self._is_free(x - 1.0, x + 1.0, z - 0.5, z + 0.5):
                    self._add_person_group(x, z, int(rng.integers(1, 4)))
                    return
            elif label_id in (RIDER, BICYCLE, MOTORCYCLE):
                kind = MOTORCYCLE if label_id == MOTORCYCLE else BICYCLE
                if kind == BICYCLE and rng.random() < 0.5:
                    x = self.road_right - self.park_right - rng.uniform(0.5, 1.0)
                else:
                    x = lane_x
                z = rng.uniform(7.0, 30.0)
                if self._in_clear_view(x, z) and self._is_free(x - 0.5, x + 0.5, z - 1.0, z + 1.0):
                    self._add_two_wheeler(kind, x, z, "rear", ridden=True)
                    return
            else:
                length = {CAR: 4.9, TRUCK: 9.0, BUS: 12.0, TRAIN: 20.0}[label_id]
                if label_id == TRAIN and self.intersection is not None and rng.random() < 0.7:
                    z_i, w, _ = self.intersection
                    x, z = rng.uniform(-8.0, 8.0), z_i + w * 0.5 - 1.3
                    if self._in_clear_view(x, z, 80.0):
                        self._add_vehicle(TRAIN, x, z, True, int(rng.choice([-1, 1])), avoid_protected=False)
                        return
                    continue
                z = rng.uniform(8.0, 45.0)
                if (self._in_clear_view(lane_x, z, 80.0) and self._is_free(lane_x - 1.3, lane_x + 1.3, z, z + length)
                        and not self.in_crossing(z, z + length, 2.0)):
                    self._add_vehicle(label_id, lane_x, z, False, direction, avoid_protected=False)
                    return

    def _add_ego_vehicle(self) -> None:
        """The bonnet of the recording car at the bottom, labelled "ego vehicle" (void), as in Cityscapes."""
        rng, p = self.rng, self.painter
        W, H = self.width, self.height
        top = H * (1.0 - rng.uniform(0.04, 0.1))
        u = np.linspace(-1.0, 1.0, 33)
        v = top + (H - top) * 0.8 * u**2
        pts = np.concatenate([np.stack([W / 2 + u * W * 0.7, v], 1), [(W * 1.2, H + 1.0), (-W * 0.2, H + 1.0)]])
        self.ego = (pts, _hsv(rng, (0.0, 1.0), (0.0, 0.3), (0.02, 0.3)))

    # ---------------------------------------------------------------- render
    def render(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng, p = self.rng, self.painter
        W, H = self.width, self.height
        # Sky: brighter towards the horizon; clear or overcast, with clouds.
        if rng.random() < 0.6:
            sky = _hsv(rng, (0.53, 0.64), (0.2, 0.65), (0.65, 1.0))
        else:
            sky = _hsv(rng, (0.0, 1.0), (0.0, 0.1), (0.55, 0.97))
        region = p.new_region(SKY, center=(W / 2, self.cam.cy * 0.5), gradient=(0.0, rng.uniform(0.0, 0.6) / H))
        p.poly(np.array([(-1.0, -1.0), (W + 1.0, -1.0), (W + 1.0, H + 1.0), (-1.0, H + 1.0)]), sky, region)
        for _ in range(int(rng.integers(0, 7))):
            c = (rng.uniform(0, W), rng.uniform(0, self.cam.cy * 0.8))
            axes = (rng.uniform(0.05, 0.25) * W, rng.uniform(0.02, 0.06) * H)
            p.ellipse(c, axes, _mix(sky, (255, 255, 255), rng.uniform(0.2, 0.8)))
        self._add_ground()
        for quad, factor in self.ground_shadows:
            p.shadow(quad, factor)
        for item in sorted(self.items, key=lambda it: (-it.depth, -it.lateral)):
            item.draw()
        ego = getattr(self, "ego", None)
        if ego is not None:
            pts, color = ego
            p.poly(pts, color, p.new_region(EGO_VEHICLE, (W / 2, H), W / 2, 0.3))
        return self._finish()

    def _finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shading, texture and camera response on top of the flat colours."""
        rng, p = self.rng, self.painter
        H, W = self.height, self.width
        gain = p.gain()
        # Low-frequency texture (dirt, stains, uneven light) and vignetting, all as one gain field.
        texture = np.zeros((H, W), np.float32)
        for cells, amount in ((8, 0.12), (32, 0.06)):
            noise = rng.standard_normal((max(H // cells, 2), max(W // cells, 2)), dtype=np.float32)
            noise *= amount * rng.uniform(0.3, 1.0)
            texture += cv2.resize(noise, (W, H), interpolation=cv2.INTER_CUBIC)
        vignette = rng.uniform(0.0, 0.18)
        yy = np.linspace(-1.0, 1.0, H, dtype=np.float32)[:, None] ** 2
        xx = np.linspace(-1.0, 1.0, W, dtype=np.float32)[None, :] ** 2
        texture -= vignette * (xx + yy)
        texture += 1.0
        gain *= texture
        # Camera response: contrast around mid grey, brightness, a colour cast and gamma. The per-pixel part
        # (gain, contrast) is applied in float, the per-channel part through one lookup table.
        contrast = rng.uniform(0.7, 1.25)
        gain *= contrast
        image = p.image.astype(np.float32)
        image *= gain[..., None]
        np.clip(image, 0.0, 255.0, out=image)
        image = cv2.GaussianBlur(image.astype(np.uint8), (0, 0), rng.uniform(0.4, 1.1))
        offset = 128.0 * (1.0 - contrast) + rng.uniform(-35.0, 30.0)
        cast = rng.uniform(0.88, 1.12, size=3)
        gamma = rng.uniform(0.8, 1.25)
        levels = np.clip((np.arange(256.0)[:, None] + offset) * cast[None, :], 0.0, 255.0)
        lut = (255.0 * (levels / 255.0) ** gamma + 0.5).astype(np.uint8).reshape(256, 1, 3)
        image = cv2.LUT(image, lut)
        # Sensor noise: random bytes through the inverse normal CDF (much cheaper than drawing normals).
        sigma = rng.uniform(1.5, 7.0)
        noise_lut = np.round(_NORMAL_QUANTILES * sigma).astype(np.int16)
        noise = noise_lut[np.frombuffer(rng.bytes(image.size), dtype=np.uint8).reshape(image.shape)]
        noise += image
        image = np.clip(noise, 0, 255).astype(np.uint8)
        return (image, *p.maps())


def _remove_small_instances(label_ids: np.ndarray, instance_ids: np.ndarray, min_area: int) -> None:
    """Sets thing instances with fewer than ``min_area`` visible pixels to void (label 0, instance 0), in place."""
    if instance_ids.max() < 1000:
        return
    counts = np.bincount(instance_ids.ravel())
    small = (counts > 0) & (counts < min_area)
    small[:1000] = False
    if small.any():
        mask = small[instance_ids]
        label_ids[mask] = 0
        instance_ids[mask] = 0


def _class_ids(names: Sequence[str]) -> list[int]:
    ids = []
    for name in names:
        if name not in name2label or name2label[name].id not in _THING_IDS:
            raise ValueError(f"{name!r} is not a Cityscapes thing class; expected one of {THING_NAMES}")
        ids.append(name2label[name].id)
    return ids


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
        instance_ids: (H, W) int32 Cityscapes instance ids (label_id * 1000 + k for thing instances,
            label_id elsewhere).
    """
    if height < 32 or width < 32:
        raise ValueError(f"image size {height}x{width} is too small (at least 32x32)")
    required = _class_ids(must_include)
    min_pixels = max(int(_MIN_CLASS_FRACTION * height * width), 20)
    for attempt in range(_MAX_ATTEMPTS):
        rng = np.random.default_rng([int(seed), attempt])
        scene = _StreetScene(rng, height, width)
        scene.build(required)
        image, label_ids, instance_ids = scene.render()
        _remove_small_instances(label_ids, instance_ids, MIN_INSTANCE_AREA)
        counts = np.bincount(label_ids.ravel(), minlength=256)
        if all(counts[c] >= min_pixels for c in required):
            break
    return image, label_ids, instance_ids


# ----------------------------------------------------------------------------------------------
# Dataset on disk
# ----------------------------------------------------------------------------------------------


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


def _color_lut_bgra() -> np.ndarray:
    """(256, 4) uint8: label id -> official Cityscapes colour, as OpenCV's BGRA."""
    lut = np.zeros((256, 4), np.uint8)
    for label_id, label in id2label.items():
        if 0 <= label_id < 256:
            lut[label_id] = (label.color[2], label.color[1], label.color[0], 255)
    return lut


_COLOR_LUT_BGRA = _color_lut_bgra()


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
    from tqdm import tqdm

    with tqdm(total=len(tasks), desc="synth", unit="img", disable=not progress) as bar:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                _generate_sample(task)
                bar.update(1)
        else:
            import multiprocessing

            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for _ in pool.imap_unordered(_generate_sample, tasks):
                    bar.update(1)
    return root


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic street-scene dataset in the Cityscapes layout",
        description="Writes synthetic street scenes with Cityscapes label and instance annotations.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (Cityscapes root)")
    parser.add_argument("--train", required=True, type=int, help="number of training images")
    parser.add_argument("--val", required=True, type=int, help="number of validation images")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: min(2, CPUs))")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    root = generate_dataset(
        args.out, num_train=args.train, num_val=args.val, height=args.height, width=args.width,
        seed=args.seed, workers=args.workers,
    )
    print(f"wrote {args.train} train and {args.val} val images to {root}")
    return 0
