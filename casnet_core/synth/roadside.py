"""Along the street: the skyline at its end, buildings with windows and shops, parks behind walls, fences
and hedges, and trees."""

from __future__ import annotations

import math

import numpy as np

from casnet_core.synth.camera import Billboard, Face
from casnet_core.synth.classes import BUILDING, FENCE, VEGETATION, WALL
from casnet_core.synth.colors import building_color, glass, green, hsv, mix, paint_color, scaled
from casnet_core.synth.scene import StreetScene


def add_backdrop(scene: StreetScene) -> None:
    """A skyline at the end of the street, behind everything."""
    rng, z = scene.rng, scene.z_end
    x_span = z * scene.width / scene.cam.focal * 0.7 + 20.0
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
    sky_tint = hsv(rng, (0.55, 0.65), (0.0, 0.3), (0.6, 0.95))

    def draw() -> None:
        p = scene.painter
        for kind, xa, xb, h in blocks:
            if kind == "building":
                color = mix(building_color(rng), sky_tint, haze)
                center, size = scene.center_size((xa + xb) / 2, h / 2, z, max(h, xb - xa))
                scene.draw_box((xa, xb, 0.0, h, z, z + 20.0), color, p.new_region(BUILDING, center, size, 0.2))
            else:
                center, size = scene.center_size((xa + xb) / 2, h / 2, z, h)
                region = p.new_region(VEGETATION, center, size, 0.2)
                bb = Billboard(scene.cam, (xa + xb) / 2.0, z)
                half = (xb - xa) / 2.0
                for _ in range(int(rng.integers(3, 8))):
                    cx = rng.uniform(-half, half)
                    r = rng.uniform(0.3, 0.6) * h
                    p.ellipse(bb.point(cx, h - r), (bb.px(rng.uniform(0.6, 1.0) * half), bb.px(r)),
                              mix(green(rng), sky_tint, haze), region)
                p.poly(bb.rect(-half, half, 0.0, h * 0.5), mix(green(rng), sky_tint, haze), region)

    scene.add_item(math.inf, 0.0, draw)  # behind everything


def add_roadside(scene: StreetScene, side: int) -> None:
    """Buildings, parks, walls, fences and hedges along one side, and the cross street's buildings."""
    rng = scene.rng
    xb = scene.building_line[side]
    z = 0.3
    segments = []
    while z < scene.z_end:
        length = rng.uniform(6.0, 30.0)
        z_next = min(z + length, scene.z_end)
        if scene.intersection is not None:
            z_i, w, sw = scene.intersection
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
            add_building(scene, side, xb, z0, z1)
        else:
            add_park(scene, side, xb, z0, z1)
    if scene.intersection is not None:
        z_i, w, sw = scene.intersection
        zf = z_i + w + sw
        x = xb + side * rng.uniform(8.0, 16.0)
        while abs(x) < 250.0:
            length = rng.uniform(10.0, 40.0)
            xa, xe = sorted((x, x + side * length))
            add_building_box(scene, xa, xe, zf, zf + rng.uniform(10.0, 20.0), facade="front")
            x += side * length


def add_building(scene: StreetScene, side: int, xb: float, z0: float, z1: float) -> None:
    depth = scene.rng.uniform(10.0, 20.0)
    xa, xe = sorted((xb, xb + side * depth))
    add_building_box(scene, xa, xe, z0, z1, facade="left" if side > 0 else "right")


def add_building_box(scene: StreetScene, xa: float, xe: float, z0: float, z1: float, facade: str) -> None:
    rng = scene.rng
    h = rng.uniform(6.0, 26.0)
    color = building_color(rng)
    floor = rng.uniform(2.8, 3.6)
    win_w = rng.uniform(0.25, 0.6)
    win_h = rng.uniform(0.35, 0.65)
    glass_dark, glass_light = glass(rng), glass(rng)
    shop = rng.random() < 0.5
    shop_color = paint_color(rng)
    key_x = xa if abs(xa) < abs(xe) else xe
    center, size = scene.center_size(key_x, h / 2, (z0 + z1) / 2, max(h, z1 - z0))
    region = scene.painter.new_region(BUILDING, center, size, 0.35)

    def details(face: Face) -> None:
        name = face[0]
        # Windows under a few pixels are left out. (The depth is the world z, the depth at the start of a drive,
        # so that a building has the same windows in every frame.)
        if name not in (facade, "front") or scene.cam.focal * floor / face[1][2] < 4.0:
            return
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
        scene.face_detail(face, rects[~lit], glass_dark)
        scene.face_detail(face, rects[lit], glass_light)
        if shop:
            scene.face_detail(face, [(0.0, 1.0, 0.0, min(0.9 * floor / h, 1.0))], scaled(shop_color, 0.8))
            n_win = max(int(length / 6.0), 1)
            a = (np.arange(n_win) + 0.5) / n_win
            shop_rects = np.stack([a - 0.35 / n_win, a + 0.35 / n_win, np.full(n_win, 0.05 * floor / h),
                                   np.full(n_win, 0.7 * floor / h)], axis=-1)
            scene.face_detail(face, shop_rects, glass_dark)

    scene.add_item(z1, max(abs(xa), abs(xe)) if facade == "front" else 0.0,
                   lambda: scene.draw_box((xa, xe, 0.0, h, z0, z1), color, region, details), far=z1)


