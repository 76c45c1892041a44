"""Vehicles as boxes of parts (car body and cabin, truck cab and cargo, bus, articulated tram) with wheels,
windows and lights, driving along the street or across it."""

from __future__ import annotations

from typing import Callable

import numpy as np

from casnet_core.synth.camera import Face
from casnet_core.synth.classes import BUS, CAR, TRUCK
from casnet_core.synth.colors import glass, hsv, paint_color, scaled
from casnet_core.synth.scene import StreetScene


def vehicle_parts(scene: StreetScene, kind: int) -> tuple[float, float, list[dict], list[float], float]:
    """Length, width, part boxes in vehicle coordinates (l from the rear, w across, h up), axle
    positions and wheel radius."""
    rng = scene.rng
    paint = paint_color(rng)
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
        cargo_color = paint if rng.random() < 0.4 else paint_color(rng)
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
                      color=scaled(paint, 0.25)))
    parts.append(dict(role="roof", l=(0.3 * length, 0.45 * length), w=(-0.6, 0.6), h=(top, top + 0.35),
                      color=scaled(paint, 0.6)))
    return length, width, parts, [], 0.4


def add_vehicle(
    scene: StreetScene,
    kind: int,
    x: float,
    z: float,
    yaw90: bool,
    heading: int,
    avoid_protected: bool = True,
    speed: float = 0.0,
) -> tuple[float, bool]:
    """A vehicle whose nearest face is at depth z, centred laterally on x. Heading +1 drives away (yaw 0)
    or to the right (yaw 90), in a drive at ``speed`` m/s (x, z are its place at the first frame). Returns
    (length, placed): not placed where it would hide or hit a protected (required) thing, nor where it
    would hit the ego car of a drive."""
    rng, cam, p = scene.rng, scene.cam, scene.painter
    length, width, parts, axles, radius = vehicle_parts(scene, kind)
    if yaw90:
        offset = scene.moved(x - length / 2, x + length / 2, z, z + width, vx=heading * speed)
    else:
        offset = scene.moved(x - width / 2, x + width / 2, z, z + length, vz=heading * speed)
    if offset is None:
        return length, False
    x, z = x + offset[0], z + offset[1]

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
    tyre = hsv(rng, (0.0, 1.0), (0.0, 0.1), (0.03, 0.15))
    rim = hsv(rng, (0.0, 1.0), (0.0, 0.1), (0.3, 0.85))
    window = glass(rng)
    light_red = hsv(rng, (0.97, 1.02), (0.7, 1.0), (0.5, 1.0))
    light_white = hsv(rng, (0.1, 0.16), (0.0, 0.3), (0.7, 1.0))
    stripe = paint_color(rng) if rng.random() < 0.5 else None
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

    def details_for(part: dict) -> Callable[[Face], None]:
        role_part = part["role"]

        def details(face: Face) -> None:
            role = role_of(face[0])
            if role in ("top", "bottom"):
                return
            if role_part == "cabin":
                if role == "side":
                    scene.face_detail(face, [(0.05, 0.47, 0.12, 0.88), (0.53, 0.95, 0.12, 0.88)], window)
                else:
                    scene.face_detail(face, [(0.08, 0.92, 0.1, 0.9)], window)
            elif role_part == "body":
                if role == "tail":
                    scene.face_detail(face, [(0.03, 0.18, 0.5, 0.78), (0.82, 0.97, 0.5, 0.78)], light_red)
                    scene.face_detail(face, [(0.38, 0.62, 0.15, 0.35)], light_white)
                elif role == "nose":
                    scene.face_detail(face, [(0.04, 0.22, 0.55, 0.8), (0.78, 0.96, 0.55, 0.8)], light_white)
                    scene.face_detail(face, [(0.3, 0.7, 0.35, 0.7)], scaled(tyre, 1.5))
                elif stripe is not None:
                    scene.face_detail(face, [(0.0, 1.0, 0.0, 0.15)], scaled(stripe, 0.5))
            elif role_part == "cab":
                if role == "nose":
                    scene.face_detail(face, [(0.06, 0.94, 0.55, 0.9)], window)
                    scene.face_detail(face, [(0.05, 0.2, 0.1, 0.2), (0.8, 0.95, 0.1, 0.2)], light_white)
                elif role == "side":
                    scene.face_detail(face, [(0.15, 0.85, 0.55, 0.88)], window)
                else:
                    scene.face_detail(face, [(0.3, 0.7, 0.6, 0.85)], window)
            elif role_part == "cargo":
                if role == "tail":
                    scene.face_detail(face, [(0.49, 0.51, 0.0, 1.0)], scaled(part["color"], 0.4))
                    scene.face_detail(face, [(0.02, 0.12, 0.02, 0.1), (0.88, 0.98, 0.02, 0.1)], light_red)
                elif role == "side" and stripe is not None:
                    scene.face_detail(face, [(0.0, 1.0, 0.35, 0.6)], stripe)
            elif role_part in ("bus", "tram"):
                if role == "side":
                    a = (np.arange(n_windows) + 0.5) / n_windows
                    half = 0.4 / n_windows
                    rects = np.stack([a - half, a + half, np.full(n_windows, 0.45), np.full(n_windows, 0.86)], -1)
                    scene.face_detail(face, rects, window)
                    if stripe is not None:
                        scene.face_detail(face, [(0.0, 1.0, 0.25, 0.38)], stripe)
                elif role == "nose":
                    scene.face_detail(face, [(0.05, 0.95, 0.42, 0.92)], window)
                    scene.face_detail(face, [(0.05, 0.2, 0.1, 0.18), (0.8, 0.95, 0.1, 0.18)], light_white)
                else:
                    scene.face_detail(face, [(0.12, 0.88, 0.55, 0.88)], window)
                    scene.face_detail(face, [(0.05, 0.15, 0.1, 0.25), (0.85, 0.95, 0.1, 0.25)], light_red)

        return details

    z_near = min(b[0][4] for b in boxes)
    z_far = max(b[0][5] for b in boxes)
    x_min = min(b[0][0] for b in boxes)
    x_max = max(b[0][1] for b in boxes)
    height = max(b[0][3] for b in boxes)
    if avoid_protected and scene.conflicts(x_min, x_max, z_near, z_far):
        return length, False
    center, size = scene.center_size((x_min + x_max) / 2, height / 2, z_near, max(height, x_max - x_min))
    region = p.new_region(kind, center, size, 0.35)
    scene.things.append((kind, (x_min + x_max) / 2, z_near))
    scene.footprints.append((x_min, x_max, z_near, z_far))
    # A soft shadow under the vehicle, a little larger than its footprint.
    pad = 0.25
    scene.ground_shadows.append((scene.ground_quad(x_min - pad, x_max + pad, z_near - pad, z_far + pad), 0.35))

    def draw() -> None:
        for box in wheels:
            scene.draw_box(box, tyre, region)
        for box, part in boxes:
            scene.draw_box(box, part["color"], region, details_for(part))
        if yaw90:
            for la in axles:
                xa, xb, _, _ = to_world(la, la, 0.0, 0.0)
                if not cam.sees(z_near - 0.01):
                    continue
                c = cam.point(xa, radius, z_near - 0.01)
                r_px = cam.focal * radius / (z_near - 0.01)
                p.ellipse(c, (r_px, r_px), tyre, region)
                p.ellipse(c, (r_px * 0.55, r_px * 0.55), rim)

    scene.add_item(z_near, (x_min + x_max) / 2 if yaw90 else x, draw, far=z_far)
    return length, True
