"""rosbag2 recordings in and out, with the ``rosbags`` library (pure Python: no ROS install needed).

Both rosbag2 storages are read and written: sqlite3 (``*.db3`` + ``metadata.yaml``) and MCAP. A bag
is named by its folder, or by its single ``.db3`` / ``.mcap`` file.

Reading (``read_frames``): the camera topic, ``sensor_msgs/msg/Image`` in any encoding of
``casnet_core.image_encoding`` or ``sensor_msgs/msg/CompressedImage`` (the ``.../compressed`` topics
``image_transport`` records), decoded to RGB by that one shared decoder; and, when the bag has one,
a panoptic ground-truth topic (``sensor_msgs/msg/Image``, encoding ``32SC1`` or ``16UC1``, Cityscapes
panoptic ids) whose messages are matched to the frames by header stamp, wherever they lie in the bag. Frames are
keyed by their position on the camera topic, never by stamp: frames that share a stamp all come back. A frame
that cannot be decoded comes back with its ``error`` set (the caller counts and skips it), a frame without
ground truth with ``gt_error`` saying why; a bag that cannot be read at all raises ``BagError`` with a one-line
message.

Writing (``BagWriter``): standard ``sensor_msgs`` messages (Image, CompressedImage, CameraInfo) of the
ROS 2 Humble type store, so any rosbag2 tool opens the bag, plus the node's outputs
(``casnet_msgs/msg/PanopticFrame``, ``vision_msgs/msg/Detection2DArray``, built by ``casnet_core.replay``)
from the ``.msg`` definitions of ``msg/`` (see ``typestore``).
"""

from __future__ import annotations

import functools
import os
import shutil
import sqlite3
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag2 import ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from casnet_core.errors import one_line
from casnet_core.image_encoding import (PANOPTIC_DTYPES, SUPPORTED_ENCODINGS, WIDE_PANOPTIC_ENCODING,
                                        compressed_to_rgb, image_to_rgb, panoptic_from_buffer, panoptic_pixels)
from casnet_core.messages import DETECTIONS_TYPE, PANOPTIC_FRAME_TYPE

DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
PANOPTIC_GT_TOPIC = "/camera/panoptic_gt"

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
CAMERA_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
# Panoptic maps: the ground truth is written 32SC1; the node publishes 16UC1 (ids <= 33 999) and 32SC1
# only for larger ids; the reader takes both.
PANOPTIC_ENCODING = WIDE_PANOPTIC_ENCODING
STORAGES = ("sqlite3", "mcap")
# Interface packages of the node's outputs whose .msg definitions the type store needs.
INTERFACE_PACKAGES = ("casnet_msgs", "vision_msgs", "autoware_perception_msgs", "tier4_perception_msgs",
                      "autoware_internal_perception_msgs")
# rosbag2 metadata version 8 (the oldest rosbags writes): read by Humble and every later rosbag2.
_BAG_VERSION = 8


class BagError(ValueError):
    """A bag that cannot be used: not a bag, corrupt or truncated, no such topic. One-line message."""


# ----------------------------------------------------------------------------------------------
# Type store
# ----------------------------------------------------------------------------------------------


def _interface_dirs(package: str) -> list[Path]:
    """Where the ``.msg`` files of ``package`` may be: the source tree beside casnet_core (a checkout
    or an editable install), then, in this environment and every ROS prefix, the copy setup.py installs
    (``share/casnet_ros/interfaces/<package>/msg``) and the interface package's own ``share/<package>/msg``
    (a colcon install, or the venv the interface packages were built into)."""
    candidates = [Path(__file__).resolve().parents[1] / "msg" / package / "msg"]
    prefixes = [p for p in (sys.prefix, *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)) if p]
    for prefix in prefixes:
        candidates += [Path(prefix) / "share" / "casnet_ros" / "interfaces" / package / "msg",
                       Path(prefix) / "share" / package / "msg"]
    return candidates


