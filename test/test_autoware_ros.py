"""Autoware's camera topics from real casnet_node processes over DDS, started as the launch file starts them with
``autoware:=true cameras:=camera0,camera1``: one process per camera, and one batched process.

launch / launch_ros are not installable without a ROS install, so the launch file's own plain functions
(``_cameras``, ``_processes``: the processes, their parameters and remappings) are run and each process is started
with the ``--ros-args`` equivalent of its launch_ros Node action. A client publishes frames on
``/sensing/camera/camera<i>/image_rect_color`` and reads ``/perception/object_recognition/detection/{rois,mask,
instance_mask}<i>`` beside the camera's ~/panoptic. Every wait is on a received message, never a sleep.
"""

from __future__ import annotations

import ast
import struct
import time

import numpy as np
import pytest
from autoware_internal_perception_msgs.msg import SegmentationMask
from ros_helpers import REPO_ROOT, TEST_PARAMS, Client, NodeProcess, isolated_domain_id, raw_image, stamp_key
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from tier4_perception_msgs.msg import DetectedObjectsWithFeature

from casnet_core import autoware
from casnet_core.labels import LABEL_DIVISOR
from casnet_ros import conversions

LAUNCH_FILE = REPO_ROOT / "launch" / "casnet.launch.py"
DETECTION = "/perception/object_recognition/detection"
SIZES = [(96, 192), (64, 160)]  # camera0, camera1: different sizes, so a mix-up shows


def launch_functions() -> dict:
    """The launch file's plain functions and constants (everything but the launch_ros parts)."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    body = [node for node in tree.body if (isinstance(node, ast.FunctionDef) and node.name.startswith("_")
                                           and node.name != "_nodes")
            or (isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets))]
    namespace: dict = {}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(LAUNCH_FILE), "exec"), namespace)
    return namespace


def ros_arguments(node_namespace: str, parameters: list, remappings: list) -> list[str]:
    """The ``--ros-args`` of launch_ros' Node(name="casnet", namespace="/" + node_namespace, parameters=...,
    remappings=...)."""
    arguments = ["-r", f"__ns:=/{node_namespace}", "-r", "__node:=casnet"]
    for entry in parameters:
        if isinstance(entry, dict):
            for name, value in entry.items():
                text = f"[{', '.join(value)}]" if isinstance(value, list) else str(value)
                arguments += ["-p", f"{name}:={text}"]
        else:
            arguments += ["--params-file", str(entry)]
    for source, target in remappings:
        arguments += ["-r", f"{source}:={target}"]
    return arguments


def test_the_launch_file_gives_each_camera_autowares_topics():
    functions = launch_functions()
    cameras = functions["_cameras"]("camera0, camera1", "/unused", True)
    assert cameras == [("camera0", "/sensing/camera/camera0/image_rect_color"),
                       ("camera1", "/sensing/camera/camera1/image_rect_color")]
    # Without cameras: one, camera0; a named topic wins over the default.
    assert functions["_cameras"]("", "/unused", True) == [("camera0", "/sensing/camera/camera0/image_rect_color")]
    assert functions["_cameras"]("front=/cam/front/image, rear", "/unused", True) == [
        ("front", "/cam/front/image"), ("rear", "/sensing/camera/camera1/image_rect_color")]
    per_camera = functions["_processes"]("", ["params.yaml"], cameras, False, True)
    assert [(namespace, dict(remappings)) for namespace, _, remappings in per_camera] == [
        (f"camera{i}", {"~/image": f"/sensing/camera/camera{i}/image_rect_color",
                        "~/image/compressed": f"/sensing/camera/camera{i}/image_rect_color/compressed",
                        "~/rois": f"{DETECTION}/rois{i}", "~/mask": f"{DETECTION}/mask{i}",
                        "~/instance_mask": f"{DETECTION}/instance_mask{i}"}) for i in range(2)]
    # Without autoware:=true nothing changes: no Autoware remappings.
    assert all(set(dict(r)) == {"~/image", "~/image/compressed"}
               for _, _, r in functions["_processes"]("", ["p.yaml"], cameras, False, False))
    declared = {call.args[0].value for call in ast.walk(ast.parse(LAUNCH_FILE.read_text()))
                if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "DeclareLaunchArgument"}
    assert "autoware" in declared


def test_the_autoware_parameter_file_sets_every_parameter_of_the_node():
    import yaml

    from casnet_ros.parameters import PARAMETERS

    shipped = yaml.safe_load((REPO_ROOT / "config" / "casnet_autoware.yaml").read_text())["/**"]["ros__parameters"]
    assert set(shipped) == set(PARAMETERS)
    assert shipped["publish_rois"] and shipped["publish_mask"] and shipped["publish_instance_mask"]


# ------------------------------------------------------------------------------------------------ over DDS
@pytest.fixture(scope="module")
def domain_id():
    return 1 + (isolated_domain_id() + 85) % 100  # not the domains of the other ROS test modules in this process


@pytest.fixture(scope="module", params=["one process per camera", "batched"])
def launched(request, tiny_checkpoint, domain_id, tmp_path_factory):
    """The node processes of ``autoware:=true cameras:=camera0,camera1 [batched:=true] checkpoint:=... device:=cpu
    params_file:=config/casnet_test.yaml``, as the launch file's _nodes builds them."""
    functions = launch_functions()
    cameras = functions["_cameras"]("camera0,camera1", "/unused", True)
    parameters = [str(TEST_PARAMS), {"checkpoint": str(tiny_checkpoint), "device": "cpu"}]
    specs = functions["_processes"]("", parameters, cameras, request.param == "batched", True)
    assert len(specs) == (1 if request.param == "batched" else 2)
    logs = tmp_path_factory.mktemp("nodes")
    processes = [NodeProcess(ros_arguments(*spec), domain_id=domain_id, log_path=logs / f"node{index}.log")
                 for index, spec in enumerate(specs)]
    yield processes
    codes = [process.stop() for process in processes]
    for process in processes:
        print(process.output())
    assert codes == [0] * len(processes), f"casnet_node did not shut down cleanly (exit {codes})"


