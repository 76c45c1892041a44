"""casnet_node over real rclpy and DDS: the node runs as its own process, a client node in this process
publishes generated street scenes and compares every output with the Predictor run here on the same
images (same checkpoint, CPU: equal results).

Needs the interface packages built into the venv (scripts/build_interfaces.sh, run by `make test`).
"""

from __future__ import annotations

import array
import ast
import json
import py_compile
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("casnet_msgs.msg", reason="casnet_msgs not built: run scripts/build_interfaces.sh")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs not built: run scripts/build_interfaces.sh")

from casnet_msgs.msg import PanopticFrame  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from ros_helpers import REPO_ROOT, Client, NodeProcess, diagnostic_values, stamp_key, isolated_domain_id  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from vision_msgs.msg import Detection2DArray, LabelInfo  # noqa: E402

from casnet_ros import conversions  # noqa: E402

HEIGHT, WIDTH = 256, 512
TEST_PARAMS = REPO_ROOT / "config" / "casnet_test.yaml"
OUTPUT_TOPICS = {
    "panoptic": Image, "semantic": Image, "instances": PanopticFrame, "detections": Detection2DArray,
    "overlay": Image,
}
# Upstream vision_msgs 4.x type hashes (RIHS01, from rosidl of the ros-perception/vision_msgs package):
# equal hashes mean our msg/vision_msgs interoperates with a ROS install's vision_msgs.
UPSTREAM_TYPE_HASHES = {
    "Detection2DArray": "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "LabelInfo": "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
    "VisionClass": "RIHS01_1e4a11f0fed50b5623cb8ff26ca0e37952a48a9c074d16f804b44e9164c2037a",
}


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def scenes():
    from casnet_core.synth import generate_scene

    return [generate_scene(seed, height=HEIGHT, width=WIDTH)[0] for seed in range(4)]


def node_test_parameters() -> dict:
    """The parameters of config/casnet_test.yaml (the node's), to build the reference Predictor alike."""
    return yaml.safe_load(TEST_PARAMS.read_text())["/**"]["ros__parameters"]


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    from casnet_core.predictor import Predictor

    thresholds = {k: v for k, v in node_test_parameters().items() if k in ("box_threshold", "nms_iou", "min_area",
                                                                      "stuff_area", "tie_margin")}
    return Predictor.from_checkpoint(tiny_checkpoint, device="cpu", **thresholds)


@pytest.fixture(scope="module")
def expected(predictor, scenes):
    """expected(i): the Predictor's result on scenes[i], computed once."""
    cache = {}

    def get(index: int):
        if index not in cache:
            cache[index] = predictor.predict(scenes[index])
        return cache[index]

    return get


@pytest.fixture(scope="module")
def domain_id():
    return isolated_domain_id()


@pytest.fixture(scope="module")
def node_process(tiny_checkpoint, domain_id, tmp_path_factory):
    process = NodeProcess(["--params-file", str(TEST_PARAMS), "-p", f"checkpoint:={tiny_checkpoint}"],
                          domain_id=domain_id, log_path=tmp_path_factory.mktemp("node") / "casnet_node.log")
    yield process
    code = process.stop()
    print(process.output())
    assert code == 0, f"casnet_node did not shut down cleanly (exit {code})"


@pytest.fixture(scope="module")
def client(node_process, domain_id):
    client = Client(domain_id)
    for name, msg_type in OUTPUT_TOPICS.items():
        client.record(f"/casnet/{name}", msg_type, key=name)
    client.record("/casnet/label_info", LabelInfo, key="label_info",
                  qos=QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL))
    client.record("/diagnostics", DiagnosticArray, key="diagnostics")
    client.image_publisher = client.node.create_publisher(Image, "/casnet/image", 10)
    client.compressed_publisher = client.node.create_publisher(CompressedImage, "/casnet/image/compressed", 10)
    client.set_parameters = client.node.create_client(SetParameters, "/casnet/set_parameters")
    # Ready = configured (label_info latched) and active (it subscribes to the image topics).
    ready = client.spin_until(
        lambda: client.messages("label_info") and client.image_publisher.get_subscription_count() > 0
        and client.compressed_publisher.get_subscription_count() > 0
        and all(client.node.count_publishers(f"/casnet/{name}") for name in OUTPUT_TOPICS), timeout=90)
    assert ready, f"casnet_node did not come up:\n{node_process.output()}"
    yield client
    client.close()