@functools.lru_cache(maxsize=1)
def typestore() -> Any:
    """The rosbags type store of every message this project reads or writes: ROS 2 Humble's standard
    messages plus casnet_msgs and vision_msgs from their ``.msg`` files (``_interface_dirs``)."""
    store = get_typestore(Stores.ROS2_HUMBLE)
    types: dict[str, Any] = {}
    for package in INTERFACE_PACKAGES:
        folder = next((d for d in _interface_dirs(package) if any(d.glob("*.msg"))), None)
        if folder is None:
            continue  # reading camera bags needs none of them; writing outputs checks (message_type)
        for path in sorted(folder.glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(), f"{package}/msg/{path.stem}"))
    store.register(types)
    return store


def message_type(msgtype: str) -> Any:
    """The message class of ``msgtype`` in ``typestore()``; BagError when its definition was not found."""
    store = typestore()
    if msgtype not in store.types:
        package = msgtype.split("/")[0]
        raise BagError(f"no definition of {msgtype}: none of {[str(d) for d in _interface_dirs(package)]} "
                       "holds its .msg files")
    return store.types[msgtype]


# ----------------------------------------------------------------------------------------------
# Building messages
# ----------------------------------------------------------------------------------------------


def header_message(stamp_ns: int, frame_id: str) -> Any:
    """std_msgs/Header with the stamp ``stamp_ns`` (nanoseconds since the epoch)."""
    types = typestore().types
    stamp = types["builtin_interfaces/msg/Time"](sec=int(stamp_ns) // 10**9, nanosec=int(stamp_ns) % 10**9)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=str(frame_id))


def stamp_ns(header: Any) -> int:
    """Nanoseconds of a std_msgs/Header's stamp."""
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


def array_to_image_message(pixels: np.ndarray, encoding: str, header: Any) -> Any:
    """(H, W) or (H, W, C) array already in ``encoding``'s layout -> sensor_msgs/Image (little endian)."""
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    return typestore().types[IMAGE_TYPE](
        header=header, height=height, width=width, encoding=encoding,
        is_bigendian=int(pixels.dtype.byteorder == ">" or (pixels.dtype.byteorder == "=" and sys.byteorder == "big")),
        step=pixels.strides[0], data=pixels.reshape(-1).view(np.uint8))


# RGB -> the channel layout of an encoding (cv2.cvtColor code; None: as it is).
_FROM_RGB = {"rgb8": None, "bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA, "bgra8": cv2.COLOR_RGB2BGRA,
             "mono8": cv2.COLOR_RGB2GRAY}


def rgb_to_image_message(image_rgb: np.ndarray, encoding: str, header: Any) -> Any:
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image stored in ``encoding`` (rgb8, bgr8, rgba8, bgra8, mono8)."""
    if encoding not in _FROM_RGB:
        raise ValueError(f"cannot write encoding {encoding!r}; choose one of {', '.join(_FROM_RGB)}")
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image_rgb.shape} {image_rgb.dtype}")
    code = _FROM_RGB[encoding]
    pixels = image_rgb if code is None else cv2.cvtColor(image_rgb, code)
    return array_to_image_message(pixels, encoding, header)


def panoptic_image_message(panoptic: np.ndarray, header: Any, encoding: str | None = None) -> Any:
    """(H, W) int Cityscapes panoptic ids -> sensor_msgs/Image. ``encoding`` None: as the node publishes
    ~/panoptic (``casnet_ros.conversions.panoptic_to_image``), 16UC1 while the ids fit, else 32SC1."""
    pixels, encoding = panoptic_pixels(panoptic, encoding=encoding)
    return array_to_image_message(pixels, encoding, header)


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


class BagWriter:
    """A new rosbag2 at ``path`` (a folder that must not exist yet), as a context manager.

    ``storage``: "sqlite3" (``path/<name>.db3``) or "mcap" (``path/<name>.mcap``), with ``metadata.yaml``.
    Each topic gets its connection on its first message. ``stamp_ns`` is both the bag's receive time and,
    for the ``add_*`` helpers, the header stamp.
    """

    def __init__(self, path: str | os.PathLike, storage: str = "sqlite3") -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.path = Path(path)
        self.storage = storage
        try:
            self._writer = Writer(self.path, version=_BAG_VERSION,
                                  storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
        except WriterError as error:
            raise BagError(str(error)) from error
        self._connections: dict[tuple[str, str], Any] = {}
        self._open = False

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        self._open = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Writes the index and metadata.yaml (also after an error, so what was written stays readable)."""
        if self._open:
            self._open = False
            self._writer.close()

    def _connection(self, topic: str, msgtype: str) -> Any:
        key = (topic, msgtype)
        if key not in self._connections:
            message_type(msgtype)
            self._connections[key] = self._writer.add_connection(topic, msgtype, typestore=typestore())
        return self._connections[key]

    def add_serialized(self, topic: str, msgtype: str, stamp_ns: int, data: bytes | memoryview) -> None:
        """One message already serialized as CDR (e.g. by ``rclpy.serialization.serialize_message``)."""
        self._writer.write(self._connection(topic, msgtype), int(stamp_ns), bytes(data))

    def add(self, topic: str, msgtype: str, stamp_ns: int, message: Any) -> None:
        """One message of the type store (``typestore().types[msgtype](...)`` or a ``*_message`` function)."""
        connection = self._connection(topic, msgtype)
        self._writer.write(connection, int(stamp_ns), typestore().serialize_cdr(message, msgtype))

    def add_image(self, topic: str, stamp_ns: int, image: np.ndarray, encoding: str = "rgb8",
                  frame_id: str = "camera") -> None:
        """sensor_msgs/Image of an (H, W, 3) uint8 RGB image, stored as ``encoding`` (rgb8, bgr8, rgba8,
        bgra8 or mono8: the pixels are converted from RGB)."""
        self.add(topic, IMAGE_TYPE, stamp_ns, rgb_to_image_message(image, encoding, header_message(stamp_ns, frame_id)))

    def add_compressed_image(self, topic: str, stamp_ns: int, image_rgb: np.ndarray, fmt: str = "jpeg",
                             frame_id: str = "camera", quality: int = 90) -> None:
        """sensor_msgs/CompressedImage (``fmt`` "jpeg" or "png", as image_transport's compressed plugin writes)
        of an (H, W, 3) uint8 RGB image."""
        fmt = fmt.lower()
        params = {"jpeg": [cv2.IMWRITE_JPEG_QUALITY, int(quality)], "png": [cv2.IMWRITE_PNG_COMPRESSION, 1]}
        if fmt not in params:
            raise ValueError(f"compressed format must be 'jpeg' or 'png', got {fmt!r}")
        ok, data = cv2.imencode("." + ("jpg" if fmt == "jpeg" else fmt),
                                cv2.cvtColor(np.asarray(image_rgb), cv2.COLOR_RGB2BGR), params[fmt])
        if not ok:
            raise ValueError(f"OpenCV cannot encode the image as {fmt}")
        message = typestore().types[COMPRESSED_IMAGE_TYPE](
            header=header_message(stamp_ns, frame_id), format=fmt, data=data.reshape(-1))
        self.add(topic, COMPRESSED_IMAGE_TYPE, stamp_ns, message)

    def add_camera_info(self, topic: str, stamp_ns: int, camera_matrix: np.ndarray, width: int, height: int,
                        frame_id: str = "camera") -> None:
        """sensor_msgs/CameraInfo of a pinhole camera without distortion: K = ``camera_matrix`` (3x3),
        R = identity, P = [K | 0], plumb_bob with zero coefficients."""
        types = typestore().types
        k = np.asarray(camera_matrix, dtype=np.float64).reshape(3, 3)
        message = types[CAMERA_INFO_TYPE](
            header=header_message(stamp_ns, frame_id), height=int(height), width=int(width),
            distortion_model="plumb_bob", d=np.zeros(5), k=k.reshape(-1), r=np.eye(3).reshape(-1),
            p=np.hstack([k, np.zeros((3, 1))]).reshape(-1), binning_x=0, binning_y=0,
            roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                           do_rectify=False))
        self.add(topic, CAMERA_INFO_TYPE, stamp_ns, message)

    def add_panoptic(self, topic: str, stamp_ns: int, panoptic: np.ndarray, frame_id: str = "camera") -> None:
        """sensor_msgs/Image 32SC1 of an (H, W) Cityscapes panoptic map (label_id*1000+k things, label_id stuff,
        0 void): the ground-truth topic of a drive bag, or the node's ~/panoptic."""
        self.add(topic, IMAGE_TYPE, stamp_ns,
                 panoptic_image_message(panoptic, header_message(stamp_ns, frame_id), encoding=PANOPTIC_ENCODING))


