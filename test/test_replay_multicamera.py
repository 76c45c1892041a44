"""`casnet replay` of a bag with several camera topics: in-process (one Predictor, outputs per camera) and
`--live` through one real batched casnet_node process (``cameras: [...]``) over DDS.

A real rosbag2 with three cameras of two sizes, front and rear with the same stamps (synchronised cameras),
is written with casnet_core.bags; the node is a real process with the tiny random-weights checkpoint.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import rclpy  # noqa: F401  (fails here, not deep inside, without ROS)
from bag_helpers import PERIOD, T0, instance_rows, read_topic, val_images

from casnet_core import bags
from casnet_core.cli import main
from casnet_core.predictor import Predictor
from casnet_core.replay import camera_topics, output_topics, replay
from casnet_ros.live_replay import replay_live

DOMAIN_ID = 1 + (os.getpid() + 61) % 100
FRAMES = 2
# camera -> (topic, (height, width), stamp offset ns): front and rear share their stamps.
CAMERAS = {"front": ("/front/image_raw", (128, 256), 0), "rear": ("/rear/image_raw", (128, 256), 0),
           "left": ("/left/image_raw", (96, 192), 3_000_000)}


@pytest.fixture(scope="module")
def multicamera_bag(tmp_path_factory, synth_root):
    """{camera: [(stamp, image), ...]} and the bag holding them (rgb8, recorded in time order)."""
    images, _ = val_images(synth_root)
    frames = {}
    messages = []
    for k, (camera, (topic, (height, width), offset)) in enumerate(CAMERAS.items()):
        frames[camera] = []
        for i in range(FRAMES):
            source = images[(i + k) % len(images)]
            image = np.ascontiguousarray(source[k * 16:k * 16 + height, k * 32:k * 32 + width])
            stamp = T0 + i * PERIOD + offset
            frames[camera].append((stamp, image))
            messages.append((stamp, k, topic, image))
    bag = tmp_path_factory.mktemp("multicamera") / "drive"
    with bags.BagWriter(bag, "sqlite3") as writer:
        for stamp, _, topic, image in sorted(messages, key=lambda m: (m[0], m[1])):
            writer.add_image(topic, stamp, image, encoding="rgb8")
    return bag, frames


def cameras_argument():
    return {camera: topic for camera, (topic, _, _) in CAMERAS.items()}


def assert_outputs_equal_the_predictor(out_bag, frames, predictor):
    """Every camera's recorded outputs are the Predictor's for that camera's frames, under its own topics."""
    for camera, camera_frames in frames.items():
        topics = output_topics(camera)
        panoptic = read_topic(out_bag, topics["panoptic"][0])
        instances = read_topic(out_bag, topics["instances"][0])
        detections = read_topic(out_bag, topics["detections"][0])
        semantic = read_topic(out_bag, topics["semantic"][0])
        assert sorted(panoptic) == sorted(instances) == sorted(semantic) == [s for s, _ in camera_frames], camera
        for stamp, image in camera_frames:
            expected = predictor.predict(image)
            assert np.array_equal(bags.panoptic_from_image_message(panoptic[stamp]), expected.panoptic), camera
            assert (semantic[stamp].height, semantic[stamp].width) == image.shape[:2]
            assert np.array_equal(np.asarray(semantic[stamp].data, np.uint8).reshape(image.shape[:2]),
                                  expected.semantic), camera
            assert instance_rows(instances[stamp].instances) == instance_rows(expected.instances), camera
            assert [d.id for d in detections[stamp].detections] == [str(i.id) for i in expected.instances], camera


def test_camera_topics_names_the_cameras():
    assert camera_topics(None) == {} and camera_topics(["/cam/image"]) == {}
    assert camera_topics(["/front/image_raw", "/rear/image_raw"]) == {"front": "/front/image_raw",
                                                                    "rear": "/rear/image_raw"}
    assert camera_topics(["a=/x/image", "b=/y/image"]) == {"a": "/x/image", "b": "/y/image"}
    assert camera_topics(["solo=/x/image"]) == {"solo": "/x/image"}
    for bad in (["/front/a", "/front/b"], ["1x=/a", "b=/b"], ["a=/t", "b=/t"]):
        with pytest.raises(ValueError):
            camera_topics(bad)


