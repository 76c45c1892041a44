"""Where the things go: parked rows, traffic in the lanes, cross traffic, groups of pedestrians, cyclists,
and required classes put where the camera sees them. In a drive, things also get their velocities here:
one speed per lane (so no car runs into the one ahead; the ego's own lane at least as fast as the ego car),
cross traffic, pedestrians walking along the sidewalk or across the road, cyclists; parked things stand."""

from __future__ import annotations

from casnet_core.synth.classes import BICYCLE, BUS, CAR, MOTORCYCLE, PERSON, RIDER, TRAIN, TRUCK
from casnet_core.synth.people import add_person, add_two_wheeler
from casnet_core.synth.scene import StreetScene
from casnet_core.synth.vehicles import add_vehicle


def random_vehicle_kind(scene: StreetScene) -> int:
    r = scene.rng.random()
    if r < 0.74:
        return CAR
    if r < 0.86:
        return TRUCK
    if r < 0.96:
        return BUS
    return TRAIN


def add_parked(scene: StreetScene) -> None:
    rng = scene.rng
    sides = [s for s, park in ((1, scene.park_right), (-1, scene.park_left)) if park > 0]
    z_lim = min(scene.max_object_z * 0.7, 100.0) + scene.reach
    for side in sides:
        x = scene.curb_x(side) - side * rng.uniform(1.0, 1.3)
        z = rng.uniform(4.5, 14.0) if side > 0 else rng.uniform(5.0, 30.0)
        heading = int(rng.choice([-1, 1]))
        while z < z_lim:
            n_cars = int(rng.integers(2, 7))
            for _ in range(n_cars):
                if scene.in_crossing(z, z + 6.0, 4.0):
                    break
                r = rng.random()
                if r < 0.06:
                    facing = int(rng.choice([-1, 1]))
                    add_two_wheeler(scene, MOTORCYCLE, x + side * 0.3, z + 0.5, "side", facing, ridden=False)
                    z += 1.2 + rng.uniform(0.3, 1.0)
                    continue
                kind = TRUCK if r < 0.12 else CAR
                length, _ = add_vehicle(scene, kind, x + rng.uniform(-0.15, 0.15), z, False, heading)
                z += length + rng.uniform(0.3, 1.5)
            z += rng.uniform(5.0, 40.0)
            if scene.intersection is not None and scene.in_crossing(z, z + 6.0, 4.0):
                z_i, w, sw = scene.intersection
                z = z_i + w + sw + 4.0


def _lane_speed(scene: StreetScene, own: bool, direction: int) -> float:
    """m/s of the traffic in a lane: the ego's own lane as fast as the ego car or faster, the other lanes of
    its direction slower or about as fast (the camera overtakes them), oncoming traffic at town speeds."""
    if direction < 0:
        return scene.draw_speed(8.0, 13.0)
    return scene.ego_speed * (scene.draw_speed(1.0, 1.3) if own else scene.draw_speed(0.4, 1.1))


def add_traffic(scene: StreetScene) -> None:
    rng = scene.rng
    for lane_x, direction in scene.lanes:
        own = abs(lane_x) < scene.lane_width / 2
        speed = _lane_speed(scene, own, direction)
        # Oncoming traffic comes from further away during a drive.
        reach = scene.reach + (scene.travel(speed) if direction < 0 else 0.0)
        z_lim = min(scene.max_object_z + reach, 140.0 + reach, scene.z_end - 10.0)
        z = rng.uniform(8.0, 30.0) if own else rng.uniform(5.0, 25.0)
        while z < z_lim:
            if rng.random() < 0.55 and not scene.in_crossing(z, z + 12.0, 3.0):
                r = rng.random()
                if r < 0.06:
                    x = lane_x + rng.uniform(-0.8, 0.8)
                    add_two_wheeler(scene, MOTORCYCLE, x, z, "rear", velocity=(0.0, direction * speed))
                    z += 2.0
                else:
                    kind = random_vehicle_kind(scene)
                    x = lane_x + rng.uniform(-0.3, 0.3)
                    length, _ = add_vehicle(scene, kind, x, z, False, direction, speed=speed)
                    z += length
            z += rng.uniform(4.0, 30.0)