def remove_bag(path: str | os.PathLike) -> None:
    """Deletes the bag folder ``path`` if it is one (holds metadata.yaml) or is empty; refuses anything else."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir() or not ((path / "metadata.yaml").is_file() or not any(path.iterdir())):
        raise BagError(f"{path} exists and is not a bag: not overwriting it")
    shutil.rmtree(path)


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------

# What rosbags and its storages raise for a file that is not a bag, or is corrupt or truncated.
_READ_ERRORS: tuple[type[BaseException], ...] = (AnyReaderError, ReaderError, OSError, sqlite3.Error, struct.error,
                                                 EOFError, KeyError, IndexError, ValueError, AssertionError)


def _bag_path(path: str | os.PathLike) -> Path:
    """The path rosbags opens: the bag folder (with metadata.yaml) or its single .db3 / .mcap file."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: no such file or folder")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        storage_files = sorted([*path.glob("*.db3"), *path.glob("*.mcap")])
        if len(storage_files) != 1:
            raise BagError(f"{path} is not a rosbag2: no metadata.yaml and "
                           f"{'no' if not storage_files else len(storage_files)} .db3/.mcap files")
        return storage_files[0]
    if path.is_file() and path.suffix not in (".db3", ".mcap"):
        raise BagError(f"{path} is not a rosbag2: expected a bag folder, a .db3 or an .mcap file")
    return path


