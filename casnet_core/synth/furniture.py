"""Street furniture: street lamps, sign poles with traffic signs, traffic lights at the crossing, street trees."""

from __future__ import annotations

import math

import numpy as np

from casnet_core.synth.camera import Billboard
from casnet_core.synth.classes import POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN
from casnet_core.synth.colors import hsv
from casnet_core.synth.roadside import add_tree
from casnet_core.synth.scene import StreetScene


def add_street_furniture(scene: StreetScene) -> None:
    rng = scene.rng
    z_lim = min(scene.max_object_z + scene.reach, scene.z_end - 5.0)
    for side in (-1, 1):
        curb = scene.curb_x(side)
        # Street lamps at regular spacing.
        spacing = rng.uniform(18.0, 35.0)
        z = rng.uniform(3.0, spacing)
        x = curb + side * rng.uniform(0.3, 0.7)
        while z < z_lim:
            if not scene.in_crossing(z, z, 1.0):
                add_lamp(scene, x, z, side)
            z += spacing
        # Signs.
        for _ in range(scene.more(int(rng.integers(0, 4)))):
            z = rng.uniform(5.0, z_lim * 0.6)
            if not scene.in_crossing(z, z, 1.0):
                add_sign_pole(scene, curb + side * rng.uniform(0.3, 1.0), z)
        # Street trees on wide sidewalks.
        if scene.sidewalk[side] > 3.0 and rng.random() < 0.5:
            spacing = rng.uniform(8.0, 16.0)
            z = rng.uniform(4.0, spacing)
            while z < min(z_lim, 90.0 + scene.reach):
                if not scene.in_crossing(z, z, 2.0):
                    add_tree(scene, curb + side * rng.uniform(1.2, 1.8), z)
                z += spacing
    if scene.median is not None:
        m = sum(scene.median) / 2.0
        z = rng.uniform(8.0, 30.0)
        while z < z_lim * 0.7:
            if not scene.in_crossing(z, z, 1.0):
                add_sign_pole(scene, m, z) if rng.random() < 0.5 else add_lamp(scene, m, z, 0)
            z += rng.uniform(10.0, 30.0)
    if scene.intersection is not None:
        z_i, w, sw = scene.intersection
        scene.corner_poles = []
        for side in (-1, 1):
            x = scene.curb_x(side) + side * rng.uniform(0.4, 0.8)
            zp = z_i - rng.uniform(0.8, sw - 0.2)
            add_traffic_light_pole(scene, x, zp, side, mast=rng.random() < 0.4)
            scene.corner_poles.append((x, zp))
            if rng.random() < 0.7:
                add_traffic_light_pole(scene, x, z_i + w + rng.uniform(0.5, sw), side, mast=False)
    else:
        scene.corner_poles = []


def pole_color(scene: StreetScene) -> np.ndarray:
    rng = scene.rng
    if rng.random() < 0.2:
        return hsv(rng, (0.25, 0.45), (0.3, 0.7), (0.15, 0.45))
    return hsv(rng, (0.0, 1.0), (0.0, 0.1), (0.15, 0.75))


def add_lamp(scene: StreetScene, x: float, z: float, side: int) -> None:
    rng, p = scene.rng, scene.painter
    h = rng.uniform(6.0, 9.5)
    arm = rng.uniform(0.8, 2.0) * (-side if side != 0 else float(rng.choice([-1.0, 1.0])))
    width = rng.uniform(0.12, 0.22)
    color = pole_color(scene)
    lamp_color = hsv(rng, (0.0, 1.0), (0.0, 0.2), (0.3, 0.95))

    def draw() -> None:
        center, size = scene.center_size(x, h / 2, z, h)
        region = p.new_region(POLE, center, size, 0.3)
        bb = Billboard(scene.cam, x, z)
        p.poly(bb.limb((0.0, 0.0), (0.0, h), width, width * 0.7), color, region)
        p.poly(bb.limb((0.0, h - 0.2), (arm, h), width * 0.5), color, region)
        p.poly(bb.rect(arm - 0.3 * np.sign(arm), arm + 0.2 * np.sign(arm), h - 0.25, h - 0.05), lamp_color, region)

    scene.add_item(z, x, draw)


def add_sign_pole(scene: StreetScene, x: float, z: float) -> None:
    rng, p = scene.rng, scene.painter
    n_signs = int(rng.integers(1, 3))
    top = rng.uniform(2.4, 3.3)
    width = rng.uniform(0.06, 0.1)
    color = pole_color(scene)
    signs = []
    h = top
    for _ in range(n_signs):
        shape = str(rng.choice(["circle", "triangle", "square", "plate", "octagon"]))
        size = rng.uniform(0.55, 0.85) if shape != "plate" else rng.uniform(0.25, 0.45)
        face = hsv(rng, (0.0, 1.0), (0.0, 0.9), (0.5, 1.0))
        if rng.random() < 0.6:
            rim = hsv(rng, (0.95, 1.05), (0.6, 1.0), (0.5, 0.95))  # red
        else:
            rim = hsv(rng, (0.55, 0.7), (0.5, 1.0), (0.4, 0.9))  # blue
        signs.append((shape, h, size, face, rim))
        h -= size + 0.05

    def draw() -> None:
        center, size = scene.center_size(x, top / 2, z, top)
        region = p.new_region(POLE, center, size, 0.3)
        bb = Billboard(scene.cam, x, z)
        p.poly(bb.limb((0.0, 0.0), (0.0, top), width), color, region)
        for shape, hs, s, face, rim in signs:
            r = s / 2.0
            c = (0.0, hs - r)
            sc, ss = scene.center_size(x, hs - r, z, s)
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

    scene.add_item(z, x, draw)


def add_traffic_light_pole(scene: StreetScene, x: float, z: float, side: int, mast: bool) -> None:
    rng, p = scene.rng, scene.painter
    h = rng.uniform(3.2, 4.5) if not mast else rng.uniform(5.5, 6.5)
    width = rng.uniform(0.1, 0.18)
    color = pole_color(scene)
    housing = hsv(rng, (0.1, 0.16), (0.0, 0.9), (0.05, 0.8))
    lamps = [(0.9, 0.1, 0.05), (0.95, 0.7, 0.05), (0.1, 0.9, 0.4)]
    on = int(rng.integers(3))
    boxes = [(0.0, h - rng.uniform(0.1, 1.4))] if not mast else []
    arm = 0.0
    if mast:
        arm = -side * rng.uniform(3.0, 7.0)
        boxes = [(arm * t, h - 0.2) for t in (0.55, 1.0)][: int(rng.integers(1, 3))]

    def draw() -> None:
        center, size = scene.center_size(x, h / 2, z, h)
        region = p.new_region(POLE, center, size, 0.3)
        bb = Billboard(scene.cam, x, z)
        p.poly(bb.limb((0.0, 0.0), (0.0, h), width, width * 0.8), color, region)
        if mast:
            p.poly(bb.limb((0.0, h - 0.1), (arm, h - 0.1), width * 0.6), color, region)
        for bx, top in boxes:
            lc, ls = scene.center_size(x + bx, top - 0.45, z, 1.0)
            light_region = p.new_region(TRAFFIC_LIGHT, lc, ls, 0.2)
            p.poly(bb.rect(bx - 0.17, bx + 0.17, top - 0.95, top), housing, light_region)
            for i, lamp in enumerate(lamps):
                level = 1.0 if i == on else 0.25
                p.ellipse(bb.point(bx, top - 0.18 - 0.3 * i), (bb.px(0.1), bb.px(0.1)),
                          np.asarray(lamp) * 255.0 * level)

    scene.add_item(z, x, draw)
