"""One casnet_node process serving several cameras over real rclpy and DDS (``cameras`` parameter), the
batched Predictor entry point it runs, its newest-frame mailboxes, and the live settings staged per
request.

One batched node process is shared by the module's DDS tests (three cameras of different sizes, small
images); the last of them reconfigures it with a fourth camera. Every wait is on an observable effect
(a received message, a /diagnostics counter), never a sleep.
"""

from __future__ import annotations

import ast
import dataclasses
import threading
import time

import numpy as np
import pytest
import rclpy
from casnet_msgs.msg import PanopticFrame
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_helpers import (REPO_ROOT, TEST_PARAMS, Client, NodeProcess, assert_matches_prediction, isolated_domain_id,
                         node_test_parameters, raw_image, stamp_key)
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from casnet_ros import conversions
from casnet_ros.mailbox import LatestFrameMailboxes
from casnet_ros.statistics import STATUS_SUFFIX

# Three cameras of different sizes (each its own group of the batch: results exactly those of the frame
# alone); "side" reads its default topic.
SIZES = {"front": (128, 256), "rear": (96, 192), "side": (64, 160)}
TOPICS = {"front": "/cams/front/image", "rear": "/cams/rear/image", "side": "/side/casnet/image"}
OUTPUTS = {"panoptic": Image, "semantic": Image, "instances": PanopticFrame, "detections": Detection2DArray}
PREDICTOR_PARAMETERS = ("box_threshold", "nms_iou", "min_area", "stuff_area", "tie_margin", "max_instances",
                        "max_input_size")


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def scenes():
    """scenes[camera][i]: generated street scenes at the camera's size."""
    from casnet_core.synth import generate_scene

    return {camera: [generate_scene(10 * index + seed, height=h, width=w)[0] for seed in range(3)]
            for index, (camera, (h, w)) in enumerate({**SIZES, "extra": (80, 128)}.items())}


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    """A Predictor configured as the node under test (config/casnet_test.yaml)."""
    from casnet_core.predictor import Predictor

    parameters = {k: v for k, v in node_test_parameters().items() if k in PREDICTOR_PARAMETERS}
    return Predictor.from_checkpoint(tiny_checkpoint, device="cpu", **parameters)


@pytest.fixture(scope="module")
def domain_id():
    return 1 + (isolated_domain_id() + 50) % 100  # not the domain of test_ros_node's node in this process


@pytest.fixture(scope="module")
def node_process(tiny_checkpoint, domain_id, tmp_path_factory):
    arguments = ["--params-file", str(TEST_PARAMS), "-p", f"checkpoint:={tiny_checkpoint}",
                 "-p", "cameras:=[front, rear, side]", "-p", "batch_timeout_ms:=50.0",
                 "-p", f"front.image_topic:={TOPICS['front']}", "-p", f"rear.image_topic:={TOPICS['rear']}"]
    process = NodeProcess(arguments, domain_id=domain_id, log_path=tmp_path_factory.mktemp("node") / "node.log")
    yield process
    code = process.stop()
    print(process.output())
    assert code == 0, f"casnet_node did not shut down cleanly (exit {code})"


def watch_camera(client: Client, camera: str, topic: str) -> None:
    for name, msg_type in OUTPUTS.items():
        client.record(f"/{camera}/casnet/{name}", msg_type, key=f"{camera}/{name}")
    client.publishers[camera] = client.node.create_publisher(Image, topic, 10)


@pytest.fixture(scope="module")
def client(node_process, domain_id):
    client = Client(domain_id)
    client.publishers = {}
    for camera, topic in TOPICS.items():
        watch_camera(client, camera, topic)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    client.record("/front/casnet/label_info", LabelInfo, key="label_info", qos=latched)
    client.record("/diagnostics", DiagnosticArray, key="diagnostics")
    client.set_parameters = client.node.create_client(SetParameters, "/casnet/set_parameters")
    ready = client.spin_until(
        lambda: client.messages("label_info") and all(p.get_subscription_count() for p in client.publishers.values())
        and all(client.node.count_publishers(f"/{c}/casnet/{n}") for c in TOPICS for n in OUTPUTS), timeout=90)
    assert ready, f"casnet_node did not come up:\n{node_process.output()}"
    yield client
    client.close()


_frame_counter = iter(range(1, 1_000_000))


