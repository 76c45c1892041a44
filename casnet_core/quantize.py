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
* bias-corrected (``correct_biases``): each convolution's bias is shifted so that, on the calibration images, the
  int8 network's per-channel mean output equals the float network's (int8 rounding in the backbone otherwise
  shifts the means of the features, and so the heads' logits, by a few hundredths);
* kept out of quantization: the last 1x1 convolution of each head (``FLOAT_NODES``) and what follows it
  (the attributes' exp): the heads' outputs are what the post-processing thresholds (box probabilities
  at 0.5, box IoUs, the argmax of 19 close logits), and one int8 step there costs more accuracy than its
  share of the time (``bench/bench_cpu_precision.py`` measures PQ both ways with ``--quantize-heads``).

The result keeps the export's contract (float32 input and outputs, same names and metadata) and adds the
metadata ``precision`` (``int8``) and ``calibration`` (what it was calibrated on), so every reader of the
Predictor's outputs is unchanged: the post-processing still gets float32 heads.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

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
RECIPE = "qdq-u8s8-perchannel-minmax-average-shapes-float-biascorrected-4"
#: Calibration images the bias correction measures its means on, at most (the first ones): it runs the network
#: once per convolution (about 55) over them.
BIAS_CORRECTION_IMAGES = 8


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
                  quantize_heads: bool = False, bias_correction: bool = True) -> bytes:
    """The int8 (QDQ, per-channel) version of a CASNet ONNX file, as bytes (see the module docstring).

    Args:
        onnx_model: a CASNet ONNX export (``casnet_core.export.export_onnx``) as bytes.
        images: (H, W, 3) uint8 RGB calibration images (``calibration_images``).
        size: the box calibration images are scaled to fit inside.
        calibration: what the images are, written into the metadata.
        quantize_heads: also quantize the heads' output convolutions (measured: costs accuracy).
        bias_correction: shift the biases (``correct_biases``) on the first ``BIAS_CORRECTION_IMAGES`` images.

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
    corrected = correct_biases(prepared_proto, quantized, batches[:BIAS_CORRECTION_IMAGES]) if bias_correction else 0
    meta.update(precision="int8", calibration=calibration,
                float_nodes=json.dumps(excluded), bias_correction=str(corrected))
    onnx.helper.set_model_props(quantized, meta)
    return quantized.SerializeToString()


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
    import onnxruntime
    from onnx import numpy_helper
    from onnx.utils import Extractor

    input_name = quantized_model.graph.input[0].name
    float_outputs = {node.name: node.output[0] for node in float_model.graph.node if node.op_type == "Conv"}
    initializers = {tensor.name: tensor for tensor in quantized_model.graph.initializer}
    producers = {output: node for node in quantized_model.graph.node for output in node.output}

    def bias_tensor(conv) -> tuple[onnx.TensorProto, np.ndarray | None] | None:
        """The initializer to shift and, for a quantized bias, its scale; None for a bias computed in the graph."""
        source = producers.get(conv.input[2])
        if source is not None and source.op_type == "DequantizeLinear" and source.input[0] in initializers:
            return initializers[source.input[0]], numpy_helper.to_array(initializers[source.input[1]])
        return (initializers[conv.input[2]], None) if conv.input[2] in initializers else None

    biases = {node.name: bias_tensor(node) for node in quantized_model.graph.node
              if node.op_type == "Conv" and len(node.input) > 2 and node.input[2] and node.name in float_outputs}
    convs = [node for node in quantized_model.graph.node if biases.get(node.name) is not None]
    if not convs or not batches:
        return 0

    def channel_means(model, outputs: list[str]) -> list[np.ndarray]:
        # Only the part of the graph the outputs need (onnxruntime runs every node of a session otherwise).
        part = Extractor(model).extract_model([input_name], outputs)
        session = onnxruntime.InferenceSession(part.SerializeToString(), providers=["CPUExecutionProvider"])
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
            steps = numpy_helper.to_array(tensor).astype(np.int64) + np.round(shift / scale).astype(np.int64)
            limits = np.iinfo(np.int32)
            values = np.clip(steps, limits.min, limits.max).astype(np.int32)
        tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    return len(convs)


def semantic_agreement(reference: dict, other: dict) -> float:
    """Fraction of cells where the argmax of two ``semantic`` outputs agree (1.0 without a semantic head)."""
    if "semantic" not in reference:
        return 1.0
    return float((reference["semantic"].argmax(1) == other["semantic"].argmax(1)).float().mean())
