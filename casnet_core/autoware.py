"""Autoware's camera-perception outputs from a panoptic result: the class map, the run-length mask, the messages.

Autoware (release 1.8.0; the message packages of msg/ follow it) reads camera detections from
``autoware_tensorrt_yolox``: per camera ``rois<i>`` (``tier4_perception_msgs/DetectedObjectsWithFeature``) and
``mask<i>`` (a ``sensor_msgs/Image`` whose encoding says mono8 but whose data is run-length encoded), and instance
masks from ``autoware_tensorrt_rtmdet`` (``autoware_internal_perception_msgs/SegmentationMask``). This module holds
everything of those outputs that needs no ROS: the Cityscapes -> Autoware class maps, the encoder of the mask, and
the builders of the messages from ``Predictor`` results (message classes given by the caller, as in
``casnet_core.messages``: rclpy's in the node, rosbags' in the in-process replay).

The mask format (Autoware's ``perception_utils::runLengthEncoder``, the decoder of
``segmentation_pointcloud_fusion``): the class image, row-major, as consecutive runs of equal values, each run one
5-byte record: uint8 class id, then int32 (little-endian) run length. Runs cross row boundaries; ``height`` and
``width`` of the message give the image's shape.

The class map, one row per Cityscapes label (``cityscapesscripts``' table; ``AUTOWARE_CLASSES`` lists the mask's
16 ids). Mask class / object label (things only) and why:

* road, parking -> ROAD: drivable surface (Cityscapes has no ROAD_PAINT, CURBSTONE or CROSSWALK: markings and
  crossings are labelled road, curbs sidewalk, so those three ids are never produced).
* sidewalk -> SIDEWALK. ground, rail track -> UNKNOWN: neither drivable road nor sidewalk.
* building, bridge, tunnel -> BUILDING: large static structures.
* wall, fence, guard rail -> WALL: vertical barriers beside the road (Cityscapes' "construction" category with
  the wall); fusion treats them like walls (static, not an object to track).
* pole, polegroup, static, dynamic -> OBSTACLE: small objects standing in the scene that are not classified
  further; their lidar points must stay for clustering, so not WALL or BUILDING.
* traffic light -> TRAFFIC_LIGHT, traffic sign -> TRAFFIC_SIGN.
* vegetation, terrain -> VEGETATION: terrain (grass, soil) is Cityscapes' other "nature" class; Autoware has no
  class of its own for it, and like vegetation it is not an object.
* sky -> SKY.
* person -> PERSON / PEDESTRIAN.
* rider -> BIKE / BICYCLE: Autoware (as the nuScenes and T4 datasets its detectors learn from) labels a cyclist,
  rider included, as one BICYCLE object, where Cityscapes splits the rider from the bicycle. A rider of a
  motorcycle becomes BICYCLE too (a rider instance does not say what it rides); its motorcycle stays MOTORCYCLE.
* bicycle -> BIKE / BICYCLE, motorcycle -> BIKE / MOTORCYCLE: Autoware's mask has one two-wheeler class.
* car -> VEHICLE / CAR, truck -> VEHICLE / TRUCK, bus -> VEHICLE / BUS, trailer and caravan (a towed camper)
  -> VEHICLE / TRAILER.
* train -> VEHICLE / BUS: Cityscapes' trains are mostly trams running in the street; Autoware has no rail class,
  and BUS is its large passenger vehicle with the closest size and behaviour.
* unlabeled, ego vehicle, rectification border, out of roi, license plate and void pixels -> UNKNOWN.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

from casnet_core.labels import LABEL_DIVISOR

MessageClass = Callable[[str], Any]

#: The mask's class ids, as segmentation_pointcloud_fusion's filter_semantic_label_target names them.
AUTOWARE_CLASSES = ("UNKNOWN", "BUILDING", "WALL", "OBSTACLE", "TRAFFIC_LIGHT", "TRAFFIC_SIGN", "PERSON", "VEHICLE",
                    "BIKE", "ROAD", "SIDEWALK", "ROAD_PAINT", "CURBSTONE", "CROSSWALK", "VEGETATION", "SKY")
#: autoware_perception_msgs/ObjectClassification labels.
OBJECT_LABELS = {"UNKNOWN": 0, "CAR": 1, "TRUCK": 2, "BUS": 3, "TRAILER": 4, "MOTORCYCLE": 5, "BICYCLE": 6,
                 "PEDESTRIAN": 7, "ANIMAL": 8, "HAZARD": 9, "OVER_DRIVABLE": 10, "UNDER_DRIVABLE": 11}

#: Cityscapes label name -> Autoware mask class (the module docstring says why); every other label is UNKNOWN.
MASK_CLASS_OF = {
    "road": "ROAD", "parking": "ROAD", "sidewalk": "SIDEWALK",
    "building": "BUILDING", "bridge": "BUILDING", "tunnel": "BUILDING",
    "wall": "WALL", "fence": "WALL", "guard rail": "WALL",
    "pole": "OBSTACLE", "polegroup": "OBSTACLE", "static": "OBSTACLE", "dynamic": "OBSTACLE",
    "traffic light": "TRAFFIC_LIGHT", "traffic sign": "TRAFFIC_SIGN",
    "vegetation": "VEGETATION", "terrain": "VEGETATION", "sky": "SKY",
    "person": "PERSON", "rider": "BIKE", "bicycle": "BIKE", "motorcycle": "BIKE",
    "car": "VEHICLE", "truck": "VEHICLE", "bus": "VEHICLE", "caravan": "VEHICLE", "trailer": "VEHICLE",
    "train": "VEHICLE",
}
#: Cityscapes thing class name -> ObjectClassification label of its rois.
OBJECT_LABEL_OF = {"person": "PEDESTRIAN", "rider": "BICYCLE", "bicycle": "BICYCLE", "motorcycle": "MOTORCYCLE",
                   "car": "CAR", "truck": "TRUCK", "bus": "BUS", "caravan": "TRAILER", "trailer": "TRAILER",
                   "train": "BUS"}


def _lut(names: dict[str, str], ids: Sequence[str] | dict[str, int]) -> np.ndarray:
    """(256,) uint8: Cityscapes label id -> Autoware id (0, UNKNOWN, for labels ``names`` lacks)."""
    index = {name: i for i, name in enumerate(ids)} if not isinstance(ids, dict) else ids
    lut = np.zeros(256, dtype=np.uint8)
    for label in _CS_LABELS:
        if 0 <= label.id < 256 and label.name in names:
            lut[label.id] = index[names[label.name]]
    lut.flags.writeable = False
    return lut


#: (256,) uint8: Cityscapes label id -> Autoware mask class id.
MASK_CLASS_LUT = _lut(MASK_CLASS_OF, AUTOWARE_CLASSES)
#: (256,) uint8: Cityscapes label id -> ObjectClassification label (UNKNOWN for stuff).
OBJECT_LABEL_LUT = _lut(OBJECT_LABEL_OF, OBJECT_LABELS)

# One run of the mask: uint8 class id, int32 little-endian length, packed (5 bytes, no padding).
RLE_RECORD = np.dtype([("value", "u1"), ("count", "<i4")])
assert RLE_RECORD.itemsize == 5


def _panoptic_lookup(table: np.ndarray, panoptic: np.ndarray) -> np.ndarray:
    """``table[panoptic]`` for a table over ids 0..len-2 whose last entry is the value of larger ids."""
    return np.take(table, panoptic, mode="clip")


def panoptic_to_mask_classes(panoptic: np.ndarray, max_id: int | None = None) -> np.ndarray:
    """(H, W) Cityscapes panoptic ids (label_id * 1000 + k for things, label_id for stuff, 0 void) -> (H, W) uint8
    Autoware mask class ids (``MASK_CLASS_LUT`` of each pixel's label id).

    One table lookup per pixel over the panoptic ids themselves (a table of ``max_id + 2`` entries; ``max_id``,
    e.g. the largest instance id, saves a pass over the pixels) rather than a division per pixel.
    """
    panoptic = np.asarray(panoptic)
    if max_id is None:
        max_id = int(panoptic.max(initial=0))
    ids = np.arange(max(int(max_id), 255) + 2)
    labels = np.where(ids >= LABEL_DIVISOR, ids // LABEL_DIVISOR, ids)
    table = MASK_CLASS_LUT[np.clip(labels, 0, 255)]
    table[-1] = 0  # ids beyond max_id: none exist; UNKNOWN rather than a wrong class
    return _panoptic_lookup(table, panoptic)


def instance_index_mask(panoptic: np.ndarray, instance_ids: Sequence[int]) -> np.ndarray:
    """(H, W) panoptic ids + the instances' panoptic ids in roi order -> (H, W) instance mask: k (1-based) where the
    pixel belongs to ``instance_ids[k - 1]``, 0 elsewhere. uint8 for up to 255 instances, else uint16."""
    ids = np.asarray(instance_ids, dtype=np.int64)
    dtype = np.uint8 if len(ids) <= np.iinfo(np.uint8).max else np.uint16
    table = np.zeros(int(ids.max(initial=0)) + 2, dtype=dtype)
    table[ids] = np.arange(1, len(ids) + 1, dtype=dtype)
    table[-1] = 0
    return _panoptic_lookup(table, np.asarray(panoptic))


def rle_encode(mask: np.ndarray) -> bytes:
    """(H, W) uint8 class image -> Autoware's run-length bytes (module docstring: 5-byte records, row-major).

    Vectorised: the run starts are where a pixel differs from the previous one (rows joined), the run lengths
    their differences. b"" for an empty image.
    """
    flat = np.ascontiguousarray(mask, dtype=np.uint8).reshape(-1)
    if flat.size == 0:
        return b""
    if flat.size > np.iinfo(np.int32).max:
        raise ValueError(f"a mask of {flat.size} pixels does not fit the format's int32 run lengths")
    starts = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    records = np.empty(len(starts) + 1, dtype=RLE_RECORD)
    records["value"][0] = flat[0]
    records["value"][1:] = flat[starts]
    ends = np.empty(len(starts) + 1, dtype=np.int64)
    ends[:-1] = starts
    ends[-1] = flat.size
    records["count"][0] = ends[0]
    records["count"][1:] = np.diff(ends)
    return records.tobytes()


# ------------------------------------------------------------------------------------------------ messages
ROIS_TYPE = "tier4_perception_msgs/msg/DetectedObjectsWithFeature"
INSTANCE_MASK_TYPE = "autoware_internal_perception_msgs/msg/SegmentationMask"
IMAGE_TYPE = "sensor_msgs/msg/Image"


def roi_of(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """A box (x0, y0, x1, y1 in pixels, x1/y1 exclusive) -> (x_offset, y_offset, width, height) of the whole pixels
    it touches, inside the (height, width) image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    left, top = min(max(int(math.floor(x0)), 0), width), min(max(int(math.floor(y0)), 0), height)
    right, bottom = min(max(int(math.ceil(x1)), left), width), min(max(int(math.ceil(y1)), top), height)
    return left, top, right - left, bottom - top


def _classification(message_class: MessageClass, label_id: int) -> Any:
    return message_class("autoware_perception_msgs/msg/ObjectClassification")(
        label=int(OBJECT_LABEL_LUT[int(label_id) & 0xFF]), probability=1.0)


def _zero_vector(message_class: MessageClass) -> Any:
    return message_class("geometry_msgs/msg/Vector3")(x=0.0, y=0.0, z=0.0)


def _unknown_kinematics(message_class: MessageClass) -> Any:
    """DetectedObjectKinematics of a camera detection: no pose, no twist (every field given, as rosbags needs)."""
    pose = message_class("geometry_msgs/msg/Pose")(
        position=message_class("geometry_msgs/msg/Point")(x=0.0, y=0.0, z=0.0),
        orientation=message_class("geometry_msgs/msg/Quaternion")(x=0.0, y=0.0, z=0.0, w=1.0))
    twist = message_class("geometry_msgs/msg/Twist")(linear=_zero_vector(message_class),
                                                    angular=_zero_vector(message_class))
    return message_class("autoware_perception_msgs/msg/DetectedObjectKinematics")(
        pose_with_covariance=message_class("geometry_msgs/msg/PoseWithCovariance")(
            pose=pose, covariance=np.zeros(36, dtype=np.float64)),
        has_position_covariance=False, orientation_availability=0,
        twist_with_covariance=message_class("geometry_msgs/msg/TwistWithCovariance")(
            twist=twist, covariance=np.zeros(36, dtype=np.float64)),
        has_twist=False, has_twist_covariance=False)


def _no_shape(message_class: MessageClass) -> Any:
    return message_class("autoware_perception_msgs/msg/Shape")(
        type=0, footprint=message_class("geometry_msgs/msg/Polygon")(points=[]),
        dimensions=_zero_vector(message_class))


def _no_cluster(message_class: MessageClass, to_data: Callable[[np.ndarray], Any]) -> Any:
    """An empty sensor_msgs/PointCloud2 (a camera detection has no points)."""
    header = message_class("std_msgs/msg/Header")(
        stamp=message_class("builtin_interfaces/msg/Time")(sec=0, nanosec=0), frame_id="")
    return message_class("sensor_msgs/msg/PointCloud2")(
        header=header, height=0, width=0, fields=[], is_bigendian=False, point_step=0, row_step=0,
        data=to_data(np.zeros(0, dtype=np.uint8)), is_dense=False)


def _identity(data: np.ndarray) -> np.ndarray:
    return data


def rois_message(message_class: MessageClass, instances: Sequence[Any], header: Any, height: int, width: int, *,
                 to_data: Callable[[np.ndarray], Any] = _identity) -> Any:
    """tier4_perception_msgs/DetectedObjectsWithFeature of ``Predictor`` instances, as autoware_tensorrt_yolox fills
    it: per instance ``feature.roi`` (pixels, inside the image), ``object.existence_probability`` = score, one
    classification (``OBJECT_LABEL_LUT``) of probability 1.0, empty ``feature.cluster``, default kinematics and
    shape. The order is the instances' (``instance_mask_message``'s ids follow it). ``to_data``: a uint8 array ->
    the value the message class takes for a uint8[] field (rosbags: the array itself)."""
    roi_type = message_class("sensor_msgs/msg/RegionOfInterest")
    feature_type = message_class("tier4_perception_msgs/msg/Feature")
    object_type = message_class("autoware_perception_msgs/msg/DetectedObject")
    with_feature_type = message_class("tier4_perception_msgs/msg/DetectedObjectWithFeature")
    # Shared by all objects: the empty parts cost more to build than the rest of the message.
    kinematics, shape = _unknown_kinematics(message_class), _no_shape(message_class)
    cluster = _no_cluster(message_class, to_data)
    objects = []
    for instance in instances:
        x, y, w, h = roi_of(instance.box, height, width)
        roi = roi_type(x_offset=x, y_offset=y, width=w, height=h, do_rectify=False)
        detected = object_type(existence_probability=float(instance.score),
                               classification=[_classification(message_class, instance.label_id)],
                               kinematics=kinematics, shape=shape)
        objects.append(with_feature_type(object=detected, feature=feature_type(cluster=cluster, roi=roi)))
    return message_class(ROIS_TYPE)(header=header, feature_objects=objects)


def _image(message_class: MessageClass, header: Any, height: int, width: int, encoding: str, step: int,
           data: Any) -> Any:
    return message_class(IMAGE_TYPE)(header=header, height=int(height), width=int(width), encoding=encoding,
                                     is_bigendian=0, step=int(step), data=data)


def mask_message(message_class: MessageClass, panoptic: np.ndarray, header: Any, *, max_id: int | None = None,
                 to_data: Callable[[np.ndarray], Any] = _identity) -> Any:
    """The ``mask`` output: sensor_msgs/Image at the panoptic image's size with ``header``, encoding mono8 and step =
    width as autoware_tensorrt_yolox sends it, but data = ``rle_encode`` of the mask classes (``max_id``: as in
    ``panoptic_to_mask_classes``; ``to_data``: as in ``rois_message``)."""
    height, width = panoptic.shape
    encoded = rle_encode(panoptic_to_mask_classes(panoptic, max_id))
    return _image(message_class, header, height, width, "mono8", width, to_data(np.frombuffer(encoded, np.uint8)))


def instance_mask_message(message_class: MessageClass, panoptic: np.ndarray, instances: Sequence[Any], header: Any,
                          *, to_data: Callable[[np.ndarray], Any] = _identity) -> Any:
    """autoware_internal_perception_msgs/SegmentationMask: ``classification[k - 1]`` and pixel value k for the k-th
    instance (the order of ``rois_message``), 0 for no instance; image mono8 (16UC1 beyond 255 instances, little
    endian), at the panoptic image's size, both headers ``header`` (``to_data``: as in ``rois_message``)."""
    pixels = instance_index_mask(panoptic, [int(instance.id) for instance in instances])
    pixels = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False)
    height, width = pixels.shape
    encoding = "mono8" if pixels.dtype.itemsize == 1 else "16UC1"
    data = to_data(pixels.reshape(-1).view(np.uint8))
    image = _image(message_class, header, height, width, encoding, width * pixels.dtype.itemsize, data)
    classification = [_classification(message_class, instance.label_id) for instance in instances]
    return message_class(INSTANCE_MASK_TYPE)(header=header, classification=classification, image=image)
