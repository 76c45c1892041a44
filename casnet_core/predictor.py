"""The one inference facade of CASNet (CLI, ROS node, evaluation, replay): image in, panoptic map and instances
out. ``casnet predict`` (``casnet_core.predict_command``) runs it on image files."""

from __future__ import annotations

import logging
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from casnet_core.cuda_graphs import CapturedGraph, CudaGraphs
from casnet_core.postprocess import DEFAULT_THRESHOLDS, common_attribute_support

#: PyTorch threads of the post-processing on the CPU. Its few hundred short, memory-bound operations gain little from
#: a second thread, and each one wakes the sleeping OpenMP threads (casnet_core sets OMP_WAIT_POLICY=PASSIVE): on this
#: 2-core CPU, 1024x2048 with 150 instances (bench/bench_postprocess.py), one thread is faster on an idle machine and
#: with the other core busy alike (README, "CPU threads"). The forward pass keeps all of PyTorch's threads.
POSTPROCESS_THREADS = 1


@contextmanager
def cpu_threads(count: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """PyTorch's intra-op threads set to ``count`` inside the block when it computes on the CPU (``device``),
    restored after; unchanged for another device. OpenMP keeps the setting per thread, so other threads of the
    process (another camera's worker) keep theirs."""
    previous = torch.get_num_threads()
    if previous == count or torch.device(device).type != "cpu":
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class Instance:
    """One thing instance, in pixels of the input image (box x1/y1 exclusive, centroid = mean pixel centre)."""

    id: int  # its panoptic id, label_id * 1000 + k
    label_id: int
    class_name: str
    score: float
    box: tuple[float, float, float, float]
    area: int
    centroid: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Prediction:
    """panoptic: (H, W) int32 Cityscapes panoptic ids; semantic: (H, W) uint8 Cityscapes label ids (0 void);
    instances: by decreasing score; timings: seconds of "preprocess", "forward", "postprocess"; nonfinite: NaN /
    inf values in the network's outputs (``casnet_core.postprocess.PanopticOutput.nonfinite``)."""

    panoptic: np.ndarray
    semantic: np.ndarray
    instances: list[Instance]
    timings: dict[str, float] = field(default_factory=dict)
    nonfinite: int = 0


#: Longest side, in pixels, that the network sees by default: a 4K or 8K frame is downscaled to it (aspect
#: ratio kept), Cityscapes' 1024x2048 runs at full resolution.
DEFAULT_MAX_INPUT_SIZE = 2048
BACKENDS = ("torch", "onnxruntime")
#: dtype of the torch backend's weights and activations. Half precision casts the weights (and, on CUDA and for bf16
#: on the CPU, uses the channels_last layout) rather than autocasting: at batch 1 autocast's per-op casts cost more
#: than they save on CUDA, and on the CPU (bf16, measured) cast weights are as fast as autocast or faster.
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: What the onnxruntime backend runs: the fp32 export, or its int8 version (``casnet_core.quantize``).
ONNXRUNTIME_PRECISIONS = ("fp32", "int8")
#: Every precision a Predictor takes (the command lines' and the node's choices).
PRECISION_CHOICES = (*PRECISIONS, "int8")
LOG = logging.getLogger(__name__)


def network_input_size(height: int, width: int, *, input_size: tuple[int, int] | None = None,
                       max_input_size: int | None = None) -> tuple[int, int]:
    """(H', W'): the size an (height, width) image is resized to for the network, before padding to the size
    divisor. One scale for both axes, so the aspect ratio is kept (up to rounding), as segment-anything's
    ``ResizeLongestSide``: the image is scaled to fit inside ``input_size`` (up or down), then down, never up,
    so that its longest side is at most ``max_input_size``. Neither given: the image's own size."""
    scale = 1.0
    if input_size is not None:
        scale = min(input_size[0] / height, input_size[1] / width)
    if max_input_size is not None:
        scale = min(scale, max_input_size / max(height, width))
    if scale == 1.0:
        return height, width
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> the first CUDA device when there is one, else the CPU; "cuda:N" / "cpu" as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available")
    return resolved


class Predictor:
    """Runs a CASNet model and its post-processing on single RGB images of any size.

    Args:
        model: a ``CASNet`` (``casnet_core.model.build_casnet``); moved to ``device``, cast to ``precision`` and
            put in eval mode, in place (as ``nn.Module.to`` does). With
            ``backend="onnxruntime"`` also an ONNX file of ``casnet export`` (path or bytes); a ``CASNet`` is
            then exported in memory (``casnet_core.export.export_onnx``).
        device: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".
        precision: "fp32", "fp16" or "bf16" (``PRECISIONS``): the dtype the torch backend casts the model's
            weights to and runs the forward pass in (channels_last on CUDA and for CPU bf16); the
            post-processing always runs in float32. Half precision is the fast path on CUDA; on the CPU bf16
            runs with the CPU's bfloat16 instructions (AVX-512 BF16 / AMX). Or "int8": the onnxruntime
            backend's int8 export (``casnet_core.quantize``; a CASNet is quantized in memory, calibrated on
            generated scenes; ``from_checkpoint`` caches it). The onnxruntime backend runs fp32 and int8; an int8
            ONNX file runs as int8 whatever is asked.
        cuda_graph: replay the forward pass as a CUDA graph (``casnet_core.cuda_graphs``), captured once per
            network input size and batch size rounded up to a power of two (at most
            ``cuda_graphs.MAX_CUDA_GRAPHS`` kept, the least recently used dropped first): removes the launch
            cost of the network's ~hundreds of kernels, for cameras of a fixed size. Torch backend on CUDA only
            (elsewhere ignored with a warning).
        backend: "torch" runs the model with PyTorch; "onnxruntime" runs its ONNX export with onnxruntime
            (``casnet_core.export.OnnxNetwork``: CPU provider, CUDA provider with onnxruntime-gpu); the
            pre- and post-processing are the same torch code on ``device`` for both.
        mode: what is output, "panoptic" or "instance"; default the model's mode. A panoptic model can
            output instances only; an instance model has no stuff classes to output.
        input_size: optional (height, width) box the image is scaled to fit inside (up or down, aspect ratio
            kept) before the network; see ``network_input_size``.
        max_input_size: the longest side, in pixels, the network sees (default 2048): larger images are
            scaled down, aspect ratio kept; None for no limit. The network input is then padded to
            ``model.size_divisor``. Outputs are always at the size of the given image.
        box_threshold, nms_iou, min_area, stuff_area, tie_margin, max_instances: post-processing thresholds
            (``casnet_core.postprocess.common_attribute_support``); plain attributes, settable between calls.
            ``min_area`` and ``stuff_area`` are in pixels of the given image.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        *,
        backend: str = "torch",
        cuda_graph: bool = False,
        mode: str | None = None,
        input_size: tuple[int, int] | None = None,
        max_input_size: int | None = DEFAULT_MAX_INPUT_SIZE,
        box_threshold: float = DEFAULT_THRESHOLDS["box_threshold"],
        nms_iou: float = DEFAULT_THRESHOLDS["nms_iou"],
        min_area: int = DEFAULT_THRESHOLDS["min_area"],
        stuff_area: int = DEFAULT_THRESHOLDS["stuff_area"],
        tie_margin: float = DEFAULT_THRESHOLDS["tie_margin"],
        max_instances: int = DEFAULT_THRESHOLDS["max_instances"],
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if precision not in PRECISION_CHOICES:
            raise ValueError(f"precision must be one of {PRECISION_CHOICES}, got {precision!r}")
        if backend == "torch" and precision not in PRECISIONS:
            raise ValueError(f"precision {precision} runs with the onnxruntime backend (an int8 ONNX export)")
        if backend == "onnxruntime" and precision not in ONNXRUNTIME_PRECISIONS:
            raise ValueError(f"precision {precision} runs with the torch backend; onnxruntime runs fp32 and int8")
        self.backend = backend
        self.precision = precision
        self.dtype = PRECISIONS.get(precision, torch.float32)
        self._channels_last = False  # int8: float32 in and out of the network
        if backend == "onnxruntime":
            from casnet_core.export import OnnxNetwork, export_onnx, onnxruntime_default_device

            if str(device) == "auto":  # int8: onnxruntime's integer kernels are its CPU provider's
                device = torch.device("cpu") if precision == "int8" else onnxruntime_default_device()
            self.device = resolve_device(device)
            source = export_onnx(model) if isinstance(model, torch.nn.Module) else model
            self.model = OnnxNetwork(source, device=self.device)
            if precision == "int8" and self.model.precision != "int8":
                from casnet_core.quantize import calibration_images, quantize_int8

                source = source if isinstance(source, bytes) else Path(source).read_bytes()
                self.model = OnnxNetwork(quantize_int8(source, calibration_images()), device=self.device)
            self.precision = self.model.precision
        elif isinstance(model, torch.nn.Module):
            self.device = resolve_device(device)
            # channels_last: cuDNN's fast layout; on the CPU oneDNN's bfloat16 convolutions run in it (bf16 cast
            # weights 1.4 s -> 0.34 s per 256x512 frame with the default model, against 0.35 s with autocast).
            self._channels_last = self.device.type == "cuda" or self.dtype == torch.bfloat16
            self.model = model.to(self.device, dtype=self.dtype).eval()
            if self._channels_last:
                self.model = self.model.to(memory_format=torch.channels_last)
            if self.device.type == "cuda":
                # Camera frames keep their size: cuDNN picks its fastest kernels once per input shape.
                torch.backends.cudnn.benchmark = True
        else:
            raise ValueError(f"the torch backend needs a CASNet module, got {type(model).__name__} "
                             "(an ONNX file runs with backend='onnxruntime')")
        if cuda_graph and (self.device.type != "cuda" or backend != "torch"):
            warnings.warn("CUDA graphs run with the torch backend on CUDA only; running without", stacklevel=2)
        self.cuda_graph = bool(cuda_graph) and self.device.type == "cuda" and backend == "torch"
        self._graphs = CudaGraphs(self.device, self._capture) if self.cuda_graph else None
        self.class_space = self.model.class_space
        self.mode = mode or self.class_space.mode
        if self.mode not in ("panoptic", "instance"):
            raise ValueError(f"mode must be 'panoptic' or 'instance', got {self.mode!r}")
        if self.mode == "panoptic" and self.class_space.mode != "panoptic":
            raise ValueError("an instance-mode model has no stuff classes: it cannot output panoptic maps")
        if input_size is not None:
            input_size = (int(input_size[0]), int(input_size[1]))
            if min(input_size) < 1:
                raise ValueError(f"input_size must be positive, got {input_size}")
        if max_input_size is not None and int(max_input_size) < 1:
            raise ValueError(f"max_input_size must be positive or None, got {max_input_size}")
        self.input_size = input_size
        self.max_input_size = None if max_input_size is None else int(max_input_size)
        self.box_threshold = box_threshold
        self.nms_iou = nms_iou
        self.min_area = min_area
        self.stuff_area = stuff_area
        self.tie_margin = tie_margin
        self.max_instances = max_instances
        self.checkpoint_info: dict[str, Any] = {}
        self.backend_note = f"backend {backend!r} asked for"  # why this backend runs (from_checkpoint: "auto: ...")
        self._label_id_lut = torch.from_numpy(self.class_space.label_id_lut().astype(np.int64)).to(self.device)

    @classmethod
    def from_checkpoint(cls, path: str, device: str | torch.device = "auto", precision: str = "fp32", *,
                        backend: str = "auto", calibration: str | None = None, **kwargs: Any) -> "Predictor":
        """A predictor for the model a file describes: a checkpoint (``casnet_core.checkpoint.load_model``)
        or an ONNX export (``casnet export``, a file ending in ".onnx").

        backend: "auto" ("onnxruntime" for an ONNX file; for a checkpoint "onnxruntime" on the CPU, where its
        forward pass is ~2.4x faster, with the export cached per checkpoint (``casnet_core.onnx_cache``), else
        "torch"; "torch" for a half ``precision``, "onnxruntime" for int8), "torch" (a checkpoint only) or
        "onnxruntime" (an ONNX file, or a checkpoint exported in memory; int8: the cached int8 export).
        ``backend_note`` says why; one log line says which backend runs.

        calibration: precision int8 from a checkpoint: a folder of images to calibrate the int8 export on
        (``casnet_core.quantize``; default: generated scenes); ValueError (one line) for one with no image.
        """
        from casnet_core.checkpoint import load_model

        is_onnx = str(path).lower().endswith(".onnx")
        note = f"backend {backend!r} asked for"
        if is_onnx:
            if backend == "auto":
                backend, note = "onnxruntime", "auto: an ONNX file"
            if backend != "onnxruntime":
                raise ValueError(f"{path} is an ONNX file: it runs with backend 'onnxruntime', not {backend!r}")
            predictor = cls(path, device, precision, backend=backend, **kwargs)
            info = {"config": predictor.model.config, "mode": predictor.class_space.mode,
                    "class_names": list(predictor.class_space.names)}
        else:
            model, info = load_model(path, map_location="cpu")
            source: Any = model
            if precision == "int8" and backend in ("auto", "onnxruntime"):
                backend, source, note = "onnxruntime", _int8_export(path, model, calibration), (
                    "precision int8: the cached int8 export" if backend == "onnxruntime"
                    else "auto: precision int8 runs the cached int8 export with onnxruntime")
            elif backend == "auto" and precision != "fp32":
                backend, note = "torch", f"auto: precision {precision} runs with PyTorch"
            elif backend == "auto":
                backend, source, note = _auto_backend(path, model, device)
            predictor = cls(source, device, precision, backend=backend, **kwargs)
        predictor.checkpoint_info = {k: v for k, v in info.items() if k in ("config", "mode", "class_names")}
        predictor.backend_note = note
        LOG.info("%s: backend %s on %s (%s)", path, predictor.backend, predictor.device, note)
        return predictor

    def predict(self, image_rgb: np.ndarray, semantic_label_ids: np.ndarray | None = None) -> Prediction:
        """Panoptic segmentation of one image.

        Args:
            image_rgb: (H, W, 3) uint8 RGB, any size, any strides (e.g. a view of a ROS buffer).
                Grayscale images must be turned into RGB by the caller.
            semantic_label_ids: optional (H, W) Cityscapes label ids from another segmentation model
                (separated mode): they replace the semantic head. Needed when the model has none.
        """
        semantic = None if semantic_label_ids is None else [semantic_label_ids]
        self._check_inputs([image_rgb], semantic)
        return self._predict_same_size([image_rgb], semantic)[0]

    def predict_batch(self, images_rgb: Sequence[np.ndarray],
                      semantic_label_ids: Sequence[np.ndarray] | None = None) -> list[Prediction]:
        """Panoptic segmentation of several images (e.g. the newest frame of each camera), in the order given.

        Images of the same size run through the network and the post-processing as one batch; each size
        is a batch of its own (``batch_groups``). Grouped rather than resized or padded to one common size,
        because then each result is what ``predict`` gives for that image alone (equal on the CPU): the
        network sees every image at the size ``predict`` would give it (a common size would change the
        resize, the padding at the borders, and the output mapping), and one batch of the post-processing
        needs one output size. Timings of each prediction are those of its whole group.

        Args:
            images_rgb: (H_i, W_i, 3) uint8 RGB images, as for ``predict``.
            semantic_label_ids: optional (H_i, W_i) label ids per image, as for ``predict``.
        """
        images = list(images_rgb)
        semantic = None if semantic_label_ids is None else list(semantic_label_ids)
        if semantic is not None and len(semantic) != len(images):
            raise ValueError(f"{len(semantic)} semantic_label_ids for {len(images)} images")
        self._check_inputs(images, semantic)
        predictions: list[Prediction] = [None] * len(images)  # type: ignore[list-item]  # all filled below
        for indices in batch_groups([image.shape[:2] for image in images]):
            group = self._predict_same_size([images[i] for i in indices],
                                            None if semantic is None else [semantic[i] for i in indices])
            for index, prediction in zip(indices, group):
                predictions[index] = prediction
        return predictions

    def _check_inputs(self, images: list[np.ndarray], semantic: list[np.ndarray] | None) -> None:
        for index, image in enumerate(images):
            _check_image(image)
            if semantic is not None:
                _check_semantic(semantic[index], image.shape[:2])
        if semantic is None and not self.model.has_semantic_head:
            raise ValueError("this model has no semantic head (separated mode): pass semantic_label_ids")

    def _predict_same_size(self, images: list[np.ndarray], semantic_label_ids: list[np.ndarray] | None
                           ) -> list[Prediction]:
        """The predictions of B checked images of one size, run as one batch (B >= 1)."""
        height, width = images[0].shape[:2]
        timings: dict[str, float] = {}

        with torch.inference_mode():
            start = time.perf_counter()
            batch, (net_height, net_width) = self._preprocess(images)
            semantic = None
            if semantic_label_ids is not None:
                labels = torch.from_numpy(np.stack([np.ascontiguousarray(ids).astype(np.int64, copy=False)
                                                    for ids in semantic_label_ids]))
                semantic = self._label_id_lut[labels.to(self.device).clamp(0, 255)]  # (B, H, W)
            self._sync()
            timings["preprocess"] = time.perf_counter() - start

            start = time.perf_counter()
            outputs = self._forward(batch)
            self._sync()
            timings["forward"] = time.perf_counter() - start

            start = time.perf_counter()
            with cpu_threads(POSTPROCESS_THREADS, self.device):
                result = common_attribute_support(
                    outputs["attributes"].float(),
                    outputs["box_logits"].float(),
                    semantic_logits=outputs["semantic"].float() if semantic is None else None,
                    semantic=semantic,
                    thing_classes=self.class_space.thing_classes,
                    label_ids=self.class_space.label_ids,
                    stride=self.model.output_stride,
                    output_size=(height, width),
                    input_scale=(net_height / height, net_width / width),
                    panoptic=self.mode == "panoptic",
                    box_threshold=self.box_threshold,
                    nms_iou=self.nms_iou,
                    tie_margin=self.tie_margin,
                    min_area=self.min_area,
                    stuff_area=self.stuff_area,
                    max_instances=self.max_instances,
                )
            panoptic, semantic_ids = result.panoptic.cpu().numpy(), result.semantic.cpu().numpy()
            instances = self._instances(result, len(images))
            nonfinite = _nonfinite_per_image(outputs, result.nonfinite, len(images), semantic_used=semantic is None)
            timings["postprocess"] = time.perf_counter() - start
        return [Prediction(panoptic=panoptic[i], semantic=semantic_ids[i], instances=instances[i],
                           timings=dict(timings), nonfinite=nonfinite[i]) for i in range(len(images))]

    def _forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """The network's outputs for ``batch``; through the CUDA graphs with ``cuda_graph`` (the outputs are then
        views of a graph's own buffers, valid until the next call)."""
        if self._graphs is None:
            return self.model(batch)
        return self._graphs(batch)

    def _capture(self, batch: torch.Tensor) -> CapturedGraph:
        """A CUDA graph of the forward pass at ``batch``'s shape (the recipe of torch.cuda.graphs: warm-up on a
        side stream, cuDNN's autotuning included, then capture); called by ``CudaGraphs`` with the Predictor's
        device current, so that torch's capture stream is on it."""
        static_input = batch.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self.model(static_input)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=torch.cuda.Stream(self.device)):
            static_outputs = self.model(static_input)
        return CapturedGraph(static_input, graph, static_outputs)

    def _preprocess(self, images_rgb: list[np.ndarray]) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, 3, H', W') 0..255 in the predictor's dtype (channels_last on CUDA) on the device: B images of one
        size, each resized to ``network_input_size`` and padded to the size divisor with the model's mean colour
        (0 after its normalisation, as detectron2 pads); and (H', W') before padding."""
        size = network_input_size(*images_rgb[0].shape[:2], input_size=self.input_size,
                                  max_input_size=self.max_input_size)
        divisor = self.model.size_divisor
        padded_height, padded_width = -(-size[0] // divisor) * divisor, -(-size[1] // divisor) * divisor
        resized = []
        for image_rgb in images_rgb:
            # ascontiguousarray: torch.from_numpy refuses negative strides (flipped views).
            pixels = torch.from_numpy(np.ascontiguousarray(image_rgb)).to(self.device, non_blocking=True)
            image = pixels.permute(2, 0, 1)[None].float()
            if size != tuple(image.shape[-2:]):
                # antialias: a 4K frame scaled down several times must not alias.
                image = F.interpolate(image, size=size, mode="bilinear", align_corners=False,
                                      antialias=True).clamp(0, 255)
            if (padded_height, padded_width) != size:
                mean = getattr(self.model, "pixel_mean", None)
                fill = mean.view(1, 3, 1, 1).to(image) if mean is not None else image.new_zeros(1, 3, 1, 1)
                padded = fill.expand(1, 3, padded_height, padded_width).clone()
                padded[:, :, :size[0], :size[1]] = image
                image = padded
            resized.append(image)
        batch = (resized[0] if len(resized) == 1 else torch.cat(resized)).to(self.dtype)
        if self.backend == "torch" and self._channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch, size

    def _instances(self, result, batch: int) -> list[list[Instance]]:
        """The instances of each of the ``batch`` images, by decreasing score."""
        names = self.class_space.names
        rows = zip(result.instance_batch.tolist(), result.instance_ids.tolist(), result.instance_label_ids.tolist(),
                   result.instance_classes.tolist(), result.instance_scores.tolist(), result.instance_boxes.tolist(),
                   result.instance_areas.tolist(), result.instance_centroids.tolist())
        instances: list[list[Instance]] = [[] for _ in range(batch)]
        for image, i, label, channel, score, box, area, centroid in rows:
            instances[image].append(Instance(id=i, label_id=label, class_name=names[channel], score=score,
                                             box=tuple(box), area=area, centroid=tuple(centroid)))
        return [sorted(found, key=lambda instance: -instance.score) for found in instances]

    def _sync(self) -> None:
        # Timings per stage need the device to have finished its queued work.
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def batch_groups(sizes: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Indices of equal (H, W) sizes, each group in the order given, groups by first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(sizes):
        groups.setdefault((int(size[0]), int(size[1])), []).append(index)
    return list(groups.values())


def _nonfinite_per_image(outputs: dict[str, torch.Tensor], total: int, batch: int, *, semantic_used: bool) -> list[int]:
    """The post-processing's count of NaN / inf head values (``total``, all B images) split per image; the
    per-image count is taken only when there is something to split."""
    if batch == 1 or total == 0:
        return [total] * batch
    heads = [outputs["attributes"], outputs["box_logits"], *([outputs["semantic"]] if semantic_used else [])]
    return [sum(int(head[i].numel() - torch.isfinite(head[i]).sum()) for head in heads) for i in range(batch)]


def _auto_backend(checkpoint: str, model: torch.nn.Module, device: str | torch.device) -> tuple[str, Any, str]:
    """(backend, what runs, why) of backend "auto" for a checkpoint: onnxruntime on the CPU with the cached
    export (``casnet_core.onnx_cache``), PyTorch on CUDA or when no usable export can be made."""
    if resolve_device(device).type != "cpu":
        return "torch", model, "auto: PyTorch on CUDA"
    try:
        from casnet_core.onnx_cache import CacheError, cached_export
    except ImportError as error:  # onnx or onnxruntime not installed
        return "torch", model, f"auto: onnxruntime unavailable ({error})"
    try:
        return "onnxruntime", str(cached_export(checkpoint, model)), "auto: the CPU, cached ONNX export"
    except CacheError as error:
        warnings.warn(f"backend auto runs PyTorch: {error}", stacklevel=3)
        return "torch", model, f"auto: no usable ONNX export ({error})"


def _int8_export(checkpoint: str, model: torch.nn.Module, calibration: str | None) -> str:
    """The path of the cached int8 export of a checkpoint (``casnet_core.onnx_cache``); ValueError (one line)
    when none can be made (a calibration folder without images, an export that disagrees with fp32)."""
    from casnet_core.onnx_cache import CacheError, cached_int8_export

    try:
        return str(cached_int8_export(checkpoint, model, calibration=calibration))
    except CacheError as error:
        raise ValueError(f"precision int8: {error}") from error


def _check_image(image: Any) -> None:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy array (H, W, 3) uint8 RGB image, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        grayscale = image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1)
        hint = " (grayscale: convert it to RGB first)" if grayscale else ""
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}{hint}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (values 0..255), got dtype {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image of shape {image.shape}")


def _check_semantic(semantic: Any, size: tuple[int, int]) -> None:
    if not isinstance(semantic, np.ndarray) or not np.issubdtype(semantic.dtype, np.integer):
        raise ValueError("semantic_label_ids must be an integer numpy array of Cityscapes label ids")
    if semantic.shape != size:
        raise ValueError(f"semantic_label_ids has shape {semantic.shape}, the image is {size}")
