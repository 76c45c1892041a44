"""Camera pixels of any ROS ``sensor_msgs`` encoding -> (H, W, 3) uint8 RGB, the Predictor's input.

The one decoder of raw and compressed camera images, shared by the ROS node (``casnet_ros``) and the
rosbag2 reader. Pure numpy and OpenCV: it takes the fields of a ``sensor_msgs/Image`` (or
``CompressedImage``) as plain values, so nothing here needs ROS.

Colours follow ``cv_bridge`` (``cv_bridge::toCvCopy(msg, "rgb8")``, ROS 2 ``cv_bridge.cpp``), so a
model sees the same pixels as any other ROS perception node:

* ``yuv422`` / ``uyvy``: ``cv::COLOR_YUV2RGB_UYVY``; ``yuv422_yuy2`` / ``yuyv``: ``cv::COLOR_YUV2RGB_YUY2``
  (both 2 bytes per pixel, the width must be even);
* ``bayer_rggb8``: ``COLOR_BayerBG2RGB``, ``bayer_bggr8``: ``COLOR_BayerRG2RGB``,
  ``bayer_gbrg8``: ``COLOR_BayerGR2RGB``, ``bayer_grbg8``: ``COLOR_BayerGB2RGB`` (OpenCV names a Bayer
  pattern by the second row's first two pixels; ``cv2.COLOR_BayerRGGB2RGB`` is the same code);
* 16 bit (``rgb16``, ``bgr16``, ``rgba16``, ``bgra16``, ``mono16``): scaled to 8 bit with
  ``convertTo(..., 255 / 65535)`` (rounded, as cv_bridge scales between 16 and 8 bit), byte-swapped
  first when ``is_bigendian`` says the camera wrote them big-endian;
* 8 bit ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``: no arithmetic at all.

The row padding (``step`` > width * bytes per pixel) is sliced away as a strided view; OpenCV reads
such rows in place. The 8-bit RGB/BGR/mono encodings come back as views of the caller's buffer (the
channel order fixed with negative strides, mono broadcast to three channels), so no pixel is copied
before the Predictor copies the image into its input tensor; the others are computed into a new array.
"""

from __future__ import annotations

from typing import Union

import cv2
import numpy as np

Buffer = Union[bytes, bytearray, memoryview, np.ndarray]


class ImageConversionError(ValueError):
    """An image that cannot be interpreted (unsupported encoding, inconsistent size, undecodable data)."""


# encoding -> (channels per pixel in the buffer, bytes per channel)
_LAYOUTS: dict[str, tuple[int, int]] = {
    "rgb8": (3, 1), "bgr8": (3, 1), "rgba8": (4, 1), "bgra8": (4, 1), "mono8": (1, 1),
    "rgb16": (3, 2), "bgr16": (3, 2), "rgba16": (4, 2), "bgra16": (4, 2), "mono16": (1, 2),
    "yuv422": (2, 1), "uyvy": (2, 1), "yuv422_yuy2": (2, 1), "yuyv": (2, 1),
    "bayer_rggb8": (1, 1), "bayer_bggr8": (1, 1), "bayer_gbrg8": (1, 1), "bayer_grbg8": (1, 1),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)