def bag_storage(path: str | os.PathLike) -> str:
    """"sqlite3" or "mcap": the storage of a bag."""
    path = _bag_path(path)
    files = [path] if path.is_file() else [*path.iterdir()]
    return "mcap" if any(f.suffix == ".mcap" for f in files) else "sqlite3"


class _Bag:
    """An open AnyReader whose failures become BagError."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._reader = AnyReader([_bag_path(path)], default_typestore=typestore())
        try:
            self._reader.open()
        except _READ_ERRORS as error:
            raise BagError(f"{self.path} is not a readable rosbag2 (corrupt or truncated?): "
                           f"{one_line(error)}") from None

    def __enter__(self) -> "_Bag":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._reader.close()
        except _READ_ERRORS:
            pass

    def topics(self) -> dict[str, Any]:
        return self._reader.topics

    def messages(self, topics: Sequence[str], start_ns: int | None = None,
                 stop_ns: int | None = None) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, msgtype, receive time ns, raw CDR) of ``topics`` in receive-time order; only those received
        in [start_ns, stop_ns) when given."""
        connections = [c for c in self._reader.connections if c.topic in topics]
        try:
            for connection, time_ns, rawdata in self._reader.messages(connections=connections, start=start_ns,
                                                                      stop=stop_ns):
                yield connection.topic, connection.msgtype, time_ns, rawdata
        except _READ_ERRORS as error:
            raise BagError(f"{self.path} is corrupt or truncated: {one_line(error)}") from None

    def deserialize(self, rawdata: bytes, msgtype: str) -> Any:
        return self._reader.deserialize(rawdata, msgtype)


