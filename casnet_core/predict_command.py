"""`casnet predict`: the Predictor (``casnet_core.predictor``) on image files.

``casnet predict [--checkpoint CKPT] --out DIR IMAGE...`` (the packaged default model without --checkpoint) writes per image,
NAME being the image's file stem:

* ``NAME_panoptic.png``: the panoptic map (Cityscapes ids: thing label_id*1000+k, stuff label_id, void 0)
  as an 8-bit RGB PNG with id = R + 256 G + 256^2 B, the COCO / Cityscapes panoptic encoding that
  cityscapesScripts reads and writes (a 16-bit PNG would overflow for label id 33 from k = 32536 on).
* ``NAME_overlay.png``: the colour overlay of ``casnet_core.visualize.colorize`` on the image.
* ``NAME_instances.json``: image size, mode, timings and the instances (id, label_id, class_name, score,
  box (x0, y0, x1, y1) with exclusive x1/y1, area, centroid (x, y)), in input-image pixels.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from casnet_core.formats import PANOPTIC_PNG_ENCODING, encode_panoptic_rgb
from casnet_core.postprocess import DEFAULT_THRESHOLDS
from casnet_core.predictor import BACKENDS, DEFAULT_MAX_INPUT_SIZE, PRECISION_CHOICES, Prediction, Predictor

def write_outputs(prediction: Prediction, image_rgb: np.ndarray, out_dir: Path, name: str, *,
                  image_path: str = "", mode: str = "panoptic") -> list[Path]:
    """Writes NAME_panoptic.png, NAME_overlay.png and NAME_instances.json (see the module docstring)."""
    import cv2

    from casnet_core.visualize import colorize

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}_panoptic.png", out_dir / f"{name}_overlay.png", out_dir / f"{name}_instances.json"]
    pictures = (encode_panoptic_rgb(prediction.panoptic), colorize(prediction, image_rgb))
    for path, rgb in zip(paths, pictures):
        if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):  # OpenCV writes BGR
            raise OSError(f"cannot write {path}")
    height, width = prediction.panoptic.shape
    document = {
        "image": image_path,
        "height": height,
        "width": width,
        "mode": mode,
        "panoptic_png": {"file": paths[0].name, "encoding": PANOPTIC_PNG_ENCODING},
        "timings": prediction.timings,
        "instances": [instance.to_dict() for instance in prediction.instances],
    }
    paths[2].write_text(json.dumps(document, indent=1))
    return paths


def _main(args: argparse.Namespace) -> int:
    import cv2

    from casnet_core.data import read_image
    from casnet_core.formats import check_outputs_spare_inputs

    names = [Path(p).stem for p in args.images]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SystemExit(f"casnet predict: several images would write the same outputs: {duplicates}")
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise SystemExit(f"casnet predict: --out {out_dir} exists and is not a folder")
    for path in args.images:  # every image checked (its header) before anything is loaded or written
        if not Path(path).is_file():
            raise SystemExit(f"casnet predict: image {path}: no such file")
        if not cv2.haveImageReader(str(path)):
            raise SystemExit(f"casnet predict: {path} is not an image file OpenCV reads")
    try:
        written = [("--out", out_dir / f"{name}{suffix}") for name in names
                   for suffix in ("_panoptic.png", "_overlay.png", "_instances.json")]
        check_outputs_spare_inputs(written, [("IMAGE", p) for p in args.images] + [("--checkpoint", args.checkpoint)],
                                   command="predict")
        if args.checkpoint is None:
            from casnet_core import default_model_path

            args.checkpoint = str(default_model_path())
        predictor = Predictor.from_checkpoint(
            args.checkpoint, device=args.device, precision=args.precision, backend=args.backend,
            cuda_graph=args.cuda_graph, mode=args.mode,
            input_size=tuple(args.input_size) if args.input_size else None,
            max_input_size=args.max_input_size or None, **thresholds_from_args(args))
    except ValueError as error:  # CheckpointError included: a one-line message, not a traceback
        raise SystemExit(f"casnet predict: {error}") from error
    print(f"backend {predictor.backend} on {predictor.device} ({predictor.backend_note})")
    for path, name in zip(args.images, names):
        try:
            image = read_image(path)
        except FileNotFoundError as error:  # e.g. a truncated file
            raise SystemExit(f"casnet predict: {error}") from None
        prediction = predictor.predict(image)
        write_outputs(prediction, image, out_dir, name, image_path=str(path), mode=predictor.mode)
        stages = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in prediction.timings.items())
        print(f"{path}: {len(prediction.instances)} instances ({stages})")
    print(f"outputs in {out_dir}")
    return 0


_THRESHOLD_HELP = {
    "box_threshold": "seed box probability",
    "nms_iou": "NMS IoU between seed boxes",
    "tie_margin": "IoU margin of a near-tie in the vote",
    "min_area": "minimum instance area in pixels",
    "stuff_area": "stuff regions below this many pixels become void",
    "max_instances": "instances per image at most (the lowest-scored seeds beyond it are dropped)",
}


# Accepted range (low, high; None: unbounded) of each threshold: checked when the command line is parsed, so a
# value that would make every frame fail (e.g. --max-instances 0) is refused up front with one line.
_THRESHOLD_RANGES: dict[str, tuple[float, float | None]] = {
    "box_threshold": (0.0, 1.0), "nms_iou": (0.0, 1.0), "tie_margin": (0.0, 1.0),
    "min_area": (0, None), "stuff_area": (0, None), "max_instances": (1, None),
}


def _threshold_type(name: str) -> Any:
    """argparse type of threshold ``name``: its default's type, finite, within _THRESHOLD_RANGES."""
    kind, (low, high) = type(DEFAULT_THRESHOLDS[name]), _THRESHOLD_RANGES[name]

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value) or value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """--precision (``casnet_core.predictor.PRECISION_CHOICES``), shared by predict, eval and replay."""
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="fp32",
                        help="dtype of the network's forward pass (default fp32): int8 runs the checkpoint's int8 "
                             "export (onnxruntime on the CPU, calibrated on generated scenes and cached; "
                             "`casnet export --int8 --calibration DIR` for your own images), bf16 runs PyTorch "
                             "with the CPU's bfloat16 instructions; fp16 and bf16 are the fast path on CUDA")


