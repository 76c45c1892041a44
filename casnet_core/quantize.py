"""int8 inference on the CPU: static quantization of the ONNX export with onnxruntime's quantization tools.

``quantize_int8`` turns a CASNet ONNX file (``casnet_core.export``) into an int8 one that onnxruntime runs with
its integer kernels (AVX-512 VNNI on current x86 CPUs):

* static quantization (``onnxruntime.quantization.quantize_static``), QDQ format, per-channel int8 weights
  (symmetric), uint8 activations with ranges from min/max calibration (averaged over the images);
* calibrated on images chosen with ``calibration_images``: by default ``CALIBRATION_COUNT`` generated street
  scenes (``casnet_core.synth``) at ``CALIBRATION_SIZE``, the scale the default model is trained at (objects
  of the same pixel sizes give the activations their ranges); or the images of a folder of the user's
  (``--calibration DIR``), each scaled to fit inside ``CALIBRATION_SIZE`` (aspect ratio kept) and padded to
  the size divisor with the mean colour, as the Predictor pads;
* the input quantized on the pixel grid (``pixel_grid_input``), one uint8 step per pixel value, where the
  normalisation allows (tf_efficientnet_lite's), instead of its calibrated range;
* weights rounded to their integers as GPTQ does (``round_weights``), not to the nearest: each convolution's
  integer weights (on onnxruntime's per-channel scales) are chosen column by column so that its output on the
  calibration images, given its int8 inputs, stays closest to the float weights' (the rounding, not the ranges,
  is most of the int8 error of this network's maps);
* bias-corrected (``correct_biases``): each convolution's bias is shifted so that, on the calibration images, the
  int8 network's per-channel mean output equals the float network's (int8 rounding in the backbone otherwise
  shifts the means of the features, and so the heads' logits, by a few hundredths);
* kept out of quantization: the last 1x1 convolution of each head (``FLOAT_NODES``) and what follows it
  (the attributes' exp): the heads' outputs are what the post-processing thresholds (box probabilities
  at 0.5, box IoUs, the argmax of 19 close logits), and one int8 step there costs more accuracy than its
  share of the time (``bench/bench_cpu_precision.py`` measures PQ both ways with ``--quantize-heads``).

The shipped model's last steps were trained through this rounding (``solver.fake_quant``,
``casnet_core.training.fake_quant``): its int8 is a little more accurate than its fp32 (README).

The result keeps the export's contract (float32 input and outputs, same names and metadata) and adds the
metadata ``precision`` (``int8``), ``calibration`` (what it was calibrated on), ``float_nodes``, ``input_grid``
(``pixels`` or ``calibrated``), ``weight_rounding`` and ``bias_correction`` (how many convolutions each changed), so
every reader of the Predictor's outputs is unchanged: the post-processing still gets float32 heads.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: Generated calibration scenes by default, their size (the default model's training scale) and first seed
#: (far from the seeds of ``casnet synth``'s train and val splits).
CALIBRATION_COUNT = 8
CALIBRATION_SIZE = (512, 1024)
CALIBRATION_SEED = 7_000_000
#: Image files a calibration folder is read for (what OpenCV reads).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: Calibration images read from a folder at most (sorted by name): more changes the ranges little.
MAX_FOLDER_IMAGES = 64
#: The head modules whose output convolution stays float (see the module docstring).
FLOAT_HEADS = ("semantic_head", "attribute_head", "box_head")
#: Version of the recipe above: part of the cache key, so a changed recipe never reuses an old file.
RECIPE = "qdq-u8s8-perchannel-minmax-average-shapes-float-pixelgrid-gptq-biascorrected-6"
#: Calibration images the weight rounding and the bias correction measure on, at most (the first ones): each runs
#: the network once per convolution (about 55) over them.
BIAS_CORRECTION_IMAGES = 8
#: GPTQ's dampening: this fraction of the mean of a Hessian's diagonal is added to it before it is inverted (the
#: paper's 1 %; measured 0.1 % and 10 % within the noise of the map agreement).
ROUNDING_DAMPING = 0.01
#: Output positions per calibration image a convolution's Hessian is estimated on, at most (a seeded subset; only
#: the layers at stride 2 to 8, whose Hessians are at most 144 wide, have more).
ROUNDING_POSITIONS = 8192


class CalibrationError(ValueError):
    """A calibration folder that holds no image, or an image that cannot be read."""


def folder_images(folder: str | os.PathLike) -> list[Path]:
    """The image files of a calibration folder (not recursive, sorted by name, at most ``MAX_FOLDER_IMAGES``);
    CalibrationError with one line for a folder that is missing or has none."""
    path = Path(folder)
    if not path.is_dir():
        raise CalibrationError(f"calibration folder {path} does not exist or is not a folder")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"calibration folder {path} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return files[:MAX_FOLDER_IMAGES]


def calibration_key(folder: str | os.PathLike | None = None, *, count: int = CALIBRATION_COUNT,
                    size: tuple[int, int] = CALIBRATION_SIZE) -> str:
    """A digest of what the calibration sees: the folder's image names and bytes, or the generated scenes'
    recipe (count, size, seed, package version); a changed calibration gives another key."""
    from casnet_core import __version__

    digest = hashlib.sha256(f"{RECIPE} {size[0]}x{size[1]}".encode())
    if folder is None:
        digest.update(f"synth {count} {CALIBRATION_SEED} {__version__}".encode())
    else:
        for file in folder_images(folder):
            digest.update(file.name.encode() + b"\0" + hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def calibration_images(folder: str | os.PathLike | None = None, *, count: int = CALIBRATION_COUNT,
                       size: tuple[int, int] = CALIBRATION_SIZE) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 RGB calibration images: ``count`` generated scenes of ``size``, or the images of
    ``folder`` (``folder_images``; read one at a time, never modified)."""
    if folder is None:
        from casnet_core.synth import generate_scene

        for index in range(count):
            yield generate_scene(CALIBRATION_SEED + index, *size)[0]
        return
    from casnet_core.data import read_image

    for file in folder_images(folder):
        try:
            yield read_image(str(file))
        except (FileNotFoundError, ValueError) as error:
            raise CalibrationError(f"calibration image {file} cannot be read: {error}") from None