def read_messages(path: str | os.PathLike, topics: Sequence[str]) -> Iterator[tuple[str, int, Any]]:
    """(topic, receive time ns, message) of ``topics`` of a bag, in receive-time order: e.g. the outputs
    of a replay."""
    with _Bag(path) as bag:
        for topic, msgtype, time_ns, rawdata in bag.messages(topics):
            yield topic, time_ns, bag.deserialize(rawdata, msgtype)


def _first_message(bag: _Bag, topic: str, msgtype: str) -> Any | None:
    for _, _, _, rawdata in bag.messages([topic]):
        try:
            return bag.deserialize(rawdata, msgtype)
        except Exception:  # a malformed first message: judge the topic by its type alone
            return None
    return None


def _camera_topics(bag: _Bag, exclude: Sequence[str] = ()) -> dict[str, str]:
    """Topics that carry camera images: CompressedImage, or Image whose first message has a camera
    encoding (not the 32SC1 of a panoptic ground truth)."""
    found = {}
    for topic, info in sorted(bag.topics().items()):
        if info.msgtype not in CAMERA_TYPES or topic in exclude:
            continue
        if info.msgtype == IMAGE_TYPE:
            first = _first_message(bag, topic, IMAGE_TYPE)
            if first is not None and str(first.encoding).lower() not in SUPPORTED_ENCODINGS:
                continue
        found[topic] = info.msgtype
    return found


def image_topics(path: str | os.PathLike) -> dict[str, str]:
    """{topic: msgtype} of the camera topics of a bag (sensor_msgs/msg/Image with a camera encoding, or
    sensor_msgs/msg/CompressedImage)."""
    with _Bag(path) as bag:
        return _camera_topics(bag)


def _topic_list(topics: dict[str, Any]) -> str:
    return ", ".join(f"{name} ({info.msgtype})" for name, info in sorted(topics.items())) or "none"


def _select_topics(bag: _Bag, image_topic: str | None, gt_topic: str | None) -> tuple[str, str, str | None]:
    """(camera topic, its msgtype, ground-truth topic or None); BagError for a missing or ambiguous topic."""
    topics = bag.topics()
    if gt_topic is not None:
        if gt_topic not in topics:
            raise BagError(f"no topic {gt_topic} in {bag.path}; topics: {_topic_list(topics)}")
        if topics[gt_topic].msgtype != IMAGE_TYPE:
            raise BagError(f"ground-truth topic {gt_topic} is {topics[gt_topic].msgtype}, expected {IMAGE_TYPE} "
                           f"({' or '.join(PANOPTIC_DTYPES)})")
    elif PANOPTIC_GT_TOPIC in topics and topics[PANOPTIC_GT_TOPIC].msgtype == IMAGE_TYPE:
        gt_topic = PANOPTIC_GT_TOPIC
    if image_topic is not None:
        if image_topic not in topics:
            raise BagError(f"no topic {image_topic} in {bag.path}; topics: {_topic_list(topics)}")
        if topics[image_topic].msgtype not in CAMERA_TYPES:
            raise BagError(f"topic {image_topic} is {topics[image_topic].msgtype}, not a camera image "
                           f"({' or '.join(CAMERA_TYPES)})")
        return image_topic, topics[image_topic].msgtype, gt_topic
    cameras = _camera_topics(bag, exclude=[gt_topic] if gt_topic else [])
    if not cameras:
        raise BagError(f"no camera image topic ({' or '.join(CAMERA_TYPES)}) in {bag.path}; "
                       f"topics: {_topic_list(topics)}")
    if len(cameras) > 1:
        raise BagError(f"several camera topics in {bag.path}: {', '.join(cameras)}; choose one with --image-topic")
    (topic, msgtype), = cameras.items()
    return topic, msgtype, gt_topic


