"""casnet_node over real rclpy and DDS: the node runs as its own process, a client node in this process
publishes generated street scenes and compares every output with the Predictor run here on the same
images (same checkpoint, CPU: equal results).

Needs rclpy and the interface packages built into the venv (scripts/build_interfaces.sh, run by
`make test`): without them these tests fail (an import error), they are not skipped.
"""

from __future__ import annotations

import array
import ast
import dataclasses
import json
import py_compile
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from casnet_msgs.msg import PanopticFrame
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_helpers import (REPO_ROOT, TEST_PARAMS, Client, NodeProcess, assert_matches_prediction, diagnostic_values,
                         isolated_domain_id, node_test_parameters, raw_image, stamp_key)
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from casnet_ros import conversions

HEIGHT, WIDTH = 256, 512
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


PREDICTOR_PARAMETERS = ("box_threshold", "nms_iou", "min_area", "stuff_area", "tie_margin", "max_instances",
                        "max_input_size")


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    """A Predictor configured as the node under test (config/casnet_test.yaml)."""
    from casnet_core.predictor import Predictor

    parameters = {k: v for k, v in node_test_parameters().items() if k in PREDICTOR_PARAMETERS}
    return Predictor.from_checkpoint(tiny_checkpoint, device="cpu", **parameters)


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


def subscribe_outputs(client: Client) -> None:
    client.output_subscriptions = {name: client.record(f"/casnet/{name}", msg_type, key=name)
                                   for name, msg_type in OUTPUT_TOPICS.items()}


@pytest.fixture(scope="module")
def client(node_process, domain_id):
    client = Client(domain_id)
    subscribe_outputs(client)
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


def wait_for_diagnostics(client: Client, condition, timeout: float) -> dict[str, str] | None:
    """The node's diagnostic values from the first /diagnostics message from now on that meets ``condition``
    (None if none does within ``timeout``)."""
    start = time.time()

    def found():
        return [values for arrival, msg in client.received.get("diagnostics", [])
                if arrival > start and (values := diagnostic_values(msg)) is not None and condition(values)]

    client.spin_until(lambda: bool(found()), timeout=timeout)
    return (found() or [None])[0]


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


def test_panoptic_image_round_trip():
    # 16UC1 while the ids fit (they do below 1000 instances per class), 32SC1 beyond; read back alike.
    panoptic = np.array([[0, 7, 26000], [26001, 33999, 24003]], np.int32)
    image = conversions.panoptic_to_image(panoptic, Header(frame_id="cam"))
    assert (image.encoding, image.step, len(image.data)) == ("16UC1", 6, 12) and image.header.frame_id == "cam"
    np.testing.assert_array_equal(conversions.image_to_panoptic(image), panoptic)
    wide = panoptic.copy()
    wide[0, 0] = 70000
    image = conversions.panoptic_to_image(wide, Header())
    assert image.encoding == "32SC1"
    np.testing.assert_array_equal(conversions.image_to_panoptic(image), wide)
    with pytest.raises(conversions.ImageConversionError, match="16UC1"):
        conversions.image_to_panoptic(conversions.array_to_image(np.zeros((2, 2), np.uint8), "mono8", Header()))


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
    # Each node process gets the Fast DDS profile in its environment.
    node_call = next(call for call in ast.walk(tree)
                     if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Node")
    assert "additional_env" in {keyword.arg for keyword in node_call.keywords}
    assert "large_image_environment" in called

    # The camera list parser is plain Python: run it alone (launch itself is not importable here).
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "_cameras")
    namespace: dict = {}
    exec(compile(ast.Module(body=[function], type_ignores=[]), str(path), "exec"), namespace)
    cameras = namespace["_cameras"]
    assert cameras("", "/camera/image_raw") == [("", "/camera/image_raw")]
    assert cameras("front, rear=/sensing/rear/image_rect ,", "/unused") == [
        ("front", "/front/image_raw"), ("rear", "/sensing/rear/image_rect")]


