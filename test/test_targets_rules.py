"""The rules of build_targets at their edges, each found by mutation testing (docs/mutation.md): the size
check, the outputs' types and keys, the seed that stands in for an occluded centre, and the small-instance
pixels of the semantic loss."""

import numpy as np
import pytest

from casnet_core.labels import class_space
from casnet_core.targets import build_targets

CAR, PERSON, ROAD = 26, 24, 7


@pytest.mark.parametrize("shape", [(10, 8), (8, 10), (10, 10)])
def test_a_size_not_a_multiple_of_the_stride_is_refused(shape):
    labels = np.full(shape, ROAD, np.uint8)
    with pytest.raises(ValueError, match=rf"ground truth size \({shape[0]}, {shape[1]}\) is not a multiple of stride 4"):
        build_targets(labels, labels.astype(np.int32), mode="panoptic", stride=4)


def test_boxes_and_instance_classes_are_returned_with_their_types():
    labels = np.full((8, 8), ROAD, np.uint8)
    instances = labels.astype(np.int32)
    labels[1:3, 2:7], instances[1:3, 2:7] = CAR, CAR * 1000 + 4
    labels[5:8, 0:2], instances[5:8, 0:2] = PERSON, PERSON * 1000
    targets = build_targets(labels, instances, mode="panoptic", stride=1)
    space = class_space("panoptic")
    channel = {label: space.thing_channel[space.label_ids.index(label)] for label in (CAR, PERSON)}
    # Instances in the order of their ids: person 24000, then car 26004.
    assert targets["boxes"].dtype == np.float32
    np.testing.assert_array_equal(targets["boxes"], [[0, 5, 2, 8], [2, 1, 7, 3]])
    assert targets["instance_classes"].tolist() == [channel[PERSON], channel[CAR]]


def test_an_instance_with_a_central_cell_gets_no_extra_seed():
    # Stride 1, central area 3.5 cells each way. The box (pixels (0, 0) to (20, 20)) is centred at 10.5: the
    # instance's only cell in the central square is its corner (+3, +3) (4.24 from the centre); a cell at
    # (+4, 0) is nearer (4.0) but outside the square. The nearest-cell seed is only for instances without
    # a central cell: (+4, 0) stays negative.
    labels = np.full((21, 21), ROAD, np.uint8)
    instances = labels.astype(np.int32)
    for y, x in [(0, 0), (20, 20), (13, 13), (10, 14)]:
        labels[y, x], instances[y, x] = CAR, CAR * 1000
    targets = build_targets(labels, instances, mode="panoptic", stride=1, center_radius=3.5)
    assert [tuple(p) for p in np.argwhere(targets["box_prob"].any(0))] == [(13, 13)]


def test_small_instance_pixels_are_those_of_things_under_the_area():
    labels = np.full((4, 8), ROAD, np.uint8)
    instances = labels.astype(np.int32)
    labels[:, :5], instances[:, :5] = CAR, CAR * 1000  # 20 pixels
    labels[:, 5:7], instances[:, 5:7] = CAR, CAR * 1000 + 1  # 8 pixels
    # Road: 4 pixels, fewer than the area, but not a thing.
    small = build_targets(labels, instances, mode="panoptic", stride=1, small_instance_area=20)["small_instance"]
    expected = np.zeros((4, 8), bool)
    expected[:, 5:7] = True  # 8 < 20; the car of exactly 20 pixels is not small
    np.testing.assert_array_equal(small, expected)