def send_round(client: Client, frames: dict[str, np.ndarray], timeout: float = 60.0) -> dict[str, dict]:
    """Publishes one frame per camera (own stamp and frame_id) and returns {camera: {output: message}} of the
    outputs carrying each frame's header on that camera's topics. Resends unanswered frames (best-effort input
    may lose a sample on a loaded host)."""
    messages = {}
    for camera, rgb in frames.items():
        header = Header(stamp=client.node.get_clock().now().to_msg(), frame_id=f"{camera}_{next(_frame_counter)}")
        messages[camera] = raw_image(rgb, "rgb8", header)

    def answered(camera: str, name: str):
        key = stamp_key(messages[camera].header)
        return next((m for m in client.messages(f"{camera}/{name}") if stamp_key(m.header) == key), None)

    def done(camera: str) -> bool:
        return all(answered(camera, name) is not None for name in OUTPUTS)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(done(camera) for camera in frames):
        for camera, msg in messages.items():
            if not done(camera):
                client.publishers[camera].publish(msg)
        client.spin_until(lambda: all(done(camera) for camera in frames), min(8.0, deadline - time.monotonic()))
    missing = [camera for camera in frames if not done(camera)]
    assert not missing, f"no outputs for the frames of {missing}"
    return {camera: {name: answered(camera, name) for name in OUTPUTS} for camera in frames}


def statuses(client: Client, after: float) -> dict[str, dict[str, str]]:
    """{status name: values} of the newest /diagnostics message that arrived after ``after``."""
    arrays = [msg for arrival, msg in client.received.get("diagnostics", []) if arrival > after]
    return {s.name: {v.key: v.value for v in s.values} for s in arrays[-1].status} if arrays else {}


def set_parameter_values(client: Client, **values) -> list:
    """SetParameters through the node's service: bools, strings and string arrays."""
    request = SetParameters.Request()
    for name, value in values.items():
        if isinstance(value, list):
            parameter_value = ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=value)
        elif isinstance(value, bool):
            parameter_value = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        else:
            parameter_value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        request.parameters.append(ParameterMsg(name=name.replace("__", "."), value=parameter_value))
    return client.call(client.set_parameters, request).results


# ------------------------------------------------------------------------------- without the node
def test_predict_batch_equals_predict_per_image(predictor, scenes):
    # Different sizes: each its own group, the very computation of predict. Same size: one batch of the
    # network and the post-processing; the convolutions may round differently at another batch size, so
    # maps, ids, classes, boxes and areas are equal and scores equal to float rounding.
    images = [scenes["front"][0], scenes["rear"][0], scenes["front"][1], scenes["side"][0], scenes["front"][2]]
    batch = predictor.predict_batch(images)
    assert len(batch) == len(images)
    for index, (image, result) in enumerate(zip(images, batch)):
        alone = predictor.predict(image)
        assert result.panoptic.shape == image.shape[:2]
        np.testing.assert_array_equal(result.panoptic, alone.panoptic)
        np.testing.assert_array_equal(result.semantic, alone.semantic)
        assert [(i.id, i.label_id, i.box, i.area) for i in result.instances] == [
            (i.id, i.label_id, i.box, i.area) for i in alone.instances]
        np.testing.assert_allclose([i.score for i in result.instances], [i.score for i in alone.instances],
                                   rtol=1e-4, atol=1e-7)
        if index in (1, 3):  # rear and side: alone in their group
            assert result.instances == alone.instances
    assert predictor.predict_batch([]) == []
    with pytest.raises(ValueError, match="RGB"):
        predictor.predict_batch([images[0], images[1][..., 0]])


def test_mailboxes_keep_the_newest_frame_per_camera_and_do_not_wait_for_a_silent_one():
    mailboxes = LatestFrameMailboxes(("front", "rear", "side"))
    mailboxes.put("front", 1)
    mailboxes.put("front", 2)  # replaces 1
    mailboxes.put("rear", 3)
    # "side" never sends: the batch comes without it once the others waited their bounded time.
    assert mailboxes.take(timeout=30.0, others_wait=0.05) == {"front": 2, "rear": 3}
    assert mailboxes.dropped == {"front": 1, "rear": 0, "side": 0}
    for camera, item in (("side", 4), ("rear", 5), ("front", 6)):
        mailboxes.put(camera, item)
    assert mailboxes.take(timeout=30.0, others_wait=30.0) == {"front": 6, "rear": 5, "side": 4}  # all there
    taker = threading.Thread(target=lambda: results.append(mailboxes.take(timeout=60.0)))
    results: list = []
    taker.start()
    mailboxes.close()
    taker.join()
    assert results == [{}]