_frame_counter = iter(range(1, 1_000_000))


def make_header(client: Client) -> Header:
    """A fresh header: a unique stamp (the client's clock) and frame_id per frame."""
    return Header(stamp=client.node.get_clock().now().to_msg(), frame_id=f"camera_{next(_frame_counter)}")


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


def send_and_wait(client: Client, msg, publisher, outputs=("panoptic", "semantic", "instances", "detections"),
                  timeout: float = 30.0) -> dict:
    """Publishes ``msg`` and returns {output: message} of the outputs carrying its header.

    The frame is published again every ``resend_after`` seconds until answered: with a best-effort
    subscription DDS may lose a sample of several hundred kB on a loaded host, as a camera's would be.
    """
    key = stamp_key(msg.header)
    resend_after = 8.0

    def answered(name):
        return next((m for m in client.messages(name) if stamp_key(m.header) == key), None)

    deadline = time.monotonic() + timeout
    done = False
    while not done and time.monotonic() < deadline:
        publisher.publish(msg)
        done = client.spin_until(lambda: all(answered(name) is not None for name in outputs),
                                 min(resend_after, max(deadline - time.monotonic(), 0.0)))
    assert done, f"no {[n for n in outputs if answered(n) is None]} for frame {key}"
    return {name: answered(name) for name in outputs}


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


def set_parameters(client: Client, **values) -> list:
    """Sets parameters of the node through its real SetParameters service; returns the results."""
    request = SetParameters.Request()
    for name, value in values.items():
        if isinstance(value, bool):
            parameter_value = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        elif isinstance(value, int):
            parameter_value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
        elif isinstance(value, float):
            parameter_value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        else:
            parameter_value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        request.parameters.append(ParameterMsg(name=name, value=parameter_value))
    return client.call(client.set_parameters, request).results


def latest_diagnostics(client: Client, after: float) -> dict[str, str]:
    """The node's diagnostic values from a /diagnostics message that arrived after ``after``."""
    def found():
        return [diagnostic_values(msg) for arrival, msg in client.received.get("diagnostics", [])
                if arrival > after and diagnostic_values(msg) is not None]

    assert client.spin_until(lambda: bool(found()), timeout=10), "no /diagnostics from casnet"
    return found()[-1]


# ------------------------------------------------------------------------------- without the node
def test_vision_msgs_type_hashes_equal_upstream():
    import vision_msgs

    prefix = Path(sys.prefix).resolve()
    if prefix not in Path(vision_msgs.__file__).resolve().parents:
        pytest.skip("vision_msgs comes from a ROS install (the upstream package itself)")
    share = prefix / "share" / "vision_msgs"  # where scripts/build_interfaces.sh installed it
    for name, expected in UPSTREAM_TYPE_HASHES.items():
        description = json.loads((share / "msg" / f"{name}.json").read_text())
        hashes = {entry["type_name"]: entry["hash_string"] for entry in description["type_hashes"]}
        assert hashes[f"vision_msgs/msg/{name}"] == expected


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_image_to_rgb_is_a_view_of_the_message(encoding):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    msg = raw_image(rgb, encoding, Header(), row_padding=3)
    converted = conversions.image_to_rgb(msg)
    expected = np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2) if encoding == "mono8" else rgb
    np.testing.assert_array_equal(converted, expected)
    # No copy: the pixels are read in place from the message's buffer.
    assert np.shares_memory(converted, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("change, message", [
    (dict(encoding="16UC1"), "unsupported encoding"),
    (dict(step=2), "step"),
    (dict(height=6), "data holds"),  # the data of 5 rows announced as 6: truncated
])
def test_image_to_rgb_rejects_inconsistent_images(change, message):
    msg = raw_image(np.zeros((5, 7, 3), np.uint8), "rgb8", Header())
    for field, value in change.items():
        setattr(msg, field, value)
    with pytest.raises(conversions.ImageConversionError, match=message):
        conversions.image_to_rgb(msg)


def test_compressed_png_round_trip_is_exact():
    rgb = np.random.default_rng(1).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    msg = CompressedImage(format="png")
    msg.data = cv2.imencode(".png", rgb[..., ::-1])[1].tobytes()
    np.testing.assert_array_equal(conversions.compressed_to_rgb(msg), rgb)
    with pytest.raises(conversions.ImageConversionError):
        conversions.compressed_to_rgb(CompressedImage(format="jpeg", data=b"not an image"))


def test_launch_file_compiles_and_declares_its_arguments(tmp_path):
    # launch / launch_ros are not installable without a ROS install: compile and inspect it only.
    path = REPO_ROOT / "launch" / "casnet.launch.py"
    py_compile.compile(str(path), cfile=str(tmp_path / "launch.pyc"), doraise=True)
    tree = ast.parse(path.read_text())
    declared = {call.args[0].value for call in ast.walk(tree) if isinstance(call, ast.Call)
                and getattr(call.func, "id", None) == "DeclareLaunchArgument"}
    assert {"camera_topic", "cameras", "namespace", "params_file", "checkpoint", "device"} <= declared
    called = {getattr(call.func, "id", getattr(call.func, "attr", None))
              for call in ast.walk(tree) if isinstance(call, ast.Call)}
    assert "get_package_share_directory" in called and "Node" in called
    assert not {"eval", "exec", "ExecuteProcess", "Popen", "system"} & called

    # The camera list parser is plain Python: run it alone (launch itself is not importable here).
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "_cameras")
    namespace: dict = {}
    exec(compile(ast.Module(body=[function], type_ignores=[]), str(path), "exec"), namespace)
    cameras = namespace["_cameras"]
    assert cameras("", "/camera/image_raw") == [("", "/camera/image_raw")]
    assert cameras("front, rear=/sensing/rear/image_rect ,", "/unused") == [
        ("front", "/front/image_raw"), ("rear", "/sensing/rear/image_rect")]


