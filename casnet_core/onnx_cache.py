"""The ONNX exports that ``backend: auto`` runs on the CPU, cached per checkpoint.

onnxruntime runs the network's forward pass about 2.4 times faster than PyTorch on a CPU, so a Predictor made
from a checkpoint with backend "auto" on the CPU runs the checkpoint's ONNX export (``Predictor.from_checkpoint``).
The export (``casnet_core.export.export_onnx``) takes seconds, so it is made once and kept:

* in the user's cache folder, ``$XDG_CACHE_HOME/casnet/onnx`` (``~/.cache/casnet/onnx`` when unset), or
  ``$CASNET_CACHE_DIR/onnx``; never beside the checkpoint or in any other folder of the user's;
* under a name made of the SHA-256 of the checkpoint file's bytes, the export format and recipe
  (``casnet_core.export.EXPORT_RECIPE``), the opset and the PyTorch version: a changed checkpoint or exporter
  gives another file, never a stale one;
* written atomically (``casnet_core.formats.atomic_write``), so two processes exporting at
  once, or one killed mid-write, never leave a torn file; a file that onnxruntime cannot load is exported again;
* checked against PyTorch once, when it is made (``casnet_core.export.compare_with_torch``): an export that
  disagrees is not used (``CacheError``, and the Predictor runs PyTorch);
* at most ``MAX_ENTRIES`` files: the least recently used beyond that are removed.

``precision: int8`` runs the int8 version of the export (``casnet_core.quantize``), cached the same way beside
it, under a name that adds the calibration's digest (``casnet_core.quantize.calibration_key``: the generated
scenes' recipe, or the names and bytes of the calibration folder's images) and onnxruntime's version: a changed
checkpoint or calibration makes a new one. It is checked once, when it is made, against the fp32 export on
generated scenes (finite outputs, semantic argmax agreeing on at least ``INT8_MIN_AGREEMENT`` of the cells).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from torch import nn

from casnet_core.export import (CHECK_SIZES, DEFAULT_OPSET, EXPORT_RECIPE, FORMAT, OnnxNetwork, agrees,
                                compare_with_torch, export_onnx)
from casnet_core.formats import atomic_write
from casnet_core.quantize import (CALIBRATION_COUNT, CALIBRATION_SIZE, calibration_images, calibration_key,
                                  network_batch, quantize_int8, semantic_agreement)

LOG = logging.getLogger(__name__)
#: Cached exports kept at most (a default-model export is ~17 MB).
MAX_ENTRIES = 16
#: Fraction of the semantic cells on which an int8 export must agree with the fp32 one to be used.
INT8_MIN_AGREEMENT = 0.9
_CHUNK = 1 << 20


class CacheError(RuntimeError):
    """No usable export could be made (the cache folder is not writable, or the export disagrees with PyTorch)."""


def cache_dir() -> Path:
    """The folder of the cached exports (see the module docstring); not created here."""
    explicit = os.environ.get("CASNET_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser() / "onnx"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "casnet" / "onnx"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (a checkpoint can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_path(checkpoint: str | os.PathLike, *, opset: int = DEFAULT_OPSET, root: Path | None = None) -> Path:
    """Where the export of ``checkpoint`` is (or will be) cached."""
    torch_version = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    format_tag = FORMAT.replace("/", "")
    name = f"{file_sha256(checkpoint)}-{format_tag}-r{EXPORT_RECIPE}-opset{opset}-torch{torch_version}.onnx"
    return (root or cache_dir()) / name


def int8_cache_path(checkpoint: str | os.PathLike, calibration: str | os.PathLike | None = None, *,
                    count: int = CALIBRATION_COUNT, size: tuple[int, int] = CALIBRATION_SIZE,
                    opset: int = DEFAULT_OPSET, root: Path | None = None) -> Path:
    """Where the int8 export of ``checkpoint`` calibrated on ``calibration`` (a folder; None: ``count``
    generated scenes) at ``size`` is (or will be) cached; CalibrationError for a folder with no image."""
    import onnxruntime

    key = calibration_key(calibration, count=count, size=size)[:16]
    fp32 = cache_path(checkpoint, opset=opset, root=root)
    return fp32.with_name(f"{fp32.stem}-int8-{key}-ort{onnxruntime.__version__}.onnx")


def cached_int8_export(checkpoint: str | os.PathLike, model: nn.Module, *,
                       calibration: str | os.PathLike | None = None, count: int = CALIBRATION_COUNT,
                       size: tuple[int, int] = CALIBRATION_SIZE, opset: int = DEFAULT_OPSET,
                       root: Path | None = None, min_agreement: float = INT8_MIN_AGREEMENT) -> Path:
    """The path of the int8 export of ``model`` (the network the file ``checkpoint`` holds), calibrated on the
    images of the folder ``calibration`` or, when None, on ``count`` generated scenes, at ``size``
    (``casnet_core.quantize``); made on
    the first call for this checkpoint and calibration (about 50 s for the default model on 2 cores), found in the
    cache afterwards.

    Raises CalibrationError (a ValueError) for a calibration folder with no image, CacheError when no usable
    export can be made; the checkpoint and the calibration images are only read.
    """
    path = int8_cache_path(checkpoint, calibration, count=count, size=size, opset=opset, root=root)
    if path.is_file() and _loads(path):
        LOG.info("int8 export of %s found in the cache: %s", checkpoint, path)
        os.utime(path)
        return path
    fp32 = cached_export(checkpoint, model, opset=opset, root=root)
    label = "generated scenes" if calibration is None else f"the images of {calibration}"
    LOG.info("quantizing %s to int8, calibrated on %s", checkpoint, label)
    data = quantize_int8(fp32.read_bytes(), calibration_images(calibration, count=count, size=size), size=size,
                         calibration=label)
    agreement = _int8_agreement(OnnxNetwork(fp32, device="cpu"), OnnxNetwork(data, device="cpu"))
    if not agreement >= min_agreement:  # NaN fails too
        raise CacheError(f"the int8 export of {checkpoint} agrees with fp32 on {agreement:.1%} of the semantic "
                         f"cells only (at least {min_agreement:.0%} asked); not cached")
    try:
        with atomic_write(path) as f:
            f.write(data)
    except OSError as error:
        raise CacheError(f"cannot write the ONNX export cache {path.parent}: {error}") from error
    LOG.info("int8 export of %s in the cache: %s (semantic agreement with fp32 %.1f %%)", checkpoint, path,
             100 * agreement)
    _evict(path.parent, keep=path)
    return path


def _int8_agreement(fp32: OnnxNetwork, int8: OnnxNetwork) -> float:
    """Semantic argmax agreement of two exports on a generated scene (NaN for non-finite int8 outputs)."""
    from casnet_core.synth import generate_scene

    image = generate_scene(0, 256, 512)[0]
    batch = torch.from_numpy(network_batch(image, size=(256, 512), size_divisor=fp32.size_divisor,
                                           pixel_mean=fp32.pixel_mean.flatten().tolist()))
    reference, got = fp32(batch), int8(batch)
    if not all(bool(torch.isfinite(tensor).all()) for tensor in got.values()):
        return float("nan")
    return semantic_agreement(reference, got)


def _loads(path: Path) -> bool:
    try:
        OnnxNetwork(path, device="cpu")
    except ValueError:
        return False
    return True


def cached_export(checkpoint: str | os.PathLike, model: nn.Module, *, opset: int = DEFAULT_OPSET,
                  root: Path | None = None) -> Path:
    """The path of the ONNX export of ``model``, the network that the file ``checkpoint`` holds; exported (and
    checked against PyTorch) on the first call for this checkpoint, found in the cache afterwards.

    Raises CacheError when no usable export can be made; the checkpoint is only read.
    """
    path = cache_path(checkpoint, opset=opset, root=root)
    if path.is_file() and _loads(path):
        LOG.info("onnxruntime export of %s found in the cache: %s", checkpoint, path)
        os.utime(path)  # most recently used: the last to be evicted
        return path
    data = export_onnx(model, opset=opset)
    report = compare_with_torch(model, OnnxNetwork(data, device="cpu"), CHECK_SIZES[:1])
    if not agrees(report):
        raise CacheError(f"the ONNX export of {checkpoint} disagrees with PyTorch ({report}); not cached")
    try:
        with atomic_write(path) as f:
            f.write(data)
    except OSError as error:
        raise CacheError(f"cannot write the ONNX export cache {path.parent}: {error}") from error
    LOG.info("exported %s for onnxruntime into the cache: %s", checkpoint, path)
    _evict(path.parent, keep=path)
    return path


def _evict(folder: Path, *, keep: Path, max_entries: int = MAX_ENTRIES) -> None:
    """Removes the least recently used exports beyond ``max_entries`` (never ``keep``); files other processes
    remove meanwhile are skipped."""
    entries = []
    for entry in folder.glob("*.onnx"):
        try:
            entries.append((entry.stat().st_mtime, entry))
        except FileNotFoundError:
            continue
    entries.sort(reverse=True)
    for _, entry in entries[max_entries:]:
        if entry != keep:
            entry.unlink(missing_ok=True)
