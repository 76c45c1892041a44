"""Targets: the distance attributes decode back into the exact instance boxes."""

import numpy as np
import pytest
import torch

from casnet_core.labels import class_space
from casnet_core.postprocess import decode_boxes
from casnet_core.targets import build_targets

CAR, PERSON, ROAD = 26, 24, 7


def _two_cars_and_a_person():
    """A 16x24 scene: car A (rows 2-9, cols 1-12), car B partly in front of it (rows 5-13, cols 8-19),
    a person (rows 0-15, cols 21-22) touching the top and bottom borders; road elsewhere."""
    labels = np.full((16, 24), ROAD, np.uint8)
    instances = np.full((16, 24), ROAD, np.int32)
    labels[2:10, 1:13] = CAR
    instances[2:10, 1:13] = CAR * 1000 + 0
    labels[5:14, 8:20] = CAR
    instances[5:14, 8:20] = CAR * 1000 + 1
    labels[:, 21:23] = PERSON
    instances[:, 21:23] = PERSON * 1000 + 0
    return labels, instances


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_attributes_decode_to_the_exact_instance_boxes(stride):
    labels, instances = _two_cars_and_a_person()
    targets = build_targets(labels, instances, mode="panoptic", stride=stride)
    # Instances are numbered in the order of their Cityscapes ids: person 24000 -> 1, car A 26000 -> 2,
    # car B 26001 -> 3. Car A is partly hidden by B but keeps the box of the pixels it shows.
    expected = {1: (21, 0, 23, 16), 2: (1, 2, 13, 10), 3: (8, 5, 20, 14)}
    np.testing.assert_array_equal(targets["boxes"], np.array([expected[n] for n in (1, 2, 3)], np.float32))
    # Decoded by the post-processing's own decoder: (1, 4, h, w) -> (h, w, 4).
    decoded = decode_boxes(torch.from_numpy(targets["attributes"])[None], stride)[0].permute(1, 2, 0).numpy()
    index = targets["instance"]
    assert set(np.unique(index)) == {0, 1, 2, 3}
    for n, box in expected.items():
        np.testing.assert_allclose(decoded[index == n], np.broadcast_to(box, ((index == n).sum(), 4)), atol=1e-5)
    assert (targets["attributes"][:, index == 0] == 0).all()
    # Non-negative; a cell point may sit exactly on its box's left/top edge for an even stride.
    assert (targets["attributes"][:, index > 0] >= 0).all()


def test_semantic_targets_follow_the_class_space():
    labels, instances = _two_cars_and_a_person()
    labels[0, 0] = 0  # unlabeled -> ignored
    panoptic = build_targets(labels, instances, mode="panoptic", stride=1)["semantic"]
    instance = build_targets(labels, instances, mode="instance", stride=1)["semantic"]
    assert panoptic[0, 0] == 255 and instance[0, 0] == 255
    assert panoptic[3, 3] == 13  # car's train id
    assert instance[3, 3] == class_space("instance").names.index("car")
    assert panoptic[15, 0] == 0 and instance[15, 0] == 0  # road: train id 0 / background


def test_box_probability_is_one_near_each_center_on_the_instance_only():
    labels, instances = _two_cars_and_a_person()
    targets = build_targets(labels, instances, mode="panoptic", stride=1, center_radius=1.0)
    car, person = class_space("panoptic").thing_channel[13], class_space("panoptic").thing_channel[11]
    prob, index = targets["box_prob"], targets["instance"]
    # Each instance has positives, all on its own pixels, within 1 pixel of its box centre.
    for n in (1, 2, 3):
        channel = person if n == 1 else car
        ys, xs = np.nonzero((prob[channel] == 1) & (index == n))
        x0, y0, x1, y1 = targets["boxes"][n - 1]
        assert len(ys) > 0
        assert (np.abs(xs + 0.5 - (x0 + x1) / 2) <= 1).all() and (np.abs(ys + 0.5 - (y0 + y1) / 2) <= 1).all()
    assert prob.sum() == ((prob > 0) & (index > 0)[None]).sum()  # never on background
    # Car A's centre (7, 6) lies on car B's pixels? No: B starts at col 8, so A keeps a central positive.
    assert prob[car, 5:7, 6:8].sum() > 0


