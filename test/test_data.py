"""The Cityscapes-format reader and its augmentations, on generated data."""

import numpy as np
import torch

from casnet_core.data import CityscapesDataset, list_samples, read_instance_ids, read_label_ids
from casnet_core.labels import IGNORE_INDEX, NUM_THING_CLASSES, class_space
from casnet_core.postprocess import decode_boxes


def test_lists_the_cityscapes_layout(synth_root):
    train, val = list_samples(synth_root, "train"), list_samples(synth_root, "val")
    assert len(train) == 6 and len(val) == 3
    for sample in train + val:
        assert sample.image_path.name == f"{sample.name}_leftImg8bit.png"
        assert sample.label_ids_path.is_file() and sample.instance_ids_path.is_file()


def test_evaluation_items_keep_the_full_image_and_exact_targets(synth_root):
    dataset = CityscapesDataset(synth_root, "val", mode="panoptic", stride=4, augment=False, short_side=None)
    item = dataset[0]
    assert item["image"].shape == (3, 256, 512) and item["image"].dtype == torch.float32
    assert item["semantic"].shape == (64, 128) and item["box_prob"].shape == (NUM_THING_CLASSES, 64, 128)
    labels = read_label_ids(dataset.samples[0].label_ids_path)
    # The semantic target is the train id of the label at each cell point.
    expected = class_space("panoptic").label_id_lut()[labels[2::4, 2::4]]
    np.testing.assert_array_equal(item["semantic"].numpy(), expected)
    assert item["thing_mask"].any() and item["box_prob"].sum() > 0


def test_instance_mode_maps_stuff_to_background(synth_root):
    dataset = CityscapesDataset(synth_root, "val", mode="instance", stride=4, augment=False, short_side=None)
    semantic = dataset[0]["semantic"]
    assert set(semantic.unique().tolist()) <= set(range(1 + NUM_THING_CLASSES)) | {IGNORE_INDEX}
    assert (semantic == 0).float().mean() > 0.3  # road, buildings, sky... are all background


def test_augmentation_resizes_crops_flips_and_is_deterministic(synth_root):
    def make(seed):
        return CityscapesDataset(synth_root, "train", stride=4, augment=True, short_side=(128, 384),
                                 crop_size=(128, 256), seed=seed)

    a, b, c = make(0), make(0), make(1)
    items = [a[i] for i in range(len(a))]
    for item in items:
        assert item["image"].shape == (3, 128, 256) and item["semantic"].shape == (32, 64)
        # Attributes still decode to boxes that hold their own cell point, after resize/crop/flip.
        boxes = decode_boxes(item["attributes"][None], 4)[0].permute(1, 2, 0).numpy()
        ys, xs = np.nonzero(item["thing_mask"].numpy())
        px, py = (xs + 0.5) * 4, (ys + 0.5) * 4
        b_ = boxes[ys, xs]
        assert ((b_[:, 0] <= px) & (px <= b_[:, 2]) & (b_[:, 1] <= py) & (py <= b_[:, 3])).all()
    for i in range(len(a)):
        torch.testing.assert_close(items[i]["image"], b[i]["image"])
    assert any(not torch.equal(items[i]["image"], c[i]["image"]) for i in range(len(a)))
    a.set_epoch(1)
    assert any(not torch.equal(items[i]["image"], a[i]["image"]) for i in range(len(a)))


def test_instance_ids_are_read_as_16_bit(synth_root):
    ids = read_instance_ids(list_samples(synth_root, "val")[0].instance_ids_path)
    assert ids.dtype == np.int32 and ids.max() >= 24000