def test_launch_file_starts_one_batched_process_for_the_cameras():
    # launch_ros is not installable without a ROS install: run the plain functions of the file alone.
    path = REPO_ROOT / "launch" / "casnet.launch.py"
    tree = ast.parse(path.read_text())
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)
                 and node.name in ("_cameras", "_batched_parameters")]
    namespace: dict = {}
    exec(compile(ast.Module(body=functions, type_ignores=[]), str(path), "exec"), namespace)
    cameras = namespace["_cameras"]("front, rear=/sensing/rear/image_rect", "/unused")
    assert namespace["_batched_parameters"](cameras) == {
        "cameras": ["front", "rear"], "front.image_topic": "/front/image_raw",
        "rear.image_topic": "/sensing/rear/image_rect"}
    declared = {call.args[0].value for call in ast.walk(tree) if isinstance(call, ast.Call)
                and getattr(call.func, "id", None) == "DeclareLaunchArgument"}
    assert "batched" in declared


def test_publish_switches_and_thresholds_reach_frames_as_one_set(tiny_checkpoint):
    # rclpy applies the parameters of one request one at a time: neither a switch nor a threshold may reach
    # a frame before the whole request is in; then all of them do, in one swap of the frozen set.
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from casnet_ros.node import CasnetNode

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=1 + (isolated_domain_id() + 70) % 100)
    node = CasnetNode(context=context, parameter_overrides=[Parameter("checkpoint", value=str(tiny_checkpoint)),
                                                            Parameter("device", value="cpu")])
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        before = node.live_settings
        assert "semantic" in before.enabled_outputs and "detections" in before.enabled_outputs
        results = node.set_parameters([Parameter("publish_semantic", value=False), Parameter("box_threshold", value=0.2),
                                       Parameter("publish_detections", value=False)])
        assert all(result.successful for result in results)
        assert node.live_settings is before  # nothing applied while the request is in progress
        deadline = time.monotonic() + 10
        while node.live_settings is before and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        after = node.live_settings
        assert after.enabled_outputs == before.enabled_outputs - {"semantic", "detections"}
        assert after.thresholds == dataclasses.replace(before.thresholds, box_threshold=0.2)
        with pytest.raises(dataclasses.FrozenInstanceError):
            after.enabled_outputs = frozenset()
        # Cameras are read at configure: refused while configured, checked always.
        assert not node.set_parameters([Parameter("cameras", value=["front", "front"])])[0].successful
        assert node.set_parameters([Parameter("cameras", value=["front", "rear"])])[0].successful
        assert node.start()
        refused = node.set_parameters([Parameter("cameras", value=["front"])])[0]
        assert not refused.successful and "configure" in refused.reason
    finally:
        node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown(context=context)


# ------------------------------------------------------------------------------- the batched node over DDS
def test_each_camera_gets_its_own_outputs_equal_to_the_frame_alone(client, predictor, scenes):
    answers = send_round(client, {camera: scenes[camera][0] for camera in SIZES})
    for camera, outputs in answers.items():
        header = outputs["panoptic"].header
        assert header.frame_id.startswith(camera + "_")
        assert (outputs["panoptic"].height, outputs["panoptic"].width) == SIZES[camera]
        # What the single-camera node gives for this frame (test_ros_node: the Predictor's result, bit for bit).
        assert_matches_prediction(outputs, predictor.predict(scenes[camera][0]), header)
    # No camera's frame shows up on another camera's topics.
    for camera in SIZES:
        for name in OUTPUTS:
            assert all(m.header.frame_id.startswith(camera + "_") for m in client.messages(f"{camera}/{name}"))


