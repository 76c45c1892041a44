"""The Cityscapes-format reader and its augmentations, on generated data."""

import cv2
import numpy as np
import pytest
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


def test_augmentation_is_deterministic_per_seed_and_epoch(synth_root):
    def make(seed):
        return CityscapesDataset(synth_root, "train", stride=4, augment=True, short_side=(128, 384),
                                 crop_size=(128, 256), seed=seed)

    a, b, c = make(0), make(0), make(1)
    items = [a[i] for i in range(len(a))]
    for item in items:
        assert item["image"].shape == (3, 128, 256) and item["semantic"].shape == (32, 64)
    for i in range(len(a)):
        torch.testing.assert_close(items[i]["image"], b[i]["image"])
    assert any(not torch.equal(items[i]["image"], c[i]["image"]) for i in range(len(a)))
    a.set_epoch(1)
    assert any(not torch.equal(items[i]["image"], a[i]["image"]) for i in range(len(a)))


# -- image, labels and instances stay aligned through resize, crop and flip ----------------------------
# A painted dataset: every stuff class and every instance has its own flat colour, so an image pixel away
# from a border names the class (and instance) it shows. Vertical stuff stripes, train ids increasing from
# left to right, show whether an item is flipped and (their width) how much it is scaled.
STRIPES = (11, 12, 13, 17, 19, 20, 21, 22)  # building ... terrain: train ids 2..9
STRIPE_WIDTH = 64
THINGS = ((26, 96, 176, 16, 136), (26, 120, 230, 196, 316), (24, 100, 236, 352, 392), (27, 104, 220, 420, 500))


def _colour(code: int) -> tuple[int, int, int]:
    return (code * 37) % 256, (code * 91 + 50) % 256, (code * 53 + 100) % 256


def _painted_dataset(root, count: int = 3):
    """``count`` 256x512 scenes in the Cityscapes layout; returns {colour: train id} of every painted colour."""
    import cv2

    from casnet_core.labels import LABEL_DIVISOR

    lut = class_space("panoptic").label_id_lut()
    colour_class = {_colour(label): int(lut[label]) for label in STRIPES}
    for index in range(count):
        labels = np.repeat(np.array(STRIPES, np.uint8), STRIPE_WIDTH)[None].repeat(256, 0)
        instances = labels.astype(np.int32)
        codes = labels.astype(np.int32)
        for k, (label, y0, y1, x0, x1) in enumerate(THINGS):
            shift = 8 * index  # each scene a little different
            window = slice(y0 + shift // 2, y1), slice(x0 + shift, x1 + shift)
            labels[window], instances[window], codes[window] = label, label * LABEL_DIVISOR + k, 100 + k
            colour_class[_colour(100 + k)] = int(lut[label])
        palette = np.zeros((256, 3), np.uint8)
        for code in np.unique(codes):
            palette[code] = _colour(int(code))
        name = f"paint_{index:06d}_000019"
        (root / "leftImg8bit" / "train" / "paint").mkdir(parents=True, exist_ok=True)
        (root / "gtFine" / "train" / "paint").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "leftImg8bit" / "train" / "paint" / f"{name}_leftImg8bit.png"), palette[codes][..., ::-1])
        cv2.imwrite(str(root / "gtFine" / "train" / "paint" / f"{name}_gtFine_labelIds.png"), labels)
        cv2.imwrite(str(root / "gtFine" / "train" / "paint" / f"{name}_gtFine_instanceIds.png"),
                    instances.astype(np.uint16))
    assert len(colour_class) == len(STRIPES) + len(THINGS), "colours must be distinct"
    return colour_class