def test_package_manifests_are_valid():
    from catkin_pkg.package import parse_package

    package = parse_package(str(REPO_ROOT / "package.xml"))
    package.validate()
    assert package.name == "casnet_ros" and package.package_format == 3
    depends = {d.name for d in package.exec_depends}
    assert {"rclpy", "lifecycle_msgs", "sensor_msgs", "std_msgs", "diagnostic_msgs", "vision_msgs",
            "casnet_msgs", "launch", "launch_ros", "python3-torch", "python3-opencv"} <= depends
    for interface_package in ("casnet_msgs", "vision_msgs"):
        parse_package(str(REPO_ROOT / "msg" / interface_package / "package.xml")).validate()


# ------------------------------------------------------------------------------ the node process
def test_missing_or_corrupt_checkpoint_is_fatal(tmp_path, domain_id):
    missing = tmp_path / "missing.pt"
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint")
    # Both at once: most of the time is the start of Python, torch and rclpy.
    processes = {path: NodeProcess(["--params-file", str(TEST_PARAMS), "-p", f"checkpoint:={path}"],
                                   domain_id=domain_id, log_path=tmp_path / f"{path.stem}.log")
                 for path in (missing, corrupt)}
    try:
        codes = {path: process.wait(timeout=90) for path, process in processes.items()}
    finally:
        for process in processes.values():
            process.stop()
    assert codes[missing] != 0 and codes[corrupt] != 0
    assert "checkpoint not found" in processes[missing].output() and str(missing) in processes[missing].output()
    assert "cannot load the CASNet checkpoint" in processes[corrupt].output()
    assert "is not a CASNet checkpoint" in processes[corrupt].output() or "cannot read" in processes[corrupt].output()


def test_label_info_is_latched(client, predictor):
    # The node came up with the parameter file: the reference Predictor uses the same thresholds.
    assert predictor.nms_iou == node_test_parameters()["nms_iou"]
    label_info = client.messages("label_info")[-1]
    class_map = {entry.class_id: entry.class_name for entry in label_info.class_map}
    space = predictor.class_space
    assert class_map == {0: "unlabeled", **dict(zip(space.label_ids, space.names))}
    assert class_map[26] == "car"
    assert label_info.threshold == pytest.approx(predictor.box_threshold)


