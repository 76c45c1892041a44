"""Generated drives (``casnet_core.synth.drive``): frames of one street as the camera drives down it, and
their rosbag2 (``casnet synth --bag``), read back with rosbags as any rosbag2 tool would."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label, name2label

from casnet_core.labels import LABEL_DIVISOR, THING_LABEL_IDS
from casnet_core.synth import generate_drive, register
from casnet_core.synth.camera import Camera
from casnet_core.synth.painter import InstanceNumbers, Painter

HEIGHT, WIDTH, FRAMES = 96, 192, 20
CAR = name2label["car"].id
PERSON = name2label["person"].id
GROUND = [name2label[n].id for n in ("road", "sidewalk", "terrain")]


@pytest.fixture(scope="module")
def drive():
    return list(generate_drive(FRAMES, seed=1, height=HEIGHT, width=WIDTH))


def _tracks(frames) -> dict[int, list[tuple[int, int, bool, tuple[int, int, int, int]]]]:
    """Per thing id, per frame seen: (frame index, visible pixels, touches the left/right/bottom image border,
    box (x0, y0, x1, y1))."""
    tracks: dict[int, list] = {}
    for index, frame in enumerate(frames):
        panoptic = frame.panoptic
        for thing_id in np.unique(panoptic[panoptic >= LABEL_DIVISOR]).tolist():
            rows, cols = np.nonzero(panoptic == thing_id)
            border = cols.min() == 0 or cols.max() == frame.width - 1 or rows.max() == frame.height - 1
            box = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            tracks.setdefault(thing_id, []).append((index, len(rows), bool(border), box))
    return tracks


def test_same_seed_gives_the_same_drive_and_another_seed_does_not():
    first = list(generate_drive(3, seed=4, height=64, width=128))
    again = list(generate_drive(3, seed=4, height=64, width=128))
    other = list(generate_drive(3, seed=5, height=64, width=128))
    for a, b in zip(first, again):
        assert a.stamp_ns == b.stamp_ns
        np.testing.assert_array_equal(a.image_rgb, b.image_rgb)
        np.testing.assert_array_equal(a.panoptic, b.panoptic)
        np.testing.assert_array_equal(a.camera_matrix, b.camera_matrix)
    assert not np.array_equal(first[0].image_rgb, other[0].image_rgb)
    # The camera moves: consecutive frames differ.
    assert not np.array_equal(first[0].image_rgb, first[1].image_rgb)
    assert not np.array_equal(first[0].panoptic, first[1].panoptic)


def test_frames_follow_the_contract(drive):
    frames = list(generate_drive(3, rate_hz=20.0, seed=1, height=64, width=128))
    for frame in frames:
        assert frame.image_rgb.shape == (64, 128, 3) and frame.image_rgb.dtype == np.uint8
        assert frame.panoptic.shape == (64, 128) and frame.panoptic.dtype == np.int32
        assert frame.camera_matrix.shape == (3, 3) and frame.camera_matrix.dtype == np.float64
        assert (frame.width, frame.height) == (128, 64)
        # One camera for the whole drive.
        np.testing.assert_array_equal(frame.camera_matrix, frames[0].camera_matrix)
    assert [b.stamp_ns - a.stamp_ns for a, b in zip(frames, frames[1:])] == [50_000_000, 50_000_000]
    assert [f.stamp_ns for f in drive[:3]] == [drive[0].stamp_ns + i * 100_000_000 for i in range(3)]


def test_panoptic_uses_the_cityscapes_encoding(drive):
    evaluated_stuff = {lab.id for lab in id2label.values() if not lab.ignoreInEval and not lab.hasInstances}
    for frame in drive:
        ids = np.unique(frame.panoptic)
        things, stuff = ids[ids >= LABEL_DIVISOR], ids[ids < LABEL_DIVISOR]
        assert set((things // LABEL_DIVISOR).tolist()) <= set(THING_LABEL_IDS)
        # Stuff carries its label id, every class that is not evaluated (the ego vehicle's bonnet) is void.
        assert set(stuff.tolist()) <= evaluated_stuff | {0}
    assert any((f.panoptic >= LABEL_DIVISOR).any() for f in drive)


def test_instances_persist_grow_and_leave(drive):
    tracks = _tracks(drive)
    # A car seen in many consecutive frames under one id while the camera nears it: it grows.
    growing = [thing_id for thing_id, track in tracks.items()
               if thing_id // LABEL_DIVISOR == CAR and len(track) >= 8
               and [seen[0] for seen in track] == list(range(track[0][0], track[0][0] + len(track)))
               and track[-1][1] >= 3 * track[0][1]]
    assert growing
    # Things in the first frame that leave the image over its border and are gone by the end.
    leaving = [thing_id for thing_id, track in tracks.items()
               if track[0][0] == 0 and track[-1][0] < FRAMES - 3 and track[-1][2]]
    assert len(leaving) >= 2
    # Others come into view later.
    assert any(track[0][0] > 0 for track in tracks.values())
    # One id, one object: from one frame to the next its box moves by less than its size.
    pairs = 0
    for track in tracks.values():
        for (i, area, _, a), (j, next_area, _, b) in zip(track, track[1:]):
            if j == i + 1 and min(area, next_area) >= 20:
                pairs += 1
                assert min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])
    assert pairs >= 50


def test_instance_numbers_follow_the_object_not_the_drawing_order():
    numbers = InstanceNumbers()
    seen = []
    for order in (["walker", "cyclist", "other"], ["other", "cyclist", "walker"]):
        painter = Painter(8, 8, np.random.default_rng(0), numbers)
        ids = {}
        for key in order:
            painter.begin_object(key)
            ids[key] = (painter.new_region(PERSON).instance_id, painter.new_region(PERSON).instance_id)
        seen.append(ids)
    assert seen[0] == seen[1]
    assert len({i for pair in seen[0].values() for i in pair}) == 6


def test_camera_matrix_maps_points_as_the_generator_projects_them():
    camera = Camera(focal=230.0, cx=97.3, cy=41.8, height=1.3, z=12.0, near=0.3)
    rng = np.random.default_rng(0)
    points = np.stack([rng.uniform(-10, 10, 50), rng.uniform(0, 5, 50), rng.uniform(13, 80, 50)], axis=1)
    # K acts on camera coordinates (x right, y down, z forward); its pixel centres sit on integers.
    in_camera = np.stack([points[:, 0], camera.height - points[:, 1], points[:, 2] - camera.z], axis=1)
    homogeneous = in_camera @ camera.matrix().T
    np.testing.assert_allclose(homogeneous[:, :2] / homogeneous[:, 2:] + 0.5, camera.project(points), atol=1e-9)


def test_camera_matrix_fits_the_rendered_horizon(drive):
    focal, cy = drive[0].camera_matrix[0, 0], drive[0].camera_matrix[1, 2]
    assert 0.9 * WIDTH < focal < 1.3 * WIDTH
    top_ground_rows = []
    for frame in drive:
        label_ids = np.where(frame.panoptic >= LABEL_DIVISOR, frame.panoptic // LABEL_DIVISOR, frame.panoptic)
        top_ground_rows.append(np.nonzero(np.isin(label_ids, GROUND).any(axis=1))[0].min())
    # No ground above the horizon row cy; the street ends 150 m or more ahead, so the ground reaches up to
    # just under it (in the frames where no vehicle hides the far end of the road).
    assert cy - 1.0 <= min(top_ground_rows) <= cy + focal * 1.5 / 150.0 + 2.0


def test_bad_drive_arguments_fail_clearly():
    for kwargs in ({"frames": 0}, {"frames": 2, "rate_hz": 0.0}, {"frames": 2, "height": 16}):
        with pytest.raises(ValueError, match="frame|rate|small"):
            generate_drive(**kwargs)


def _synth(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["synth"] + argv)
    return args.func(args)


def _read_bag(path: Path) -> dict[str, list]:
    """topic -> [(msgtype, receive stamp, message)], with the stock ROS 2 Humble type store of rosbags."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    out: dict[str, list] = {}
    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as reader:
        for connection, stamp, raw in reader.messages():
            out.setdefault(connection.topic, []).append(
                (connection.msgtype, stamp, reader.deserialize(raw, connection.msgtype)))
    return out


