"""Helpers of the ROS 2 node tests (one and several cameras): the node as its own process
(casnet_ros.live_replay.NodeProcess) and a client node over real DDS (casnet_ros.client), shared with the
benchmarks; camera images built as a driver would; the check that a frame's outputs equal the Predictor's.

Every test run gets its own ROS_DOMAIN_ID (derived from the pid) and discovery limited to this host,
so parallel runs and other ROS systems on the network do not see each other. Every participant uses
the shipped Fast DDS profile (config/fastdds_shm.xml; conftest.py sets it for the whole session, the
node process applies it itself), as on a vehicle.
"""

from __future__ import annotations

import array
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from casnet_ros import conversions
# Re-exported for the tests.
from casnet_ros.client import NODE_NAME, Client, diagnostic_values, isolated_domain_id, stamp_key  # noqa: F401
from casnet_ros.live_replay import NodeProcess, ros_environment  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_PARAMS = REPO_ROOT / "config" / "casnet_test.yaml"


def node_test_parameters() -> dict:
    """The parameters of config/casnet_test.yaml (the node's), to build the reference Predictor alike."""
    return yaml.safe_load(TEST_PARAMS.read_text())["/**"]["ros__parameters"]


def raw_image(rgb: np.ndarray, encoding: str, header: Header, row_padding: int = 0) -> Image:
    """A sensor_msgs/Image of ``rgb`` in ``encoding``; ``row_padding`` extra bytes per row (step > width*ch)."""
    pixels = {
        "rgb8": rgb, "bgr8": rgb[..., ::-1],
        "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
        "bgra8": np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 7, np.uint8)]),
        "mono8": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY),
    }[encoding]
    height, width = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).reshape(height, -1)
    padded = np.zeros((height, rows.shape[1] + row_padding), np.uint8)
    padded[:, : rows.shape[1]] = rows
    msg = Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                step=padded.shape[1])
    msg.data = array.array("B", padded.tobytes())  # array.array: the setter takes it without a per-byte check
    return msg


def assert_matches_prediction(outputs: dict, prediction, header: Header) -> None:
    """Every output equals the Predictor's result and carries the input's header."""
    for name, msg in outputs.items():
        assert msg.header == header, name
    panoptic = conversions.image_to_panoptic(outputs["panoptic"])
    np.testing.assert_array_equal(panoptic, prediction.panoptic)
    np.testing.assert_array_equal(conversions.image_to_mono8(outputs["semantic"]), prediction.semantic)

    frame = outputs["instances"]
    assert frame.mode == "panoptic"
    np.testing.assert_array_equal(conversions.image_to_panoptic(frame.panoptic), prediction.panoptic)
    assert [(i.id, i.class_id, i.class_name, i.area) for i in frame.instances] == [
        (p.id, p.label_id, p.class_name, p.area) for p in prediction.instances]
    np.testing.assert_array_equal(
        np.array([[i.score, i.x_min, i.y_min, i.x_max, i.y_max, i.centroid_x, i.centroid_y] for i in frame.instances],
                 np.float32).reshape(-1, 7),
        np.array([[p.score, *p.box, *p.centroid] for p in prediction.instances], np.float32).reshape(-1, 7))
    # Each instance is the segment of its id in the panoptic image.
    for instance in frame.instances:
        assert instance.area == int((panoptic == instance.id).sum())

    detections = outputs["detections"].detections
    assert [(d.id, d.results[0].hypothesis.class_id) for d in detections] == [
        (str(p.id), str(p.label_id)) for p in prediction.instances]
    for detection, instance in zip(detections, prediction.instances):
        x0, y0, x1, y1 = instance.box
        assert detection.header == header
        assert detection.results[0].hypothesis.score == pytest.approx(instance.score)
        assert (detection.bbox.center.position.x, detection.bbox.center.position.y) == pytest.approx(
            ((x0 + x1) / 2, (y0 + y1) / 2))
        assert (detection.bbox.size_x, detection.bbox.size_y) == pytest.approx((x1 - x0, y1 - y0))