@pytest.mark.parametrize("encoding, row_padding", [("rgb8", 0), ("bgr8", 16), ("bgra8", 0), ("mono8", 5)])
def test_outputs_equal_the_predictor(client, predictor, expected, scenes, encoding, row_padding):
    index = 1 if encoding == "bgr8" else 0
    header = make_header(client)
    outputs = send_and_wait(client, raw_image(scenes[index], encoding, header, row_padding), client.image_publisher)
    if encoding == "mono8":  # the node sees the grey image as three equal channels
        reference = predictor.predict(np.repeat(cv2.cvtColor(scenes[0], cv2.COLOR_RGB2GRAY)[..., None], 3, 2))
    else:
        reference = expected(index)
    assert_matches_prediction(outputs, reference, header)
    assert len(reference.instances) > 0, "a frame without instances would leave the instance outputs untested"


def test_compressed_input_equals_the_predictor(client, expected, scenes):
    header = make_header(client)
    msg = CompressedImage(header=header, format="png")
    msg.data = array.array("B", cv2.imencode(".png", scenes[2][..., ::-1])[1].tobytes())
    outputs = send_and_wait(client, msg, client.compressed_publisher)
    assert_matches_prediction(outputs, expected(2), header)


def test_overlay_is_the_colourised_prediction(client, expected, scenes):
    from casnet_core.visualize import colorize

    header = make_header(client)
    outputs = send_and_wait(client, raw_image(scenes[0], "rgba8", header), client.image_publisher,
                            outputs=("overlay",))
    overlay = outputs["overlay"]
    assert overlay.encoding == "rgb8" and overlay.header == header
    pixels = np.frombuffer(overlay.data, np.uint8).reshape(overlay.height, overlay.width, 3)
    np.testing.assert_array_equal(pixels, colorize(expected(0), scenes[0]))