def test_the_fast_dds_profile_has_a_64_mb_shared_memory_segment_and_udp():
    import xml.etree.ElementTree as ET

    from casnet_ros import transport

    environment = transport.large_image_environment({})
    # The variable the installed Fast DDS reads: 3.x (Kilted, these wheels) and 2.x (Humble, Jazzy).
    assert set(environment) == {"FASTDDS_DEFAULT_PROFILES_FILE"}
    assert set(transport.large_image_environment({"ROS_DISTRO": "humble"})) == {"FASTRTPS_DEFAULT_PROFILES_FILE"}
    assert set(transport.large_image_environment({"ROS_DISTRO": "jazzy"})) == {"FASTRTPS_DEFAULT_PROFILES_FILE"}
    profile = Path(environment["FASTDDS_DEFAULT_PROFILES_FILE"])
    assert profile == transport.fastdds_profile_path() and profile.is_file()
    ns = {"dds": "http://www.eprosima.com"}
    root = ET.parse(profile).getroot()
    transports = {d.findtext("dds:transport_id", namespaces=ns): d
                  for d in root.iterfind(".//dds:transport_descriptor", ns)}
    kinds = {d.findtext("dds:type", namespaces=ns): d for d in transports.values()}
    assert set(kinds) == {"SHM", "UDPv4"}
    assert int(kinds["SHM"].findtext("dds:segment_size", namespaces=ns)) == 64 * 1024 * 1024
    participant = root.find(".//dds:participant", ns)
    assert participant.get("is_default_profile") == "true"
    assert {t.text for t in participant.iterfind(".//dds:userTransports/dds:transport_id", ns)} == set(transports)
    assert participant.findtext(".//dds:useBuiltinTransports", namespaces=ns) == "false"
    # A profile the user chose, or another RMW, is left alone.
    assert transport.large_image_environment({"FASTRTPS_DEFAULT_PROFILES_FILE": "/mine.xml"}) == {}
    assert transport.large_image_environment({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) == {}
    ET.parse(REPO_ROOT / "config" / "cyclonedds.xml")  # the documented Cyclone DDS equivalent is well-formed


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


def test_empty_checkpoint_means_the_default_model(tmp_path, domain_id):
    node = NodeProcess(["--params-file", str(TEST_PARAMS), "-p", 'checkpoint:=""'], domain_id=domain_id,
                       log_path=tmp_path / "default.log")
    try:
        deadline = time.monotonic() + 120
        while "configured:" not in node.output() and node.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        output = node.output()
    finally:
        node.stop()
    assert "using the default model" in output and "casnet_default.pt" in output, output
    assert "configured: checkpoint" in output, output


def test_precision_reaches_the_predictor_and_a_wrong_one_is_refused(tmp_path, domain_id):
    # Both at once, as above. bf16 on the CPU: the weights cast, PyTorch (backend auto's choice for half
    # precision); cuda_graph asked for on the CPU is ignored, and the log says so.
    arguments = {"bf16": ["-p", "precision:=bf16", "-p", "cuda_graph:=true"], "fp64": ["-p", "precision:=fp64"]}
    processes = {name: NodeProcess(["--params-file", str(TEST_PARAMS), *extra], domain_id=domain_id,
                                   log_path=tmp_path / f"{name}.log") for name, extra in arguments.items()}
    try:
        deadline = time.monotonic() + 120
        while "configured:" not in processes["bf16"].output() and processes["bf16"].alive() \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        refused_code = processes["fp64"].wait(timeout=90)
        outputs = {name: process.output() for name, process in processes.items()}
    finally:
        for process in processes.values():
            process.stop()
    assert "precision bf16, cuda_graph False" in outputs["bf16"] and "backend torch" in outputs["bf16"], outputs["bf16"]
    assert refused_code != 0
    assert "precision must be one of ('fp32', 'fp16', 'bf16', 'int8'), not 'fp64'" in outputs["fp64"], outputs["fp64"]


def test_label_info_is_latched(client, predictor):
    # A subscriber that joins now, long after the node published its label_info at configure time, gets it.
    late = client.record("/casnet/label_info", LabelInfo, key="label_info_late",
                         qos=QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                        durability=DurabilityPolicy.TRANSIENT_LOCAL))
    try:
        assert client.spin_until(lambda: client.messages("label_info_late"), timeout=20), \
            "a late subscriber did not get label_info: it is not latched (transient local)"
    finally:
        client.node.destroy_subscription(late)
    label_info = client.messages("label_info_late")[-1]
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


