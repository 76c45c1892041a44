"""Generated drives: consecutive frames of one street as the camera drives down it.

The world is the street of a still scene (``populate``), built again for every frame from the same seed at
the frame's instant (``Motion``): the camera has moved ``ego_speed * t`` metres forward, at the speed of a
city car, and the other traffic with velocities of its own. Cars in the camera's lane drive at least as
fast as it does, cars in the other lanes of its direction are overtaken, oncoming traffic, cross traffic,
cyclists and pedestrians pass, parked cars stand; a thing that would hit the ego car is left out of the
drive. So instances persist from frame to frame with the same id, grow as the camera nears them and leave
the image. Everything is deterministic for a seed.

``write_drive_bag`` records a drive as a rosbag2 (``casnet synth --bag``) with standard message types: the
camera image (raw or JPEG), its ``CameraInfo`` and the panoptic ground truth.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from casnet_core import bags
from casnet_core.labels import IGNORE_INDEX, class_space
from casnet_core.synth.painter import InstanceNumbers
from casnet_core.synth.scene import DRIVE_STREAM, Motion, StreetScene
from casnet_core.synth.street import MIN_INSTANCE_AREA, populate, remove_small_instances

# m/s of the camera's car, drawn per drive: a city car.
EGO_SPEED_RANGE = (8.0, 12.0)
# Header stamp of a drive's first frame (2023-11-14 22:13:20 UTC).
DRIVE_START_NS = 1_700_000_000 * 10**9
IMAGE_FORMATS = ("rgb8", "bgr8", "jpeg")


@dataclass(frozen=True)
class DriveFrame:
    """One frame of a generated drive.

    Attributes:
        stamp_ns: header stamp in nanoseconds.
        image_rgb: (H, W, 3) uint8 RGB camera image.
        panoptic: (H, W) int32 Cityscapes panoptic ids: ``label_id * LABEL_DIVISOR + k`` for thing instances
            (k the same for an object in every frame), ``label_id`` for evaluated stuff, 0 for void.
        camera_matrix: (3, 3) float64 intrinsics K the generator projects with (OpenCV / ROS convention).
        width, height: image size in pixels.
    """

    stamp_ns: int
    image_rgb: np.ndarray
    panoptic: np.ndarray
    camera_matrix: np.ndarray
    width: int
    height: int


def generate_drive(
    frames: int, *, rate_hz: float = 10.0, seed: int = 0, height: int = 512, width: int = 1024
) -> Iterator[DriveFrame]:
    """``frames`` consecutive frames of one street at ``rate_hz``, deterministic for ``seed``.

    Raises:
        ValueError: on a frame count below 1, a rate that is not positive, or an image under 32x32 pixels.
    """
    _check_drive(frames, rate_hz, height, width)
    return _drive_frames(frames, rate_hz, int(seed), height, width)


def _check_drive(frames: int, rate_hz: float, height: int, width: int) -> None:
    if frames < 1:
        raise ValueError(f"a drive needs at least 1 frame, got {frames}")
    if not rate_hz > 0.0:
        raise ValueError(f"the frame rate must be positive, got {rate_hz}")
    if height < 32 or width < 32:
        raise ValueError(f"image size {height}x{width} is too small (at least 32x32)")


def _drive_frames(frames: int, rate_hz: float, seed: int, height: int, width: int) -> Iterator[DriveFrame]:
    ego_speed = float(np.random.default_rng([seed, DRIVE_STREAM, 0]).uniform(*EGO_SPEED_RANGE))
    duration = (frames - 1) / rate_hz
    numbers = InstanceNumbers()
    evaluated = class_space("panoptic").label_id_lut() != IGNORE_INDEX
    for frame in range(frames):
        motion = Motion(time=frame / rate_hz, duration=duration, ego_speed=ego_speed, seed=seed, frame=frame)
        rng = np.random.default_rng([seed, DRIVE_STREAM])
        scene = StreetScene(rng, height, width, motion=motion, instance_numbers=numbers)
        populate(scene)
        image, label_ids, instance_ids = scene.render()
        remove_small_instances(label_ids, instance_ids, MIN_INSTANCE_AREA)
        # Void as in Cityscapes' panoptic ground truth: every class that is not evaluated (the ego vehicle).
        panoptic = np.where(evaluated[label_ids], instance_ids, 0).astype(np.int32)
        yield DriveFrame(
            stamp_ns=DRIVE_START_NS + round(frame * 1e9 / rate_hz),
            image_rgb=image,
            panoptic=panoptic,
            camera_matrix=scene.cam.matrix(),
            width=width,
            height=height,
        )


def write_drive_bag(
    path: str | os.PathLike,
    frames: int,
    *,
    rate_hz: float = 10.0,
    seed: int = 0,
    height: int = 512,
    width: int = 1024,
    storage: str = "sqlite3",
    image_format: str = "rgb8",
    progress: bool = False,
) -> Path:
    """Writes ``generate_drive(frames, ...)`` as a rosbag2 at ``path`` (a folder that must not exist yet).

    Topics, stamped with the frame's stamp, frame id "camera": the image on ``DEFAULT_IMAGE_TOPIC``
    (``sensor_msgs/Image`` rgb8 or bgr8) or, for ``image_format="jpeg"``, on ``DEFAULT_IMAGE_TOPIC +
    "/compressed"`` (``sensor_msgs/CompressedImage``); ``sensor_msgs/CameraInfo`` on ``CAMERA_INFO_TOPIC``;
    the panoptic ground truth (``sensor_msgs/Image`` 32SC1) on ``PANOPTIC_GT_TOPIC``. Returns ``path``.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    _check_drive(frames, rate_hz, height, width)  # before the bag folder is made
    drive = generate_drive(frames, rate_hz=rate_hz, seed=seed, height=height, width=width)
    with bags.BagWriter(path, storage=storage) as bag:
        for frame in tqdm(drive, total=frames, desc="drive", unit="frame", disable=not progress):
            if image_format == "jpeg":
                bag.add_compressed_image(bags.DEFAULT_IMAGE_TOPIC + "/compressed", frame.stamp_ns, frame.image_rgb,
                                         fmt="jpeg")
            else:
                bag.add_image(bags.DEFAULT_IMAGE_TOPIC, frame.stamp_ns, frame.image_rgb, encoding=image_format)
            bag.add_camera_info(bags.CAMERA_INFO_TOPIC, frame.stamp_ns, frame.camera_matrix, frame.width,
                                frame.height)
            bag.add_panoptic(bags.PANOPTIC_GT_TOPIC, frame.stamp_ns, frame.panoptic)
    return Path(path)
