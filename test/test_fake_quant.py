"""Quantization-aware fine-tuning (``solver.fake_quant``, ``casnet_core.training.fake_quant``): convolutions run on
int8-rounded weights and uint8-rounded inputs, the model's state stays the float model's."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Conv2dSame
from timm.layers.padding import pad_same

from casnet_core.checkpoint import load_model
from casnet_core.config import load_config
from casnet_core.model import Head, build_casnet
from casnet_core.train import train
from casnet_core.training.fake_quant import (
    RANGE_MOMENTUM,
    _InputRange,
    attach_fake_quant,
    fake_quantize_input,
    fake_quantize_weight,
)


def test_weights_round_to_onnxruntimes_per_channel_int8_grid():
    torch.manual_seed(0)
    weight = torch.randn(5, 3, 3, 3) * torch.tensor([0.01, 0.1, 1.0, 10.0, 100.0])[:, None, None, None]
    rounded = fake_quantize_weight(weight)
    # Symmetric per output channel: the step is max|w| / 127, so the largest weight of a channel is exactly +-127
    # steps and every other weight is the nearest multiple of its channel's step.
    step = weight.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    steps = rounded / step
    assert torch.allclose(steps, steps.round(), atol=1e-3)
    assert steps.abs().max() <= 127 + 1e-3
    assert ((rounded - weight).abs() <= step / 2 + 1e-6 * step).all()
    assert torch.equal(rounded.abs().amax(dim=(1, 2, 3)), weight.abs().amax(dim=(1, 2, 3)))
    assert not torch.equal(rounded, weight)


def test_inputs_round_to_uint8_on_a_moving_range_that_holds_zero():
    input_range = _InputRange()
    x = torch.linspace(0.5, 3.0, 1000)  # all positive: the range still starts at 0, as onnxruntime's does
    rounded = fake_quantize_input(x, input_range, update=True)
    assert (input_range.low, input_range.high) == (0.0, 3.0)
    step = 3.0 / 255
    assert torch.allclose(rounded / step, (rounded / step).round(), atol=1e-3)
    assert (rounded - x).abs().max() <= step / 2 + 1e-6
    # A second batch moves the range by RANGE_MOMENTUM of the difference; without update it stays.
    fake_quantize_input(torch.tensor([-1.0, 5.0]), input_range, update=True)
    assert input_range.low == pytest.approx(-RANGE_MOMENTUM)
    assert input_range.high == pytest.approx(3.0 + RANGE_MOMENTUM * 2.0)
    beyond = fake_quantize_input(torch.tensor([100.0]), input_range, update=False)
    assert beyond.item() == pytest.approx(input_range.high, abs=(input_range.high - input_range.low) / 255)


def test_convolutions_run_on_rounded_weights_and_inputs_but_the_image_is_not_rounded():
    torch.manual_seed(0)
    # timm's "same"-padded convolution (the tf_ EfficientNets') first, a plain one after it.
    model = nn.Sequential(Conv2dSame(3, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    image = torch.rand(1, 3, 9, 12) * 255
    with torch.no_grad():
        first = F.conv2d(pad_same(image, [3, 3], (2, 2)), fake_quantize_weight(model[0].weight), model[0].bias, 2)
        assert attach_fake_quant(model) == 2
        expected = F.conv2d(fake_quantize_input(F.relu(first), _InputRange(), update=True),
                            fake_quantize_weight(model[2].weight), model[2].bias)
        assert torch.allclose(model(image), expected, atol=1e-5)
        assert not torch.allclose(expected, model[2]._conv_forward(F.relu(first), model[2].weight, model[2].bias),
                                  atol=1e-5)


def test_the_model_keeps_its_state_and_a_deep_copy_rounds_its_own_weights():
    torch.manual_seed(0)
    model = build_casnet("hrnet_w18_small", mode="panoptic", fusion_channels=32, head_channels=16).eval()
    keys = set(model.state_dict())
    parameters = {k: v.clone() for k, v in model.named_parameters()}
    convolutions = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    images = torch.rand(1, 3, 64, 128) * 255
    with torch.no_grad():
        float_outputs = model(images)
        assert attach_fake_quant(model) == convolutions
        model.train()
        model(images)  # the ranges come from a training batch
        model.eval()
        rounded_outputs = model(images)
    # Nothing is registered: the state (what checkpoints save) has the float model's keys, its weights unchanged
    # (the training batch moved only BatchNorm's running statistics).
    assert set(model.state_dict()) == keys
    assert all(torch.equal(value, parameters[k]) for k, value in model.named_parameters())
    for name in float_outputs:
        assert not torch.equal(float_outputs[name], rounded_outputs[name])
    # A deep copy rounds its own weights: changed, they change its outputs and not the original's.
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.box_head.hidden[0].weight.mul_(-1)
        assert torch.equal(model(images)["box_logits"], rounded_outputs["box_logits"])
        assert not torch.equal(twin(images)["box_logits"], rounded_outputs["box_logits"])


def test_the_head_output_convolutions_round_their_input_but_keep_float_weights():
    # As the int8 export keeps them (casnet_core.quantize.FLOAT_HEADS). The hidden convolution, the first here, rounds
    # its weights and not its input.
    torch.manual_seed(0)
    model = nn.Module()
    model.box_head = Head(8, 16, 3)
    model.eval()
    assert attach_fake_quant(model) == 2
    features = torch.rand(1, 8, 6, 6)
    with torch.no_grad():
        hidden = model.box_head.hidden(features)
        out = model.box_head.out(hidden)
        rounded_hidden = F.relu(model.box_head.hidden[1](F.conv2d(
            features, fake_quantize_weight(model.box_head.hidden[0].weight), padding=1)))
    assert torch.allclose(hidden, rounded_hidden, atol=1e-5)
    # In eval mode with no range yet, the first input sets it.
    rounded_input = fake_quantize_input(hidden, _InputRange(), update=True)
    assert torch.allclose(out, F.conv2d(rounded_input, model.box_head.out.weight, model.box_head.out.bias), atol=1e-5)


def test_a_fake_quant_run_saves_float_weights_that_load_as_a_plain_model(synth_root, tmp_path):
    config = load_config("config/synthetic_cpu.yaml", [
        "model.fusion_channels=32", "model.head_channels=16", "data.short_side=[128,128]", "data.crop_size=[128,256]",
        "data.workers=0", "solver.batch_size=2", "solver.log_every=1", "solver.fake_quant=true",
        "solver.freeze_bn=true"])
    final = train(config, synth_root, tmp_path, device="cpu", max_iters=2, progress=False)
    model, meta = load_model(final)
    assert meta["step"] == 2
    reference = build_casnet(**config["model"])
    assert model.state_dict().keys() == reference.state_dict().keys()
    # The loaded model is the float model: no convolution carries the fake-quant forward.
    assert not any("forward" in vars(m) or hasattr(m, "fake_quant_input") for m in model.modules())