def add_threshold_arguments(parser: argparse.ArgumentParser) -> None:
    """--box-threshold, --nms-iou, --tie-margin, --min-area, --stuff-area, --max-instances, each checked against
    its range when parsed; unset ones stay None."""
    for name, value in DEFAULT_THRESHOLDS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=_threshold_type(name), default=None,
                            help=f"{_THRESHOLD_HELP[name]} (default {value})")


def thresholds_from_args(args: argparse.Namespace) -> dict[str, float | int]:
    """The thresholds given on the command line (see add_threshold_arguments)."""
    return {name: getattr(args, name) for name in DEFAULT_THRESHOLDS if getattr(args, name) is not None}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="segment images with a checkpoint; writes panoptic PNG, overlay and instances JSON",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format OpenCV reads)")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint file (casnet train output) or ONNX file (casnet export output); "
                             "default: the packaged default model")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", default="auto", help='"auto" (default), "cpu", "cuda" or "cuda:N"')
    add_precision_argument(parser)
    parser.add_argument("--cuda-graph", action="store_true",
                        help="replay the forward pass as a CUDA graph per image size (torch backend on CUDA)")
    parser.add_argument("--backend", choices=("auto", *BACKENDS), default="auto",
                        help="network runtime (default auto: onnxruntime for an .onnx file or on the CPU, "
                             "else torch)")
    parser.add_argument("--mode", choices=("panoptic", "instance"), default=None,
                        help="output mode (default: the checkpoint's)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="scale images to fit inside H x W for the network, aspect ratio kept "
                             "(outputs stay at full size)")
    parser.add_argument("--max-input-size", type=int, default=DEFAULT_MAX_INPUT_SIZE, metavar="PIXELS",
                        help="longest side the network sees; larger images are scaled down, aspect ratio kept "
                             f"(default {DEFAULT_MAX_INPUT_SIZE}, 0 for no limit)")
    add_threshold_arguments(parser)
    parser.set_defaults(func=_main)