def _check_alignment(item, colour_class: dict) -> tuple[int, bool | None, float | None]:
    """Asserts that the image, the semantic targets and the attributes of ``item`` show the same scene.
    Returns (thing cells checked, flipped?, scale) as read from the stripes (None where not visible)."""
    from scipy import ndimage

    image = item["image"].permute(1, 2, 0).numpy().astype(np.uint8)
    semantic = item["semantic_full"].numpy().astype(np.int64)
    codes = (image[..., 0].astype(np.int64) << 16) | (image[..., 1].astype(np.int64) << 8) | image[..., 2]
    known = {(r << 16) | (g << 8) | b: c for (r, g, b), c in colour_class.items()}
    unique_codes, inverse = np.unique(codes, return_inverse=True)
    shown = np.array([known.get(int(code), -1) for code in unique_codes])[inverse.reshape(codes.shape)]
    # Away from borders (a linear resize blends colours there, also with the pixels just outside the crop),
    # the image shows the class of the target.
    inside = (ndimage.minimum_filter(semantic, 5) == ndimage.maximum_filter(semantic, 5)) & (semantic != IGNORE_INDEX)
    inside[:2], inside[-2:], inside[:, :2], inside[:, -2:] = False, False, False, False
    assert inside.mean() > 0.5
    mismatch = inside & (shown != semantic)
    assert not mismatch.any(), f"{mismatch.sum()} of {inside.sum()} pixels show another class than their label"
    # Each thing cell's attributes decode to the box of the instance the image shows there (within the
    # 2 pixels that blending takes off a colour's extent).
    boxes = decode_boxes(item["attributes"][None], 4)[0].permute(1, 2, 0).numpy()
    painted_boxes = {}
    for code in unique_codes:
        if known.get(int(code), -1) >= 11:  # an instance's colour
            ys, xs = np.nonzero(codes == code)
            painted_boxes[int(code)] = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    checked = 0
    for i, j in zip(*np.nonzero(item["thing_mask"].numpy())):
        painted = painted_boxes.get(int(codes[i * 4 + 2, j * 4 + 2]))
        if painted is None:  # a blended border pixel: no instance colour to compare with
            continue
        assert np.abs(boxes[i, j] - painted).max() <= 2.5, (boxes[i, j], painted)
        checked += 1
    # Stripes: the order of the fully visible ones gives the flip, their width the scale.
    flips, widths = set(), []
    for row in semantic[::8]:
        runs = [(int(v), len(list(g))) for v, g in __import__("itertools").groupby(row)]
        stripes = [(v, n) for v, n in runs if 2 <= v <= 9]
        if len(stripes) >= 2 and len(stripes) == len(runs):
            steps = {b[0] - a[0] for a, b in zip(stripes, stripes[1:])}
            assert steps in ({1}, {-1}), f"stripes out of order: {stripes}"
            flips.add(steps == {-1})
            widths += [n for _, n in stripes[1:-1]]
    assert len(flips) <= 1
    scale = float(np.median(widths)) / STRIPE_WIDTH if widths else None
    return checked, (flips.pop() if flips else None), scale


def _check_painted_dataset(root, colour_class) -> None:
    dataset = CityscapesDataset(root, "train", stride=4, augment=True, short_side=(128, 384), crop_size=(128, 256),
                                seed=0)
    checked, flips, scales = 0, set(), []
    for epoch in range(4):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item = dataset[index]
            assert item["image"].shape == (3, 128, 256) and item["semantic_full"].shape == (128, 256)
            cells, flipped, scale = _check_alignment(item, colour_class)
            checked += cells
            flips.add(flipped)
            scales.append(scale)
    assert checked >= 50, f"only {checked} thing cells checked"
    assert {True, False} <= flips, "every item has the same orientation: no flip, or always flipped"
    scales = [s for s in scales if s is not None]
    assert min(scales) >= 128 / 256 * 0.9 and max(scales) <= 384 / 256 * 1.1, scales
    assert max(scales) / min(scales) > 1.3, f"the short side is not resized at random: scales {scales}"


def test_augmentation_keeps_image_labels_and_instances_aligned(tmp_path):
    _check_painted_dataset(tmp_path, _painted_dataset(tmp_path))


def _image_only_flip(monkeypatch):
    augment = CityscapesDataset._augment

    def mutated(self, image, labels, instances, rng):
        image, labels, instances = augment(self, image, labels, instances, rng)
        return np.ascontiguousarray(image[:, ::-1]), labels, instances

    monkeypatch.setattr(CityscapesDataset, "_augment", mutated)


