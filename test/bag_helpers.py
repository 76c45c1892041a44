"""Helpers of the replay tests: small drive bags written with casnet_core.bags, and their reading."""

from __future__ import annotations

import numpy as np

from casnet_core import bags
from casnet_core.data import list_samples, read_image, read_instance_ids

T0 = 1_700_000_000 * 10**9  # stamp of the first frame, ns
PERIOD = 10**8  # 10 Hz


def write_bag(path, images, *, storage="sqlite3", encoding="rgb8", compressed=None, ground_truth=None,
              topic=bags.DEFAULT_IMAGE_TOPIC):
    """A drive bag: one camera message per image (raw ``encoding``, or CompressedImage ``compressed`` =
    "png"/"jpeg"), camera info, and the ground truth (32SC1) when given. Returns the stamps."""
    stamps = [T0 + i * PERIOD for i in range(len(images))]
    with bags.BagWriter(path, storage) as writer:
        for i, (stamp, image) in enumerate(zip(stamps, images)):
            if compressed:
                writer.add_compressed_image(topic, stamp, image, fmt=compressed)
            else:
                writer.add_image(topic, stamp, image, encoding=encoding)
            height, width = image.shape[:2]
            camera_matrix = np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]])
            writer.add_camera_info(bags.CAMERA_INFO_TOPIC, stamp, camera_matrix, width, height)
            if ground_truth is not None:
                writer.add_panoptic(bags.PANOPTIC_GT_TOPIC, stamp, ground_truth[i])
    return stamps


def read_topic(path, topic):
    """{header stamp: message} of one topic of a bag."""
    return {bags.stamp_ns(message.header): message for _, _, message in bags.read_messages(path, [topic])}


def val_images(synth_root):
    samples = list_samples(synth_root, "val")
    return [read_image(s.image_path) for s in samples], [read_instance_ids(s.instance_ids_path) for s in samples]


def instance_rows(instances):
    """Comparable rows of Predictor instances or casnet_msgs/PanopticInstance (float32, as in the message)."""
    rows = []
    for i in instances:
        if hasattr(i, "box"):
            values = (i.id, i.label_id, i.class_name, i.score, *i.box, i.area, *i.centroid)
        else:
            values = (i.id, i.class_id, i.class_name, i.score, i.x_min, i.y_min, i.x_max, i.y_max, i.area,
                      i.centroid_x, i.centroid_y)
        rows.append(values[:3] + tuple(float(np.float32(v)) for v in values[3:8]) + (int(values[8]),)
                    + tuple(float(np.float32(v)) for v in values[9:]))
    return rows
