"""`casnet export` to ONNX and the onnxruntime backend of the Predictor, with real (random-weights) CASNets."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import onnx
import pytest
import torch

from casnet_core.checkpoint import save_checkpoint
from casnet_core.export import (FORMAT, INPUT_NAME, OnnxNetwork, agrees, compare_with_torch, export_onnx)
from casnet_core.model import build_casnet
from casnet_core.predictor import Predictor
from casnet_core.synth import generate_scene

THRESHOLDS = {"box_threshold": 0.005, "min_area": 4, "stuff_area": 16}  # random weights: seeds near the 0.01 prior
ROAD, CAR = 7, 26  # Cityscapes label ids


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_casnet("hrnet_w18_small", mode="panoptic", fusion_channels=32, head_channels=16).eval()


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("export") / "model.pt", model)


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    """The ONNX file written by `casnet export`, its exit code and what it printed."""
    from casnet_core.cli import main

    path = tmp_path_factory.mktemp("onnx") / "casnet.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["export", "--format", "onnx", "--checkpoint", str(checkpoint), "--out", str(path),
                     "--check-size", "64x128", "96x160"])
    return path, code, printed.getvalue()


def image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_export_writes_the_documented_contract(exported, model):
    path, code, printed = exported
    assert code == 0
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (images,) = proto.graph.input
    assert images.name == INPUT_NAME
    dims = images.type.tensor_type.shape.dim
    assert images.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims[1].dim_value == 3
    assert all(d.dim_param and not d.dim_value for d in (dims[0], dims[2], dims[3]))  # dynamic N, H, W
    assert [o.name for o in proto.graph.output] == ["semantic", "attributes", "box_logits"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["casnet_format"] == FORMAT and meta["mode"] == "panoptic"
    assert json.loads(meta["class_names"]) == list(model.class_space.names)
    assert json.loads(meta["config"]) == model.config
    assert (int(meta["output_stride"]), int(meta["size_divisor"])) == (model.output_stride, model.size_divisor)
    assert json.loads(meta["pixel_mean"]) == pytest.approx(model.pixel_mean.flatten().tolist())
    # The command reports the difference of each head.
    reported = {line.split()[0] for line in printed.splitlines() if "max abs diff" in line}
    assert reported == {"semantic", "attributes", "box_logits"}


def test_onnxruntime_agrees_with_torch_on_other_sizes_than_the_trace(exported, model):
    network = OnnxNetwork(exported[0], device="cpu")
    # The trace ran at 64x128; these sizes and aspect ratios differ.
    report = compare_with_torch(model, network, [(96, 160), (160, 96), (128, 320)], seed=3)
    assert set(report) == {"semantic", "attributes", "box_logits"}
    for head, row in report.items():
        assert row["max_abs_diff"] < 1e-4 * max(1.0, row["max_abs_value"]), (head, row)
    assert agrees(report)
    # A different network is far off: the comparison can fail.
    torch.manual_seed(1)
    other = build_casnet("hrnet_w18_small", mode="panoptic", fusion_channels=32, head_channels=16).eval()
    assert not agrees(compare_with_torch(other, network, [(64, 128)]))


def test_tf_same_padding_is_exported_inside_the_convolutions():
    # tf_ EfficientNets pad "same" by a function of the input size (timm's Conv2dSame): exported as is, a Pad
    # node with pads computed from Shape stands before each stride-2 convolution (onnxruntime pads in float
    # there, between int8 convolutions too). The export writes that padding as the Conv's own constant pads,
    # which are the same padding for every input of the contract: other sizes than the trace's still agree.
    torch.manual_seed(0)
    model = build_casnet("tf_efficientnet_lite0", mode="panoptic", fusion_channels=16, head_channels=8).eval()
    same_convs = [module for module in model.modules() if type(module).__name__ == "Conv2dSame"]
    assert len(same_convs) == 5  # the model is left as it was
    proto = onnx.load_from_string(export_onnx(model))
    ops = {node.op_type for node in proto.graph.node}
    assert "Pad" not in ops and "Ceil" not in ops, ops
    stem = next(node for node in proto.graph.node if node.name.endswith("conv_stem/Conv"))
    pads = next(onnx.helper.get_attribute_value(a) for a in stem.attribute if a.name == "pads")
    assert pads == [0, 0, 1, 1]  # 3x3 stride 2 on an even size: TensorFlow puts the one pixel after
    network = OnnxNetwork(proto.SerializeToString(), device="cpu")
    report = compare_with_torch(model, network, [(96, 160), (160, 96), (128, 320)], seed=3)
    assert agrees(report), report
    assert all(type(module).__name__ == "Conv2dSame" for module in same_convs) and model.training is False


def test_onnxruntime_backend_gives_the_same_panoptic_maps(exported, model):
    torch_predictor = Predictor(model, device="cpu", **THRESHOLDS)
    onnx_predictor = Predictor.from_checkpoint(str(exported[0]), device="cpu", **THRESHOLDS)
    assert onnx_predictor.backend == "onnxruntime" and onnx_predictor.checkpoint_info["mode"] == "panoptic"
    scenes = [generate_scene(4, 97, 203)[0], generate_scene(5, 160, 128)[0], image(61, 77, seed=6)]
    for picture in scenes:
        expected, got = torch_predictor.predict(picture), onnx_predictor.predict(picture)
        assert expected.instances, "the random model should still produce some thing pixels here"
        np.testing.assert_array_equal(got.panoptic, expected.panoptic)
        np.testing.assert_array_equal(got.semantic, expected.semantic)
        assert [(i.id, i.box, i.area) for i in got.instances] == [(i.id, i.box, i.area) for i in expected.instances]
        np.testing.assert_allclose([i.score for i in got.instances], [i.score for i in expected.instances],
                                   rtol=1e-4, atol=1e-6)
    # Live thresholds and the maximum input size apply to both backends alike.
    for predictor in (torch_predictor, onnx_predictor):
        predictor.max_input_size = 64
    picture = generate_scene(7, 120, 240)[0]
    np.testing.assert_array_equal(onnx_predictor.predict(picture).panoptic, torch_predictor.predict(picture).panoptic)


def test_predict_cli_runs_an_onnx_file(exported, model, tmp_path):
    import cv2

    from casnet_core.cli import main

    picture = generate_scene(10, 97, 203)[0]
    cv2.imwrite(str(tmp_path / "street.png"), picture[..., ::-1])
    threshold_args = ["--box-threshold", "0.005", "--min-area", "4", "--stuff-area", "16"]
    assert main(["predict", "--checkpoint", str(exported[0]), "--out", str(tmp_path / "out"), "--device", "cpu",
                 *threshold_args, str(tmp_path / "street.png")]) == 0
    rgb = cv2.imread(str(tmp_path / "out" / "street_panoptic.png"), cv2.IMREAD_COLOR)[..., ::-1].astype(np.int64)
    expected = Predictor(model, device="cpu", **THRESHOLDS).predict(picture).panoptic
    np.testing.assert_array_equal(rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2], expected)


def test_in_memory_export_from_a_module_or_a_checkpoint(model, checkpoint):
    picture = generate_scene(8, 96, 192)[0]
    expected = Predictor(model, device="cpu", **THRESHOLDS).predict(picture).panoptic
    from_module = Predictor(model, device="cpu", backend="onnxruntime", **THRESHOLDS)
    from_checkpoint = Predictor.from_checkpoint(str(checkpoint), device="cpu", backend="onnxruntime", **THRESHOLDS)
    for predictor in (from_module, from_checkpoint):
        assert isinstance(predictor.model, OnnxNetwork)
        np.testing.assert_array_equal(predictor.predict(picture).panoptic, expected)
    assert model.training is False  # the export left the module as it was


def test_separated_mode_export_takes_semantics_from_outside():
    torch.manual_seed(0)
    model = build_casnet("hrnet_w18_small", semantic_head=False, fusion_channels=32, head_channels=16).eval()
    data = export_onnx(model)
    network = OnnxNetwork(data)
    assert not network.has_semantic_head
    assert set(compare_with_torch(model, network, [(64, 96)])) == {"attributes", "box_logits"}
    labels = np.full((40, 60), ROAD, np.uint8)
    labels[:, 30:] = CAR
    picture = image(40, 60, seed=9)
    kwargs = {"box_threshold": 0.005, "min_area": 1, "stuff_area": 1}
    expected = Predictor(model, device="cpu", **kwargs).predict(picture, semantic_label_ids=labels)
    onnx_predictor = Predictor(data, device="cpu", backend="onnxruntime", **kwargs)
    got = onnx_predictor.predict(picture, semantic_label_ids=labels)
    np.testing.assert_array_equal(got.panoptic, expected.panoptic)
    with pytest.raises(ValueError, match="semantic head"):
        onnx_predictor.predict(picture)


def test_bad_files_and_arguments_raise_clear_errors(exported, tmp_path, checkpoint, capsys):
    from casnet_core.cli import main

    path = exported[0]
    with pytest.raises(ValueError, match="onnxruntime"):
        Predictor.from_checkpoint(str(path), device="cpu", backend="torch")
    with pytest.raises(ValueError, match="not found"):
        OnnxNetwork(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx file")
    with pytest.raises(ValueError, match="cannot load"):
        OnnxNetwork(garbage)
    # A valid ONNX file that is not a CASNet export (no metadata).
    foreign = tmp_path / "conv.onnx"
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", [INPUT_NAME], ["out"])], "identity",
                                   [value(INPUT_NAME, onnx.TensorProto.FLOAT, [1, 3, 32, 32])],
                                   [value("out", onnx.TensorProto.FLOAT, [1, 3, 32, 32])])
    # IR version 8 (ONNX 1.10): onnxruntime 1.23, the newest for Python 3.10, reads up to 11, and onnx writes its own.
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8),
              str(foreign))
    with pytest.raises(ValueError, match="not a CASNet export"):
        OnnxNetwork(foreign)
    with pytest.raises(ValueError, match="multiple of 32"):
        OnnxNetwork(path)(torch.zeros(1, 3, 40, 64))
    with pytest.raises(ValueError, match="backend"):
        Predictor(torch.nn.Conv2d(3, 3, 1), device="cpu", backend="tensorrt")
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.onnx")]) != 0
    assert capsys.readouterr().err.startswith("casnet export")
    assert main(["predict", "--checkpoint", str(path), "--backend", "torch", "--out", str(tmp_path / "o"),
                 str(tmp_path / "none.png")]) != 0
    assert capsys.readouterr().err.startswith("casnet predict")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is missing")
def test_cuda_without_a_cuda_provider_raises(exported):
    with pytest.raises(ValueError, match="CUDA"):
        OnnxNetwork(exported[0], device="cuda:0")


def _onnxruntime_has_cuda() -> bool:
    import onnxruntime

    return torch.cuda.is_available() and "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.skipif(not _onnxruntime_has_cuda(), reason="needs CUDA and onnxruntime-gpu")
def test_onnxruntime_cuda_backend_gives_the_same_panoptic_maps(exported, model):
    picture = generate_scene(11, 128, 256)[0]
    expected = Predictor(model, device="cpu", **THRESHOLDS).predict(picture).panoptic
    predictor = Predictor.from_checkpoint(str(exported[0]), device="cuda", **THRESHOLDS)
    assert predictor.device.type == "cuda"
    np.testing.assert_array_equal(predictor.predict(picture).panoptic, expected)