def add_cross_traffic(scene: StreetScene) -> None:
    """Vehicles on the crossing street, side on; the first one passes behind a corner pole so that the
    pole cuts it in two."""
    rng = scene.rng
    z_i, w, _ = scene.intersection
    n = int(rng.integers(1, 4))
    for i in range(n):
        heading = int(rng.choice([-1, 1]))
        lane_z = z_i + w * (0.28 if heading > 0 else 0.72)
        r = rng.random()
        kind = CAR if r < 0.5 else TRUCK if r < 0.65 else BUS if r < 0.82 else TRAIN
        width = 2.5 if kind != CAR else 1.8
        z = lane_z - width / 2
        if i == 0 and scene.corner_poles:
            px, pz = scene.corner_poles[int(rng.integers(len(scene.corner_poles)))]
            x = px * (z / pz)  # on the line of sight through the pole
            length_guess = {CAR: 4.3, TRUCK: 7.0, BUS: 11.0, TRAIN: 25.0}[kind]
            x += rng.uniform(-0.3, 0.3) * length_guess
        else:
            x = rng.uniform(-30.0, 30.0)
        add_vehicle(scene, kind, x, z, True, heading, speed=scene.draw_speed(4.0, 10.0))


def sidewalk_x(scene: StreetScene, side: int) -> float:
    curb = scene.curb_x(side)
    return curb + side * scene.rng.uniform(0.5, max(scene.sidewalk[side] - 0.3, 0.6))


def add_person_group(
    scene: StreetScene, x: float, z: float, n: int, view: str | None = None, crossing: bool = False
) -> None:
    """``n`` people side by side. In a drive they walk together: along the street when seen from the front
    or back, across it when ``crossing`` (seen from the side); others seen from the side stand."""
    rng = scene.rng
    facing = int(rng.choice([-1, 1]))
    group_view = view or str(rng.choice(["front", "back", "side"], p=[0.35, 0.35, 0.3]))
    speed = scene.draw_speed(0.9, 1.7)
    velocity = {"front": (0.0, -speed), "back": (0.0, speed)}.get(group_view, (0.0, 0.0))
    if crossing:
        velocity = (facing * speed, 0.0)
    for i in range(n):
        # Shoulder to shoulder: close enough that neighbours touch or overlap in the image.
        dx = (i - (n - 1) / 2) * rng.uniform(0.3, 0.55)
        add_person(scene, x + dx, z + rng.uniform(-0.4, 0.4), group_view, facing, velocity=velocity)


def add_pedestrians(scene: StreetScene) -> None:
    rng = scene.rng
    z_lim = min(scene.max_object_z * 0.8, 90.0) + scene.reach
    for side in (-1, 1):
        for _ in range(scene.more(int(rng.integers(1, 5)))):
            z = rng.uniform(5.0, z_lim)
            add_person_group(scene, sidewalk_x(scene, side), z, int(rng.integers(1, 5)))
    if scene.intersection is not None and rng.random() < 0.85:
        z_i, _, _ = scene.intersection
        for _ in range(int(rng.integers(1, 3))):
            x = rng.uniform(scene.road_left + 1.0, scene.road_right - 1.0)
            add_person_group(scene, x, z_i - rng.uniform(1.2, 3.6), int(rng.integers(1, 5)), "side", crossing=True)
    elif rng.random() < 0.4:
        x = rng.uniform(scene.road_left + 1.0, scene.road_right - 1.0)
        add_person_group(scene, x, rng.uniform(8.0, 30.0), int(rng.integers(1, 3)), "side", crossing=True)


