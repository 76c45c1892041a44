"""`casnet replay --live` (casnet_ros.live_replay): a real casnet_node process fed a real rosbag2 over DDS,
compared with the in-process replay of the same bag.

Needs rclpy and the interface packages built into the venv (scripts/build_interfaces.sh, run by
`make test`): without them these tests fail (an import error), they are not skipped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
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
            if name == "instance_mask":
                assert [c.label for c in a.classification] == [c.label for c in b.classification]
                a, b = a.image, b.image
            if name == "detections":
                assert detection_rows(a) == detection_rows(b)
            elif name == "rois":
                assert roi_rows(a) == roi_rows(b)
            else:  # the same image message, byte for byte
                assert (a.encoding, a.height, a.width, a.step) == (b.encoding, b.height, b.width, b.step)
                np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))


def roi_rows(rois) -> list:
    """(roi, labels, existence probability) per object of a DetectedObjectsWithFeature."""
    return [((o.feature.roi.x_offset, o.feature.roi.y_offset, o.feature.roi.width, o.feature.roi.height),
             [c.label for c in o.object.classification], round(float(o.object.existence_probability), 5))
            for o in rois.feature_objects]


def test_the_node_and_the_replay_build_the_same_output_messages():
    """casnet_core.messages with rclpy's classes (the node) and with rosbags' (the in-process replay): the
    rosbags messages, serialized and read back by rclpy, equal the node's field for field (only CDR padding
    bytes may differ)."""
    from builtin_interfaces.msg import Time
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import Header

    from casnet_core.predictor import Instance, Prediction
    from casnet_core.replay_recorder import output_messages
    from casnet_ros import cameras, conversions

    panoptic = np.zeros((5, 7), np.int32)
    panoptic[1:4, 2:6], panoptic[0, :2] = 26001, 24000
    instances = [Instance(id=26001, label_id=26, class_name="car", score=0.75, box=(2.0, 1.0, 6.0, 4.0), area=12,
                          centroid=(3.5, 2.0)),
                 Instance(id=24000, label_id=24, class_name="person", score=0.5, box=(0.0, 0.0, 2.0, 1.0), area=2,
                          centroid=(0.5, 0.0))]
    prediction = Prediction(panoptic=panoptic, semantic=np.full((5, 7), 7, np.uint8), instances=instances)
    node = cameras.build_outputs(prediction, Header(stamp=Time(sec=5, nanosec=7), frame_id="cam"),
                                 list(OUTPUT_TOPICS), "panoptic")
    recorded = output_messages(prediction, "panoptic", bags.header_message(5 * 10**9 + 7, "cam"))
    assert len(node["detections"].detections) == 2
    for name, (_, msgtype) in OUTPUT_TOPICS.items():
        data = bytes(bags.typestore().serialize_cdr(recorded[name], msgtype))
        assert deserialize_message(data, conversions.message_class(msgtype)) == node[name], name


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


# ------------------------------------------------------------------------------ frames sharing a stamp, ONNX
def test_live_replay_of_an_onnx_export_keys_frames_by_position(tmp_path, tiny_checkpoint):
    """Frames 1 and 2 share a stamp: each is answered and recorded with its own outputs and its recorded stamp.
    The model is an ONNX export, whose mode is read from its metadata (never handed to torch.load)."""
    from casnet_core.checkpoint import load_model
    from casnet_core.export import export_onnx

    onnx_file = tmp_path / "tiny.onnx"
    export_onnx(load_model(tiny_checkpoint)[0], onnx_file)
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (64, 128, 3), dtype=np.uint8) for _ in range(3)]
    stamps = [T0, T0 + PERIOD, T0 + PERIOD]
    with bags.BagWriter(tmp_path / "bag") as writer:
        for i, (stamp, image) in enumerate(zip(stamps, images)):
            writer.add(bags.DEFAULT_IMAGE_TOPIC, bags.IMAGE_TYPE, T0 + i * PERIOD,
                       bags.rgb_to_image_message(image, "rgb8", bags.header_message(stamp, "camera")))
    metrics = replay_live(tmp_path / "bag", tmp_path / "live", checkpoint=onnx_file, max_rate=True, device="cpu",
                          domain_id=DOMAIN_ID, progress=False)
    log = (tmp_path / "live" / "casnet_node.log").read_text()
    assert metrics["frames"]["processed"] == 3, log
    recorded = [message for _, _, message in bags.read_messages(tmp_path / "live" / "bag",
                                                                [OUTPUT_TOPICS["instances"][0]])]
    assert [bags.stamp_ns(m.header) for m in recorded] == stamps
    assert [bags.stamp_ns(m.panoptic.header) for m in recorded] == stamps
    predictor = Predictor.from_checkpoint(str(onnx_file), device="cpu")
    for message, image in zip(recorded, images):
        np.testing.assert_array_equal(bags.panoptic_from_image_message(message.panoptic),
                                      predictor.predict(image).panoptic)


# ------------------------------------------------------------------------------ signals
SLOW_PERIOD = 10**9  # 1 s between frames: the node answers each well before the next, so none is dropped


def _processes_with(marker: str) -> list[int]:
    """Pids of the processes whose command line holds ``marker``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)