@dataclass
class BagFrame:
    """One camera message of a bag.

    index: position of the frame on its topic (0, 1, ...); stamp_ns: header stamp; time_ns: receive time
    in the bag; frame_id: header frame_id; image_rgb: (H, W, 3) uint8 RGB (often a view of the message
    buffer), None when it cannot be decoded, ``error`` then says why; panoptic_gt: (H, W) int32 Cityscapes
    panoptic ground truth with the same stamp, or None, ``gt_error`` then says why when the bag has a
    ground-truth topic; msgtype and rawdata: the camera message as recorded (CDR), for replaying it unchanged;
    decode_s: seconds the decoding took.
    """

    index: int
    stamp_ns: int
    time_ns: int
    frame_id: str
    image_rgb: np.ndarray | None
    error: str | None
    panoptic_gt: np.ndarray | None
    msgtype: str
    rawdata: bytes
    decode_s: float = 0.0
    gt_error: str | None = None


def panoptic_from_image_message(message: Any) -> np.ndarray:
    """sensor_msgs/Image 32SC1 or 16UC1 -> (H, W) int32 panoptic ids; ValueError for any other layout."""
    return panoptic_from_buffer(np.asarray(message.data, dtype=np.uint8), message.height, message.width,
                                message.encoding, message.step, bool(message.is_bigendian)).astype(np.int32)


def _decode_camera(message: Any, msgtype: str) -> np.ndarray:
    if msgtype == COMPRESSED_IMAGE_TYPE:
        return compressed_to_rgb(message.data, message.format)
    return image_to_rgb(message.data, message.height, message.width, message.encoding, message.step,
                        is_bigendian=bool(message.is_bigendian))


@dataclass(frozen=True)
class BagTopics:
    """The topics a replay reads: the camera topic and its type, the ground-truth topic (or None), and
    the number of camera messages (from the bag's index)."""

    image_topic: str
    image_type: str
    gt_topic: str | None
    frames: int


def find_topics(path: str | os.PathLike, image_topic: str | None = None, gt_topic: str | None = None) -> BagTopics:
    """The topics ``read_frames`` reads with these arguments; BagError for a bag or topic that cannot be used."""
    with _Bag(path) as bag:
        topic, msgtype, gt_topic = _select_topics(bag, image_topic, gt_topic)
        return BagTopics(topic, msgtype, gt_topic, int(bag.topics()[topic].msgcount))


def cdr_header_stamp_ns(data: bytes) -> int:
    """The header stamp of a serialized message that starts with a std_msgs/Header (Image, CompressedImage and the
    node's outputs do): after the 4-byte CDR encapsulation, int32 sec and uint32 nanosec in its byte order.
    struct.error for data too short."""
    sec, nanosec = struct.unpack_from("<iI" if data[1] & 1 else ">iI", data, 4)
    return sec * 10**9 + nanosec


# Why a frame of a bag with a ground-truth topic has none (BagFrame.gt_error).
NO_GT_WITH_STAMP = "no ground-truth message with its stamp"
FEWER_GT_THAN_FRAMES = "fewer ground-truth messages with its stamp than frames"
GT_UNDECODABLE = "ground truth cannot be decoded"