@pytest.mark.parametrize("storage,image_format", [("sqlite3", "rgb8"), ("mcap", "bgr8"), ("mcap", "jpeg"),
                                                  ("sqlite3", "jpeg")])
def test_drive_bag_reads_back_with_rosbags(tmp_path, storage, image_format):
    bag = tmp_path / "drive"
    assert _synth(["--bag", str(bag), "--frames", "3", "--rate", "5", "--storage", storage, "--image-format",
                   image_format, "--height", "64", "--width", "128", "--seed", "2"]) == 0
    assert next(bag.glob("*.mcap" if storage == "mcap" else "*.db3")).is_file()
    frames = list(generate_drive(3, rate_hz=5.0, seed=2, height=64, width=128))
    topics = _read_bag(bag)
    image_topic = "/camera/image_raw/compressed" if image_format == "jpeg" else "/camera/image_raw"
    assert set(topics) == {image_topic, "/camera/camera_info", "/camera/panoptic_gt"}
    for topic, messages in topics.items():
        assert [stamp for _, stamp, _ in messages] == [f.stamp_ns for f in frames]
        for (_, _, message), frame in zip(messages, frames):
            stamp = message.header.stamp
            assert stamp.sec * 10**9 + stamp.nanosec == frame.stamp_ns and message.header.frame_id == "camera"
    for (msgtype, _, message), frame in zip(topics[image_topic], frames):
        if image_format == "jpeg":
            assert msgtype == "sensor_msgs/msg/CompressedImage" and message.format == "jpeg"
            decoded = cv2.cvtColor(cv2.imdecode(message.data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            assert np.abs(decoded.astype(int) - frame.image_rgb).mean() < 8.0
        else:
            assert msgtype == "sensor_msgs/msg/Image" and message.encoding == image_format
            pixels = message.data.reshape(message.height, message.step)[:, : 3 * message.width].reshape(64, 128, 3)
            np.testing.assert_array_equal(pixels[..., ::-1] if image_format == "bgr8" else pixels, frame.image_rgb)
    for (msgtype, _, info), frame in zip(topics["/camera/camera_info"], frames):
        assert msgtype == "sensor_msgs/msg/CameraInfo" and (info.width, info.height) == (128, 64)
        np.testing.assert_array_equal(info.k.reshape(3, 3), frame.camera_matrix)
        np.testing.assert_array_equal(info.p.reshape(3, 4)[:, :3], frame.camera_matrix)
    for (msgtype, _, message), frame in zip(topics["/camera/panoptic_gt"], frames):
        assert msgtype == "sensor_msgs/msg/Image" and message.encoding == "32SC1" and not message.is_bigendian
        panoptic = message.data.view("<i4").reshape(message.height, message.step // 4)[:, : message.width]
        np.testing.assert_array_equal(panoptic, frame.panoptic)


def test_drive_bag_command_rejects_bad_input_in_one_line(tmp_path, capsys):
    existing = tmp_path / "exists"
    existing.mkdir()
    assert _synth(["--bag", str(existing), "--frames", "2", "--height", "64", "--width", "128"]) == 2
    assert _synth(["--bag", str(tmp_path / "new"), "--frames", "0"]) == 2
    assert _synth(["--bag", str(tmp_path / "other")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("casnet synth: error: ") for line in errors)
    assert "exists" in errors[0] and "frame" in errors[1] and "--frames" in errors[2]
    # Nothing half-written is left behind.
    assert not (tmp_path / "new").exists() and not (tmp_path / "other").exists()