@pytest.fixture(scope="module")
def client(launched, domain_id):
    client = Client(domain_id)
    client.publishers = {}
    for index in range(len(SIZES)):
        client.record(f"{DETECTION}/rois{index}", DetectedObjectsWithFeature, key=f"rois{index}")
        client.record(f"{DETECTION}/mask{index}", Image, key=f"mask{index}")
        client.record(f"{DETECTION}/instance_mask{index}", SegmentationMask, key=f"instance_mask{index}")
        client.record(f"/camera{index}/casnet/panoptic", Image, key=f"panoptic{index}")
        client.publishers[index] = client.node.create_publisher(
            Image, f"/sensing/camera/camera{index}/image_rect_color", 10)
    ready = client.spin_until(lambda: all(p.get_subscription_count() for p in client.publishers.values()), 120)
    assert ready, "casnet_node did not come up:\n" + "\n".join(process.output() for process in launched)
    yield client
    client.close()


def decode_autoware_mask(data: bytes, height: int, width: int) -> np.ndarray:
    """The format's description (not the encoder): 5-byte records, uint8 class id + int32 little-endian length,
    row-major over (height, width)."""
    assert len(data) % 5 == 0
    pixels = bytearray()
    for offset in range(0, len(data), 5):
        value, count = struct.unpack_from("<Bi", data, offset)
        pixels += bytes([value]) * count
    assert len(pixels) == height * width
    return np.frombuffer(bytes(pixels), np.uint8).reshape(height, width)


OUTPUT_KEYS = ("rois", "mask", "instance_mask", "panoptic")