def _image_only_resize(monkeypatch):
    from casnet_core import data

    resize = data._resize_short_side
    monkeypatch.setattr(data, "_resize_short_side",
                        lambda image, labels, instances, short: (resize(image, labels, instances, short)[0], labels,
                                                                 instances))


def _random_attributes(monkeypatch):
    from casnet_core import data

    build = data.build_targets
    rng = np.random.default_rng(0)

    def mutated(*args, **kwargs):
        targets = build(*args, **kwargs)
        noise = rng.uniform(0, 20, targets["attributes"].shape).astype(np.float32)
        targets["attributes"] = noise * targets["thing_mask"][None]
        return targets

    monkeypatch.setattr(data, "build_targets", mutated)


@pytest.mark.parametrize("mutation", [_image_only_flip, _image_only_resize, _random_attributes])
def test_the_alignment_test_fails_on_a_misaligned_augmentation(tmp_path, monkeypatch, mutation):
    # Negative controls: the bugs the alignment test is there for.
    colour_class = _painted_dataset(tmp_path)
    mutation(monkeypatch)
    with pytest.raises((AssertionError, ValueError)):
        _check_painted_dataset(tmp_path, colour_class)


def test_instance_ids_are_read_as_16_bit(synth_root):
    ids = read_instance_ids(list_samples(synth_root, "val")[0].instance_ids_path)
    assert ids.dtype == np.int32 and ids.max() >= 24000


