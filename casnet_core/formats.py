"""File formats shared by prediction and evaluation: the COCO / Cityscapes panoptic PNG encoding and PNG writing;
and the atomic write every output that a reader or a resumed run depends on goes through.

A panoptic map (Cityscapes ids: thing ``label_id * 1000 + k``, stuff ``label_id``, void 0) is stored
as an 8-bit RGB PNG with id = R + 256 G + 256^2 B, the encoding that cityscapesScripts
(``csCreatePanopticImgs``, ``evalPanopticSemanticLabeling``) reads and writes. A 16-bit PNG would
overflow for label id 33 from k = 32536 on.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import cv2
import numpy as np

PANOPTIC_PNG_ENCODING = "id = R + 256*G + 256^2*B"
# Ids of the RGB encoding span 24 bits.
MAX_PANOPTIC_ID = (1 << 24) - 1
# OpenCV's default zlib level; 1 is faster for files read once (the evaluators' inputs).
DEFAULT_PNG_COMPRESSION = 3


def encode_panoptic_rgb(panoptic: np.ndarray) -> np.ndarray:
    """(H, W) segment ids -> (H, W, 3) uint8 RGB with id = R + 256 G + 256^2 B (COCO panoptic)."""
    ids = np.asarray(panoptic, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def decode_panoptic_rgb(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB with id = R + 256 G + 256^2 B -> (H, W) int64 segment ids."""
    rgb = np.asarray(rgb, dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def write_png(path: str | os.PathLike, image: np.ndarray, *, compression: int = DEFAULT_PNG_COMPRESSION) -> None:
    """Writes (H, W) grey or (H, W, 3) RGB uint8 ``image`` as a PNG; raises OSError when it cannot."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = np.ascontiguousarray(image[..., ::-1])  # OpenCV writes BGR
    if not cv2.imwrite(os.fspath(path), image, [cv2.IMWRITE_PNG_COMPRESSION, compression]):
        raise OSError(f"cannot write {path}")


def read_panoptic_png(path: str | os.PathLike) -> np.ndarray:
    """A panoptic PNG (see ``encode_panoptic_rgb``) -> (H, W) int64 segment ids."""
    bgr = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read {path}")
    return decode_panoptic_rgb(bgr[..., ::-1])


def _partial_prefix(path: Path) -> str:
    return f".{path.name}."


def partial_writes(path: str | os.PathLike) -> list[Path]:
    """The temporary files of ``atomic_write(path)`` calls that a crash or a kill interrupted."""
    path = Path(path)
    return sorted(path.parent.glob(f"{_partial_prefix(path)}*.tmp"))


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (os.umask can only set it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` only once it is written whole: written beside it (``.NAME.*.tmp``),
    flushed to disk and renamed over it, so a crash or a SIGKILL mid-write never leaves a torn file.

    The file gets the mode of the file it replaces, else that of a new file (0666 less the umask): mkstemp's
    0600 would hide checkpoints, ONNX files and metrics from the other users that run or read them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_partial_prefix(path), suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def overlaps(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether paths ``a`` and ``b`` (resolved, links followed) are the same or one lies inside the other."""
    a, b = Path(a).resolve(), Path(b).resolve()
    return a == b or a in b.parents or b in a.parents


def check_outputs_spare_inputs(written: Sequence[tuple[str, str | os.PathLike]],
                               inputs: Sequence[tuple[str, str | os.PathLike | None]], *, command: str) -> None:
    """Raises ValueError (one line) when a path that ``command`` writes or empties is, contains or lies inside
    one of its inputs: no command ever writes into, replaces or deletes what it reads.

    Args:
        written: (option that chooses it, e.g. "--out"; path written or emptied).
        inputs: (option, e.g. "--data"; its path, or None when not given).
        command: e.g. "eval", for the message.
    """
    for option, target in written:
        for input_option, source in inputs:
            if source is not None and overlaps(target, source):
                raise ValueError(f"{option} would write {Path(target).resolve()}, which overlaps {input_option} "
                                 f"{Path(source).resolve()}: {command} never writes into its inputs, "
                                 f"choose another {option}")