def test_an_instance_whose_center_is_occluded_still_gets_one_positive():
    labels = np.full((12, 12), 7, np.uint8)
    instances = np.full((12, 12), 7, np.int32)
    labels[2:10, 2:10] = CAR
    instances[2:10, 2:10] = CAR * 1000
    labels[4:8, 4:8] = PERSON  # a person stands in front of the car's centre
    instances[4:8, 4:8] = PERSON * 1000
    targets = build_targets(labels, instances, mode="panoptic", stride=1, center_radius=1.0)
    car = class_space("panoptic").thing_channel[13]
    ys, xs = np.nonzero(targets["box_prob"][car])
    assert len(ys) == 1 and targets["instance"][ys[0], xs[0]] == 2  # person 24000 is 1, the car 26000 is 2


def _random_scene(rng: np.random.Generator, height: int, width: int):
    """Random ground truth: stuff bands, then up to 30 rectangles and ellipses of random thing classes (also
    caravan 29 and trailer 30, instances that are not evaluated things), some crowd regions (a thing label
    without an instance id), occluding each other, some a single pixel, some cut by the image border."""
    labels = rng.choice(np.array([0, 7, 8, 11, 21, 23], np.uint8), size=(height // 8, 1)).repeat(8, 0)
    labels = np.broadcast_to(labels, (height, width)).copy()
    instances = labels.astype(np.int32)
    ys, xs = np.mgrid[:height, :width]
    for n in range(int(rng.integers(0, 31))):
        label = int(rng.choice([24, 25, 26, 27, 28, 31, 32, 33, 29, 30]))
        cx, cy = rng.uniform(-10, width + 10), rng.uniform(-10, height + 10)
        rx, ry = rng.uniform(0.3, width / 3), rng.uniform(0.3, height / 3)
        inside = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1 if n % 2 else \
            (np.abs(xs - cx) <= rx) & (np.abs(ys - cy) <= ry)
        labels[inside] = label
        crowd = rng.random() < 0.15
        instances[inside] = label if crowd else label * 1000 + int(rng.integers(0, 5))
    return labels, instances


@pytest.mark.parametrize("stride", [1, 4, 8])
def test_torch_targets_equal_the_numpy_targets_on_random_scenes(stride):
    from casnet_core.device_targets import build_targets_torch

    rng = np.random.default_rng(stride)
    for mode in ("panoptic", "instance"):
        scenes = [_random_scene(rng, 64, 96) for _ in range(6)]
        labels = torch.from_numpy(np.stack([s[0] for s in scenes]))
        instances = torch.from_numpy(np.stack([s[1] for s in scenes]))
        batch = build_targets_torch(labels, instances, mode=mode, stride=stride, center_radius=1.5,
                                    small_instance_area=200)
        for i, (label_ids, instance_ids) in enumerate(scenes):
            expected = build_targets(label_ids, instance_ids, mode=mode, stride=stride, small_instance_area=200)
            for key in ("semantic", "semantic_full", "attributes", "thing_mask", "box_prob", "small_instance"):
                assert batch[key][i].dtype == torch.from_numpy(expected[key]).dtype, key
                np.testing.assert_array_equal(batch[key][i].numpy(), expected[key], err_msg=f"{mode} {key} {i}")
        assert batch["box_prob"].sum() > 0 and batch["small_instance"].any()


def test_torch_targets_of_a_scene_without_things():
    from casnet_core.device_targets import build_targets_torch

    labels = torch.full((2, 16, 32), ROAD, dtype=torch.uint8)
    targets = build_targets_torch(labels, labels.int(), mode="panoptic", stride=4)
    assert not targets["thing_mask"].any() and targets["box_prob"].sum() == 0
    assert (targets["attributes"] == 0).all() and targets["semantic"].shape == (2, 4, 8)
    with pytest.raises(ValueError, match="multiple of stride"):
        build_targets_torch(labels[:, :15], labels[:, :15].int(), mode="panoptic", stride=4)
