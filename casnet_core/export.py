"""ONNX export of the CASNet network, and the onnxruntime backend of the Predictor.

``casnet export --format onnx --out FILE [--checkpoint CKPT]`` writes the network (not the
post-processing, which stays ``casnet_core.postprocess``) as an ONNX file, then runs it with onnxruntime
and PyTorch on generated street scenes and prints the maximum absolute difference of each head.

The contract of the file, for onnxruntime, TensorRT or any other runtime:

* input ``images``: (N, 3, H, W) float32, RGB, values 0..255 (the normalisation is inside the network);
  N, H and W are dynamic; H and W must be multiples of the ``size_divisor`` metadata (pad at the bottom
  and right with the ``pixel_mean`` colour, as ``Predictor`` does). ``Predictor.predict`` feeds N = 1,
  ``Predictor.predict_batch`` N > 1 (the images of one size of a batch, e.g. one frame per camera).
* outputs, s being the ``output_stride`` metadata:
  ``semantic`` (N, C, H/s, W/s) class logits (absent for a model without semantic head, "separated" mode),
  ``attributes`` (N, 4, H/s, W/s) distances (l, t, r, b) to the instance box borders, in strides,
  ``box_logits`` (N, 8, H/s, W/s) box-probability logits, one channel per thing class.
* ``metadata_props``, what a Predictor needs besides the weights: ``casnet_format`` (``casnet-onnx/1``),
  ``mode``, ``class_names`` (JSON list, one per semantic channel), ``config`` (JSON, the builder
  arguments of ``casnet_core.model.build_casnet``), ``output_stride``, ``size_divisor``, ``pixel_mean``
  (JSON list, RGB 0..255); an int8 export (``--int8``, ``casnet_core.quantize``) adds ``precision``
  (``int8``), ``calibration``, ``float_nodes``, ``input_grid`` (``pixels`` where the input is quantized one step per
  pixel value), ``weight_rounding`` (how many convolutions' integer weights GPTQ chose) and ``bias_correction``
  (how many biases were corrected), with the same float32 input and outputs.

``casnet export --int8 [--calibration DIR]`` writes the int8 version instead (static quantization, QDQ,
per-channel weights), calibrated on generated scenes or on the images of DIR, and prints how often its
semantic argmax agrees with the fp32 export's on the check scenes.

The export uses PyTorch's TorchScript-based exporter (``dynamo=False``): it needs only the ``onnx``
package, works offline, and traces this fully convolutional network exactly (every shape follows the
input). opset 17 by default, which TensorRT 8.6 and newer parse. TensorFlow's "same" padding of the tf_
EfficientNets (timm's ``Conv2dSame``, which pads by a function of the input size) is written as constant
padding inside each ``Conv`` (``static_same_padding``): for inputs of the contract (multiples of the size
divisor) it is the same padding, and no ``Pad`` node stands between two convolutions (onnxruntime padded in
float there, between the int8 convolutions too: measured ~35 % of an int8 frame at 1024x2048).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from casnet_core.formats import atomic_write
from casnet_core.labels import ClassSpace, class_space

FORMAT = "casnet-onnx/1"
#: Version of the graph the export writes for a given model (the contract above is FORMAT's): part of the
#: cache key of ``casnet_core.onnx_cache``, so a changed export never reuses an older cached file.
#: 2: "same" padding folded into the convolutions.
EXPORT_RECIPE = 2
INPUT_NAME = "images"
OUTPUT_NAMES = ("semantic", "attributes", "box_logits")
DEFAULT_OPSET = 17
#: opsets the TorchScript-based exporter writes (17: TensorRT 8.6; 20: its newest).
OPSETS = (17, 18, 19, 20)
#: Sizes (H, W) of the generated scenes the export is checked on; rounded up to the size divisor.
CHECK_SIZES = ((256, 512), (224, 416))
#: Agreement asked of onnxruntime against PyTorch, per head: max |ort - torch| <= atol + rtol * max |torch|.
CHECK_ATOL, CHECK_RTOL = 1e-3, 1e-3


class _HeadsAsTuple(nn.Module):
    """The network with its outputs as a tuple in ``OUTPUT_NAMES`` order (ONNX outputs are positional)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(name for name in OUTPUT_NAMES if name != "semantic" or model.has_semantic_head)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(images)
        return tuple(outputs[name] for name in self.names)