def _frames_reported(stderr_path) -> int:
    """The last frame count of the replay's progress bar ("replay: ... N/M")."""
    found = re.findall(r"replay:\s+\d+%\|[^|]*\|\s*(\d+)/\d+", stderr_path.read_text(errors="replace"))
    return int(found[-1]) if found else 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_signalled_live_replay_closes_its_bag_and_leaves_no_node(tmp_path, tiny_checkpoint, signum):
    """A real `casnet replay --live` process, signalled once two frames were processed: no casnet_ros.node outlives
    it (its checkpoint path, unique to this test, marks it), and after SIGINT or SIGTERM the output bag opens with
    every frame processed before the signal."""
    checkpoint = tmp_path / f"model_{signum.name}.pt"
    checkpoint.write_bytes(tiny_checkpoint.read_bytes())
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (64, 128, 3), dtype=np.uint8) for _ in range(100)]
    with bags.BagWriter(tmp_path / "bag") as writer:
        for i, image in enumerate(images):
            writer.add_image(bags.DEFAULT_IMAGE_TOPIC, T0 + i * SLOW_PERIOD, image)
    out, stderr_path = tmp_path / "out", tmp_path / "stderr.txt"
    command = [sys.executable, "-m", "casnet_core.cli", "replay", "--bag", str(tmp_path / "bag"), "--out", str(out),
               "--checkpoint", str(checkpoint), "--device", "cpu", "--live", "--domain-id", str(DOMAIN_ID)]
    with open(stderr_path, "wb") as stderr:
        replay_process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        _wait_for(lambda: _frames_reported(stderr_path) >= 2 or replay_process.poll() is not None, 300,
                  "two frames processed")
        assert replay_process.poll() is None, stderr_path.read_text()
        processed_before = _frames_reported(stderr_path)
        replay_process.send_signal(signum)
        code = replay_process.wait(timeout=120)
        # The node is stopped in order (SIGINT, or SIGTERM when its parent is gone), which takes a moment.
        _wait_for(lambda: not _processes_with(str(checkpoint)), 60, "casnet_ros.node to end")
        _wait_for(lambda: not _processes_with(str(out)), 60, "the live replay process to end")
        if signum != signal.SIGKILL:
            assert code == 128 + signum, stderr_path.read_text()
            answered = list(bags.read_messages(out / "bag", [OUTPUT_TOPICS["instances"][0]]))
            assert len(answered) >= processed_before
            assert [bags.stamp_ns(m.header) for _, _, m in answered] == \
                [T0 + i * SLOW_PERIOD for i in range(len(answered))]
    finally:
        for pid in _processes_with(str(checkpoint)) + _processes_with(str(out)):  # on a failure only
            os.kill(pid, signal.SIGKILL)
        if replay_process.poll() is None:
            replay_process.kill()