def test_bad_frames_are_skipped_and_the_node_answers_the_next(client, node_process, expected, scenes):
    before = time.time()
    bad_encoding = raw_image(scenes[0], "rgb8", make_header(client))
    bad_encoding.encoding = "16UC1"
    truncated = raw_image(scenes[0], "rgb8", make_header(client))
    truncated.data = truncated.data[: len(truncated.data) // 2]
    for msg in (bad_encoding, truncated):
        client.image_publisher.publish(msg)
        client.spin_for(0.5)  # one at a time: the mailbox keeps only the newest frame
    header = make_header(client)
    outputs = send_and_wait(client, raw_image(scenes[1], "rgb8", header), client.image_publisher)
    assert_matches_prediction(outputs, expected(1), header)
    assert node_process.alive()
    for bad in (bad_encoding, truncated):
        assert not [m for m in client.messages("panoptic") if stamp_key(m.header) == stamp_key(bad.header)]
    diagnostics = latest_diagnostics(client, after=before)
    assert int(diagnostics["frames_rejected"]) >= 2
    assert "frame skipped" in node_process.output()


def test_parameters_apply_live(client, predictor, expected, scenes, tiny_checkpoint):
    from casnet_core.predictor import Predictor

    # An output switch: semantic off -> panoptic still arrives, semantic does not.
    assert all(result.successful for result in set_parameters(client, publish_semantic=False))
    header = make_header(client)
    send_and_wait(client, raw_image(scenes[0], "rgb8", header), client.image_publisher, outputs=("panoptic",))
    client.spin_for(0.5)
    assert not [m for m in client.messages("semantic") if stamp_key(m.header) == stamp_key(header)]
    assert set_parameters(client, publish_semantic=True)[0].successful

    # Thresholds: the node's output follows the new values exactly like a Predictor built with them.
    changed = dict(box_threshold=0.005, nms_iou=0.5, min_area=100)
    reference = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", **{**vars_of(predictor), **changed})
    changed_result = reference.predict(scenes[0])
    assert [i.id for i in changed_result.instances] != [i.id for i in expected(0).instances], \
        "the changed thresholds must change the result, or this test shows nothing"
    assert all(result.successful for result in set_parameters(client, **changed))
    try:
        header = make_header(client)
        outputs = send_and_wait(client, raw_image(scenes[0], "rgb8", header), client.image_publisher)
        assert_matches_prediction(outputs, changed_result, header)
        assert client.spin_until(
            lambda: client.messages("label_info")[-1].threshold == pytest.approx(0.005), timeout=5), \
            "label_info did not follow box_threshold"
    finally:
        restored = set_parameters(client, **{name: getattr(predictor, name) for name in changed})
        assert all(result.successful for result in restored)

    # Validation: out of range, wrong choice, and configure-time parameters while active are refused.
    assert not set_parameters(client, box_threshold=1.5)[0].successful
    assert not set_parameters(client, input_reliability="sometimes")[0].successful
    refused = set_parameters(client, device="cpu")[0]
    assert not refused.successful and "configure" in refused.reason


def vars_of(predictor) -> dict:
    return {name: getattr(predictor, name) for name in ("box_threshold", "nms_iou", "min_area", "stuff_area",
                                                        "tie_margin")}


def test_fast_camera_drops_frames_and_latency_stays_bounded(client, scenes):
    send_and_wait(client, raw_image(scenes[0], "rgb8", make_header(client)), client.image_publisher,
                  outputs=("panoptic",))
    burst_start = time.time()
    rate_hz, count = 30.0, 60
    headers = []
    start = time.monotonic()
    for index in range(count):
        header = make_header(client)
        headers.append(header)
        client.image_publisher.publish(raw_image(scenes[index % len(scenes)], "rgb8", header))
        client.spin_for(max(start + (index + 1) / rate_hz - time.monotonic(), 0.0))
    last_key = stamp_key(headers[-1])
    assert client.spin_until(
        lambda: any(stamp_key(m.header) == last_key for m in client.messages("panoptic")), timeout=60), \
        "the newest frame of the burst was never processed"

    sent_keys = {stamp_key(h) for h in headers}
    answered = [msg for msg in client.messages("panoptic") if stamp_key(msg.header) in sent_keys]
    assert len(answered) < count, "a node slower than the camera must drop frames"
    diagnostics = latest_diagnostics(client, after=time.time())
    assert int(diagnostics["frames_dropped"]) > 0
    # Newest frame only: a frame waits at most one running inference, then runs its own, whatever the
    # length of the burst (a queue would make the latency grow frame after frame, to seconds). The
    # node's own stamp -> publish latency and per-frame time (/diagnostics) give both sides, so a
    # loaded machine is no failure (nor is a DDS retransmission of an output to this client).
    windows = [values for arrival, msg in client.received["diagnostics"]
               if arrival > burst_start and (values := diagnostic_values(msg)) and "time_total_ms" in values]
    frame_time = max(float(values["time_total_ms"]) for values in windows) / 1e3
    latency = max(float(values["latency_ms_max"]) for values in windows) / 1e3
    assert latency < 2 * frame_time + 0.5, (latency, frame_time)


def test_lifecycle_transitions_through_the_services(client, scenes, expected):
    # What a lifecycle manager does (autostart: false leaves the node unconfigured for one).
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    change_state = client.node.create_client(ChangeState, "/casnet/change_state")
    get_state = client.node.create_client(GetState, "/casnet/get_state")

    def transition(transition_id: int) -> bool:
        return client.call(change_state, ChangeState.Request(transition=Transition(id=transition_id))).success

    def state() -> str:
        return client.call(get_state, GetState.Request()).current_state.label

    assert state() == "active"
    assert transition(Transition.TRANSITION_DEACTIVATE) and state() == "inactive"
    assert client.spin_until(lambda: client.image_publisher.get_subscription_count() == 0, timeout=10)
    header = make_header(client)
    client.image_publisher.publish(raw_image(scenes[0], "rgb8", header))
    client.spin_for(1.0)
    assert not [m for m in client.messages("panoptic") if stamp_key(m.header) == stamp_key(header)]

    # Unconfigured, configure-time parameters are accepted; configure + activate use them.
    assert transition(Transition.TRANSITION_CLEANUP) and state() == "unconfigured"
    assert set_parameters(client, input_reliability="best_effort")[0].successful
    assert transition(Transition.TRANSITION_CONFIGURE) and state() == "inactive"
    assert transition(Transition.TRANSITION_ACTIVATE) and state() == "active"
    assert client.spin_until(lambda: client.image_publisher.get_subscription_count() > 0, timeout=10)
    header = make_header(client)
    outputs = send_and_wait(client, raw_image(scenes[1], "rgb8", header), client.image_publisher)
    assert_matches_prediction(outputs, expected(1), header)
