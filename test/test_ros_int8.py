"""casnet_node with ``precision:=int8`` over real DDS: the node runs the int8 export with onnxruntime and
publishes what a Predictor of that file gives (``casnet_core.quantize``)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ros_helpers import TEST_PARAMS, Client, NodeProcess, isolated_domain_id, node_test_parameters, raw_image, stamp_key
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from casnet_ros import conversions

HEIGHT, WIDTH = 256, 512
PREDICTOR_PARAMETERS = ("box_threshold", "nms_iou", "min_area", "stuff_area", "tie_margin", "max_instances",
                        "max_input_size")


@pytest.fixture(scope="module")
def int8_file(tiny_checkpoint, tmp_path_factory):
    """The tiny test checkpoint quantized to int8 (two small generated calibration scenes, to stay short)."""
    from casnet_core.checkpoint import load_model
    from casnet_core.export import export_onnx
    from casnet_core.quantize import calibration_images, quantize_int8

    model, _ = load_model(tiny_checkpoint)
    path = tmp_path_factory.mktemp("int8") / "tiny_int8.onnx"
    path.write_bytes(quantize_int8(export_onnx(model), calibration_images(count=2, size=(128, 256)), size=(128, 256)))
    return path


def test_the_node_runs_int8_and_publishes_the_predictors_panoptic_map(int8_file, tmp_path):
    from casnet_core.predictor import Predictor
    from casnet_core.synth import generate_scene

    domain_id = 1 + (isolated_domain_id() + 47) % 100  # apart from the other node tests' domains
    process = NodeProcess(["--params-file", str(TEST_PARAMS), "-p", f"checkpoint:={int8_file}",
                           "-p", "precision:=int8"], domain_id=domain_id, log_path=tmp_path / "casnet_node.log")
    client = None
    try:
        client = Client(domain_id)
        client.record("/casnet/panoptic", Image, key="panoptic")
        publisher = client.node.create_publisher(Image, "/casnet/image", 10)
        ready = client.spin_until(lambda: publisher.get_subscription_count() > 0
                                  and client.node.count_publishers("/casnet/panoptic") > 0, timeout=120)
        assert ready, f"casnet_node did not come up:\n{process.output()}"
        scene = generate_scene(4, HEIGHT, WIDTH)[0]
        header = Header(stamp=client.node.get_clock().now().to_msg(), frame_id="camera_int8")
        msg = raw_image(scene, "rgb8", header)
        key = stamp_key(header)

        def answer():
            return next((m for m in client.messages("panoptic") if stamp_key(m.header) == key), None)

        deadline = time.monotonic() + 60
        while answer() is None and time.monotonic() < deadline:
            publisher.publish(msg)  # best effort input: sent again until answered
            client.spin_until(lambda: answer() is not None, timeout=8)
        assert answer() is not None, f"no answer:\n{process.output()}"
        output = process.output()
    finally:
        if client is not None:
            client.close()
        code = process.stop()
    assert code == 0, process.output()
    assert "backend onnxruntime" in output and "precision int8" in output, output
    parameters = {k: v for k, v in node_test_parameters().items() if k in PREDICTOR_PARAMETERS}
    expected = Predictor.from_checkpoint(str(int8_file), device="cpu", precision="int8", **parameters).predict(scene)
    np.testing.assert_array_equal(conversions.image_to_panoptic(answer()), expected.panoptic)