# -- the paths around augmentation: evaluation resize and padding, the scene cache, items without targets,
# readers' refusals (found by mutation testing, docs/mutation.md) ---------------------------------------------
def test_evaluation_items_are_resized_to_the_short_side_and_padded_to_the_divisor(synth_root):
    from casnet_core.targets import build_targets

    sample = list_samples(synth_root, "val")[0]
    labels, instances = read_label_ids(sample.label_ids_path), read_instance_ids(sample.instance_ids_path)
    # 256x512 -> short side 100: 100x200, padded to 128x224 (multiples of 32) with void at the bottom right.
    dataset = CityscapesDataset(synth_root, "val", augment=False, short_side=(100, 200), size_divisor=32)
    item = dataset[0]
    assert item["name"] == sample.name
    assert item["image"].shape == (3, 128, 224) and item["semantic_full"].shape == (128, 224)
    assert (item["image"][:, 100:] == 0).all() and (item["image"][:, :, 200:] == 0).all()
    resized = cv2.resize(labels, (200, 100), interpolation=cv2.INTER_NEAREST_EXACT)
    resized_instances = cv2.resize(instances, (200, 100), interpolation=cv2.INTER_NEAREST_EXACT)
    expected = build_targets(np.pad(resized, ((0, 28), (0, 24))), np.pad(resized_instances, ((0, 28), (0, 24))),
                             mode="panoptic", stride=4)
    for key in ("semantic", "semantic_full", "attributes", "thing_mask", "box_prob"):
        np.testing.assert_array_equal(item[key].numpy(), expected[key], err_msg=key)
    assert (item["semantic_full"][100:] == IGNORE_INDEX).all()  # padding is void
    image = cv2.cvtColor(cv2.imread(str(sample.image_path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(item["image"][:, :100, :200].permute(1, 2, 0).numpy(),
                                  cv2.resize(image, (200, 100), interpolation=cv2.INTER_LINEAR))


def test_resizing_never_invents_label_or_instance_ids(synth_root):
    # Labels and instance ids are resized by nearest neighbour: a linear resize would blend two ids into a third.
    sample = list_samples(synth_root, "train")[0]
    known_labels = set(np.unique(read_label_ids(sample.label_ids_path)).tolist())
    known_instances = set(np.unique(read_instance_ids(sample.instance_ids_path)).tolist())
    dataset = CityscapesDataset(synth_root, "train", augment=True, short_side=(300, 300), crop_size=(256, 512),
                                targets=False)
    item = dataset[0]
    assert set(item["label_ids"].unique().tolist()) <= known_labels
    assert set(item["instance_ids"].unique().tolist()) <= known_instances


def test_a_crop_as_large_as_the_image_at_its_own_size_is_the_image(synth_root):
    # short side 256 = the scene's, crop = the scene: every item is the scene itself (or its mirror image).
    dataset = CityscapesDataset(synth_root, "train", augment=True, short_side=(256, 256), crop_size=(256, 512),
                                targets=False)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for index, sample in enumerate(dataset.samples):
            item = dataset[index]
            labels = read_label_ids(sample.label_ids_path)
            assert (np.array_equal(item["label_ids"].numpy(), labels)
                    or np.array_equal(item["label_ids"].numpy(), labels[:, ::-1])), (epoch, index)


def test_crops_larger_than_the_image_are_padded_with_void(synth_root):
    dataset = CityscapesDataset(synth_root, "train", augment=True, short_side=(128, 128), crop_size=(192, 320),
                                flip=False, targets=False)
    item = dataset[0]
    assert item["label_ids"].shape == (192, 320)
    assert (item["label_ids"][128:] == 0).all() and (item["instance_ids"][128:] == 0).all()
    assert (item["image"][:, 128:] == 0).all()
    assert (item["label_ids"][:128, :256] != 0).float().mean() > 0.9  # the scene itself, 128x256, top left


def test_items_without_targets_carry_the_augmented_ground_truth(synth_root):
    from casnet_core.targets import build_targets

    options = dict(augment=True, short_side=(128, 384), crop_size=(128, 256), seed=3)
    raw = CityscapesDataset(synth_root, "train", targets=False, **options)
    full = CityscapesDataset(synth_root, "train", **options)
    item, expected = raw[1], full[1]
    assert set(item) == {"image", "label_ids", "instance_ids", "name"} and item["name"] == raw.samples[1].name
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 128, 256)
    assert item["label_ids"].dtype == torch.uint8 and item["instance_ids"].dtype == torch.int32
    torch.testing.assert_close(item["image"].float(), expected["image"])
    targets = build_targets(item["label_ids"].numpy(), item["instance_ids"].numpy(), mode="panoptic", stride=4)
    np.testing.assert_array_equal(targets["attributes"], expected["attributes"].numpy())


def test_center_radius_and_small_instances_reach_the_targets(synth_root):
    from casnet_core.targets import build_targets

    dataset = CityscapesDataset(synth_root, "val", augment=False, short_side=None, center_radius=2.5,
                                small_instance_area=4096)
    item = dataset[0]
    sample = dataset.samples[0]
    expected = build_targets(read_label_ids(sample.label_ids_path), read_instance_ids(sample.instance_ids_path),
                             mode="panoptic", stride=4, center_radius=2.5, small_instance_area=4096)
    np.testing.assert_array_equal(item["box_prob"].numpy(), expected["box_prob"])
    np.testing.assert_array_equal(item["small_instance"].numpy(), expected["small_instance"])
    assert item["small_instance"].any()
    assert "small_instance" not in CityscapesDataset(synth_root, "val", augment=False, short_side=None)[0]


def test_the_defaults_are_the_papers_recipe(synth_root):
    # Augmented, short side 512..1024, 640x1280 crops, stride 4, centre radius 1.5, seed 0, no cache.
    default = CityscapesDataset(synth_root, "train")
    item = default[0]
    assert item["image"].shape == (3, 640, 1280) and item["semantic"].shape == (160, 320)
    explicit = CityscapesDataset(synth_root, "train", stride=4, augment=True, short_side=(512, 1024),
                                 crop_size=(640, 1280), center_radius=1.5, seed=0)[0]
    for key in ("image", "box_prob", "attributes"):
        torch.testing.assert_close(item[key], explicit[key])
    assert default._cache is None


def test_the_scene_cache_keeps_decoded_scenes_and_preload_fills_it(synth_root, tmp_path):
    import shutil

    root = shutil.copytree(synth_root, tmp_path / "copy")
    options = dict(augment=False, short_side=None)
    cached, uncached = CityscapesDataset(root, "val", cache=True, **options), CityscapesDataset(root, "val", **options)
    expected = [uncached[i] for i in range(len(uncached))]
    cached.preload(threads=2)
    instances = cached._cache[0][2]
    assert instances.dtype == np.uint16  # Cityscapes ids fit 16 bits: half the memory of int32
    shutil.move(root / "leftImg8bit", tmp_path / "moved")  # the files are gone: items come from memory
    for index in range(len(cached)):
        torch.testing.assert_close(cached[index]["image"], expected[index]["image"])
        assert torch.equal(cached[index]["attributes"], expected[index]["attributes"])
    with pytest.raises(FileNotFoundError, match="cannot read image"):
        uncached[0]  # without the cache every item reads its files
    with pytest.raises(ValueError, match="^preload needs a dataset made with cache=True$"):
        uncached.preload()
    # Without preload, a cached dataset keeps each scene from its first read.
    shutil.move(tmp_path / "moved", root / "leftImg8bit")
    lazy = CityscapesDataset(root, "val", cache=True, **options)
    first = lazy[1]["image"]
    shutil.move(root / "leftImg8bit", tmp_path / "moved")
    torch.testing.assert_close(lazy[1]["image"], first)


def test_a_crop_that_is_not_a_multiple_of_the_divisor_is_refused(synth_root):
    for crop in ((100, 256), (128, 100)):
        with pytest.raises(ValueError, match=rf"^crop size \({crop[0]}, {crop[1]}\) must be a multiple of 32$"):
            CityscapesDataset(synth_root, "train", crop_size=crop)


def test_readers_refuse_what_they_cannot_read_in_one_clear_error(synth_root, tmp_path):
    from casnet_core.data import read_image

    with pytest.raises(FileNotFoundError, match=r"^no images matching .*/leftImg8bit/test/\*/\*_leftImg8bit.png$"):
        list_samples(synth_root, "test")
    sample = list_samples(synth_root, "val")[0]
    png = sample.image_path.read_bytes()
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    with pytest.raises(FileNotFoundError, match=r"^cannot read image .*cut.png: truncated PNG \(no IEND chunk\)$"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(FileNotFoundError, match=r"^cannot read image .*missing.png$"):
        read_image(tmp_path / "missing.png")
    # A JPEG has no IEND chunk and is complete: read as any image.
    rgb = read_image(sample.image_path)
    cv2.imwrite(str(tmp_path / "photo.jpg"), rgb[..., ::-1])
    assert read_image(tmp_path / "photo.jpg").shape == rgb.shape
    # A colour picture where a label or instance map is expected.
    with pytest.raises(FileNotFoundError, match=r"^cannot read a single-channel label image .*photo.jpg$"):
        read_label_ids(tmp_path / "photo.jpg")
    with pytest.raises(FileNotFoundError, match=r"^cannot read a single-channel instance image .*photo.jpg$"):
        read_instance_ids(tmp_path / "photo.jpg")


def test_photometric_augmentation_changes_the_look_not_the_labels(synth_root):
    from casnet_core.data import photometric_augment

    kwargs = dict(short_side=None, crop_size=(256, 512), flip=False, seed=3)
    plain = CityscapesDataset(synth_root, "train", **kwargs)
    jittered = CityscapesDataset(synth_root, "train", photometric=True, **kwargs)
    changed = []
    for index in range(len(plain)):
        a, b = plain[index], jittered[index]
        for key in ("semantic", "attributes", "box_prob", "thing_mask"):
            assert torch.equal(a[key], b[key]), key  # the geometry and the targets are untouched
        assert b["image"].shape == a["image"].shape and b["image"].min() >= 0 and b["image"].max() <= 255
        changed.append(float((a["image"] - b["image"]).abs().mean()))
    assert min(changed) > 1.0, changed  # every image's look changed (brightness alone moves it by levels)
    assert torch.equal(jittered[0]["image"], jittered[0]["image"])  # drawn from (seed, epoch, index): repeatable
    # Each element can be seen on its own: a uniform grey image keeps no structure it did not have, and the
    # output is a new uint8 array of the same shape (the cached scene is never written to).
    grey = np.full((32, 64, 3), 128, np.uint8)
    out = photometric_augment(grey, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == grey.shape and out is not grey and (grey == 128).all()