def send_frames(client: Client, scenes: list[np.ndarray], timeout: float = 90.0) -> list[tuple[Header, dict]]:
    """One frame per camera (own stamp and frame_id); returns per camera (header, {output: message}) of the outputs
    carrying that frame's header. Resends unanswered frames (best-effort input may lose one on a loaded host)."""
    frames = []
    for index, rgb in enumerate(scenes):
        header = Header(stamp=client.node.get_clock().now().to_msg(), frame_id=f"camera{index}/camera_optical_link")
        frames.append(raw_image(rgb, "rgb8", header))

    def answered(index: int, name: str):
        key = stamp_key(frames[index].header)
        return next((m for m in client.messages(f"{name}{index}") if stamp_key(m.header) == key), None)

    def done(index: int) -> bool:
        return all(answered(index, name) is not None for name in OUTPUT_KEYS)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(done(i) for i in range(len(frames))):
        for index, msg in enumerate(frames):
            if not done(index):
                client.publishers[index].publish(msg)
        client.spin_until(lambda: all(done(i) for i in range(len(frames))), min(8.0, deadline - time.monotonic()))
    assert all(done(i) for i in range(len(frames))), "no Autoware outputs for some camera's frame"
    return [(msg.header, {name: answered(index, name) for name in OUTPUT_KEYS}) for index, msg in enumerate(frames)]


def test_each_camera_gets_autowares_rois_mask_and_instance_mask(client):
    from casnet_core.synth import generate_scene

    rois_seen = 0
    for seed in range(2):
        scenes = [generate_scene(10 * seed + index, height=h, width=w)[0] for index, (h, w) in enumerate(SIZES)]
        for (height, width), (header, outputs) in zip(SIZES, send_frames(client, scenes)):
            rois, mask, instance_mask = outputs["rois"], outputs["mask"], outputs["instance_mask"]
            # Each output carries its own image's header (stamp and frame_id: the fusion looks up its transform).
            assert rois.header == header and mask.header == header
            assert instance_mask.header == header and instance_mask.image.header == header
            panoptic = conversions.image_to_panoptic(outputs["panoptic"])
            assert panoptic.shape == (height, width)

            # The mask: the input's size, "mono8" as Autoware's decoder expects, data the run-length classes equal to
            # the panoptic result mapped through the class map, pixel for pixel.
            assert (mask.height, mask.width, mask.encoding, mask.step) == (height, width, "mono8", width)
            labels = np.where(panoptic >= LABEL_DIVISOR, panoptic // LABEL_DIVISOR, panoptic)
            np.testing.assert_array_equal(decode_autoware_mask(bytes(mask.data), height, width),
                                          autoware.MASK_CLASS_LUT[labels])

            # The instance mask: the k-th roi's instance owns exactly the pixels of value k.
            image = instance_mask.image
            assert (image.height, image.width, image.encoding) == (height, width, "mono8")
            instance_pixels = conversions.image_to_mono8(image)
            objects = rois.feature_objects
            assert len(instance_mask.classification) == len(objects)
            owners = set()
            for k, item in enumerate(objects, start=1):
                owner = np.unique(panoptic[instance_pixels == k])
                assert len(owner) == 1 and owner[0] >= LABEL_DIVISOR, f"pixels {k} are not one instance's"
                instance_id = int(owner[0])
                owners.add(instance_id)
                np.testing.assert_array_equal(instance_pixels == k, panoptic == instance_id)
                # Its roi: inside the image, the tight box of those pixels.
                roi = item.feature.roi
                assert roi.width > 0 and roi.height > 0
                assert roi.x_offset + roi.width <= width and roi.y_offset + roi.height <= height
                ys, xs = np.nonzero(panoptic == instance_id)
                assert (roi.x_offset, roi.y_offset, roi.x_offset + roi.width, roi.y_offset + roi.height) == (
                    xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
                # Autoware's label of the instance's class, in both messages; the score as existence probability.
                expected = int(autoware.OBJECT_LABEL_LUT[instance_id // LABEL_DIVISOR])
                assert expected in autoware.OBJECT_LABELS.values() and expected != 0
                assert [(c.label, c.probability) for c in item.object.classification] == [(expected, 1.0)]
                assert instance_mask.classification[k - 1].label == expected
                assert 0.0 < item.object.existence_probability <= 1.0
                assert len(item.feature.cluster.data) == 0
            assert len(owners) == len(objects)
            # No instance pixel is left out of the instance mask.
            assert not np.any((instance_pixels == 0) & (panoptic >= LABEL_DIVISOR))
            rois_seen += len(objects)
    assert rois_seen > 0, "the test model found no instance: nothing was checked"