def test_in_process_replay_of_three_cameras(tmp_path, multicamera_bag, tiny_checkpoint, capsys):
    bag, frames = multicamera_bag
    predictor = Predictor.from_checkpoint(str(tiny_checkpoint), device="cpu")
    metrics = replay(bag, tmp_path / "out", predictor, cameras=cameras_argument(), progress=False)
    total = FRAMES * len(CAMERAS)
    assert metrics["frames"] == {"received": total, "processed": total, "dropped": 0, "failed": 0, "evaluated": 0}
    assert metrics["image_topics"] == list(cameras_argument().values()) and metrics["accuracy"] is None
    for camera, (topic, _, _) in CAMERAS.items():
        figures = metrics["cameras"][camera]
        assert figures["image_topic"] == topic
        assert figures["frames"] == {"received": FRAMES, "processed": FRAMES, "dropped": 0, "failed": 0}
        assert figures["latency_ms"]["p50"] > 0
    assert_outputs_equal_the_predictor(tmp_path / "out" / "bag", frames, predictor)
    assert (tmp_path / "out" / "mosaic.png").is_file()

    # The CLI: repeated --image-topic, --frames per camera, per-camera lines in the summary.
    argv = ["replay", "--bag", str(bag), "--out", str(tmp_path / "cli"), "--checkpoint", str(tiny_checkpoint),
            "--device", "cpu", "--frames", "1"]
    for topic in cameras_argument().values():
        argv += ["--image-topic", topic]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for camera, (topic, _, _) in CAMERAS.items():
        assert f"camera {camera} ({topic}): 1 received, 1 processed" in out
    written = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert written["frames"]["processed"] == len(CAMERAS) and set(written["cameras"]) == set(CAMERAS)


def test_several_cameras_bad_arguments_get_one_line(tmp_path, multicamera_bag, tiny_checkpoint, capsys):
    bag, _ = multicamera_bag
    base = ["replay", "--bag", str(bag), "--checkpoint", str(tiny_checkpoint), "--device", "cpu",
            "--image-topic", "/front/image_raw", "--image-topic", "/rear/image_raw"]
    for extra, expected in ((["--gt-topic", "/front/image_raw"], "--gt-topic"),
                            (["--image-topic", "/nothing/image"], "no topic /nothing/image"),
                            (["--image-topic", "9x=/left/image_raw"], "camera name '9x'")):
        assert main([*base, *extra, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("casnet replay: error:") and expected in err, err
    assert not (tmp_path / "out").exists()


def test_live_replay_of_three_cameras_through_one_batched_node(tmp_path, multicamera_bag, tiny_checkpoint):
    bag, frames = multicamera_bag
    metrics = replay_live(bag, tmp_path / "live", checkpoint=tiny_checkpoint, cameras=cameras_argument(),
                          max_rate=True, device="cpu", domain_id=DOMAIN_ID, progress=False)
    log = (tmp_path / "live" / "casnet_node.log").read_text()
    total = FRAMES * len(CAMERAS)
    assert metrics["frames"] == {"received": total, "processed": total, "dropped": 0, "failed": 0,
                                 "evaluated": 0}, log
    assert metrics["replay"] == "live" and metrics["latency_ms"]["max"] > 0
    for camera in CAMERAS:
        figures = metrics["cameras"][camera]
        assert figures["frames"] == {"received": FRAMES, "processed": FRAMES, "dropped": 0, "failed": 0}, log
        assert figures["latency_ms"]["p50"] > 0 and figures["throughput_fps"] > 0
    # One process served all cameras: the batched node's topics, each with its own input's header.
    predictor = Predictor.from_checkpoint(str(tiny_checkpoint), device="cpu")
    assert_outputs_equal_the_predictor(tmp_path / "live" / "bag", frames, predictor)
    on_disk = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert on_disk["cameras"]["left"]["frames"]["processed"] == FRAMES
