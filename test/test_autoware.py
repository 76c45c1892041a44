"""Autoware's outputs without a node: the run-length mask against a decoder written from the format description,
the class map on hand-built label maps and generated scenes, the instance mask, the rois, and the message packages
of msg/ against the pinned Autoware definitions (release 1.8.0)."""

from __future__ import annotations

import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from casnet_core import autoware
from casnet_core.labels import label_id

REPO_ROOT = Path(__file__).resolve().parents[1]
C = {name: index for index, name in enumerate(autoware.AUTOWARE_CLASSES)}  # mask class name -> id


def decode_autoware_mask(data: bytes, height: int, width: int) -> np.ndarray:
    """The format as Autoware's segmentation_pointcloud_fusion reads it, written from its description (not from
    the encoder): repeated 5-byte records, a uint8 class id then an int32 little-endian run length, filling the
    (height, width) image row-major."""
    assert len(data) % 5 == 0, "a whole number of 5-byte records"
    pixels = bytearray()
    for offset in range(0, len(data), 5):
        value, count = struct.unpack_from("<Bi", data, offset)
        assert count > 0, "no empty runs"
        pixels += bytes([value]) * count
    assert len(pixels) == height * width, "the runs cover the image exactly"
    return np.frombuffer(bytes(pixels), dtype=np.uint8).reshape(height, width)


