"""`casnet replay --live` (casnet_ros.live_replay): a real casnet_node process fed a real rosbag2 over DDS,
compared with the in-process replay of the same bag.

Needs rclpy and the interface packages built into the venv (scripts/build_interfaces.sh, run by
`make test`): without them these tests fail (an import error), they are not skipped.
"""

from __future__ import annotations

import json
import os

import numpy as np
import rclpy  # noqa: F401  (fails here, not deep inside, without ROS)
from bag_helpers import PERIOD, T0, instance_rows, read_topic, val_images, write_bag

from casnet_core import bags
from casnet_core.cli import main
from casnet_core.predictor import Predictor
from casnet_core.replay import OUTPUT_TOPICS, replay
from casnet_ros.live_replay import replay_live

# Not the domain of test_ros_node's nodes (1 + pid % 100).
DOMAIN_ID = 1 + (os.getpid() + 37) % 100


def detection_rows(message):
    return [(d.id, d.results[0].hypothesis.class_id, d.results[0].hypothesis.score, d.bbox.center.position.x,
             d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y) for d in message.detections]


def test_live_replay_gives_the_instances_of_the_in_process_replay(tmp_path, synth_root, tiny_checkpoint):
    images, ground_truth = val_images(synth_root)
    bag = tmp_path / "drive"
    stamps = write_bag(bag, images, encoding="bgr8", ground_truth=ground_truth)

    in_process = replay(bag, tmp_path / "in_process", Predictor.from_checkpoint(str(tiny_checkpoint), device="cpu"),
                        progress=False)
    live = replay_live(bag, tmp_path / "live", checkpoint=tiny_checkpoint, max_rate=True, device="cpu",
                       domain_id=DOMAIN_ID, progress=False)
    log = (tmp_path / "live" / "casnet_node.log").read_text()
    assert live["frames"] == {"received": 3, "processed": 3, "dropped": 0, "failed": 0, "evaluated": 3}, log
    assert live["replay"] == "live" and live["latency_ms"]["max"] > 0
    assert live["accuracy"] == in_process["accuracy"]

    for name, (topic, _) in OUTPUT_TOPICS.items():
        expected = read_topic(tmp_path / "in_process" / "bag", topic)
        received = read_topic(tmp_path / "live" / "bag", topic)
        assert sorted(expected) == sorted(received) == stamps, name
        for stamp in stamps:
            a, b = expected[stamp], received[stamp]
            assert a.header.frame_id == b.header.frame_id == "camera"
            if name == "instances":
                assert instance_rows(a.instances) == instance_rows(b.instances) and a.mode == b.mode
                a, b = a.panoptic, b.panoptic
            if name == "detections":
                assert detection_rows(a) == detection_rows(b)
            else:  # the same image message, byte for byte
                assert (a.encoding, a.height, a.width, a.step) == (b.encoding, b.height, b.width, b.step)
                np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))


def test_live_replay_of_a_compressed_mcap_bag_at_the_recorded_rate(tmp_path, synth_root, tiny_checkpoint, capfd):
    """Through the command line, at the recorded rate: every frame is processed or dropped, the last one
    (never replaced by a newer frame) is answered, and the outputs keep the input's storage and stamps."""
    images, _ = val_images(synth_root)
    bag = tmp_path / "compressed"
    stamps = write_bag(bag, images + images[:1], storage="mcap", compressed="jpeg",
                       topic="/camera/image_raw/compressed")
    out = tmp_path / "live"
    status = main(["replay", "--bag", str(bag), "--out", str(out), "--checkpoint", str(tiny_checkpoint), "--device",
                   "cpu", "--live", "--rate", "2", "--domain-id", str(DOMAIN_ID)])
    assert status == 0, (out / "casnet_node.log").read_text()
    assert "4 frames received" in capfd.readouterr().out  # printed by the live replay process
    metrics = json.loads((out / "metrics.json").read_text())
    frames = metrics["frames"]
    assert frames["received"] == 4 and frames["failed"] == 0 and frames["processed"] + frames["dropped"] == 4
    assert metrics["accuracy"] is None and metrics["pace"] == "2 x recorded rate"
    assert bags.bag_storage(out / "bag") == "mcap"
    answered = read_topic(out / "bag", OUTPUT_TOPICS["instances"][0])
    assert len(answered) == frames["processed"] and stamps[-1] in answered and set(answered) <= set(stamps)
    assert stamps == [T0 + i * PERIOD for i in range(4)]
