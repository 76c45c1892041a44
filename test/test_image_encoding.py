"""casnet_core.image_encoding on real camera buffers, against OpenCV's own conversions (the codes of
cv_bridge) and numpy; row padding (step) and big-endian 16-bit included. No ROS needed."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest

from casnet_core.image_encoding import (PANOPTIC_ENCODING, SUPPORTED_ENCODINGS, WIDE_PANOPTIC_ENCODING,
                                        ImageConversionError, bytes_per_pixel, compressed_to_rgb, image_to_rgb,
                                        panoptic_from_buffer, panoptic_pixels)

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
    (dict(height=0), "empty image"),
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


def test_16bit_data_is_little_endian_unless_the_message_says_otherwise():
    # Without is_bigendian the words are read little-endian, as ROS's default (false) says.
    words = np.full((2, 2), 0xFF00, dtype="<u2")  # 65280 -> 254 in 8 bit; read big-endian, 0x00FF = 255 -> 1
    assert image_to_rgb(words.tobytes(), 2, 2, "mono16", 4)[0, 0, 0] == 254


@pytest.mark.parametrize("height, width", [(1, 1), (1, 5), (5, 1)])
def test_one_pixel_wide_or_high_images_decode(height, width):
    # A 1-row or 1-column image is an image (e.g. a line camera), not an empty one.
    rgb = np.arange(height * width * 3, dtype=np.uint8).reshape(height, width, 3)
    np.testing.assert_array_equal(image_to_rgb(rgb.tobytes(), height, width, "rgb8", 3 * width), rgb)


def test_16bit_rows_with_an_odd_step_are_read_correctly():
    # step 9 = 6 bytes of one rgb16 pixel + 3 of padding: odd, so the words of the second row start at an odd offset.
    words = np.array([[[0, 65535, 257]], [[514, 771, 1028]]], dtype=np.uint16)
    data, step = padded_buffer(words, 3)
    assert step == 9
    np.testing.assert_array_equal(image_to_rgb(data, 2, 1, "rgb16", step), [[[0, 255, 1]], [[2, 3, 4]]])


def test_truncated_data_names_the_size_it_expected(rgb):
    data, step = padded_buffer(rgb, 0)
    with pytest.raises(ImageConversionError, match=f"expected step \\* height = {step * (HEIGHT + 1)} "):
        image_to_rgb(data, HEIGHT + 1, WIDTH, "rgb8", step)


def test_an_empty_compressed_image_says_so():
    with pytest.raises(ImageConversionError, match="^empty compressed image$"):
        compressed_to_rgb(b"")
    with pytest.raises(ImageConversionError, match="format ''"):
        compressed_to_rgb(b"not an image")  # no format given: the message names it as ''


@pytest.mark.parametrize("ids, encoding, dtype", [
    # Cityscapes ids up to 33 999 (label 33, instance 999) fit 16 bits: 16UC1, half the bytes of 32SC1.
    ([[0, 7], [26001, 33999]], PANOPTIC_ENCODING, "<u2"),
    ([[0, 65535], [26001, 7]], PANOPTIC_ENCODING, "<u2"),   # the largest 16-bit id
    ([[0, 65536], [26001, 7]], WIDE_PANOPTIC_ENCODING, "<i4"),  # one more: 32 bits
])
def test_panoptic_ids_take_the_smallest_encoding_that_holds_them(ids, encoding, dtype):
    pixels, chosen = panoptic_pixels(np.array(ids, dtype=np.int64))
    assert chosen == encoding and pixels.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(pixels, ids)


def test_panoptic_encoding_follows_max_id_or_the_one_asked_for():
    ids = np.array([[0, 7], [26001, 26002]], dtype=np.int32)
    # max_id (from the instance list) decides without reading the pixels.
    assert panoptic_pixels(ids, max_id=70000)[1] == WIDE_PANOPTIC_ENCODING
    assert panoptic_pixels(ids, max_id=65535)[1] == PANOPTIC_ENCODING
    pixels, encoding = panoptic_pixels(ids, encoding=WIDE_PANOPTIC_ENCODING)
    assert encoding == WIDE_PANOPTIC_ENCODING and pixels.dtype == np.dtype("<i4")
    assert panoptic_pixels(np.zeros((0, 0), dtype=np.int64))[1] == PANOPTIC_ENCODING  # empty: max 0
    with pytest.raises(ImageConversionError, match="panoptic encoding must be one of .*got 'mono8'"):
        panoptic_pixels(ids, encoding="mono8")


@pytest.mark.parametrize("encoding", [PANOPTIC_ENCODING, WIDE_PANOPTIC_ENCODING])
@pytest.mark.parametrize("byte_order", ["<", ">"])
@pytest.mark.parametrize("padding", [0, 4])
def test_panoptic_buffer_round_trip(encoding, byte_order, padding):
    ids = np.array([[0, 7, 26001], [26002, 33999, 11]], dtype=np.int64)
    pixels, _ = panoptic_pixels(ids, encoding=encoding)
    data, step = padded_buffer(pixels, padding, byte_order)
    read = panoptic_from_buffer(data + b"\x01\x02", 2, 3, encoding, step, is_bigendian=byte_order == ">")
    assert read.shape == (2, 3)
    np.testing.assert_array_equal(read, ids)
    if byte_order == "<":  # little-endian is the default
        np.testing.assert_array_equal(panoptic_from_buffer(data, 2, 3, encoding, step), ids)


@pytest.mark.parametrize("change, message", [
    (dict(encoding="mono16"), "panoptic image has encoding 'mono16', expected one of"),
    (dict(step=5), "panoptic image of 3x2 has step 5 and 12 bytes"),  # a row of 3 16-bit ids needs 6 bytes
    (dict(height=3), "panoptic image of 3x3 has step 6 and 12 bytes"),  # 2 rows of data announced as 3
])
def test_inconsistent_panoptic_buffers_raise_one_clear_error(change, message):
    data = np.arange(6, dtype="<u2").tobytes()
    fields = {**dict(data=data, height=2, width=3, encoding=PANOPTIC_ENCODING, step=6), **change}
    with pytest.raises(ImageConversionError, match=message):
        panoptic_from_buffer(**fields)


def test_panoptic_ids_already_in_the_published_dtype_are_not_copied():
    # The node's 2-megapixel map goes out as it is when it already holds little-endian uint16 / int32 ids.
    for dtype, encoding in (("<u2", PANOPTIC_ENCODING), ("<i4", WIDE_PANOPTIC_ENCODING)):
        ids = np.array([[0, 7], [26001, 26002]], dtype=dtype)
        pixels, _ = panoptic_pixels(ids, encoding=encoding)
        assert np.shares_memory(pixels, ids)
    wider = np.array([[0, 7], [26001, 26002]], dtype=np.int64)
    assert not np.shares_memory(panoptic_pixels(wider)[0], wider)  # int64 must be converted