def add_cyclists(scene: StreetScene) -> None:
    rng = scene.rng
    if rng.random() < 0.45:
        x = scene.road_right - scene.park_right - rng.uniform(0.5, 1.0)
        velocity = (0.0, scene.draw_speed(3.5, 6.5))
        add_two_wheeler(scene, BICYCLE, x, rng.uniform(8.0, 50.0), "rear", velocity=velocity)
    if scene.intersection is not None and rng.random() < 0.3:
        z_i, _, _ = scene.intersection
        x = rng.uniform(scene.road_left + 1.0, scene.road_right - 1.0)
        z, facing = z_i - rng.uniform(1.0, 3.5), int(rng.choice([-1, 1]))
        add_two_wheeler(scene, BICYCLE, x, z, "side", facing, velocity=(facing * scene.draw_speed(3.0, 5.0), 0.0))
    if rng.random() < 0.35:  # a bicycle stand: parked bicycles side by side
        side = int(rng.choice([-1, 1]))
        x = scene.curb_x(side) + side * rng.uniform(0.8, 1.5)
        z = rng.uniform(6.0, 35.0)
        facing = int(rng.choice([-1, 1]))
        for i in range(int(rng.integers(2, 6))):
            xi, zi = x + rng.uniform(-0.15, 0.15), z + i * rng.uniform(0.4, 0.7)
            add_two_wheeler(scene, BICYCLE, xi, zi, "side", facing, ridden=False)
    if rng.random() < 0.2:
        side = int(rng.choice([-1, 1]))
        add_two_wheeler(scene, MOTORCYCLE, scene.curb_x(side) + side * 0.9, rng.uniform(6.0, 40.0), "side",
                        int(rng.choice([-1, 1])), ridden=False)


def force(scene: StreetScene, label_id: int) -> None:
    """Adds an object of a class the scene must contain, where the camera sees it (if such a place is found)."""
    rng = scene.rng
    for _ in range(30):
        lane_x, direction = scene.lanes[int(rng.integers(len(scene.lanes)))]
        lane_x += rng.uniform(-0.3, 0.3)
        if label_id == PERSON:
            if rng.random() < 0.5:
                x, z = rng.uniform(scene.road_left + 1.0, scene.road_right - 1.0), rng.uniform(7.0, 30.0)
            else:
                side = int(rng.choice([-1, 1]))
                x, z = scene.curb_x(side) + side * rng.uniform(0.5, 1.5), rng.uniform(6.0, 30.0)
            if scene.in_clear_view(x, z) and scene.is_free(x - 1.0, x + 1.0, z - 0.5, z + 0.5):
                add_person_group(scene, x, z, int(rng.integers(1, 4)))
                return
        elif label_id in (RIDER, BICYCLE, MOTORCYCLE):
            kind = MOTORCYCLE if label_id == MOTORCYCLE else BICYCLE
            if kind == BICYCLE and rng.random() < 0.5:
                x = scene.road_right - scene.park_right - rng.uniform(0.5, 1.0)
            else:
                x = lane_x
            z = rng.uniform(7.0, 30.0)
            if scene.in_clear_view(x, z) and scene.is_free(x - 0.5, x + 0.5, z - 1.0, z + 1.0):
                add_two_wheeler(scene, kind, x, z, "rear", ridden=True)
                return
        else:
            length = {CAR: 4.9, TRUCK: 9.0, BUS: 12.0, TRAIN: 20.0}[label_id]
            if label_id == TRAIN and scene.intersection is not None and rng.random() < 0.7:
                z_i, w, _ = scene.intersection
                x, z = rng.uniform(-8.0, 8.0), z_i + w * 0.5 - 1.3
                if scene.in_clear_view(x, z, 80.0):
                    add_vehicle(scene, TRAIN, x, z, True, int(rng.choice([-1, 1])), avoid_protected=False)
                    return
                continue
            z = rng.uniform(8.0, 45.0)
            if (scene.in_clear_view(lane_x, z, 80.0) and scene.is_free(lane_x - 1.3, lane_x + 1.3, z, z + length)
                    and not scene.in_crossing(z, z + length, 2.0)):
                add_vehicle(scene, label_id, lane_x, z, False, direction, avoid_protected=False)
                return
