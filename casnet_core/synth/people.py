"""Pedestrians, and bicycles and motorcycles with their riders (rider and bike are separate instances
of different classes), drawn as billboards facing the camera."""

from __future__ import annotations

import math

from casnet_core.synth.camera import Billboard
from casnet_core.synth.classes import MOTORCYCLE, PERSON, RIDER
from casnet_core.synth.colors import hair, hsv, paint_color, scaled, skin
from casnet_core.synth.painter import Region
from casnet_core.synth.scene import StreetScene


def person_colors(scene: StreetScene) -> dict:
    rng = scene.rng
    return dict(skin=skin(rng), hair=hair(rng), top=paint_color(rng), bottom=paint_color(rng),
                shoes=hsv(rng, (0.0, 1.0), (0.0, 0.3), (0.03, 0.5)), bag=paint_color(rng))


def add_person(
    scene: StreetScene,
    x: float,
    z: float,
    view: str,
    facing: int = 1,
    height: float | None = None,
    velocity: tuple[float, float] = (0.0, 0.0),
) -> None:
    """A pedestrian. view: "front", "back" (walking along the street) or "side" (across). In a drive they
    walk with ``velocity`` (vx, vz) m/s from (x, z) and swing their legs; left out where they would meet
    the ego car."""
    offset = scene.moved(x - 0.3, x + 0.3, z - 0.25, z + 0.25, *velocity)
    if offset is None:
        return
    x, z = x + offset[0], z + offset[1]
    rng, p = scene.rng, scene.painter
    H = height if height is not None else (rng.uniform(1.55, 1.95) if rng.random() > 0.1 else rng.uniform(1.0, 1.4))
    colors = person_colors(scene)
    phase = rng.uniform(-1.0, 1.0)
    if velocity != (0.0, 0.0):
        phase = _walking_phase(phase, math.hypot(*offset))
    coat = rng.random() < 0.25
    bag = rng.random() < 0.3
    scene.things.append((PERSON, x, z))
    scene.ground_shadows.append((scene.ground_quad(x - 0.3, x + 0.3, z - 0.25, z + 0.25), 0.45))

    def draw() -> None:
        center, size = scene.center_size(x, H / 2, z, H)
        region = p.new_region(PERSON, center, size, 0.35)
        bb = Billboard(scene.cam, x, z, mirror=facing < 0)
        legs, shirt = colors["bottom"], colors["top"]
        if view == "side":
            stride = 0.16 * H * phase
            for foot, shade in ((-stride, 0.75), (stride, 1.0)):
                knee = (foot / 2 + 0.03 * H, 0.27 * H)
                p.poly(bb.limb((0.0, 0.5 * H), knee, 0.085 * H, 0.065 * H), scaled(legs, shade), region)
                p.poly(bb.limb(knee, (foot, 0.03 * H), 0.065 * H, 0.05 * H), scaled(legs, shade), region)
                shoe = bb.limb((foot - 0.02 * H, 0.015 * H), (foot + 0.06 * H, 0.015 * H), 0.035 * H)
                p.poly(shoe, colors["shoes"], region)
            p.poly(bb.limb((0.0, 0.79 * H), (-stride * 0.6, 0.46 * H), 0.05 * H), scaled(shirt, 0.75), region)
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
            p.poly(bb.limb((sgn * 0.12 * H, 0.79 * H), hand, 0.05 * H, 0.04 * H), scaled(shirt, 0.85), region)
            p.ellipse(bb.point(hand[0], 0.45 * H), (bb.px(0.025 * H), bb.px(0.03 * H)), colors["skin"], region)
        if bag and view == "back":
            p.poly(bb.rect(-0.08 * H, 0.08 * H, 0.56 * H, 0.78 * H), colors["bag"], region)
        p.poly(bb.rect(-0.025 * H, 0.025 * H, 0.8 * H, 0.87 * H), colors["skin"], region)
        head = bb.point(0.0, 0.925 * H)
        face = colors["skin"] if view == "front" else colors["hair"]
        p.ellipse(head, (bb.px(0.055 * H), bb.px(0.068 * H)), face, region)
        if view == "front":
            p.ellipse(bb.point(0.0, 0.96 * H), (bb.px(0.057 * H), bb.px(0.035 * H)), colors["hair"], region)

    scene.add_item(z, x, draw)


