"""The state of one street scene and its flat parts: camera, layout of the street, ground, sky and the
camera response; ``render`` paints the items the other modules add, far to near.

A scene is still, or one instant of a drive (``Motion``): then the camera has moved along the street, the
other traffic has moved with its own velocity, and the street reaches as far as the drive goes. Every frame
of a drive builds the same world again from the same seed, so each object's random draws must not depend
on the instant: things get their velocities from a stream of their own, each item draws its colours from
its own stream when rendered, and a thing that would hit the ego car is left out of the whole drive.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from casnet_core.synth.camera import BehindCamera, Camera, Face, box_faces, face_rects
from casnet_core.synth.classes import EGO_VEHICLE, ROAD, SIDEWALK, SKY, TERRAIN
from casnet_core.synth.colors import ground_color, hsv, mix, scaled
from casnet_core.synth.painter import InstanceNumbers, Painter, Region

# Standard normal quantiles of 256 equiprobable bins: maps uniform random bytes to Gaussian noise.
_NORMAL_QUANTILES = np.array([statistics.NormalDist().inv_cdf((i + 0.5) / 256.0) for i in range(256)])


# A drive's camera clips what is nearer than this (metres); the ego car, in which it sits, occupies
# |x| <= _EGO_HALF_WIDTH and z from _EGO_BEHIND behind the camera to _EGO_AHEAD in front of it.
NEAR_PLANE = 0.3
_EGO_HALF_WIDTH = 1.1
_EGO_BEHIND, _EGO_AHEAD = 3.0, 2.5
# A drive draws from the streams [seed, DRIVE_STREAM, ...] (still scenes use [seed, attempt], attempt < 20):
# the world from [seed, DRIVE_STREAM], velocities, each item's colours and each frame's noise from these.
DRIVE_STREAM = 100
_VELOCITY_STREAM, _ITEM_STREAM, _NOISE_STREAM = 1, 2, 3


@dataclass(frozen=True)
class Motion:
    """One instant of a drive.

    Attributes:
        time: seconds since the first frame; the camera is ``ego_speed * time`` metres down the street.
        duration: seconds from the first to the last frame (how far the street must reach).
        ego_speed: m/s of the camera along +z.
        seed: the drive's seed, for the per-object streams of velocities and colours.
        frame: frame index (the sensor noise changes from frame to frame).
    """

    time: float
    duration: float
    ego_speed: float
    seed: int
    frame: int


@dataclass
class Item:
    depth: float  # painter key: larger is drawn first
    lateral: float  # tie-break: further from the optical axis is drawn first
    draw: Callable[[], None]
    far: float = math.inf  # the item lies at z <= far: a drive skips it once the camera has passed it


class _SwitchableRng:
    """Forwards to one numpy Generator, which a drive swaps for each item's own stream while rendering."""

    def __init__(self, generator: np.random.Generator) -> None:
        self.generator = generator

    def __getattr__(self, name: str) -> Any:
        return getattr(self.generator, name)