def network_batch(image_rgb: np.ndarray, *, size: tuple[int, int], size_divisor: int,
                  pixel_mean: Sequence[float]) -> np.ndarray:
    """(1, 3, H', W') float32 network input of an image: scaled to fit inside ``size`` (aspect ratio kept,
    never up), padded at the bottom and right to the size divisor with the mean colour (as the Predictor)."""
    import cv2

    height, width = image_rgb.shape[:2]
    scale = min(1.0, size[0] / height, size[1] / width)
    new_height, new_width = max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))
    if (new_height, new_width) != (height, width):
        image_rgb = cv2.resize(image_rgb, (new_width, new_height), interpolation=cv2.INTER_AREA)
    padded_height = -(-new_height // size_divisor) * size_divisor
    padded_width = -(-new_width // size_divisor) * size_divisor
    batch = np.empty((1, 3, padded_height, padded_width), dtype=np.float32)
    batch[:] = np.asarray(pixel_mean, dtype=np.float32).reshape(1, 3, 1, 1)
    batch[0, :, :new_height, :new_width] = image_rgb.transpose(2, 0, 1)
    return batch


def float_nodes(model_proto, heads: Sequence[str] = FLOAT_HEADS) -> list[str]:
    """Names of the nodes kept in float: each head's output convolution and the nodes after it (the exported
    graph names a module's nodes ``/model/<module>/...``)."""
    names = []
    for node in model_proto.graph.node:
        for head in heads:
            prefix = f"/model/{head}/"
            if node.name.startswith(prefix) and not node.name.startswith(prefix + "hidden/"):
                names.append(node.name)
    outputs = {name for node in model_proto.graph.node if node.name in names for name in node.output}
    # What consumes a head's output (the attributes' Clip and Exp) stays float too.
    for node in model_proto.graph.node:
        if node.name not in names and outputs.intersection(node.input):
            names.append(node.name)
            outputs.update(node.output)
    return names


def shape_nodes(model_proto) -> list[str]:
    """Names of the nodes that compute from tensor shapes only, not from pixel values: the graph's own arithmetic
    on sizes, e.g. the target sizes of the fusion's Resize nodes (Shape, Gather, Concat), or the "same" padding of
    the tf_ EfficientNets in exports that compute it (Div, Ceil; ``casnet_core.export`` writes it as constants).
    Quantized, their results round to other sizes: outputs of the wrong size or shifted features."""
    constants = {tensor.name for tensor in model_proto.graph.initializer}
    from_shapes: set[str] = set()
    names = []
    for node in model_proto.graph.node:  # in topological order, as ONNX requires
        if node.op_type == "Constant":
            constants.update(node.output)
            continue
        inputs = [name for name in node.input if name]
        if node.op_type in ("Shape", "Size") or (
                inputs and all(i in from_shapes or i in constants for i in inputs)
                and any(i in from_shapes for i in inputs)):
            from_shapes.update(node.output)
            names.append(node.name)
    return names


def quantize_int8(onnx_model: bytes, images: Iterator[np.ndarray] | Sequence[np.ndarray], *,
                  size: tuple[int, int] = CALIBRATION_SIZE, calibration: str = "generated scenes",
                  quantize_heads: bool = False, pixel_grid: bool = True, weight_rounding: bool = True,
                  bias_correction: bool = True) -> bytes:
    """The int8 (QDQ, per-channel) version of a CASNet ONNX file, as bytes (see the module docstring).

    Args:
        onnx_model: a CASNet ONNX export (``casnet_core.export.export_onnx``) as bytes.
        images: (H, W, 3) uint8 RGB calibration images (``calibration_images``).
        size: the box calibration images are scaled to fit inside.
        calibration: what the images are, written into the metadata.
        quantize_heads: also quantize the heads' output convolutions (measured: costs accuracy).
        pixel_grid: quantize the input on the pixel grid where the normalisation allows (``pixel_grid_input``).
        weight_rounding: choose the integer weights as GPTQ does (``round_weights``), not the nearest ones.
        bias_correction: shift the biases (``correct_biases``). Both measure on the first
            ``BIAS_CORRECTION_IMAGES`` images.

    Raises CalibrationError when ``images`` is empty.
    """
    import json

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    proto = onnx.load_from_string(onnx_model)
    meta = {prop.key: prop.value for prop in proto.metadata_props}
    divisor, mean = int(meta["size_divisor"]), json.loads(meta["pixel_mean"])
    input_name = proto.graph.input[0].name
    batches = [network_batch(image, size=size, size_divisor=divisor, pixel_mean=mean) for image in images]
    if not batches:
        raise CalibrationError("no calibration image")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

    with tempfile.TemporaryDirectory(prefix="casnet-int8-") as folder:
        source, prepared, output = (Path(folder) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(onnx_model)
        # onnxruntime's recommended pre-processing: shape inference and graph optimisation before quantizing.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        prepared_proto = onnx.load(str(prepared))
        excluded = ([] if quantize_heads else float_nodes(prepared_proto)) + shape_nodes(prepared_proto)
        quantize_static(
            str(prepared), str(output), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
            # Each tensor's range is the mean of its per-image min/max, not the extremes over all images: measured
            # on the default model (8 scenes at 512x1024), PQ of the int8 maps against fp32's 0.62 -> 0.81.
            extra_options={"CalibMovingAverage": True},
        )
        quantized = onnx.load(str(output))
    on_pixel_grid = pixel_grid_input(prepared_proto, quantized) if pixel_grid else False
    measured = batches[:BIAS_CORRECTION_IMAGES]
    rounded = round_weights(prepared_proto, quantized, measured) if weight_rounding else 0
    corrected = correct_biases(prepared_proto, quantized, measured) if bias_correction else 0
    meta.update(precision="int8", calibration=calibration, float_nodes=json.dumps(excluded),
                input_grid="pixels" if on_pixel_grid else "calibrated", weight_rounding=str(rounded),
                bias_correction=str(corrected))
    onnx.helper.set_model_props(quantized, meta)
    return quantized.SerializeToString()


def partial_session(model, outputs: list[str]):
    """An onnxruntime session of only the part of ``model`` (an ``onnx.ModelProto``, left as it was) that
    ``outputs`` need: a session of the whole model runs every node whatever outputs are asked."""
    import onnx
    import onnxruntime
    from onnx.utils import Extractor

    graph = model.graph
    # The Extractor finds a tensor by its value_info: the quantizer's DequantizeLinear outputs have none.
    known = {info.name for info in graph.value_info} | {output.name for output in graph.output}
    missing = [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
               for name in outputs if name not in known]
    graph.value_info.extend(missing)
    try:
        part = Extractor(model).extract_model([graph.input[0].name], outputs)
    finally:
        if missing:
            del graph.value_info[-len(missing):]
    return onnxruntime.InferenceSession(part.SerializeToString(), providers=["CPUExecutionProvider"])


def dequantized_initializer(node, index: int, producers: dict, initializers: dict):
    """The DequantizeLinear node that gives ``node`` its input ``index`` from an initializer (a convolution's int8
    weights: 1, its int32 bias: 2), or None."""
    source = producers.get(node.input[index]) if len(node.input) > index and node.input[index] else None
    if source is None or source.op_type != "DequantizeLinear" or source.input[0] not in initializers:
        return None
    return source


def int32_steps(values: np.ndarray) -> np.ndarray:
    """Bias steps as int32, clipped to its range."""
    limits = np.iinfo(np.int32)
    return np.clip(values, limits.min, limits.max).astype(np.int32)


def pixel_grid_input(float_model, quantized_model) -> bool:
    """Quantize the network's input on the pixel grid, in place, where one uint8 step can be one pixel value: the
    normalized image ``(pixels - mean) / std`` gets the scale ``1 / std`` and the zero point ``round(mean)``
    (``Sub`` takes that integer mean), so each 0..255 pixel value is its own integer; the convolutions reading the
    input get ``weights . (round(mean) - mean) / std`` added to their biases (their zero padding sees that
    shift, ~0.004 for the tf_efficientnet_lite mean 127.5). The calibrated range misses pixel values (default model:
    a step of 0.0075 against the pixels' 0.0078, the darkest and brightest values clipped).

    Only where ``std`` is the same for the three channels and every channel's mean is within half a pixel value
    of one integer (tf_efficientnet_lite's 127.5); else nothing changes.

    Args:
        float_model: the ``onnx.ModelProto`` that was quantized (same node names; its float weights).
        quantized_model: its QDQ quantization (``quantize_static``), modified in place.

    Returns whether the input was put on the pixel grid.
    """
    from onnx import numpy_helper

    graph = quantized_model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def only_consumer(name: str, op_type: str):
        found = consumers.get(name, [])
        return found[0] if len(found) == 1 and found[0].op_type == op_type else None

    # The export's normalisation: images -> Sub(mean) -> Div(std) -> QuantizeLinear.
    subtract = only_consumer(graph.input[0].name, "Sub")
    divide = only_consumer(subtract.output[0], "Div") if subtract is not None else None
    quantizer = only_consumer(divide.output[0], "QuantizeLinear") if divide is not None else None
    if quantizer is None or subtract.input[1] not in initializers or divide.input[1] not in initializers:
        return False
    mean = numpy_helper.to_array(initializers[subtract.input[1]]).astype(np.float64).reshape(-1)
    std = numpy_helper.to_array(initializers[divide.input[1]]).astype(np.float64).reshape(-1)
    zero_point = float(np.round(mean.mean()))
    if np.ptp(std) > 0 or np.abs(mean - zero_point).max() > 0.5 or not 0 <= zero_point <= 255:
        return False
    dequantizers = consumers.get(quantizer.output[0], [])
    convs = [node for dequantizer in dequantizers for node in consumers.get(dequantizer.output[0], [])]
    float_weights = {node.name: node.input[1] for node in float_model.graph.node if node.op_type == "Conv"}
    float_initializers = {tensor.name: tensor for tensor in float_model.graph.initializer}
    if (not dequantizers or any(node.op_type != "DequantizeLinear" for node in dequantizers) or not convs
            or any(node.op_type != "Conv" or dequantized_initializer(node, 1, producers, initializers) is None
                   or dequantized_initializer(node, 2, producers, initializers) is None
                   or float_initializers.get(float_weights.get(node.name)) is None for node in convs)):
        return False
    new_scale = 1.0 / float(std[0])
    shift = (zero_point - np.broadcast_to(mean, (3,))) / std[0]  # per input channel: old input = new input + shift

    def write(name: str, values: np.ndarray) -> None:
        tensor = initializers[name]
        tensor.CopyFrom(numpy_helper.from_array(values.astype(numpy_helper.to_array(tensor).dtype), name))

    for conv in convs:
        weights = numpy_helper.to_array(float_initializers[float_weights[conv.name]]).astype(np.float64)
        source = dequantized_initializer(conv, 2, producers, initializers)
        bias = (numpy_helper.to_array(initializers[source.input[0]]).astype(np.float64)
                * numpy_helper.to_array(initializers[source.input[1]]).astype(np.float64)
                + np.einsum("oikl,i->o", weights, shift))
        # onnxruntime's integer convolution takes the bias in steps of input scale x weight scale.
        weight_scales = numpy_helper.to_array(
            initializers[dequantized_initializer(conv, 1, producers, initializers).input[1]]).astype(np.float64)
        steps_scale = new_scale * weight_scales
        write(source.input[0], int32_steps(np.round(bias / steps_scale)))
        write(source.input[1], steps_scale)
    # A new constant: the export's Div may share the mean's (127.5 / 127.5).
    means = numpy_helper.to_array(initializers[subtract.input[1]])
    graph.initializer.append(numpy_helper.from_array(np.full(means.shape, zero_point, means.dtype),
                                                     subtract.input[1] + "_pixel_grid"))
    subtract.input[1] = subtract.input[1] + "_pixel_grid"
    for node in [quantizer, *dequantizers]:
        write(node.input[1], np.array(new_scale))
        write(node.input[2], np.array(zero_point))
    return True


def gptq_integers(weights: torch.Tensor, scales: torch.Tensor, hessians: torch.Tensor, *,
                  damping: float = ROUNDING_DAMPING, limit: int = 127, block: int = 128) -> torch.Tensor:
    """Integer weights for float ``weights`` on fixed per-row ``scales``, chosen as GPTQ does (Frantar et al.,
    "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers", 2023, algorithm 1, in the
    columns' order; its "act order", largest inputs first, measured no better here): column by column, each column
    rounded to the nearest and its rounding error, weighted by the inverse Hessian, taken off the columns not yet
    rounded, so that ``(integers * scales) @ x`` stays close to ``weights @ x`` for the inputs ``x`` the Hessian
    ``sum x x^T`` was gathered on.

    Args:
        weights: (R, D) float weights, one row per output channel.
        scales: (R,) the step of each row's integers.
        hessians: (D, D) shared by every row (a dense convolution's input patches), or (R, D, D) one per row (a
            depthwise convolution: each output channel sees its own input channel).
        damping: fraction of the mean of each Hessian's diagonal added to it before it is inverted.
        limit: the integers' largest magnitude (onnxruntime's symmetric int8 weights: 127).
        block: columns whose errors are taken off the later columns together (the result does not depend on it).

    Returns (R, D) integer-valued float64 weights in ``[-limit, limit]``.
    """
    weights = weights.to(torch.float64).clone()
    scales = scales.to(torch.float64)
    hessians = hessians.to(torch.float64)
    shared = hessians.dim() == 2
    hessians = hessians.unsqueeze(0) if shared else hessians
    diagonal = torch.diagonal(hessians, dim1=1, dim2=2)
    # Inputs that are always zero (diagonal 0) carry no error: a unit diagonal keeps the inverse defined.
    dampened = hessians + torch.diag_embed(damping * diagonal.mean(1, keepdim=True).expand_as(diagonal)
                                           + (diagonal == 0).to(torch.float64))
    inverse = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(dampened)), upper=True)
    integers = torch.zeros_like(weights)
    width = weights.shape[1]
    for start in range(0, width, block):
        end = min(start + block, width)
        errors = torch.zeros((weights.shape[0], end - start), dtype=torch.float64)
        for offset, column in enumerate(range(start, end)):
            integers[:, column] = torch.clamp(torch.round(weights[:, column] / scales), -limit, limit)
            row = inverse[:, column, column:end]  # (1 or R, end - column)
            errors[:, offset] = (weights[:, column] - integers[:, column] * scales) / row[:, 0]
            weights[:, column:end] -= errors[:, offset, None] * row
        # The block's errors reach the columns after it at once (GPTQ's lazy batch: the same result, less traffic).
        if end < width:
            weights[:, end:] -= (errors @ inverse[0, start:end, end:] if shared
                                 else torch.einsum("rb,rbe->re", errors, inverse[:, start:end, end:]))
    return integers


def convolution_patches(inputs: torch.Tensor, *, kernel: Sequence[int], strides: Sequence[int],
                        pads: Sequence[int], dilations: Sequence[int], count: int | None = None,
                        random: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The input patches a 2D convolution multiplies its weights with, at its output positions.

    Args:
        inputs: (1, C, H, W) the convolution's input.
        kernel, strides, dilations: (kh, kw), (sh, sw), (dh, dw); pads: ONNX's (top, left, bottom, right).
        count: at most this many output positions, drawn by ``random`` without replacement (all when None).

    Returns (C, kh * kw, P) patches, in the order of a weight tensor's (C, kh, kw) dimensions flattened, and their
    (P,) int64 flat indices into the (H_out, W_out) output grid.
    """
    padded = F.pad(inputs[0], (pads[1], pads[3], pads[0], pads[2]))
    out_height, out_width = ((padded.shape[1 + axis] - dilations[axis] * (kernel[axis] - 1) - 1) // strides[axis] + 1
                             for axis in (0, 1))
    cells = out_height * out_width
    if count is None or cells <= count:
        positions = torch.arange(cells)
        if tuple(kernel) == (1, 1) and tuple(strides) == (1, 1) and not any(pads):  # the input itself
            return padded.reshape(padded.shape[0], 1, cells), positions
    else:  # sorted: the gather below then reads the image in order (~1.5x faster)
        positions = torch.from_numpy(np.sort(random.choice(cells, count, replace=False)))
    out_rows, out_cols = positions // out_width, positions % out_width
    offset_rows, offset_cols = (grid.reshape(-1) for grid in torch.meshgrid(
        torch.arange(kernel[0]) * dilations[0], torch.arange(kernel[1]) * dilations[1], indexing="ij"))
    flat = (out_rows[None] * strides[0] + offset_rows[:, None]) * padded.shape[2] + (
        out_cols[None] * strides[1] + offset_cols[:, None])  # (kh * kw, P) indices into the padded image
    gathered = torch.index_select(padded.reshape(padded.shape[0], -1), 1, flat.reshape(-1))
    return gathered.reshape(padded.shape[0], *flat.shape), positions


def round_weights(float_model, quantized_model, batches: Sequence[np.ndarray], *,
                  damping: float = ROUNDING_DAMPING, positions: int = ROUNDING_POSITIONS, seed: int = 0) -> int:
    """GPTQ rounding of an int8 QDQ model's convolution weights, in place: for each convolution with int8 weights
    (dense or depthwise), in graph order, its inputs on ``batches`` are taken from ``quantized_model`` as onnxruntime
    runs it (the convolutions before it already rounded), their Hessian gathered at up to ``positions`` output
    positions per image, and its integers chosen by ``gptq_integers`` from ``float_model``'s weights on the scales
    onnxruntime's quantizer chose (so the graph, and its speed, are unchanged). Written here because onnxruntime's
    tools apply GPTQ to 4-bit MatMul weights only.

    Args:
        float_model: the ``onnx.ModelProto`` that was quantized (same node names; its float weights).
        quantized_model: its QDQ quantization (``quantize_static``), modified in place.
        batches: (1, 3, H, W) float32 network inputs (``network_batch``).
        damping: ``gptq_integers``'s dampening.
        positions: output positions per image a Hessian is gathered on, at most (a random subset).
        seed: of that subset.

    Returns the number of convolutions rounded.
    """
    from onnx import helper, numpy_helper

    graph = quantized_model.graph
    input_name = graph.input[0].name
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    float_initializers = {tensor.name: tensor for tensor in float_model.graph.initializer}
    float_weights = {node.name: float_initializers.get(node.input[1]) for node in float_model.graph.node
                     if node.op_type == "Conv"}
    random = np.random.default_rng(seed)
    rounded = 0
    for conv in [node for node in graph.node if node.op_type == "Conv"]:
        source = dequantized_initializer(conv, 1, producers, initializers)
        if source is None or float_weights.get(conv.name) is None:
            continue  # a float convolution (the heads' outputs)
        integers_tensor = initializers[source.input[0]]
        integers = numpy_helper.to_array(integers_tensor)
        zero_points = (numpy_helper.to_array(initializers[source.input[2]]) if len(source.input) > 2
                       else np.zeros(1, np.int8))
        attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in conv.attribute}
        group, channels = attributes.get("group", 1), integers.shape[0]
        depthwise = group > 1 and group == channels and integers.shape[1] == 1
        explicit_pads = attributes.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")  # as the export writes
        if (integers.dtype != np.int8 or np.any(zero_points != 0) or integers.ndim != 4 or not explicit_pads
                or (group > 1 and not depthwise)):
            continue  # not a layout GPTQ is written for here: nearest integers kept
        geometry = {"kernel": integers.shape[2:], "strides": attributes.get("strides", [1, 1]),
                    "pads": attributes.get("pads", [0, 0, 0, 0]), "dilations": attributes.get("dilations", [1, 1])}
        session = partial_session(quantized_model, [conv.input[0]])
        width = integers[0].size
        hessians = torch.zeros((channels, width, width) if depthwise else (width, width), dtype=torch.float64)
        for batch in batches:
            inputs = torch.from_numpy(session.run([conv.input[0]], {input_name: batch})[0])
            patches, _ = convolution_patches(inputs, **geometry, count=positions, random=random)
            # Products in float32 (8192 positions: ~1e-6 relative), summed over images in float64.
            if depthwise:
                hessians += torch.bmm(patches, patches.transpose(1, 2)).to(torch.float64)
            else:
                flat = patches.reshape(width, -1)
                hessians += (flat @ flat.T).to(torch.float64)
        scales = torch.from_numpy(numpy_helper.to_array(initializers[source.input[1]]).astype(np.float64)).reshape(-1)
        weights = torch.from_numpy(numpy_helper.to_array(float_weights[conv.name]).copy()).reshape(channels, -1)
        chosen_integers = gptq_integers(weights, scales.expand(channels), hessians, damping=damping)
        integers_tensor.CopyFrom(numpy_helper.from_array(
            chosen_integers.numpy().astype(np.int8).reshape(integers.shape), integers_tensor.name))
        rounded += 1
    return rounded


def correct_biases(float_model, quantized_model, batches: Sequence[np.ndarray]) -> int:
    """Empirical bias correction of an int8 QDQ model (Nagel et al., "Data-Free Quantization through Weight
    Equalization and Bias Correction", 2019, section 4.2, with the means measured on data), in place: for each
    convolution in graph order, the mean of its output per channel over ``batches`` (pre-activation) is
    measured in ``float_model`` and in ``quantized_model`` with the convolutions before it already corrected,
    both run by onnxruntime as it runs them for inference (the convolutions before it on its int8 kernels), and
    the difference is added to its bias (the int32 quantized bias in steps of its scale, or the float bias of a
    convolution left float). Written here because onnxruntime's quantization tools have none (NNCF's works inside
    its own quantizer only).

    Args:
        float_model: the ``onnx.ModelProto`` that was quantized (same node names).
        quantized_model: its QDQ quantization (``quantize_static``), modified in place.
        batches: (1, 3, H, W) float32 network inputs (``network_batch``).

    Returns the number of convolutions corrected.
    """
    import onnx
    from onnx import numpy_helper

    input_name = quantized_model.graph.input[0].name
    float_outputs = {node.name: node.output[0] for node in float_model.graph.node if node.op_type == "Conv"}
    initializers = {tensor.name: tensor for tensor in quantized_model.graph.initializer}
    producers = {output: node for node in quantized_model.graph.node for output in node.output}

    def bias_tensor(conv) -> tuple[onnx.TensorProto, np.ndarray | None] | None:
        """The initializer to shift and, for a quantized bias, its scale; None for a bias computed in the graph."""
        source = dequantized_initializer(conv, 2, producers, initializers)
        if source is not None:
            return initializers[source.input[0]], numpy_helper.to_array(initializers[source.input[1]])
        return (initializers[conv.input[2]], None) if conv.input[2] in initializers else None

    biases = {node.name: bias_tensor(node) for node in quantized_model.graph.node
              if node.op_type == "Conv" and len(node.input) > 2 and node.input[2] and node.name in float_outputs}
    convs = [node for node in quantized_model.graph.node if biases.get(node.name) is not None]
    if not convs or not batches:
        return 0

    def channel_means(model, outputs: list[str]) -> list[np.ndarray]:
        session = partial_session(model, outputs)
        sums: list = [0.0] * len(outputs)
        for batch in batches:
            values = session.run(outputs, {input_name: batch})
            sums = [total + value.mean(axis=(0, 2, 3), dtype=np.float64) for total, value in zip(sums, values)]
        return [total / len(batches) for total in sums]

    targets = channel_means(float_model, [float_outputs[node.name] for node in convs])
    for node, target in zip(convs, targets):
        (mean,) = channel_means(quantized_model, [node.output[0]])
        shift = target - mean
        tensor, scale = biases[node.name]
        if scale is None:  # a float bias
            values = (numpy_helper.to_array(tensor) + shift).astype(np.float32)
        else:  # int32, in steps of its scale
            values = int32_steps(numpy_helper.to_array(tensor).astype(np.int64)
                                 + np.round(shift / scale).astype(np.int64))
        tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    return len(convs)


def semantic_agreement(reference: dict, other: dict) -> float:
    """Fraction of cells where the argmax of two ``semantic`` outputs agree (1.0 without a semantic head)."""
    if "semantic" not in reference:
        return 1.0
    return float((reference["semantic"].argmax(1) == other["semantic"].argmax(1)).float().mean())