def mapped_by_hand(panoptic: np.ndarray) -> np.ndarray:
    """The panoptic result through the class map, one pixel at a time (label id = id // 1000 for things)."""
    out = np.zeros(panoptic.shape, np.uint8)
    for (y, x), value in np.ndenumerate(panoptic):
        out[y, x] = autoware.MASK_CLASS_LUT[value // 1000 if value >= 1000 else value]
    return out


# ------------------------------------------------------------------------------------------------ RLE
def test_a_run_crosses_the_row_boundary():
    # Row-major runs do not stop at the end of a row: the 7s of row 0 continue into row 1 as one run of 4.
    mask = np.array([[7, 7, 7],
                     [7, 8, 8]], np.uint8)
    assert autoware.rle_encode(mask) == bytes([7, 4, 0, 0, 0, 8, 2, 0, 0, 0])
    np.testing.assert_array_equal(decode_autoware_mask(autoware.rle_encode(mask), 2, 3), mask)


def test_a_run_longer_than_65535_keeps_its_32_bit_length():
    # 300 x 300 = 90000 pixels of one class: one record, 90000 = 0x00015F90 little-endian (would wrap in 16 bits).
    mask = np.full((300, 300), 9, np.uint8)
    assert autoware.rle_encode(mask) == bytes([9, 0x90, 0x5F, 0x01, 0x00])
    np.testing.assert_array_equal(decode_autoware_mask(autoware.rle_encode(mask), 300, 300), mask)


def test_a_one_pixel_image_and_an_empty_one():
    assert autoware.rle_encode(np.array([[5]], np.uint8)) == bytes([5, 1, 0, 0, 0])
    assert autoware.rle_encode(np.zeros((0, 4), np.uint8)) == b""


def test_random_masks_round_trip():
    rng = np.random.default_rng(0)
    for height, width, classes in ((1, 17, 2), (13, 1, 3), (31, 47, 16), (64, 64, 1)):
        mask = rng.integers(0, classes, (height, width)).astype(np.uint8)
        mask[height // 2:, : width // 2] = 3  # a block, so that long runs appear too
        data = autoware.rle_encode(mask)
        np.testing.assert_array_equal(decode_autoware_mask(data, height, width), mask)
        # Each record is a maximal run: neighbouring records differ in class.
        values = np.frombuffer(data, np.uint8)[::5]
        assert np.all(values[1:] != values[:-1])


# ------------------------------------------------------------------------------------------------ class map
def test_hand_built_panoptic_map_goes_through_the_class_map():
    car, rider, person, train = (label_id(n) * 1000 + k for n, k in (("car", 1), ("rider", 2), ("person", 3),
                                                                       ("train", 1)))
    road, terrain, pole, fence, sky = (label_id(n) for n in ("road", "terrain", "pole", "fence", "sky"))
    panoptic = np.array([[0, road, road, car, car],
                         [rider, person, terrain, pole, fence],
                         [train, sky, sky, 0, road]], np.int32)
    expected = np.array([
        # void -> UNKNOWN, road -> ROAD, a car instance -> VEHICLE
        [C["UNKNOWN"], C["ROAD"], C["ROAD"], C["VEHICLE"], C["VEHICLE"]],
        # rider -> BIKE (Autoware's cyclist is one object), terrain -> VEGETATION, pole -> OBSTACLE, fence -> WALL
        [C["BIKE"], C["PERSON"], C["VEGETATION"], C["OBSTACLE"], C["WALL"]],
        # train (a tram on the street) -> VEHICLE
        [C["VEHICLE"], C["SKY"], C["SKY"], C["UNKNOWN"], C["ROAD"]]], np.uint8)
    np.testing.assert_array_equal(autoware.panoptic_to_mask_classes(panoptic), expected)
    # Given the largest instance id (as the node does) the result is the same.
    np.testing.assert_array_equal(autoware.panoptic_to_mask_classes(panoptic, max_id=train), expected)
    assert (C["VEHICLE"], C["SKY"]) == (7, 15)  # the ids segmentation_pointcloud_fusion expects


def test_object_labels_of_the_thing_classes():
    labels = {name: int(autoware.OBJECT_LABEL_LUT[label_id(name)])
              for name in ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle", "road")}
    # autoware_perception_msgs/ObjectClassification: CAR 1, TRUCK 2, BUS 3, MOTORCYCLE 5, BICYCLE 6, PEDESTRIAN 7.
    assert labels == {"person": 7, "rider": 6, "car": 1, "truck": 2, "bus": 3, "train": 3, "motorcycle": 5,
                      "bicycle": 6, "road": 0}


def test_generated_scenes_mask_decodes_to_the_mapped_panoptic_result():
    from casnet_core.synth import generate_scene

    for seed in range(3):
        _, _, panoptic = generate_scene(seed, height=64, width=128)
        data = autoware.rle_encode(autoware.panoptic_to_mask_classes(panoptic))
        np.testing.assert_array_equal(decode_autoware_mask(data, 64, 128), mapped_by_hand(panoptic))


# ------------------------------------------------------------------------------------------------ instances
def test_instance_mask_numbers_the_instances_in_roi_order():
    car, person = label_id("car") * 1000 + 1, label_id("person") * 1000 + 4
    road = label_id("road")
    panoptic = np.array([[road, car, car],
                         [person, person, 0]], np.int32)
    # rois order: person first (say, the higher score), then the car: person pixels 1, car pixels 2, others 0.
    np.testing.assert_array_equal(autoware.instance_index_mask(panoptic, [person, car]),
                                  np.array([[0, 2, 2], [1, 1, 0]], np.uint8))
    assert autoware.instance_index_mask(panoptic, []).max() == 0
    # Beyond 255 instances the values need 16 bits.
    assert autoware.instance_index_mask(panoptic, list(range(26000, 26300))).dtype == np.uint16


def test_roi_covers_the_pixels_of_the_box_inside_the_image():
    assert autoware.roi_of((2.0, 3.0, 7.0, 9.0), 20, 20) == (2, 3, 5, 6)  # x1/y1 exclusive: width 7 - 2
    assert autoware.roi_of((2.5, 3.2, 6.1, 8.9), 20, 20) == (2, 3, 5, 6)  # every touched pixel
    assert autoware.roi_of((-4.0, 15.0, 30.0, 25.0), 20, 10) == (0, 15, 10, 5)  # clipped to the image


# ------------------------------------------------------------------------------------------------ messages
PINNED_FIELDS = {
    # The definitions of Autoware release 1.8.0: autoware_msgs 1.12.0, tier4_autoware_msgs v0.58.0,
    # autoware_internal_msgs 1.12.1 (rosidl's names for the types: float32 is "float").
    "tier4_perception_msgs/DetectedObjectsWithFeature": {
        "header": "std_msgs/Header", "feature_objects": "sequence<tier4_perception_msgs/DetectedObjectWithFeature>"},
    "tier4_perception_msgs/DetectedObjectWithFeature": {
        "object": "autoware_perception_msgs/DetectedObject", "feature": "tier4_perception_msgs/Feature"},
    "tier4_perception_msgs/Feature": {"cluster": "sensor_msgs/PointCloud2", "roi": "sensor_msgs/RegionOfInterest"},
    "autoware_perception_msgs/DetectedObject": {
        "existence_probability": "float", "classification": "sequence<autoware_perception_msgs/ObjectClassification>",
        "kinematics": "autoware_perception_msgs/DetectedObjectKinematics", "shape": "autoware_perception_msgs/Shape"},
    "autoware_perception_msgs/ObjectClassification": {"label": "uint8", "probability": "float"},
    "autoware_perception_msgs/DetectedObjectKinematics": {
        "pose_with_covariance": "geometry_msgs/PoseWithCovariance", "has_position_covariance": "boolean",
        "orientation_availability": "uint8", "twist_with_covariance": "geometry_msgs/TwistWithCovariance",
        "has_twist": "boolean", "has_twist_covariance": "boolean"},
    "autoware_perception_msgs/Shape": {
        "type": "uint8", "footprint": "geometry_msgs/Polygon", "dimensions": "geometry_msgs/Vector3"},
    "autoware_internal_perception_msgs/SegmentationMask": {
        "header": "std_msgs/Header", "classification": "sequence<autoware_perception_msgs/ObjectClassification>",
        "image": "sensor_msgs/Image"},
}


def _rclpy_class(name: str):
    from casnet_ros.conversions import message_class

    package, message = name.split("/")
    return message_class(f"{package}/msg/{message}")


@pytest.mark.parametrize("name", sorted(PINNED_FIELDS))
def test_generated_classes_have_the_pinned_fields(name):
    # Same names, types and order: the type hash, and so DDS matching with Autoware's nodes, follows from these.
    assert list(_rclpy_class(name).get_fields_and_field_types().items()) == list(PINNED_FIELDS[name].items())


def test_object_classification_has_autowares_label_constants():
    cls = _rclpy_class("autoware_perception_msgs/ObjectClassification")
    assert {name: getattr(cls, name) for name in autoware.OBJECT_LABELS} == autoware.OBJECT_LABELS
    assert list(autoware.OBJECT_LABELS) == ["UNKNOWN", "CAR", "TRUCK", "BUS", "TRAILER", "MOTORCYCLE", "BICYCLE",
                                            "PEDESTRIAN", "ANIMAL", "HAZARD", "OVER_DRIVABLE", "UNDER_DRIVABLE"]


@pytest.mark.parametrize("package,version", [("autoware_perception_msgs", "1.12.0"),
                                             ("tier4_perception_msgs", "0.58.0"),
                                             ("autoware_internal_perception_msgs", "1.12.1")])
def test_msg_packages_name_the_autoware_release_they_follow(package, version):
    from catkin_pkg.package import parse_package

    manifest = parse_package(str(REPO_ROOT / "msg" / package / "package.xml"))
    manifest.validate()
    assert manifest.name == package and manifest.version == version
    assert "Autoware release 1.8.0" in " ".join(manifest.description.split())


def _instances(panoptic: np.ndarray) -> list:
    """Predictor-like instances of every thing segment of ``panoptic`` (box of its pixels), by id."""
    from casnet_core.labels import LABEL_DIVISOR

    instances = []
    for index, instance_id in enumerate(i for i in np.unique(panoptic) if i >= LABEL_DIVISOR):
        ys, xs = np.nonzero(panoptic == instance_id)
        instances.append(SimpleNamespace(id=int(instance_id), label_id=int(instance_id) // LABEL_DIVISOR,
                                         score=1.0 - 0.0625 * (index % 16),  # exact in float32
                                         box=(xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0)))
    return instances


def test_rclpy_and_rosbags_build_the_same_messages():
    # The node (rclpy classes) and the in-process replay (rosbags classes) build each message with the same code:
    # rosbags' serialized message, read back by rclpy, equals the node's field for field (CDR padding may differ).
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import Header

    from casnet_core import bags
    from casnet_core.synth import generate_scene
    from casnet_ros.conversions import byte_array, message_class

    _, _, panoptic = generate_scene(1, height=64, width=128)
    instances = _instances(panoptic)
    assert instances
    store = bags.typestore()
    rosbags_header = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=3, nanosec=4), frame_id="camera0/camera_optical_link")
    rclpy_header = Header(frame_id="camera0/camera_optical_link")
    rclpy_header.stamp.sec, rclpy_header.stamp.nanosec = 3, 4
    builders = {
        autoware.ROIS_TYPE: lambda cls, header, **kw: autoware.rois_message(cls, instances, header, 64, 128, **kw),
        autoware.IMAGE_TYPE: lambda cls, header, **kw: autoware.mask_message(cls, panoptic, header, **kw),
        autoware.INSTANCE_MASK_TYPE: lambda cls, header, **kw: autoware.instance_mask_message(
            cls, panoptic, instances, header, **kw),
    }
    for msgtype, build in builders.items():
        ours = build(message_class, rclpy_header, to_data=byte_array)
        theirs = bytes(store.serialize_cdr(build(lambda name: store.types[name], rosbags_header), msgtype))
        assert deserialize_message(theirs, message_class(msgtype)) == ours, msgtype
