"""casnet_core.image_encoding on real camera buffers, against OpenCV's own conversions (the codes of
cv_bridge) and numpy; row padding (step) and big-endian 16-bit included. No ROS needed."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest

from casnet_core.image_encoding import (SUPPORTED_ENCODINGS, ImageConversionError, bytes_per_pixel, compressed_to_rgb,
                                        image_to_rgb)

HEIGHT, WIDTH = 6, 10


def padded_buffer(pixels: np.ndarray, padding: int, byte_order: str = "<") -> tuple[bytes, int]:
    """The rows of ``pixels`` (any dtype) as bytes in ``byte_order``, each followed by ``padding`` bytes
    of garbage (as a driver aligning its rows would leave); returns (data, step)."""
    height = pixels.shape[0]
    if pixels.dtype.itemsize > 1:
        pixels = pixels.astype(pixels.dtype.newbyteorder(byte_order))
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, -1)
    garbage = np.random.default_rng(99).integers(0, 256, (height, padding), dtype=np.uint8)
    data = np.concatenate([rows, garbage], axis=1)
    return data.tobytes(), data.shape[1]


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


@pytest.mark.parametrize("padding", [0, 7])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_8bit_colour_encodings_are_views_of_the_buffer(rgb, encoding, padding):
    pixels = {"rgb8": rgb, "bgr8": cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "rgba8": cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA),
              "bgra8": cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA), "mono8": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)}[encoding]
    data, step = padded_buffer(pixels, padding)
    buffer = array.array("B", data)  # what rclpy gives a subscriber
    converted = image_to_rgb(buffer, HEIGHT, WIDTH, encoding, step)
    expected = cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB) if encoding == "mono8" else rgb
    np.testing.assert_array_equal(converted, expected)
    assert np.shares_memory(converted, np.frombuffer(buffer, np.uint8))  # no pixel copied


@pytest.mark.parametrize("padding", [0, 6])
@pytest.mark.parametrize("encoding, code, encode", [
    ("yuv422", cv2.COLOR_YUV2RGB_UYVY, "COLOR_RGB2YUV_UYVY"),
    ("uyvy", cv2.COLOR_YUV2RGB_UYVY, "COLOR_RGB2YUV_UYVY"),
    ("yuv422_yuy2", cv2.COLOR_YUV2RGB_YUY2, "COLOR_RGB2YUV_YUY2"),
    ("yuyv", cv2.COLOR_YUV2RGB_YUY2, "COLOR_RGB2YUV_YUY2"),
])
def test_yuv422_is_converted_as_cv_bridge_does(encoding, code, encode, padding):
    # Any bytes are a valid YUV 4:2:2 image: random ones exercise every value.
    packed = np.random.default_rng(1).integers(0, 256, (HEIGHT, WIDTH, 2), dtype=np.uint8)
    data, step = padded_buffer(packed, padding)
    np.testing.assert_array_equal(image_to_rgb(data, HEIGHT, WIDTH, encoding, step), cv2.cvtColor(packed, code))

    # The byte order (U Y V Y vs Y U Y V) is the right one: a flat colour packed by OpenCV comes back as
    # itself (up to YUV rounding), while the other order would swap luma and chroma.
    if hasattr(cv2, encode):  # OpenCV >= 4.7 packs 4:2:2 too
        flat = np.ascontiguousarray(np.broadcast_to(np.array([200, 120, 40], np.uint8), (HEIGHT, WIDTH, 3)))
        data, step = padded_buffer(cv2.cvtColor(flat, getattr(cv2, encode)), padding)
        decoded = image_to_rgb(data, HEIGHT, WIDTH, encoding, step)
        assert np.abs(decoded.astype(int) - flat).max() <= 3


def bayer_mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """(H, W) mosaic of ``rgb`` as a sensor with the 2x2 colour ``pattern`` (e.g. "rggb") records it."""
    channel = {"r": 0, "g": 1, "b": 2}
    mosaic = np.empty(rgb.shape[:2], np.uint8)
    for index, colour in enumerate(pattern):
        row, column = divmod(index, 2)
        mosaic[row::2, column::2] = rgb[row::2, column::2, channel[colour]]
    return mosaic


@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("pattern, code", [
    ("rggb", cv2.COLOR_BayerBG2RGB), ("bggr", cv2.COLOR_BayerRG2RGB),
    ("gbrg", cv2.COLOR_BayerGR2RGB), ("grbg", cv2.COLOR_BayerGB2RGB),
])
def test_bayer_is_demosaiced_as_cv_bridge_does(rgb, pattern, code, padding):
    encoding = f"bayer_{pattern}8"
    mosaic = bayer_mosaic(rgb, pattern)
    data, step = padded_buffer(mosaic, padding)
    np.testing.assert_array_equal(image_to_rgb(data, HEIGHT, WIDTH, encoding, step), cv2.cvtColor(mosaic, code))

    # The pattern is read the right way round: a flat colour comes back as that colour.
    flat = np.broadcast_to(np.array([200, 120, 40], np.uint8), (HEIGHT, WIDTH, 3))
    data, step = padded_buffer(bayer_mosaic(flat, pattern), padding)
    np.testing.assert_array_equal(image_to_rgb(data, HEIGHT, WIDTH, encoding, step)[1:-1, 1:-1], flat[1:-1, 1:-1])


@pytest.mark.parametrize("byte_order", ["<", ">"])
@pytest.mark.parametrize("padding", [0, 4, 5])
@pytest.mark.parametrize("encoding, channels, to_rgb", [
    ("rgb16", 3, None), ("bgr16", 3, cv2.COLOR_BGR2RGB), ("rgba16", 4, cv2.COLOR_RGBA2RGB),
    ("bgra16", 4, cv2.COLOR_BGRA2RGB), ("mono16", 1, cv2.COLOR_GRAY2RGB),
])
def test_16bit_is_scaled_to_8bit_as_cv_bridge_does(encoding, channels, to_rgb, padding, byte_order):
    shape = (HEIGHT, WIDTH, channels) if channels > 1 else (HEIGHT, WIDTH)
    words = np.random.default_rng(2).integers(0, 65536, shape, dtype=np.uint16)
    words.flat[:4] = [0, 65535, 32896, 128]  # the ends of the range and values around a rounding step
    data, step = padded_buffer(words, padding, byte_order)
    converted = image_to_rgb(data, HEIGHT, WIDTH, encoding, step, is_bigendian=byte_order == ">")
    # cv_bridge: the colour conversion in 16 bit, then convertTo(CV_8U, 255 / 65535), rounded.
    colour = words if to_rgb is None else cv2.cvtColor(words, to_rgb)
    expected = np.rint(colour.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    assert converted.shape == (HEIGHT, WIDTH, 3) and converted.dtype == np.uint8
    np.testing.assert_array_equal(converted, expected)


@pytest.mark.parametrize("data_type", [bytes, bytearray, memoryview, np.frombuffer])
def test_every_buffer_type_is_read(rgb, data_type):
    data, step = padded_buffer(rgb, 2)
    buffer = data_type(data) if data_type is not np.frombuffer else np.frombuffer(data, np.uint8)
    np.testing.assert_array_equal(image_to_rgb(buffer, HEIGHT, WIDTH, "rgb8", step), rgb)


def test_bytes_after_the_last_row_are_ignored(rgb):
    data, step = padded_buffer(rgb, 0)
    np.testing.assert_array_equal(image_to_rgb(data + b"\x00" * 5, HEIGHT, WIDTH, "rgb8", step), rgb)


def test_encoding_names_are_case_insensitive(rgb):
    data, step = padded_buffer(rgb, 0)
    np.testing.assert_array_equal(image_to_rgb(data, HEIGHT, WIDTH, "RGB8", step), rgb)


@pytest.mark.parametrize("change, message", [
    (dict(encoding="16UC1"), "unsupported encoding '16UC1' \\(supported: rgb8, "),
    (dict(encoding="nv12"), "unsupported encoding"),
    (dict(step=2), "step 2 is smaller than width"),
    (dict(height=HEIGHT + 1), "data holds"),  # the data of HEIGHT rows announced as more: truncated
    (dict(width=0), "empty image"),
    (dict(encoding="yuv422", width=WIDTH - 1, step=2 * (WIDTH - 1)), "even width"),
])
def test_inconsistent_images_raise_one_clear_error(rgb, change, message):
    data, step = padded_buffer(rgb, 0)
    fields = {**dict(data=data, height=HEIGHT, width=WIDTH, encoding="rgb8", step=step), **change}
    with pytest.raises(ImageConversionError, match=message):
        image_to_rgb(**fields)


def test_supported_encodings_all_decode():
    for encoding in SUPPORTED_ENCODINGS:
        step = 4 * bytes_per_pixel(encoding)
        rgb = image_to_rgb(bytes(4 * step), 4, 4, encoding, step)
        assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8, encoding


def test_compressed_png_round_trip_is_exact_and_garbage_is_an_error(rgb):
    png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1]
    np.testing.assert_array_equal(compressed_to_rgb(array.array("B", png.tobytes()), "png"), rgb)
    np.testing.assert_array_equal(compressed_to_rgb(png, "png"), rgb)
    with pytest.raises(ImageConversionError, match="cannot decode the compressed image \\(format 'jpeg'\\)"):
        compressed_to_rgb(b"not an image", "jpeg")
    with pytest.raises(ImageConversionError, match="empty"):
        compressed_to_rgb(b"", "jpeg")