# The cv::cvtColor code cv_bridge uses for the encoding -> rgb8.
_YUV422_CODES = {"yuv422": cv2.COLOR_YUV2RGB_UYVY, "uyvy": cv2.COLOR_YUV2RGB_UYVY,
                 "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2, "yuyv": cv2.COLOR_YUV2RGB_YUY2}
_BAYER_CODES = {"bayer_rggb8": cv2.COLOR_BayerBG2RGB, "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
                "bayer_gbrg8": cv2.COLOR_BayerGR2RGB, "bayer_grbg8": cv2.COLOR_BayerGB2RGB}
# cv_bridge's scale from CV_16U [0, 65535] to CV_8U [0, 255].
_SCALE_16_TO_8 = 255.0 / 65535.0


def bytes_per_pixel(encoding: str) -> int:
    """Bytes one pixel of ``encoding`` takes in a row (``step`` >= width * this)."""
    channels, depth = _LAYOUTS[str(encoding).lower()]
    return channels * depth


def _as_bytes(data: Buffer) -> np.ndarray:
    """A flat uint8 view of ``data`` (bytes, memoryview, array.array, numpy array)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def image_to_rgb(data: Buffer, height: int, width: int, encoding: str, step: int,
                 is_bigendian: bool = False) -> np.ndarray:
    """The pixels of a ``sensor_msgs/Image`` -> (H, W, 3) uint8 RGB.

    Args:
        data: the message's ``data`` (``step * height`` bytes; any extra bytes at the end are ignored).
        height, width: image size in pixels.
        encoding: one of ``SUPPORTED_ENCODINGS`` (case-insensitive).
        step: bytes per row, row padding included.
        is_bigendian: byte order of the 16-bit encodings.

    Raises:
        ImageConversionError: unsupported encoding, or height, width, step and the data disagree.
    """
    name = str(encoding).lower()
    if name not in _LAYOUTS:
        raise ImageConversionError(
            f"unsupported encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    channels, depth = _LAYOUTS[name]
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"empty image ({width}x{height})")
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than width * bytes per pixel = {row_bytes} ({encoding})")
    buffer = _as_bytes(data)
    if buffer.size < step * height:
        raise ImageConversionError(
            f"data holds {buffer.size} bytes, expected step * height = {step * height} "
            f"({width}x{height} {encoding}, step {step})")
    rows = buffer[: step * height].reshape(height, step)[:, :row_bytes]

    if depth == 2:
        # A view while the rows are 2-byte aligned; the byte swap or the scale makes the copy.
        words = rows.view(">u2" if is_bigendian else "<u2") if step % 2 == 0 else \
            np.ascontiguousarray(rows).view(">u2" if is_bigendian else "<u2")
        pixels = cv2.convertScaleAbs(words.astype(np.uint16, copy=False).reshape(height, width, channels),
                                     alpha=_SCALE_16_TO_8)
        pixels = pixels.reshape(height, width, channels)
        name = name[:-2] + "8"  # continue as the 8-bit encoding of the same channel order
    else:
        pixels = rows.reshape(height, width, channels)

    if name in _YUV422_CODES:
        if width % 2:
            raise ImageConversionError(f"{encoding} needs an even width (2 pixels share U and V), got {width}")
        return cv2.cvtColor(pixels, _YUV422_CODES[name])
    if name in _BAYER_CODES:
        return cv2.cvtColor(pixels[..., 0], _BAYER_CODES[name])
    if name == "rgb8":
        return pixels
    if name == "mono8":
        return np.broadcast_to(pixels, (height, width, 3))
    if name == "rgba8":
        return pixels[..., :3]
    # bgr8, bgra8: channels 2, 1, 0 as a negative-stride view.
    return pixels[..., 2::-1]


def compressed_to_rgb(data: Buffer, fmt: str = "") -> np.ndarray:
    """The ``data`` of a ``sensor_msgs/CompressedImage`` (JPEG, PNG, ... whatever OpenCV decodes)
    -> (H, W, 3) uint8 RGB, a reversed-channel view of the BGR array OpenCV decodes into.

    ``fmt`` (the message's ``format``) only names the data in the error message: OpenCV reads the
    format from the data itself. 16-bit PNGs are scaled to 8 bit by OpenCV.
    """
    buffer = _as_bytes(data)
    if buffer.size == 0:
        raise ImageConversionError("empty compressed image")
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageConversionError(f"OpenCV cannot decode the compressed image (format {fmt!r})")
    return bgr[..., ::-1]


# ----------------------------------------------------------------------------------------------
# Panoptic label images: Cityscapes ids (label_id * 1000 + k things, label_id stuff, 0 void) per pixel
# ----------------------------------------------------------------------------------------------

#: What the node publishes: ids stay <= 33 999 once instances are capped below 1000 per class, so 16 bits
#: hold them in half the bytes of 32 bits.
PANOPTIC_ENCODING = "16UC1"
#: Ground truth in bags, and the node's output should an id ever exceed 65 535.
WIDE_PANOPTIC_ENCODING = "32SC1"
PANOPTIC_DTYPES = {PANOPTIC_ENCODING: "u2", WIDE_PANOPTIC_ENCODING: "i4"}


def panoptic_pixels(panoptic: np.ndarray, *, max_id: int | None = None,
                    encoding: str | None = None) -> tuple[np.ndarray, str]:
    """(H, W) panoptic ids -> (little-endian pixel array, its encoding). ``encoding`` None: 16UC1 while the
    ids fit, else 32SC1; ``max_id`` (e.g. from the instance list) spares a pass over the pixels."""
    panoptic = np.asarray(panoptic)
    if encoding is None:
        if max_id is None:
            max_id = int(panoptic.max(initial=0))
        encoding = PANOPTIC_ENCODING if max_id <= np.iinfo(np.uint16).max else WIDE_PANOPTIC_ENCODING
    if encoding not in PANOPTIC_DTYPES:
        raise ImageConversionError(f"panoptic encoding must be one of {tuple(PANOPTIC_DTYPES)}, got {encoding!r}")
    return panoptic.astype("<" + PANOPTIC_DTYPES[encoding], copy=False), encoding


def panoptic_from_buffer(data: Buffer, height: int, width: int, encoding: str, step: int,
                         is_bigendian: bool = False) -> np.ndarray:
    """The buffer of a 16UC1 or 32SC1 image -> (H, W) panoptic ids, a view of ``data`` (uint16 or int32)."""
    if encoding not in PANOPTIC_DTYPES:
        raise ImageConversionError(
            f"panoptic image has encoding {encoding!r}, expected one of {tuple(PANOPTIC_DTYPES)}")
    dtype = np.dtype((">" if is_bigendian else "<") + PANOPTIC_DTYPES[encoding])
    height, width, step = int(height), int(width), int(step)
    buffer = _as_bytes(data)
    if step < dtype.itemsize * width or buffer.size < step * height:
        raise ImageConversionError(f"panoptic image of {width}x{height} has step {step} and {buffer.size} bytes")
    rows = buffer[: step * height].reshape(height, step)[:, : dtype.itemsize * width]
    return rows.view(dtype).reshape(height, width)