class _PaddedConv(torch.autograd.Function):
    """``conv2d(pad(x, pads))``, exported as one ONNX ``Conv`` with asymmetric ``pads`` (the exporter writes
    ``F.pad`` as a ``Pad`` node whose pads it cannot fold into constants)."""

    @staticmethod
    def forward(ctx, x, weight, bias, pads, stride, dilation, groups):
        return F.conv2d(F.pad(x, pads), weight, bias, stride, 0, dilation, groups)

    @staticmethod
    def symbolic(g, x, weight, bias, pads, stride, dilation, groups):
        left, right, top, bottom = pads
        inputs = (x, weight) if bias is None else (x, weight, bias)
        return g.op("Conv", *inputs, pads_i=[top, left, bottom, right], strides_i=list(stride),
                    dilations_i=list(dilation), group_i=groups)


class _StaticSameConv2d(nn.Module):
    """timm's ``Conv2dSame`` (TensorFlow "same": total padding ``(k - 1) d + 1 - s`` when the input size is a
    multiple of the stride s, the extra pixel at the bottom and right) with that padding as constants."""

    def __init__(self, conv: nn.Conv2d) -> None:
        from timm.layers.padding import get_same_padding

        super().__init__()
        self.conv = conv
        # timm's own formula at an input size of one stride (any multiple of the stride gives the same).
        (pad_h, pad_w) = (get_same_padding(s, k, s, d)
                          for k, d, s in zip(conv.kernel_size, conv.dilation, conv.stride))
        self.pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        return _PaddedConv.apply(x, conv.weight, conv.bias, self.pads, conv.stride, conv.dilation, conv.groups)


def static_same_padding(model: nn.Module) -> nn.Module:
    """``model``, or a copy of it with each ``Conv2dSame`` replaced by ``_StaticSameConv2d``: the same outputs
    for inputs whose sizes are multiples of the model's size divisor (checked by ``export_onnx``)."""
    import copy

    from timm.layers import Conv2dSame

    if not any(isinstance(module, Conv2dSame) for module in model.modules()):
        return model
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv2dSame):
                setattr(parent, name, _StaticSameConv2d(child))
    return model


def export_onnx(model: nn.Module, path: str | os.PathLike | None = None, *, opset: int = DEFAULT_OPSET) -> bytes:
    """The ONNX file of a ``CASNet`` (the contract in the module docstring), as bytes; also written
    atomically to ``path`` when given. The model's training mode is left as it was."""
    import onnx

    was_training = model.training
    # A small trace input: every shape in the graph follows the input, so its size does not matter.
    divisor = model.size_divisor
    example = torch.zeros(1, 3, 2 * divisor, 4 * divisor, device=model.pixel_mean.device)
    buffer = io.BytesIO()
    try:
        exported = static_same_padding(model)
        if exported is not model:
            check = torch.rand(example.shape, generator=torch.Generator().manual_seed(0)).to(example.device) * 255
            with torch.no_grad():
                same = all(torch.equal(a, b) for a, b in zip(model.eval()(check).values(),
                                                                 exported.eval()(check).values()))
            if not same:
                raise RuntimeError("the constant 'same' padding differs from the model's at a multiple of its "
                                   "size divisor: a stride does not divide the size divisor")
        wrapper = _HeadsAsTuple(exported)
        dynamic = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
        dynamic.update({name: {0: "batch", 2: "height_s", 3: "width_s"} for name in wrapper.names})
        with warnings.catch_warnings():
            # The legacy exporter warns that it is deprecated, and the trace warns that the model's
            # size-divisor check becomes a constant: the check is part of the file's contract instead.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(wrapper.eval(), (example,), buffer, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=list(wrapper.names), dynamic_axes=dynamic)
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, _metadata(model))
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    if path is not None:
        with atomic_write(path) as f:
            f.write(data)
    return data


def _metadata(model: nn.Module) -> dict[str, str]:
    return {
        "casnet_format": FORMAT,
        "mode": model.class_space.mode,
        "class_names": json.dumps(list(model.class_space.names)),
        "config": json.dumps(dict(model.config)),
        "output_stride": str(model.output_stride),
        "size_divisor": str(model.size_divisor),
        "pixel_mean": json.dumps([float(v) for v in model.pixel_mean.flatten().tolist()]),
    }


# ----------------------------------------------------------------------------------------------
# The onnxruntime backend
# ----------------------------------------------------------------------------------------------


def onnxruntime_default_device() -> torch.device:
    """CUDA when both torch and onnxruntime have it (onnxruntime-gpu), else the CPU: the device "auto"."""
    import onnxruntime

    cuda = torch.cuda.is_available() and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    return torch.device("cuda" if cuda else "cpu")