def test_a_camera_that_stops_does_not_stop_the_others(client, predictor, scenes):
    send_round(client, {camera: scenes[camera][1] for camera in SIZES})
    start = time.time()
    # "side" sends a malformed frame (a buffer far too short), rejected alone, then falls silent; front and rear
    # keep being answered, each frame with its own result.
    bad = Image(header=Header(frame_id="side_bad"), height=64, width=160, encoding="rgb8", step=480, data=[0] * 10)

    def side_rejected() -> bool:
        return int(statuses(client, after=start).get(f"/side/casnet{STATUS_SUFFIX}", {}).get("frames_rejected", 0)) > 0

    for _ in range(5):  # best-effort input: resent until the node has seen it
        client.publishers["side"].publish(bad)
        if client.spin_until(side_rejected, timeout=8):
            break
    assert side_rejected()
    for index in (2, 0):
        answers = send_round(client, {"front": scenes["front"][index], "rear": scenes["rear"][index]})
        for camera, outputs in answers.items():
            assert_matches_prediction(outputs, predictor.predict(scenes[camera][index]), outputs["panoptic"].header)

    # /diagnostics: one status per camera under the name its own node would have, and the process's totals.
    def counted() -> dict:
        found = statuses(client, after=start)
        processed = {camera: int(found.get(f"/{camera}/casnet{STATUS_SUFFIX}", {}).get("frames_processed", 0))
                     for camera in SIZES}
        return found if processed["front"] >= 3 and processed["rear"] >= 3 else {}

    assert client.spin_until(lambda: bool(counted()), timeout=30), statuses(client, after=start)
    found = counted()
    side = found[f"/side/casnet{STATUS_SUFFIX}"]
    total = found[f"/casnet{STATUS_SUFFIX}"]
    assert int(side["frames_processed"]) < int(found[f"/front/casnet{STATUS_SUFFIX}"]["frames_processed"])
    assert int(total["frames_processed"]) == sum(
        int(found[f"/{camera}/casnet{STATUS_SUFFIX}"]["frames_processed"]) for camera in SIZES)
    # Frames per batch, in the windows that processed any (1 to 3 here: how many cameras' frames were waiting).
    sizes = [float(s.values[-1].value) for arrival, msg in client.received["diagnostics"] if arrival > start
             for s in msg.status if s.name == f"/casnet{STATUS_SUFFIX}" and s.values[-1].key == "batch_size_mean"]
    assert sizes and all(1.0 <= size <= 3.0 for size in sizes)
    assert all(found[f"/{camera}/casnet{STATUS_SUFFIX}"]["frames_failed"] == "0" for camera in SIZES)
    assert [found[f"/{camera}/casnet{STATUS_SUFFIX}"]["frames_rejected"] for camera in ("front", "rear")] == ["0", "0"]


def test_a_camera_added_by_parameter_at_configure_time(client, predictor, scenes):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    change_state = client.node.create_client(ChangeState, "/casnet/change_state")

    def transition(transition_id: int) -> bool:
        return client.call(change_state, ChangeState.Request(transition=Transition(id=transition_id))).success

    # Refused while configured; accepted once cleaned up; its topic parameter exists once the request is in.
    assert not set_parameter_values(client, cameras=["front", "rear", "side", "extra"])[0].successful
    assert transition(Transition.TRANSITION_DEACTIVATE) and transition(Transition.TRANSITION_CLEANUP)
    assert set_parameter_values(client, cameras=["front", "rear", "side", "extra"])[0].successful
    assert set_parameter_values(client, extra__image_topic="/cams/extra/image")[0].successful
    assert transition(Transition.TRANSITION_CONFIGURE) and transition(Transition.TRANSITION_ACTIVATE)
    watch_camera(client, "extra", "/cams/extra/image")
    assert client.spin_until(lambda: client.publishers["extra"].get_subscription_count() > 0
                             and all(client.node.count_publishers(f"/extra/casnet/{n}") for n in OUTPUTS), timeout=30)
    answers = send_round(client, {"extra": scenes["extra"][0], "front": scenes["front"][1]})
    for camera, outputs in answers.items():
        assert_matches_prediction(outputs, predictor.predict(scenes[camera][0 if camera == "extra" else 1]),
                                  outputs["panoptic"].header)
    assert conversions.image_to_panoptic(answers["extra"]["panoptic"]).shape == (80, 128)


def test_the_parameter_file_sets_every_parameter_of_the_node():
    import yaml

    from casnet_ros.parameters import PARAMETERS

    shipped = yaml.safe_load((REPO_ROOT / "config" / "casnet.yaml").read_text())["/**"]["ros__parameters"]
    assert set(shipped) == set(PARAMETERS)
