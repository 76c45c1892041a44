"""casnet_node with tracking on, over real DDS: an object keeps its panoptic id from frame to frame (in ~/panoptic,
~/instances and Detection2D.id), exactly as casnet_core.tracking.Tracker numbers the Predictor's instances; a stamp
going back, and a deactivate / activate, start the numbering afresh."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from casnet_msgs.msg import PanopticFrame
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from casnet_core.tracking import Tracker, box_iou
from casnet_ros import conversions
from ros_helpers import TEST_PARAMS, Client, NodeProcess, node_test_parameters, raw_image, stamp_key

HEIGHT, WIDTH = 256, 512
# Own domain: the other node tests take 1 + pid % 100.
DOMAIN_ID = 101 + os.getpid() % 100
PREDICTOR_PARAMETERS = ("box_threshold", "nms_iou", "min_area", "stuff_area", "tie_margin", "max_instances",
                        "max_input_size")


@pytest.fixture(scope="module")
def frames():
    """Scene 0, then scene 0 with its left half painted grey: the (random-weights) network's instances on the right
    stay about where they were, the others change, so the per-frame numbering changes and tracking keeps ids."""
    from casnet_core.synth import generate_scene

    scene = generate_scene(0, height=HEIGHT, width=WIDTH)[0]
    half = scene.copy()
    half[:, : WIDTH // 2] = 128
    return [scene, half]


@pytest.fixture(scope="module")
def predictions(tiny_checkpoint, frames):
    from casnet_core.predictor import Predictor

    parameters = {k: v for k, v in node_test_parameters().items() if k in PREDICTOR_PARAMETERS}
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", **parameters)
    return [predictor.predict(frame) for frame in frames]


@pytest.fixture(scope="module")
def client(tiny_checkpoint, tmp_path_factory):
    process = NodeProcess(["--params-file", str(TEST_PARAMS), "-p", f"checkpoint:={tiny_checkpoint}",
                           "-p", "tracking:=true"],
                          domain_id=DOMAIN_ID, log_path=tmp_path_factory.mktemp("node") / "casnet_node.log")
    client = Client(DOMAIN_ID)
    client.record("/casnet/instances", PanopticFrame, key="instances")
    client.record("/casnet/detections", Detection2DArray, key="detections")
    from sensor_msgs.msg import Image

    client.image_publisher = client.node.create_publisher(Image, "/casnet/image", 10)
    ready = client.spin_until(lambda: client.image_publisher.get_subscription_count() > 0
                              and client.node.count_publishers("/casnet/instances") > 0, timeout=120)
    assert ready, f"casnet_node did not come up:\n{process.output()}"
    yield client
    client.close()
    code = process.stop()
    print(process.output())
    assert code == 0, f"casnet_node did not shut down cleanly (exit {code})"


_names = iter(range(1_000_000))


def send(client: Client, rgb: np.ndarray, stamp_s: int, timeout: float = 60.0):
    """Publishes a frame stamped ``stamp_s`` and returns its (PanopticFrame, Detection2DArray)."""
    header = Header(stamp=Time(sec=stamp_s, nanosec=0), frame_id=f"camera_{next(_names)}")
    msg = raw_image(rgb, "rgb8", header)
    key = stamp_key(header)

    def answer(name):
        return next((m for m in client.messages(name) if stamp_key(m.header) == key), None)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.image_publisher.publish(msg)  # again after a while: best effort may lose a large sample
        if client.spin_until(lambda: answer("instances") and answer("detections"), 8.0):
            return answer("instances"), answer("detections")
    raise AssertionError(f"no answer to frame {key}")


def ids_of(frame, detections):
    ids = [i.id for i in frame.instances]
    assert [d.id for d in detections.detections] == [str(i) for i in ids]  # Detection2D.id is the track id
    panoptic = conversions.image_to_panoptic(frame.panoptic)
    assert sorted(ids) == sorted(int(v) for v in np.unique(panoptic) if v >= 1000)  # the map carries them too
    assert len(set(ids)) == len(ids)
    assert all(i // 1000 == instance.class_id for i, instance in zip(ids, frame.instances))
    return ids


def expected_ids(frames, predictions, *order):
    """The ids a fresh Tracker gives the last of the frames ``order`` (indices into ``frames`` and their
    ``predictions``) after the others, given their images as the node gives them (the instances' colours)."""
    tracker = Tracker()
    return [[i.id for i in tracker.track(predictions[k], image=frames[k]).instances] for k in order][-1]


def test_ids_follow_the_objects_and_restart_when_stamps_go_back(client, frames, predictions):
    first, second = predictions
    assert first.instances and second.instances

    ids_1 = ids_of(*send(client, frames[0], stamp_s=100))
    ids_2 = ids_of(*send(client, frames[1], stamp_s=101))
    assert ids_1 == expected_ids(frames, predictions, 0)
    assert ids_2 == expected_ids(frames, predictions, 0, 1)
    # The same object keeps its id: an instance of the second frame on the box of one of the first (same class,
    # box IoU >= 0.7) has that one's id.
    boxes_1 = np.array([i.box for i in first.instances])
    overlap = box_iou(np.array([i.box for i in second.instances]), boxes_1)
    same = [(row, int(overlap[row].argmax())) for row in range(len(second.instances))
            if overlap[row].max() >= 0.7
            and second.instances[row].label_id == first.instances[overlap[row].argmax()].label_id]
    assert same
    assert all(ids_2[row] == ids_1[column] for row, column in same)
    # ...which per-frame numbering would not give: the test frames are built so that they differ.
    fresh = expected_ids(frames, predictions, 1)
    assert fresh != ids_2

    # The bag starts again: stamp 50 < 101. The second frame is numbered as if it came first.
    assert ids_of(*send(client, frames[1], stamp_s=50)) == fresh
    # Time goes on from there: tracked again (the same frame keeps the ids it just got).
    assert ids_of(*send(client, frames[1], stamp_s=51)) == fresh


def test_deactivate_and_activate_start_afresh(client, frames, predictions):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    # So that a tracker kept over the activation would show:
    assert expected_ids(frames, predictions, 1) != expected_ids(frames, predictions, 0, 1)
    send(client, frames[0], stamp_s=1)  # earlier than any stamp before: starts afresh, whatever came before
    assert ids_of(*send(client, frames[1], stamp_s=2)) == expected_ids(frames, predictions, 0, 1)
    change_state = client.node.create_client(ChangeState, "/casnet/change_state")
    for transition in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_ACTIVATE):
        assert client.call(change_state, ChangeState.Request(transition=Transition(id=transition))).success
    assert client.spin_until(lambda: client.image_publisher.get_subscription_count() > 0, timeout=10)
    # A later stamp, but a new activation: the tracks of the one before are gone.
    assert ids_of(*send(client, frames[1], stamp_s=3)) == expected_ids(frames, predictions, 1)


def test_every_track_parameter_reaches_the_tracker():
    from casnet_ros.tracking_parameters import TRACKING_PARAMETERS, tracker_factory

    values = {name: default for name, (default, _) in TRACKING_PARAMETERS.items()}
    values.update(track_appearance_scale=25.0, track_distance_gate=2.0, track_max_age=9)
    tracker = tracker_factory(values.__getitem__)()
    assert (tracker.appearance_scale, tracker.distance_gate, tracker.max_age) == (25.0, 2.0, 9)
    values["tracking"] = False
    assert tracker_factory(values.__getitem__) is None