class OnnxNetwork:
    """A CASNet ONNX file run by onnxruntime, with the part of ``CASNet``'s interface the Predictor uses.

    Called on (B, 3, H, W) float 0..255 images (H, W multiples of ``size_divisor``) on ``device``, it returns
    the dict of head outputs as tensors on ``device``, like ``CASNet.forward``. Inputs and outputs are bound
    to torch memory (onnxruntime I/O binding), so no copy is made between torch and onnxruntime.

    Args:
        source: the file's path, or its bytes (``export_onnx``).
        device: "cpu", "cuda" or "cuda:N" (onnxruntime's CUDA provider, from onnxruntime-gpu).
    """

    def __init__(self, source: str | os.PathLike | bytes, device: str | torch.device = "cpu") -> None:
        import onnxruntime

        self.device = torch.device(device)
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise ValueError("onnxruntime has no CUDA provider here (install onnxruntime-gpu), "
                                 "use device 'cpu' for the onnxruntime backend")
            providers: list[Any] = [("CUDAExecutionProvider", {"device_id": self.device.index or 0}),
                                    "CPUExecutionProvider"]
        elif self.device.type == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise ValueError(f"the onnxruntime backend runs on 'cpu' or 'cuda', not {str(device)!r}")
        name = "the given ONNX bytes" if isinstance(source, bytes) else str(source)
        if not isinstance(source, bytes):
            if not Path(source).is_file():
                raise ValueError(f"ONNX file not found: {source}")
            source = str(source)
        try:
            self.session = onnxruntime.InferenceSession(source, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types for foreign files
            raise ValueError(f"cannot load {name} with onnxruntime: {error}") from error
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("casnet_format") != FORMAT:
            raise ValueError(f"{name} is not a CASNet export (metadata casnet_format "
                             f"{meta.get('casnet_format')!r}, expected {FORMAT!r}): write it with `casnet export`")
        try:
            self.class_space: ClassSpace = class_space(meta["mode"])
            class_names = json.loads(meta["class_names"])
            self.config: dict[str, Any] = json.loads(meta["config"])
            self.output_stride = int(meta["output_stride"])
            self.size_divisor = int(meta["size_divisor"])
            self.pixel_mean = torch.tensor(json.loads(meta["pixel_mean"]), device=self.device).view(1, 3, 1, 1)
        except (KeyError, ValueError, RuntimeError) as error:
            raise ValueError(f"{name}: incomplete or malformed CASNet metadata ({error!r})") from error
        if list(self.class_space.names) != class_names:
            raise ValueError(f"{name}: class list {class_names} does not match mode {meta['mode']!r}")
        # Output name -> its channel count, the one static dimension of each output.
        self._channels = {output.name: int(output.shape[1]) for output in self.session.get_outputs()}
        self.has_semantic_head = "semantic" in self._channels
        #: "fp32", or "int8" for a quantized export (``casnet_core.quantize``); float32 inputs and outputs both.
        self.precision = meta.get("precision", "fp32")

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) float 0..255 -> {"semantic"?, "attributes", "box_logits"}: (B, C, H/s, W/s) float32."""
        height, width = images.shape[-2:]
        if height % self.size_divisor or width % self.size_divisor:
            raise ValueError(f"input size {(height, width)} is not a multiple of {self.size_divisor}")
        images = images.to(self.device, torch.float32).contiguous()
        batch, s = images.shape[0], self.output_stride
        outputs = {name: torch.empty(batch, channels, height // s, width // s, device=self.device)
                   for name, channels in self._channels.items()}
        binding = self.session.io_binding()
        device_type, device_id = self.device.type, self.device.index or 0
        binding.bind_input(INPUT_NAME, device_type, device_id, np.float32, tuple(images.shape), images.data_ptr())
        for name, tensor in outputs.items():
            binding.bind_output(name, device_type, device_id, np.float32, tuple(tensor.shape), tensor.data_ptr())
        if device_type == "cuda":
            # onnxruntime reads the input on its own stream: the torch work that wrote it must be done.
            torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(binding)  # returns once the outputs are written
        return outputs


# ----------------------------------------------------------------------------------------------
# Agreement with PyTorch
# ----------------------------------------------------------------------------------------------


def compare_with_torch(model: nn.Module, network: OnnxNetwork,
                       sizes: Sequence[tuple[int, int]] = CHECK_SIZES, *, seed: int = 0) -> dict[str, dict[str, float]]:
    """Runs both on generated street scenes (``casnet_core.synth``, 256x512, resized to each size rounded up
    to the size divisor); per head, the maximum absolute difference and the largest |PyTorch| value over all
    sizes."""
    import cv2

    from casnet_core.synth import generate_scene

    device = model.pixel_mean.device
    divisor = model.size_divisor
    report: dict[str, dict[str, float]] = {}
    was_training = model.training
    model.eval()
    try:
        for index, (height, width) in enumerate(sizes):
            height, width = -(-height // divisor) * divisor, -(-width // divisor) * divisor
            scene = generate_scene(seed + index, 256, 512)[0]
            image = cv2.resize(scene, (width, height), interpolation=cv2.INTER_AREA)
            images = torch.from_numpy(image).permute(2, 0, 1)[None].float().contiguous()
            with torch.inference_mode():
                expected = model(images.to(device))
            got = network(images.to(network.device))
            for name, reference in expected.items():
                difference = (got[name].cpu() - reference.float().cpu()).abs().max().item()
                row = report.setdefault(name, {"max_abs_diff": 0.0, "max_abs_value": 0.0})
                # NaN wins (builtin max would drop it): a non-finite output never passes the check.
                row["max_abs_diff"] = float(np.maximum(row["max_abs_diff"], difference))
                row["max_abs_value"] = max(row["max_abs_value"], reference.abs().max().item())
    finally:
        model.train(was_training)
    return report


def agrees(report: dict[str, dict[str, float]], *, atol: float = CHECK_ATOL, rtol: float = CHECK_RTOL) -> bool:
    """Whether every head of a ``compare_with_torch`` report is within atol + rtol * max |PyTorch|."""
    return all(row["max_abs_diff"] <= atol + rtol * row["max_abs_value"] for row in report.values())


# ----------------------------------------------------------------------------------------------
# CLI: casnet export
# ----------------------------------------------------------------------------------------------


def model_mode(path: str | os.PathLike) -> str:
    """The mode ("panoptic" or "instance") of a checkpoint or of an ONNX export (from its metadata), read
    without running it; ValueError (CheckpointError for a checkpoint) with one line for a file that is neither."""
    if str(path).lower().endswith(".onnx"):
        import onnx

        from casnet_core.errors import one_line

        if not Path(path).is_file():
            raise ValueError(f"ONNX file not found: {path}")
        try:
            proto = onnx.load_model(str(path), load_external_data=False)
        except Exception as error:  # protobuf raises its own types for foreign files
            raise ValueError(f"{path} is not a readable ONNX file: {one_line(error)}") from None
        meta = {prop.key: prop.value for prop in proto.metadata_props}
        if meta.get("casnet_format") != FORMAT or meta.get("mode") not in ("panoptic", "instance"):
            raise ValueError(f"{path} is not a CASNet export (metadata casnet_format {meta.get('casnet_format')!r}): "
                             "write it with `casnet export`")
        return meta["mode"]
    from casnet_core.checkpoint import read_checkpoint

    return read_checkpoint(path)["mode"]


def _main(args: argparse.Namespace) -> int:
    from casnet_core.checkpoint import CheckpointError, load_model
    from casnet_core.formats import check_outputs_spare_inputs

    if args.checkpoint is None:
        from casnet_core import default_model_path

        try:
            args.checkpoint = str(default_model_path())
        except FileNotFoundError as error:
            raise SystemExit(f"casnet export: no --checkpoint given and {error}") from error
    out = Path(args.out)
    if out.is_dir() or args.out.endswith(os.sep):
        raise SystemExit(f"casnet export: --out {out} is a folder: give the file to write, e.g. {out / 'casnet.onnx'}")
    if out.parent.exists() and not out.parent.is_dir():
        raise SystemExit(f"casnet export: --out {out}: {out.parent} is not a folder")
    if args.calibration is not None and not args.int8:
        raise SystemExit("casnet export: --calibration calibrates the int8 export: give --int8 too")
    try:
        calibration_files: list[Path] = []
        if args.calibration is not None:
            from casnet_core.quantize import folder_images

            calibration_files = folder_images(args.calibration)  # CalibrationError: a folder with no image
        check_outputs_spare_inputs([("--out", out)], [("--checkpoint", args.checkpoint)]
                                   + [("--calibration", file) for file in calibration_files], command="export")
        model, _ = load_model(args.checkpoint, map_location="cpu")
    except (CheckpointError, ValueError) as error:
        raise SystemExit(f"casnet export: {error}") from error
    # Checked before it is written: a file that fails the check never replaces a good export.
    data = export_onnx(model, opset=args.opset)
    report = compare_with_torch(model, OnnxNetwork(data, device="cpu"), [tuple(s) for s in args.check_size])
    sizes = ", ".join(f"{h}x{w}" for h, w in args.check_size)
    print(f"onnxruntime vs PyTorch on generated scenes ({sizes}):")
    for name, row in report.items():
        print(f"  {name:11s} max abs diff {row['max_abs_diff']:.2e} (max |value| {row['max_abs_value']:.3g})")
    if not agrees(report):
        kept = "left as it was" if out.exists() else "not written"
        raise SystemExit(f"casnet export: onnxruntime disagrees with PyTorch beyond atol {CHECK_ATOL} + "
                         f"rtol {CHECK_RTOL} x |value| (or gives non-finite values): {out} {kept}")
    precision = "fp32"
    if args.int8:
        data = _int8(data, model, args)
        precision = "int8"
    with atomic_write(out) as f:
        f.write(data)
    print(f"wrote {out} ({len(data) / 1e6:.1f} MB, {precision}, opset {args.opset}, input {INPUT_NAME!r} "
          f"(N, 3, H, W) float32 RGB 0..255, H and W multiples of {model.size_divisor})")
    return 0


def _int8(data: bytes, model: nn.Module, args: argparse.Namespace) -> bytes:
    """The int8 version of the export ``data`` (``casnet_core.quantize``), its agreement with fp32 printed."""
    from casnet_core.quantize import CalibrationError, calibration_images, quantize_int8, semantic_agreement

    label = "generated scenes" if args.calibration is None else f"the images of {args.calibration}"
    print(f"quantizing to int8 (QDQ, per-channel, GPTQ-rounded, bias-corrected), calibrated on {label}")
    try:
        quantized = quantize_int8(data, calibration_images(args.calibration), calibration=label)
    except CalibrationError as error:
        raise SystemExit(f"casnet export: {error}") from None
    fp32, int8 = OnnxNetwork(data, device="cpu"), OnnxNetwork(quantized, device="cpu")
    for index, (height, width) in enumerate(args.check_size):
        images = _check_images(index, height, width, model.size_divisor)
        reference, got = fp32(images), int8(images)
        if not all(bool(torch.isfinite(tensor).all()) for tensor in got.values()):
            raise SystemExit(f"casnet export: the int8 export gives non-finite values at {height}x{width}: "
                             f"{args.out} not written")
        print(f"  int8 vs fp32 at {height}x{width}: semantic argmax agrees on "
              f"{100 * semantic_agreement(reference, got):.1f} % of the cells")
    return quantized


def _check_images(index: int, height: int, width: int, divisor: int) -> torch.Tensor:
    """(1, 3, H, W) generated check scene ``index`` at the size rounded up to the divisor (as
    compare_with_torch)."""
    import cv2

    from casnet_core.synth import generate_scene

    height, width = -(-height // divisor) * divisor, -(-width // divisor) * divisor
    image = cv2.resize(generate_scene(index, 256, 512)[0], (width, height), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(image).permute(2, 0, 1)[None].float().contiguous()


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 256x512, got {text!r}") from None
    if height < 32 or width < 32:
        raise argparse.ArgumentTypeError(f"check sizes are at least 32x32, got {text!r}")
    return height, width


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export the network to ONNX (dynamic H, W) and check it against PyTorch with onnxruntime",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default onnx)")
    parser.add_argument("--out", required=True, help="output file, e.g. casnet.onnx")
    parser.add_argument("--checkpoint", default=None, help="checkpoint file (default: the shipped default model)")
    parser.add_argument("--opset", type=int, choices=OPSETS, default=DEFAULT_OPSET,
                        help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--check-size", type=_size, nargs="+", default=[*CHECK_SIZES], metavar="HxW",
                        help="sizes of the generated scenes the export is checked on (default "
                             + " ".join(f"{h}x{w}" for h, w in CHECK_SIZES) + ")")
    parser.add_argument("--int8", action="store_true",
                        help="write the int8 version (static quantization, QDQ, per-channel weights) for "
                             "onnxruntime on the CPU (precision int8)")
    parser.add_argument("--calibration", default=None, metavar="DIR",
                        help="with --int8: calibrate on the images of DIR (read only, at most 64, scaled to fit "
                             "512x1024) instead of generated street scenes at the default model's scale")
    parser.set_defaults(func=_main)