class StreetScene:
    """What the modules ``roadside``, ``furniture``, ``vehicles``, ``people`` and ``traffic`` add to: camera,
    painter, street layout, the items to paint and the ground shadows, and where things stand.

    Args:
        rng: the scene's random stream; everything random is drawn from it, in a fixed order.
        height, width: image size in pixels.
        motion: the instant of a drive, or None for a still scene.
        instance_numbers: a drive's numbering of things, kept across its frames.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        height: int,
        width: int,
        *,
        motion: Motion | None = None,
        instance_numbers: InstanceNumbers | None = None,
    ) -> None:
        self.motion = motion
        if motion is not None:
            rng = _SwitchableRng(rng)  # type: ignore[assignment]
            self.velocities = np.random.default_rng([motion.seed, DRIVE_STREAM, _VELOCITY_STREAM])
        self.rng = rng
        self.height, self.width = height, width
        self.cam = Camera(
            focal=width * rng.uniform(0.95, 1.25),
            cx=width * rng.uniform(0.47, 0.53),
            cy=height * rng.uniform(0.36, 0.47),
            height=rng.uniform(1.15, 1.45),
        )
        if motion is not None:
            self.cam = dataclasses.replace(self.cam, z=motion.ego_speed * motion.time, near=NEAR_PLANE)
        # How much further the street must reach than a still scene's: as far as the camera drives.
        self.reach = self.travel(self.ego_speed)
        self.painter = Painter(height, width, rng, instance_numbers)
        self.items: list[Item] = []
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
    def layout_street(self) -> None:
        """Lanes (both directions, the camera in one of its own), parking lanes, a median, sidewalks, verges,
        the building lines, the street's length, and maybe a crossing street."""
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
        self.z_end = rng.uniform(150.0, 400.0) + self.reach
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

    # ---------------------------------------------------------------- motion
    @property
    def ego_speed(self) -> float:
        return 0.0 if self.motion is None else self.motion.ego_speed

    def travel(self, speed: float) -> float:
        """Metres covered at ``speed`` m/s during the drive (0 in a still scene)."""
        return 0.0 if self.motion is None else speed * self.motion.duration

    def more(self, count: int) -> int:
        """``count`` objects per street of a still scene -> as many per metre on the longer street of a drive."""
        return count if self.reach == 0.0 else count + int(round(count * self.reach / 100.0))

    def draw_speed(self, low: float, high: float) -> float:
        """A thing's speed in m/s, uniform in [low, high), from the drive's velocity stream (0 when still)."""
        return 0.0 if self.motion is None else float(self.velocities.uniform(low, high))

    def moved(self, x0: float, x1: float, z0: float, z1: float, vx: float = 0.0, vz: float = 0.0
              ) -> tuple[float, float] | None:
        """How far a thing with ground footprint [x0, x1] x [z0, z1] at the first frame and velocity (vx, vz)
        has moved by now, as (dx, dz); None when it would hit the ego car at some time, so that the drive
        leaves it out. A still scene's things stay where they are."""
        if self.motion is None:
            return 0.0, 0.0
        tx = _overlap_times(x0, x1, vx, -_EGO_HALF_WIDTH, _EGO_HALF_WIDTH, 0.0)
        tz = _overlap_times(z0, z1, vz, -_EGO_BEHIND, _EGO_AHEAD, self.motion.ego_speed)
        if max(tx[0], tz[0], 0.0) < min(tx[1], tz[1]):
            return None
        return vx * self.motion.time, vz * self.motion.time

    # ---------------------------------------------------------------- drawing helpers
    def add_item(self, depth: float, lateral: float, draw: Callable[[], None], far: float = math.inf) -> None:
        self.items.append(Item(depth, abs(lateral), draw, far))

    def center_size(self, x: float, h: float, z: float, size_m: float) -> tuple[tuple[float, float], float]:
        """Pixel centre and size of something of ``size_m`` metres at (x, h, z), for its shading gradient (at
        the near plane for what a moving camera has partly passed)."""
        if not self.cam.sees(z):
            z = self.cam.z + NEAR_PLANE
        return self.cam.point(x, h, z), self.cam.focal * size_m / (z - self.cam.z)

    def ground_quad(self, x0: float, x1: float, z0: float, z1: float) -> np.ndarray:
        return self.cam.project_polygon([(x0, 0.0, z0), (x1, 0.0, z0), (x1, 0.0, z1), (x0, 0.0, z1)])

    def draw_box(
        self,
        box: tuple[float, float, float, float, float, float],
        color: np.ndarray,
        region: Region,
        details: Callable[[Face], None] | None = None,
    ) -> list[Face]:
        x0, x1, h0, h1, z0, z1 = box
        faces = box_faces(self.cam.height, x0, x1, h0, h1, z0, z1)
        for face in faces:
            name = face[0]
            if name in ("left", "right"):
                lit = (name == "left") == (self.sun_side < 0)
                factor = self.face_light["lit" if lit else "dark"]
            else:
                factor = self.face_light[name]
            _, o, e1, e2 = face
            corners = np.array([o, o + e1, o + e1 + e2, o + e2])
            self.painter.poly(self.cam.project_polygon(corners), scaled(color, factor), region)
            if details is not None:
                details(face)
        return faces

    def face_detail(self, face: Face, rects: Sequence, color: np.ndarray) -> None:
        corners = face_rects(face, rects)
        if len(corners):
            self.painter.polys(self.cam.project_polygons(corners), color)

    # ---------------------------------------------------------------- where things stand
    def in_clear_view(self, x: float, z: float, max_z: float = 50.0) -> bool:
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

    def is_free(self, x0: float, x1: float, z0: float, z1: float) -> bool:
        return all(x1 < a - 0.5 or x0 > b + 0.5 or z1 < c - 1.0 or z0 > d + 1.0 for a, b, c, d in self.footprints)

    def conflicts(self, x0: float, x1: float, z0: float, z1: float) -> bool:
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

    # ---------------------------------------------------------------- render
    def add_ego_vehicle(self) -> None:
        """The bonnet of the recording car at the bottom, labelled "ego vehicle" (void), as in Cityscapes."""
        rng = self.rng
        W, H = self.width, self.height
        top = H * (1.0 - rng.uniform(0.04, 0.1))
        u = np.linspace(-1.0, 1.0, 33)
        v = top + (H - top) * 0.8 * u**2
        pts = np.concatenate([np.stack([W / 2 + u * W * 0.7, v], 1), [(W * 1.2, H + 1.0), (-W * 0.2, H + 1.0)]])
        self.ego = (pts, hsv(rng, (0.0, 1.0), (0.0, 0.3), (0.02, 0.3)))

    def render(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng, p = self.rng, self.painter
        W, H = self.width, self.height
        # Sky: brighter towards the horizon; clear or overcast, with clouds.
        if rng.random() < 0.6:
            sky = hsv(rng, (0.53, 0.64), (0.2, 0.65), (0.65, 1.0))
        else:
            sky = hsv(rng, (0.0, 1.0), (0.0, 0.1), (0.55, 0.97))
        region = p.new_region(SKY, center=(W / 2, self.cam.cy * 0.5), gradient=(0.0, rng.uniform(0.0, 0.6) / H))
        p.poly(np.array([(-1.0, -1.0), (W + 1.0, -1.0), (W + 1.0, H + 1.0), (-1.0, H + 1.0)]), sky, region)
        for _ in range(int(rng.integers(0, 7))):
            c = (rng.uniform(0, W), rng.uniform(0, self.cam.cy * 0.8))
            axes = (rng.uniform(0.05, 0.25) * W, rng.uniform(0.02, 0.06) * H)
            p.ellipse(c, axes, mix(sky, (255, 255, 255), rng.uniform(0.2, 0.8)))
        self._add_ground()
        for quad, factor in self.ground_shadows:
            p.shadow(quad, factor)
        self._draw_items()
        ego = getattr(self, "ego", None)
        if ego is not None:
            pts, color = ego
            p.poly(pts, color, p.new_region(EGO_VEHICLE, (W / 2, H), W / 2, 0.3))
        return self._finish()

    def _draw_items(self) -> None:
        order = sorted(range(len(self.items)), key=lambda i: (-self.items[i].depth, -self.items[i].lateral))
        if self.motion is None:
            for i in order:
                self.items[i].draw()
            return
        scene_stream = self.rng.generator
        for i in order:
            if not self.cam.sees(self.items[i].far):
                continue
            self.rng.generator = np.random.default_rng([self.motion.seed, DRIVE_STREAM, _ITEM_STREAM, i])
            self.painter.begin_object(i)
            try:
                self.items[i].draw()
            except BehindCamera:
                pass
        self.rng.generator = scene_stream

    def _add_ground(self) -> None:
        """Everything flat: drawn before any item, so it needs no depth order."""
        rng, p, cam = self.rng, self.painter, self.cam
        W, H = self.width, self.height
        self.road_color = ground_color(rng, 0.12, (0.18, 0.55))
        self.sidewalk_color = ground_color(rng, 0.3, (0.3, 0.78))
        terrain_color = hsv(rng, (0.06, 0.35), (0.2, 0.75), (0.18, 0.6))
        full = (W / 2.0, H * 0.75)

        def fill(quad: np.ndarray, color: np.ndarray, label_id: int, strength: float = 0.3) -> None:
            region = p.new_region(label_id, full, max(W, H), strength, receives_shadow=True)
            p.poly(quad, color, region)

        v_far = cam.horizon_v(self.z_end)
        fill(np.array([(-1.0, v_far), (W + 1.0, v_far), (W + 1.0, H + 1.0), (-1.0, H + 1.0)]), terrain_color, TERRAIN)
        z0, z1 = 0.3, self.z_end
        far = 600.0
        fill(self.ground_quad(self.road_left, self.road_right, z0, z1), self.road_color, ROAD)
        for side in (-1, 1):
            c = self.curb_x(side)
            fill(self.ground_quad(*sorted((c, c + side * self.sidewalk[side])), z0, z1), self.sidewalk_color, SIDEWALK)
        if self.median is not None:
            m0, m1 = self.median
            kind = SIDEWALK if rng.random() < 0.5 else TERRAIN
            color = self.sidewalk_color if kind == SIDEWALK else terrain_color
            fill(self.ground_quad(m0, m1, z0, z1), color, kind)
        if self.intersection is not None:
            z_i, w, sw = self.intersection
            fill(self.ground_quad(-far, far, z_i, z_i + w), scaled(self.road_color, rng.uniform(0.9, 1.1)), ROAD)
            for zz0, zz1 in ((z_i - sw, z_i), (z_i + w, z_i + w + sw)):
                fill(self.ground_quad(-far, self.road_left, zz0, zz1), self.sidewalk_color, SIDEWALK)
                fill(self.ground_quad(self.road_right, far, zz0, zz1), self.sidewalk_color, SIDEWALK)
        # Curbs: a lighter or darker line, same label as the sidewalk.
        curb_color = scaled(self.sidewalk_color, rng.uniform(0.7, 1.3))
        for side in (-1, 1):
            c = self.curb_x(side)
            for za, zb in self._open_spans(z0, z1):
                p.poly(self.ground_quad(*sorted((c, c + side * 0.18)), za, zb), curb_color)
        self._add_markings()
        # Patches of repaired asphalt and stains break up the road colour.
        for _ in range(int(rng.integers(0, 6))):
            x = rng.uniform(self.road_left, self.road_right)
            z = rng.uniform(5.0, 60.0)
            quad = self.ground_quad(x, x + rng.uniform(0.5, 4.0), z, z + rng.uniform(0.5, 8.0))
            p.poly(quad, scaled(self.road_color, rng.uniform(0.7, 1.3)))

    def _open_spans(self, z0: float, z1: float) -> list[tuple[float, float]]:
        """[z0, z1] without the crossing street."""
        if self.intersection is None:
            return [(z0, z1)]
        z_i, w, sw = self.intersection
        return [(z0, z_i - sw), (z_i + w + sw, z1)]

    def _add_markings(self) -> None:
        rng, p = self.rng, self.painter
        paint = hsv(rng, (0.1, 0.16), (0.0, 0.12), (0.6, 0.98))
        if rng.random() < 0.2:
            paint = hsv(rng, (0.1, 0.15), (0.5, 0.9), (0.6, 0.95))  # yellow
        dash, gap, half = rng.uniform(2.0, 4.0), rng.uniform(4.0, 9.0), rng.uniform(0.06, 0.1)
        z_max = min(self.z_end, 250.0 + self.reach)
        boundaries = [(a[0] + b[0]) / 2.0 for a, b in zip(self.lanes[:-1], self.lanes[1:])]
        directions = [a[1] != b[1] for a, b in zip(self.lanes[:-1], self.lanes[1:])]
        polys = []
        for x, divide in zip(boundaries, directions):
            if self.median is not None and divide:
                continue
            for za, zb in self._open_spans(1.0, z_max):
                if divide:  # solid line between the directions
                    polys.append(self.ground_quad(x - half, x + half, za, zb))
                    continue
                z = za + rng.uniform(0, gap)
                while z < zb:
                    polys.append(self.ground_quad(x - half, x + half, z, min(z + dash, zb)))
                    z += dash + gap
        edges = ((self.road_left + self.park_left, self.park_left),
                 (self.road_right - self.park_right, self.park_right))
        for edge, park in edges:
            if park > 0:
                for za, zb in self._open_spans(1.0, z_max):
                    polys.append(self.ground_quad(edge - half, edge + half, za, zb))
        p.polys(polys, scaled(paint, rng.uniform(0.8, 1.0)))
        if self.intersection is not None:
            z_i, _, _ = self.intersection
            stripes, x = [], self.road_left + 0.3
            width = rng.uniform(0.4, 0.6)
            while x + width < self.road_right - 0.3:
                stripes.append(self.ground_quad(x, x + width, z_i - 4.0, z_i - 0.8))
                x += 2 * width
            # The stop line spans the lanes of the camera's direction.
            own_left = min(x for x, d in self.lanes if d > 0) - self.lane_width / 2.0
            stripes.append(self.ground_quad(own_left, self.road_right - self.park_right, z_i - 5.0, z_i - 4.6))
            p.polys(stripes, scaled(paint, rng.uniform(0.8, 1.05)))

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
        if self.motion is not None:  # the same camera in every frame, but new noise
            rng = np.random.default_rng([self.motion.seed, DRIVE_STREAM, _NOISE_STREAM, self.motion.frame])
        noise = noise_lut[np.frombuffer(rng.bytes(image.size), dtype=np.uint8).reshape(image.shape)]
        noise += image
        image = np.clip(noise, 0, 255).astype(np.uint8)
        return (image, *p.maps())


def _overlap_times(a0: float, a1: float, va: float, b0: float, b1: float, vb: float) -> tuple[float, float]:
    """(t_from, t_to): the times at which the moving intervals [a0, a1] + va * t and [b0, b1] + vb * t
    overlap (none when t_from >= t_to)."""
    dv = va - vb
    if dv == 0.0:
        return (-math.inf, math.inf) if (a0 < b1 and a1 > b0) else (math.inf, -math.inf)
    t_a, t_b = (b1 - a0) / dv, (b0 - a1) / dv
    return min(t_a, t_b), max(t_a, t_b)
