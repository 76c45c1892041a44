"""Quantization-aware fine-tuning (``solver.fake_quant``): the model trains through the int8 rounding that
``casnet export --int8`` (``casnet_core.quantize``) applies later, i.e. for the network that int8 runs.

Each convolution of the model, in training and in evaluation, runs on

* its weights rounded to int8 per output channel, symmetric on [-127, 127] with the scale max|w| / 127: the
  grid onnxruntime's per-channel quantization gives the exported (BatchNorm-folded) weights, since folding
  scales each output channel by one factor (so BatchNorm should be frozen, ``solver.freeze_bn``);
* its input rounded to uint8 on a per-tensor range: a moving average (``RANGE_MOMENTUM``) of the batches'
  min and max, widened to hold 0, as onnxruntime's min/max calibration with ``CalibMovingAverage`` averages
  its images'. The first convolution reads the image, which the int8 export quantizes on the pixel grid
  (exactly): its input is left alone.

The head output convolutions that the int8 export keeps float (``casnet_core.quantize.FLOAT_HEADS``) keep
float weights. Gradients pass the rounding unchanged (the straight-through estimator of
``torch.fake_quantize_*``). Not modelled: the rounding of tensors no convolution reads (a residual branch's
output before its Add), GPTQ's choice of integers and the bias correction (the export does those after).

Nothing is added to the model's state: the ranges live beside it and start again from the first batch after
``--resume``; the weights saved are the float weights, which every precision loads.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch
import torch.nn as nn
from timm.layers import Conv2dSame
from timm.layers.conv2d_same import conv2d_same

from casnet_core.quantize import FLOAT_HEADS

#: Weight of a new batch in the moving average of an input's min and max.
RANGE_MOMENTUM = 0.05


@dataclass
class _InputRange:
    low: float | None = None
    high: float | None = None

    def update(self, x: torch.Tensor) -> None:
        # One pass over the tensor and one read back (a GPU sync) for both ends.
        low, high = torch.stack(torch.aminmax(x)).float().tolist()
        low, high = min(low, 0.0), max(high, 0.0)
        if self.low is None or self.high is None:
            self.low, self.high = low, high
        else:
            self.low += RANGE_MOMENTUM * (low - self.low)
            self.high += RANGE_MOMENTUM * (high - self.high)


def fake_quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """(O, I, kH, kW) float weights rounded to int8 per output channel (symmetric, [-127, 127])."""
    scale = (weight.detach().abs().amax(dim=(1, 2, 3)) / 127).clamp(min=1e-12).float()
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -127, 127)


def fake_quantize_input(x: torch.Tensor, input_range: _InputRange, *, update: bool) -> torch.Tensor:
    """An activation rounded to uint8 on ``input_range`` (updated from ``x`` first when ``update``)."""
    if update or input_range.low is None:
        input_range.update(x.detach())
    low, high = input_range.low, input_range.high
    scale = max((high - low) / 255, 1e-12)
    zero_point = int(round(min(max(-low / scale, 0), 255)))
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)


def _is_float_output(name: str) -> bool:
    return any(name == f"{head}.out" for head in FLOAT_HEADS)


def attach_fake_quant(model: nn.Module) -> int:
    """Makes every ``nn.Conv2d`` of ``model`` run on fake-quantized weights and inputs (see the module docstring);
    returns how many convolutions it changed. The model's parameters and state_dict keys are unchanged; a deep copy
    of the model keeps the rounding, on its own weights and ranges."""
    changed = 0
    for name, conv in model.named_modules():
        if not isinstance(conv, nn.Conv2d):
            continue
        # Plain attributes (neither parameters nor buffers): nothing enters the state_dict. The first convolution
        # reads the image, which is not rounded.
        conv.fake_quant_input = _InputRange() if changed else None
        conv.fake_quant_weight = not _is_float_output(name)
        conv.forward = types.MethodType(_fake_quant_forward, conv)
        changed += 1
    return changed


def _fake_quant_forward(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if conv.fake_quant_input is not None:
        x = fake_quantize_input(x, conv.fake_quant_input, update=conv.training)
    weight = fake_quantize_weight(conv.weight) if conv.fake_quant_weight else conv.weight
    if isinstance(conv, Conv2dSame):  # timm's "same" padding, computed from the input size in its forward
        return conv2d_same(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return conv._conv_forward(x, weight, conv.bias)