def add_two_wheeler(
    scene: StreetScene,
    kind: int,
    x: float,
    z: float,
    view: str,
    facing: int = 1,
    ridden: bool = True,
    velocity: tuple[float, float] = (0.0, 0.0),
) -> None:
    """A bicycle or motorcycle, with a rider as a separate instance when ``ridden``. view: "side" (facing
    +1 to the right) or "rear" (seen from behind or in front, driving along the street). In a drive it
    rides with ``velocity`` (vx, vz) m/s from (x, z); left out where it would meet the ego car."""
    half_x, half_z = (1.0, 0.4) if view == "side" else (0.5, 1.0)
    offset = scene.moved(x - half_x, x + half_x, z - half_z, z + half_z, *velocity)
    if offset is None:
        return
    x, z = x + offset[0], z + offset[1]
    rng, p = scene.rng, scene.painter
    paint = paint_color(rng)
    tyre = hsv(rng, (0.0, 1.0), (0.0, 0.1), (0.03, 0.2))
    metal = hsv(rng, (0.0, 1.0), (0.0, 0.1), (0.3, 0.9))
    colors = person_colors(scene)
    helmet = paint_color(rng)
    rack = rng.random() < 0.5
    bag_color = paint_color(rng)
    light_red = hsv(rng, (0.97, 1.02), (0.7, 1.0), (0.5, 1.0))
    light_white = hsv(rng, (0.1, 0.16), (0.0, 0.3), (0.7, 1.0))
    scene.things.append((kind, x, z))
    if ridden:
        scene.things.append((RIDER, x, z))
    scene.ground_shadows.append((scene.ground_quad(x - 0.5, x + 0.5, z - 0.4, z + 0.4), 0.45))
    moto = kind == MOTORCYCLE

    def draw_bike(bb: Billboard, region: Region) -> None:
        if view == "side" and not moto:
            r = 0.34
            rear, front = (-0.52, r), (0.52, r)
            ring = max(int(round(bb.px(0.05))), 1)
            for hub in (rear, front):
                p.ellipse(bb.point(*hub), (bb.px(r), bb.px(r)), tyre, region, thickness=ring)
            bracket, seat, head = (-0.03, 0.3), (-0.2, 0.9), (0.36, 0.88)
            tubes = ((bracket, seat), (bracket, head), ((-0.19, 0.82), head), (seat, rear), (bracket, rear),
                     (head, front))
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
            p.poly(bb.pts([(-0.3, 0.28), (0.3, 0.28), (0.42, 0.62), (-0.38, 0.66)]), scaled(metal, 0.5), region)
            p.poly(bb.limb((-0.3, 0.35), (-0.85, 0.45), 0.08), metal, region)
            p.poly(bb.pts([(-0.95, 0.72), (-0.35, 0.8), (0.0, 0.95), (0.42, 0.98), (0.6, 0.95), (0.5, 0.72),
                           (-0.2, 0.62), (-0.8, 0.6)]), paint, region)
            p.poly(bb.limb((0.55, 0.98), (0.72, r), 0.07), metal, region)
            p.poly(bb.limb((0.5, 1.05), (0.64, 1.12), 0.04), metal, region)
            p.ellipse(bb.point(0.66, 0.9), (bb.px(0.07), bb.px(0.08)), hsv(rng, (0.1, 0.16), (0.0, 0.3), (0.7, 1.0)))
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

    def draw_bike_rear(bb: Billboard, region: Region) -> None:
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

    def draw_rider(bb: Billboard, region: Region) -> None:
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
            p.poly(bb.limb(hip, knee, 0.15, 0.11), scaled(legs, 0.75), region)
            p.poly(bb.limb(knee, foot, 0.11, 0.08), scaled(legs, 0.75), region)
            p.poly(bb.limb(hip, shoulder, 0.34, 0.3), shirt, region)
            p.poly(bb.limb(shoulder, hand, 0.09, 0.07), scaled(shirt, 0.85), region)
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
            p.poly(bb.limb((sgn * 0.18, 1.42), hand, 0.08, 0.07), scaled(shirt, 0.85), region)
        p.ellipse(bb.point(0.0, 1.6), (bb.px(head_r), bb.px(head_r * 1.1)), head_color, region)

    def draw() -> None:
        bb = Billboard(scene.cam, x, z, mirror=facing < 0)
        center, size = scene.center_size(x, 0.6, z, 1.8)
        bike_region = p.new_region(kind, center, size, 0.3)
        draw_bike(bb, bike_region)
        if ridden:
            center, size = scene.center_size(x, 1.2, z, 1.0)
            draw_rider(bb, p.new_region(RIDER, center, size, 0.3))
        if view == "rear":
            draw_bike_rear(bb, bike_region)

    scene.add_item(z, x, draw)


def _walking_phase(phase: float, distance: float) -> float:
    """The leg swing (-1..1) after walking ``distance`` metres from ``phase``: one stride cycle per 1.4 m."""
    return math.sin(math.asin(phase) + 2.0 * math.pi * distance / 1.4)