def camera_frame(rgb: np.ndarray, encoding: str, header: Header) -> tuple[Image, np.ndarray]:
    """A sensor_msgs/Image of ``rgb`` as a camera of ``encoding`` sends it (with padded rows), and the RGB image
    OpenCV itself decodes from those bytes (cv_bridge's conversion)."""
    height, width = rgb.shape[:2]
    if encoding == "yuv422":  # UYVY
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_UYVY)
        decoded = cv2.cvtColor(pixels, cv2.COLOR_YUV2RGB_UYVY)
    elif encoding == "bayer_grbg8":
        pixels = np.empty((height, width), np.uint8)
        for index, channel in enumerate((1, 0, 2, 1)):  # G R / B G
            row, column = divmod(index, 2)
            pixels[row::2, column::2] = rgb[row::2, column::2, channel]
        decoded = cv2.cvtColor(pixels, cv2.COLOR_BayerGB2RGB)
    elif encoding == "bgr16":  # big-endian, as a dc1394 camera sends it
        pixels = (rgb[..., ::-1].astype(np.uint16) * 257 + 100).astype(">u2")
        decoded = np.rint(cv2.cvtColor(pixels.astype(np.uint16), cv2.COLOR_BGR2RGB) * (255 / 65535)).astype(np.uint8)
    else:
        raise ValueError(encoding)
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, -1)
    padded = np.zeros((height, rows.shape[1] + 8), np.uint8)
    padded[:, : rows.shape[1]] = rows
    msg = Image(header=header, height=height, width=width, encoding=encoding,
                is_bigendian=int(encoding == "bgr16"), step=padded.shape[1])
    msg.data = array.array("B", padded.tobytes())
    return msg, decoded


