"""rosbag2 reading and writing (casnet_core.bags) and the in-process replay (casnet_core.replay, `casnet replay`):
real bags in both storages written and read with rosbags, a real (random-weights) CASNet, the official
evaluators. The live replay through the node is in test_replay_live.py.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from bag_helpers import PERIOD, T0, instance_rows, read_topic, val_images, write_bag

from casnet_core import bags
from casnet_core.cli import main
from casnet_core.replay import ACCURACY_KEYS, OUTPUT_TOPICS, replay

# ----------------------------------------------------------------------------------------------------- bags
@pytest.mark.parametrize("storage", bags.STORAGES)
def test_bags_round_trip_in_both_storages(tmp_path, storage):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (24, 40, 3), dtype=np.uint8) for _ in range(3)]
    panoptic = [rng.choice([0, 7, 26000 + i, 24001, 33999], size=(24, 40)).astype(np.int32) for i in range(3)]
    path = tmp_path / "drive"
    stamps = write_bag(path, images, storage=storage, encoding="bgr8", ground_truth=panoptic)

    assert bags.bag_storage(path) == storage
    assert any(f.suffix == (".mcap" if storage == "mcap" else ".db3") for f in path.iterdir())
    # The 32SC1 ground truth is an Image topic too, but not a camera.
    assert bags.image_topics(path) == {bags.DEFAULT_IMAGE_TOPIC: bags.IMAGE_TYPE}
    topics = bags.find_topics(path)
    assert (topics.image_topic, topics.gt_topic, topics.frames) == (bags.DEFAULT_IMAGE_TOPIC, bags.PANOPTIC_GT_TOPIC, 3)
    frames = list(bags.read_frames(path))
    assert [f.index for f in frames] == [0, 1, 2]
    assert [f.stamp_ns for f in frames] == [f.time_ns for f in frames] == stamps
    for frame, image, gt in zip(frames, images, panoptic):
        assert frame.error is None and frame.frame_id == "camera" and frame.msgtype == bags.IMAGE_TYPE
        np.testing.assert_array_equal(frame.image_rgb, image)  # stored as bgr8, read back as RGB
        np.testing.assert_array_equal(frame.panoptic_gt, gt)
    info = read_topic(path, bags.CAMERA_INFO_TOPIC)[stamps[0]]
    assert (info.width, info.height, info.distortion_model) == (40, 24, "plumb_bob")
    np.testing.assert_allclose(info.k, [40, 0, 20, 0, 40, 12, 0, 0, 1])
    np.testing.assert_allclose(info.p, [40, 0, 20, 0, 0, 40, 12, 0, 0, 0, 1, 0])


@pytest.mark.parametrize("encoding", ["rgb8", "rgba8", "bgra8", "mono8"])
def test_bags_write_the_encodings_the_decoder_reads(tmp_path, encoding):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)
    write_bag(tmp_path / "bag", [image], encoding=encoding)
    (frame,) = bags.read_frames(tmp_path / "bag")
    expected = image
    if encoding == "mono8":
        expected = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    np.testing.assert_array_equal(frame.image_rgb, expected)


def test_ground_truth_is_matched_by_stamp(tmp_path):
    """Ground truth recorded before its images and out of order still finds its frame; a frame without any
    gets None."""
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(4)]
    stamps = [T0 + i * PERIOD for i in range(4)]
    with bags.BagWriter(tmp_path / "bag") as writer:
        for i in (2, 0, 1):  # recorded a second early, out of order; none for frame 3
            writer.add(bags.PANOPTIC_GT_TOPIC, bags.IMAGE_TYPE, T0 - 10**9 + i,
                       bags.panoptic_image_message(np.full((8, 8), 26000 + i), bags.header_message(stamps[i], "cam"),
                                                   encoding=bags.PANOPTIC_ENCODING))
        for stamp, image in zip(stamps, images):
            writer.add(bags.DEFAULT_IMAGE_TOPIC, bags.IMAGE_TYPE, stamp + 5,
                       bags.rgb_to_image_message(image, "rgb8", bags.header_message(stamp, "cam")))
    frames = list(bags.read_frames(tmp_path / "bag"))
    assert [f.stamp_ns for f in frames] == stamps and [f.time_ns for f in frames] == [s + 5 for s in stamps]
    assert [None if f.panoptic_gt is None else int(f.panoptic_gt[0, 0]) for f in frames] == [26000, 26001, 26002, None]
    assert all(f.frame_id == "cam" for f in frames)


def test_panoptic_outputs_are_written_as_the_node_publishes_them():
    header = bags.header_message(T0, "camera")
    panoptic = np.array([[0, 7], [26000, 33999]], dtype=np.int32)
    narrow = bags.panoptic_image_message(panoptic, header)
    assert (narrow.encoding, narrow.step) == ("16UC1", 4)
    wide = bags.panoptic_image_message(np.array([[70000]]), header)
    assert wide.encoding == "32SC1"
    for message, expected in ((narrow, panoptic), (wide, [[70000]])):
        np.testing.assert_array_equal(bags.panoptic_from_image_message(message), expected)


# ------------------------------------------------------------------------------------------------ replay
def test_replay_metrics_equal_casnet_eval_on_the_same_frames(tmp_path, synth_root, tiny_checkpoint, capsys):
    """A bag made of the generated validation images and their instanceIds as panoptic ground truth,
    replayed by `casnet replay`, gives exactly the metrics of `casnet eval` on those files; the output bag
    holds the Predictor's results with the input stamps."""
    from casnet_core.evaluation import evaluate
    from casnet_core.predictor import Predictor

    images, ground_truth = val_images(synth_root)
    bag, out = tmp_path / "drive", tmp_path / "replay"
    stamps = write_bag(bag, images, encoding="bgr8", ground_truth=ground_truth)

    # Tracking off: the output bag then holds the Predictor's per-frame numbering, compared below.
    assert main(["replay", "--bag", str(bag), "--out", str(out), "--checkpoint", str(tiny_checkpoint),
                 "--device", "cpu", "--tracking", "off"]) == 0
    printed = capsys.readouterr().out
    assert "3 frames received, 3 processed, 0 dropped, 0 failed" in printed and "PQ" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == {"received": 3, "processed": 3, "dropped": 0, "failed": 0, "evaluated": 3}
    latency = metrics["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert metrics["throughput_fps"] > 0 and metrics["gt_topic"] == bags.PANOPTIC_GT_TOPIC

    reference = evaluate(synth_root, "val", tmp_path / "eval", checkpoint=tiny_checkpoint, device="cpu",
                         progress=False)
    accuracy = metrics["accuracy"]
    for key in (*ACCURACY_KEYS, "iIoU", "mIoU_th", "per_class", "num_classes_averaged", "num_images"):
        assert accuracy[key] == reference[key], key
    assert reference["mIoU"] > 0  # something to compare, even from random weights

    predictor = Predictor.from_checkpoint(str(tiny_checkpoint), device="cpu")
    outputs = {name: read_topic(out / "bag", topic) for name, (topic, _) in OUTPUT_TOPICS.items()}
    assert all(sorted(messages) == stamps for messages in outputs.values())
    for stamp, image in zip(stamps, images):
        expected = predictor.predict(image)
        frame = outputs["instances"][stamp]
        assert frame.mode == "panoptic" and frame.header.frame_id == "camera"
        assert instance_rows(frame.instances) == instance_rows(expected.instances)
        np.testing.assert_array_equal(bags.panoptic_from_image_message(outputs["panoptic"][stamp]), expected.panoptic)
        np.testing.assert_array_equal(bags.panoptic_from_image_message(frame.panoptic), expected.panoptic)
        semantic = outputs["semantic"][stamp]
        assert semantic.encoding == "mono8"
        np.testing.assert_array_equal(np.asarray(semantic.data).reshape(semantic.height, semantic.width),
                                      expected.semantic)
        detections = outputs["detections"][stamp].detections
        assert [(d.id, d.results[0].hypothesis.class_id) for d in detections] == \
            [(str(i.id), str(i.label_id)) for i in expected.instances]

    mosaic = cv2.imread(str(out / "mosaic.png"))
    assert mosaic.shape == (3 * 256, 3 * 512, 3)  # three frames across the drive: input | colouring | overlay


def test_compressed_only_mcap_bag(tmp_path, synth_root, tiny_checkpoint):
    """An MCAP bag with only a CompressedImage topic (as image_transport records) replays; the output bag
    keeps the input's storage."""
    from casnet_core.predictor import Predictor

    images, _ = val_images(synth_root)
    images = images[:2]
    bag = tmp_path / "compressed"
    stamps = write_bag(bag, images, storage="mcap", compressed="png", topic="/camera/image_raw/compressed")
    assert bags.image_topics(bag) == {"/camera/image_raw/compressed": bags.COMPRESSED_IMAGE_TYPE}

    predictor = Predictor.from_checkpoint(str(tiny_checkpoint), device="cpu")
    metrics = replay(bag, tmp_path / "out", predictor, progress=False)
    assert metrics["frames"]["processed"] == 2 and metrics["accuracy"] is None
    assert metrics["image_topic"] == "/camera/image_raw/compressed"
    assert bags.bag_storage(tmp_path / "out" / "bag") == "mcap"
    frames = read_topic(tmp_path / "out" / "bag", OUTPUT_TOPICS["instances"][0])
    for stamp, image in zip(stamps, images):  # PNG is lossless: the very pixels of the image
        assert instance_rows(frames[stamp].instances) == instance_rows(predictor.predict(image).instances)

    metrics = replay(bag, tmp_path / "out_jpeg", predictor, storage="sqlite3", max_frames=1, progress=False)
    assert metrics["frames"]["received"] == 1 and bags.bag_storage(tmp_path / "out_jpeg" / "bag") == "sqlite3"


def test_an_undecodable_frame_is_counted_and_skipped(tmp_path, synth_root, tiny_checkpoint):
    from casnet_core.predictor import Predictor

    images, ground_truth = val_images(synth_root)
    bag = tmp_path / "bag"
    with bags.BagWriter(bag) as writer:
        for i, (image, gt) in enumerate(zip(images, ground_truth)):
            stamp = T0 + i * PERIOD
            message = bags.rgb_to_image_message(image, "rgb8", bags.header_message(stamp, "camera"))
            if i == 1:  # the row padding says more bytes than the frame holds
                message.step += 4
            writer.add(bags.DEFAULT_IMAGE_TOPIC, bags.IMAGE_TYPE, stamp, message)
            writer.add_panoptic(bags.PANOPTIC_GT_TOPIC, stamp, gt)
    predictor = Predictor.from_checkpoint(str(tiny_checkpoint), device="cpu")
    metrics = replay(bag, tmp_path / "out", predictor, progress=False)
    assert metrics["frames"] == {"received": 3, "processed": 2, "dropped": 0, "failed": 1, "evaluated": 2}
    (failure,) = metrics["failures"]
    assert failure["index"] == 1 and "bytes" in failure["error"]
    assert metrics["accuracy"]["num_images"] == 2
    assert sorted(read_topic(tmp_path / "out" / "bag", OUTPUT_TOPICS["panoptic"][0])) == [T0, T0 + 2 * PERIOD]


# ------------------------------------------------------------------------------------------------ bad input
def _bad_bags(tmp_path):
    """name -> (bag path, extra arguments, expected part of the message)."""
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(3)]
    cases = {"missing": (tmp_path / "nothing_here", [], "no such file or folder")}
    (tmp_path / "notes.txt").write_text("not a bag")
    cases["text file"] = (tmp_path / "notes.txt", [], "is not a rosbag2")
    (tmp_path / "empty").mkdir()
    cases["empty folder"] = (tmp_path / "empty", [], "is not a rosbag2: no metadata.yaml")
    for storage in bags.STORAGES:
        path = tmp_path / f"truncated_{storage}"
        write_bag(path, images, storage=storage)
        (data,) = [f for f in path.iterdir() if f.suffix in (".db3", ".mcap")]
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
        cases[f"truncated {storage}"] = (path, [], "corrupt or truncated")
    with bags.BagWriter(tmp_path / "no_camera") as writer:
        writer.add_camera_info(bags.CAMERA_INFO_TOPIC, T0, np.eye(3), 8, 8)
        writer.add_panoptic(bags.PANOPTIC_GT_TOPIC, T0, np.zeros((8, 8)))
    cases["no camera topic"] = (tmp_path / "no_camera", [], "no camera image topic")
    write_bag(tmp_path / "good", images)
    cases["no such image topic"] = (tmp_path / "good", ["--image-topic", "/front/image"], "no topic /front/image")
    cases["no such gt topic"] = (tmp_path / "good", ["--gt-topic", "/front/gt"], "no topic /front/gt")
    cases["not a camera topic"] = (tmp_path / "good", ["--image-topic", bags.CAMERA_INFO_TOPIC], "not a camera image")
    with bags.BagWriter(tmp_path / "two_cameras") as writer:
        writer.add_image("/front/image_raw", T0, images[0])
        writer.add_compressed_image("/rear/image_raw/compressed", T0, images[1])
    cases["two cameras"] = (tmp_path / "two_cameras", [], "/front/image_raw, /rear/image_raw/compressed")
    return cases


def test_bad_bags_get_a_one_line_message_and_a_nonzero_exit(tmp_path, tiny_checkpoint, capsys):
    for name, (path, extra, expected) in _bad_bags(tmp_path).items():
        status = main(["replay", "--bag", str(path), "--out", str(tmp_path / "out"),
                       "--checkpoint", str(tiny_checkpoint), *extra])
        error = capsys.readouterr().err.strip()
        assert status == 2, name
        assert error.startswith("casnet replay: error: ") and "\n" not in error, (name, error)
        assert expected in error, (name, error)
    assert not (tmp_path / "out").exists()  # nothing was started


def test_pacing_options_need_live(tmp_path, capsys):
    assert main(["replay", "--bag", str(tmp_path), "--out", str(tmp_path / "o"), "--max-rate"]) == 2
    assert "--live" in capsys.readouterr().err