def read_frames(path: str | os.PathLike, image_topic: str | None = None,
                gt_topic: str | None = None) -> Iterator[BagFrame]:
    """The camera frames of a bag in recorded order, decoded, each with its ground truth when the bag
    has a panoptic ground-truth topic (``gt_topic``, default PANOPTIC_GT_TOPIC when present).

    ``image_topic``: the camera topic; found by itself when the bag has exactly one.
    Frames are numbered by their position on the topic; the ground truth of a frame is the message with its
    header stamp, recorded anywhere in the bag (the n-th frame with a stamp gets the n-th message with it).
    Raises BagError (one line) for a bag that cannot be read or a topic that is missing or ambiguous;
    a frame that cannot be decoded is yielded with ``error`` set and ``image_rgb`` None, a frame without
    ground truth with ``gt_error`` set.
    """
    with _Bag(path) as bag:
        topic, msgtype, gt_topic = _select_topics(bag, image_topic, gt_topic)
        if gt_topic is None:
            for index, (_, message_type, time_ns, rawdata) in enumerate(bag.messages([topic])):
                yield _frame(bag, index, message_type, time_ns, rawdata)
            return
        # Where each stamp's ground truth lies: its receive time and rank among the messages received then.
        # Read from the raw headers (no image decoded), so the ground truth can come at any distance from its
        # image without holding frames in memory.
        located: dict[int, list[tuple[int, int]]] = {}
        received_at: dict[int, int] = {}
        for _, _, time_ns, rawdata in bag.messages([gt_topic]):
            rank = received_at[time_ns] = received_at.get(time_ns, -1) + 1
            try:
                located.setdefault(cdr_header_stamp_ns(rawdata), []).append((time_ns, rank))
            except (struct.error, IndexError):
                continue  # too short to hold a header: no frame can claim it
        with _Bag(path) as ground_truth_bag:  # a second reader that fetches them while the first reads frames
            frames_with_stamp: dict[int, int] = {}
            for index, (_, message_type, time_ns, rawdata) in enumerate(bag.messages([topic])):
                frame = _frame(bag, index, message_type, time_ns, rawdata)
                nth = frames_with_stamp[frame.stamp_ns] = frames_with_stamp.get(frame.stamp_ns, -1) + 1
                places = located.get(frame.stamp_ns, [])
                if nth < len(places):
                    frame.panoptic_gt, frame.gt_error = _ground_truth(ground_truth_bag, gt_topic, *places[nth])
                else:
                    frame.gt_error = FEWER_GT_THAN_FRAMES if places else NO_GT_WITH_STAMP
                yield frame


def read_camera_frames(path: str | os.PathLike, image_topics: Sequence[str]) -> Iterator[tuple[str, BagFrame]]:
    """(topic, frame) of several camera topics of a bag, decoded, in recorded (receive-time) order; each frame
    numbered by its position on its own topic. No ground truth (a stamp names one frame of one camera).
    BagError as ``read_frames``, also for a topic that is missing or not a camera."""
    with _Bag(path) as bag:
        for topic in image_topics:
            _select_topics(bag, topic, None)
        positions = dict.fromkeys(image_topics, 0)
        for topic, message_type, time_ns, rawdata in bag.messages(list(image_topics)):
            yield topic, _frame(bag, positions[topic], message_type, time_ns, rawdata)
            positions[topic] += 1


def _ground_truth(bag: _Bag, topic: str, time_ns: int, rank: int) -> tuple[np.ndarray | None, str | None]:
    """(panoptic ids, None) of the ``rank``-th ground-truth message received at ``time_ns``, or (None, why)."""
    for position, (_, message_type, _, rawdata) in enumerate(bag.messages([topic], time_ns, time_ns + 1)):
        if position == rank:
            try:
                return panoptic_from_image_message(bag.deserialize(rawdata, message_type)), None
            except Exception as error:  # a malformed ground-truth message: this frame goes unevaluated
                return None, f"{GT_UNDECODABLE}: {one_line(error)}"
    return None, NO_GT_WITH_STAMP


def _frame(bag: _Bag, index: int, msgtype: str, time_ns: int, rawdata: bytes) -> BagFrame:
    try:
        # From a writable copy: the pixels then come out as writable views (torch warns on read-only arrays).
        message = bag.deserialize(bytearray(rawdata), msgtype)
    except Exception as error:  # malformed CDR: this frame only
        return BagFrame(index, time_ns, time_ns, "", None, f"cannot deserialize: {one_line(error)}", None,
                        msgtype, bytes(rawdata))
    frame = BagFrame(index, stamp_ns(message.header), time_ns, str(message.header.frame_id), None, None, None,
                     msgtype, bytes(rawdata))
    start = time.perf_counter()
    try:
        frame.image_rgb = _decode_camera(message, msgtype)
    except ValueError as error:  # ImageConversionError and size mismatches
        frame.error = one_line(error)
    frame.decode_s = time.perf_counter() - start
    return frame