@pytest.mark.parametrize("encoding", ["yuv422", "bayer_grbg8", "bgr16"])
def test_camera_encodings_equal_the_predictor_on_opencvs_conversion(client, predictor, scenes, encoding):
    header = make_header(client)
    msg, decoded = camera_frame(scenes[3], encoding, header)
    outputs = send_and_wait(client, msg, client.image_publisher)
    assert_matches_prediction(outputs, predictor.predict(decoded), header)


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
    bad_encoding = raw_image(scenes[0], "rgb8", make_header(client))
    bad_encoding.encoding = "16UC1"
    truncated = raw_image(scenes[0], "rgb8", make_header(client))
    truncated.data = truncated.data[: len(truncated.data) // 2]
    for msg in (bad_encoding, truncated):
        # One at a time (the mailbox keeps only the newest frame): each is sent (again, should best effort lose
        # it) until the node's rejected counter in /diagnostics shows that it was taken and refused.
        rejected_before = int(latest_diagnostics(client, after=time.time())["frames_rejected"])
        for _ in range(5):
            client.image_publisher.publish(msg)
            if wait_for_diagnostics(client, lambda d: int(d["frames_rejected"]) > rejected_before, timeout=8):
                break
        else:
            pytest.fail(f"the node never counted the bad frame {msg.header.frame_id} as rejected")
    header = make_header(client)
    outputs = send_and_wait(client, raw_image(scenes[1], "rgb8", header), client.image_publisher)
    assert_matches_prediction(outputs, expected(1), header)
    assert node_process.alive()
    for bad in (bad_encoding, truncated):
        assert not [m for m in client.messages("panoptic") if stamp_key(m.header) == stamp_key(bad.header)]
    assert "frame skipped" in node_process.output()
    diagnostics = latest_diagnostics(client, after=time.time())
    # NaN / inf in the heads are counted (none from this finite model).
    assert diagnostics["frames_with_nonfinite_outputs"] == "0" and diagnostics["nonfinite_values_last"] == "0"


def test_parameters_apply_live(client, predictor, expected, scenes, tiny_checkpoint):
    from casnet_core.predictor import Predictor

    # An output switch: semantic off -> panoptic still arrives, semantic does not.
    assert all(result.successful for result in set_parameters(client, publish_semantic=False))
    header = make_header(client)
    send_and_wait(client, raw_image(scenes[0], "rgb8", header), client.image_publisher, outputs=("panoptic",))
    client.spin_for(0.5)
    assert not [m for m in client.messages("semantic") if stamp_key(m.header) == stamp_key(header)]
    assert set_parameters(client, publish_semantic=True)[0].successful

    # Thresholds, several in one request: the node's output follows the new values exactly like a
    # Predictor built with them (max_instances caps the many seeds of box_threshold 0.005).
    changed = dict(box_threshold=0.005, nms_iou=0.5, min_area=100, max_instances=4)
    reference = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", **{**vars_of(predictor), **changed})
    changed_result = reference.predict(scenes[0])
    assert len(changed_result.instances) == 4, "the cap must bind, or this test shows nothing"
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
    assert not set_parameters(client, max_instances=1000)[0].successful  # ids would leave the class's range
    assert not set_parameters(client, input_reliability="sometimes")[0].successful
    refused = set_parameters(client, device="cpu")[0]
    assert not refused.successful and "configure" in refused.reason


def vars_of(predictor) -> dict:
    return {name: getattr(predictor, name) for name in PREDICTOR_PARAMETERS}


def test_fast_camera_drops_frames_and_answers_the_newest(client, scenes):
    send_and_wait(client, raw_image(scenes[0], "rgb8", make_header(client)), client.image_publisher,
                  outputs=("panoptic",))
    before = latest_diagnostics(client, after=time.time())
    # A camera faster than this node on this machine, whatever its speed: frames 4 times as often as the node's
    # own latency for one (measured just now, in /diagnostics).
    interval = float(before["latency_ms_last"]) / 1000 / 4
    count = 40
    headers = []
    for index in range(count):
        header = make_header(client)
        headers.append(header)
        client.image_publisher.publish(raw_image(scenes[index % len(scenes)], "rgb8", header))
        client.spin_for(interval)
    last_key = stamp_key(headers[-1])
    assert client.spin_until(
        lambda: any(stamp_key(m.header) == last_key for m in client.messages("panoptic")), timeout=60), \
        "the newest frame of the burst was never processed"

    # Newest frame only: frames that arrive while one runs replace each other in the mailbox (counted as
    # dropped) instead of queueing; the answered ones come out in the order they were sent.
    sent_order = {stamp_key(h): index for index, h in enumerate(headers)}
    answered = [sent_order[stamp_key(m.header)] for m in client.messages("panoptic")
                if stamp_key(m.header) in sent_order]
    assert len(answered) < count, "a node slower than the camera must drop frames"
    assert answered == sorted(answered) and len(set(answered)) == len(answered)
    assert wait_for_diagnostics(client, lambda d: int(d["frames_dropped"]) > int(before["frames_dropped"]), timeout=10), \
        "the frames replaced in the mailbox must be counted as dropped"


def test_node_idles_while_nothing_subscribes(client, scenes):
    def diagnostics_where(condition, after: float) -> dict[str, str] | None:
        found = [values for arrival, msg in client.received.get("diagnostics", [])
                 if arrival > after and (values := diagnostic_values(msg)) is not None and condition(values)]
        return found[-1] if found else None

    for subscription in client.output_subscriptions.values():
        client.node.destroy_subscription(subscription)
    try:
        start = time.time()
        assert client.spin_until(lambda: diagnostics_where(lambda d: d["state"] == "idle", start), timeout=20), \
            "the node did not notice that nothing subscribes to its outputs"
        before = diagnostics_where(lambda d: d["state"] == "idle", start)
        # Frames keep coming: the node counts them and runs nothing.
        sent = 0
        while sent < 40 and not diagnostics_where(
                lambda d: int(d["frames_idle"]) >= int(before["frames_idle"]) + 3, start):
            client.image_publisher.publish(raw_image(scenes[sent % len(scenes)], "rgb8", make_header(client)))
            sent += 1
            client.spin_for(0.25)
        after = diagnostics_where(lambda d: int(d["frames_idle"]) >= int(before["frames_idle"]) + 3, start)
        assert after is not None, f"{sent} frames sent, none counted as idle"
        assert after["frames_processed"] == before["frames_processed"] and after["state"] == "idle"
    finally:
        subscribe_outputs(client)
        resumed = time.time()
        assert client.spin_until(lambda: diagnostics_where(lambda d: d["state"] == "active", resumed), timeout=20)


def test_a_full_resolution_best_effort_frame_is_delivered(client, predictor, scenes):
    # 1024x2048 rgb8 is 6 MB: with Fast DDS's defaults a best-effort sample that size is lost (it goes over
    # UDP in fragments); the shipped profile's 64 MB shared memory delivers it, to the node and back from
    # it (the 4 MB panoptic image to a best-effort reader). The node's max_input_size (512) keeps the
    # network at 256x512; the outputs are at the camera's size.
    big = cv2.resize(scenes[2], (2048, 1024), interpolation=cv2.INTER_LINEAR)
    best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    publisher = client.node.create_publisher(Image, "/casnet/image", best_effort)
    reader = client.record("/casnet/panoptic", Image, qos=best_effort, key="panoptic_best_effort")
    try:
        assert client.spin_until(lambda: publisher.get_subscription_count() > 0 and reader.get_publisher_count() > 0,
                                 timeout=10)
        header = make_header(client)
        publisher.publish(raw_image(big, "rgb8", header))
        assert client.spin_until(lambda: any(stamp_key(m.header) == stamp_key(header)
                                             for m in client.messages("panoptic_best_effort")), timeout=60), \
            "the best-effort 1024x2048 frame or its panoptic output was lost"
    finally:
        client.node.destroy_publisher(publisher)
        client.node.destroy_subscription(reader)
    panoptic = next(m for m in client.messages("panoptic_best_effort") if stamp_key(m.header) == stamp_key(header))
    assert (panoptic.height, panoptic.width, panoptic.encoding) == (1024, 2048, "16UC1")
    np.testing.assert_array_equal(conversions.image_to_panoptic(panoptic), predictor.predict(big).panoptic)


def test_threshold_changes_reach_frames_whole_and_each_activation_has_its_own_worker(tiny_checkpoint, scenes,
                                                                                     monkeypatch):
    # The node in this process, with a camera and a reader beside it: its threshold set and threads are visible.
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from casnet_ros import node as node_module

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=1 + (isolated_domain_id() + 30) % 100)
    node = node_module.CasnetNode(context=context, parameter_overrides=[
        Parameter("checkpoint", value=str(tiny_checkpoint)), Parameter("device", value="cpu")])
    camera = rclpy.create_node("camera", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(camera)

    def spin_until(condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        return condition()

    def workers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name in ("casnet-worker", "casnet-overlay") and t.is_alive()]

    try:
        # rclpy sets the parameters of one request one at a time (so does its SetParameters service): none of
        # them reaches a frame before the whole request is in, then all of them do, in one swap.
        before = node.thresholds
        results = node.set_parameters([Parameter("box_threshold", value=0.2), Parameter("nms_iou", value=0.4),
                                       Parameter("max_instances", value=7)])
        assert all(result.successful for result in results)
        assert node.thresholds is before
        assert spin_until(lambda: node.thresholds is not before, timeout=10)
        assert node.thresholds == dataclasses.replace(before, box_threshold=0.2, nms_iou=0.4, max_instances=7)
        with pytest.raises(dataclasses.FrozenInstanceError):
            node.thresholds.nms_iou = 0.9

        # Re-activation while a frame still runs (the join gives up at once here): the earlier activation's
        # threads end after that frame, whatever the later activation does; one set of threads runs.
        assert node.start() and len(workers()) == 2
        first = workers()
        panoptic = []
        camera.create_subscription(Image, "/casnet/panoptic", panoptic.append, 10)
        publisher = camera.create_publisher(Image, "/casnet/image", 10)
        assert spin_until(lambda: publisher.get_subscription_count() > 0
                          and camera.count_publishers("/casnet/panoptic") > 0, timeout=10)
        publisher.publish(raw_image(scenes[0], "rgb8", Header(frame_id="camera")))
        assert spin_until(lambda: node._stats.received > 0, timeout=10)
        monkeypatch.setattr(node_module, "_WORKER_JOIN_TIMEOUT_S", 0.0)
        assert node.trigger_deactivate() == node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        monkeypatch.undo()
        assert spin_until(lambda: not any(thread.is_alive() for thread in first), timeout=60), \
            "a worker of the earlier activation kept running"
        assert len(workers()) == 2 and not set(workers()) & set(first)
    finally:
        node.destroy_node()
        camera.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown(context=context)
    assert workers() == []


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
    # Frames from the moment the transition returns (the node's subscription may still be matched then),
    # until well after it is gone: none is answered, now or after the re-activation below (no stale frame).
    inactive_headers = []

    def send_while_inactive() -> None:
        inactive_headers.append(make_header(client))
        client.image_publisher.publish(raw_image(scenes[0], "rgb8", inactive_headers[-1]))

    send_while_inactive()
    assert client.spin_until(lambda: client.image_publisher.get_subscription_count() == 0, timeout=10), \
        "an inactive node must not subscribe to the camera"
    send_while_inactive()
    assert wait_for_diagnostics(client, lambda d: d["state"] == "inactive", timeout=10), "no inactive state in /diagnostics"

    # Unconfigured, configure-time parameters are accepted; configure + activate use them.
    assert transition(Transition.TRANSITION_CLEANUP) and state() == "unconfigured"
    assert set_parameters(client, input_reliability="reliable")[0].successful
    assert transition(Transition.TRANSITION_CONFIGURE) and state() == "inactive"
    assert transition(Transition.TRANSITION_ACTIVATE) and state() == "active"
    assert client.spin_until(lambda: client.image_publisher.get_subscription_count() > 0, timeout=10)
    header = make_header(client)
    outputs = send_and_wait(client, raw_image(scenes[1], "rgb8", header), client.image_publisher)
    assert_matches_prediction(outputs, expected(1), header)
    inactive_keys = {stamp_key(h) for h in inactive_headers}
    for name in OUTPUT_TOPICS:
        assert not [m for m in client.messages(name) if stamp_key(m.header) in inactive_keys], \
            f"a frame sent while the node was inactive was answered on {name}"