def add_park(scene: StreetScene, side: int, xb: float, z0: float, z1: float) -> None:
    """A wall, fence or hedge on the building line, trees and maybe a building behind it."""
    rng, p = scene.rng, scene.painter
    if rng.random() < 0.6:
        back = xb + side * rng.uniform(12.0, 25.0)
        depth = rng.uniform(10.0, 20.0)
        xa, xe = sorted((back, back + side * depth))
        before = len(scene.items)
        add_building_box(scene, xa, xe, z0, z1, facade="left" if side > 0 else "right")
        scene.items[before].depth = z1 + 0.002
    for _ in range(int(rng.integers(1, 4 + int((z1 - z0) / 8)))):
        add_tree(scene, xb + side * rng.uniform(1.0, 9.0), rng.uniform(z0, z1), depth=z1 + 0.001)
    kind = rng.choice(["wall", "fence", "hedge", "none"], p=[0.3, 0.35, 0.25, 0.1])
    if kind == "none":
        return
    height = rng.uniform(0.8, 2.2)
    thickness = 0.3 if kind != "hedge" else rng.uniform(0.6, 1.2)
    xa, xe = sorted((xb, xb + side * thickness))
    if kind == "wall":
        label_id, color = WALL, building_color(rng)
    elif kind == "fence":
        label_id, color = FENCE, hsv(rng, (0.0, 1.0), (0.0, 0.5), (0.1, 0.7))
    else:
        label_id, color = VEGETATION, green(rng)
    center, size = scene.center_size(xb, height / 2, (z0 + z1) / 2, z1 - z0)
    region = p.new_region(label_id, center, size, 0.3)
    bar_color = scaled(color, rng.uniform(0.4, 1.6))

    def details(face: Face) -> None:
        if face[0] in ("front", "top"):
            return
        length = float(np.linalg.norm(face[2]))
        if kind == "fence":  # posts and a rail, the rest shows the fence's darker mesh colour
            n = max(int(length / rng.uniform(0.15, 2.5)), 1)
            a = np.arange(n) / n
            rects = np.stack([a, a + 0.3 / n, np.zeros(n), np.ones(n)], axis=-1)
            scene.face_detail(face, rects, bar_color)
            scene.face_detail(face, [(0, 1, 0.85, 0.95)], bar_color)
        elif kind == "hedge":
            n = max(int(length / 1.5), 1)
            a = rng.random(n)
            b = rng.uniform(0.1, 0.8, n)
            rects = np.stack([a, a + 0.3 / n, b, b + 0.15], axis=-1)
            scene.face_detail(face, rects, scaled(color, rng.uniform(0.6, 1.4)))

    scene.add_item(z1, 0.0, lambda: scene.draw_box((xa, xe, 0.0, height, z0, z1), color, region, details), far=z1)


def add_tree(scene: StreetScene, x: float, z: float, depth: float | None = None) -> None:
    rng, p = scene.rng, scene.painter
    trunk_h = rng.uniform(1.5, 4.0)
    crown_r = rng.uniform(1.2, 3.5)
    greens = [green(rng) for _ in range(3)]
    trunk_color = hsv(rng, (0.02, 0.12), (0.2, 0.6), (0.1, 0.45))
    blobs = [(rng.uniform(-0.6, 0.6) * crown_r, trunk_h + crown_r * rng.uniform(0.6, 1.4),
              crown_r * rng.uniform(0.45, 0.8), crown_r * rng.uniform(0.4, 0.75), int(rng.integers(3)))
             for _ in range(int(rng.integers(4, 9)))]
    corners = ((-1, -0.4), (1, -0.4), (1.2, 0.6), (-1.2, 0.6))
    shadow = scene.cam.project_polygon([(x + a * crown_r, 0.0, z + b * crown_r) for a, b in corners])
    scene.ground_shadows.append((shadow, scene.shadow_factor))

    def draw() -> None:
        center, size = scene.center_size(x, trunk_h + crown_r, z, 2 * crown_r + trunk_h)
        region = p.new_region(VEGETATION, center, size, 0.4)
        bb = Billboard(scene.cam, x, z)
        p.poly(bb.limb((0.0, 0.0), (0.0, trunk_h + crown_r * 0.5), 0.35, 0.2), trunk_color, region)
        for bx, bh, rx, rh, g in blobs:
            p.ellipse(bb.point(bx, bh), (bb.px(rx), bb.px(rh)), greens[g], region)

    scene.add_item(z if depth is None else depth, x, draw)
