"""The synthetic street-scene generator: Cityscapes layout and encodings, determinism, and scene content
that keeps the task non-trivial (all thing classes, touching and occluded instances, colours that do not
give the class away), checked on small real generated data and with the official cityscapesScripts tools."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label, name2label

from casnet_core.labels import THING_LABEL_IDS
from casnet_core.synth import MIN_INSTANCE_AREA, generate_dataset, generate_scene, register

HEIGHT, WIDTH = 256, 512
NAME = r"(synthA|synthV)_\d{6}_\d{6}"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("synth"), num_train=4, num_val=2, height=HEIGHT, width=WIDTH,
                            seed=0, workers=1, progress=False)


@pytest.fixture(scope="module")
def maps(dataset) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image RGB, label ids, instance ids) of every generated image, read back from disk."""
    out = []
    for label_path in sorted(dataset.glob("gtFine/*/*/*_gtFine_labelIds.png")):
        prefix = str(label_path)[: -len("_gtFine_labelIds.png")]
        image_path = prefix.replace("gtFine", "leftImg8bit", 1) + "_leftImg8bit.png"
        image = cv2.cvtColor(cv2.imread(image_path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        labels = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
        instances = cv2.imread(prefix + "_gtFine_instanceIds.png", cv2.IMREAD_UNCHANGED).astype(np.int32)
        out.append((image, labels, instances))
    return out


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


# sha256 of (image, label ids, instance ids) of generate_scene(seed, height, width, must_include=...), recorded
# before the generator was split into a package: refactoring must keep every scene bit-identical. (The
# hashes hold for the pinned NumPy and OpenCV of requirements.txt.)
STORED_SCENE_HASHES = {
    (0, 128, 256, ()): ("b298bc2cf0095f72cea2f8e1d5337deb51b4eedc50d29e0ecc51bb05de03ce31",
                        "a7ce4557fb6da079d6b75379b932cd4b3c616fcd3e2b4658e43101b0f4105cea",
                        "5034034ce68fa28c0223819c1e702c3a0f98883f314bfb6432cc1a0d6dba99cf"),
    (3, 256, 512, ()): ("29175795709c25a1536f311827f231bd7e8007e29a2dafdef43878481e515a2c",
                        "585ca5c1923f7eb34041fd09f678fdbbdec20b925b41f74a267a4c0d1104ba91",
                        "f762fc8f32447eb058522eccaee56a8753c9b84afe5ef8c42ae0a770b15a09ba"),
    (11, 96, 192, ("train", "motorcycle")): ("ce0443c6594563ac78ec8b599e03f8335262a19aabbea869b183f49b1e05e1c7",
                                             "a72c5762ef3ffd39d153029f56d2decfed8cb3d757f0f12c8160071fb287717f",
                                             "8867f3bbea88138f8a29055942fb027eb52da9d29d51c042a50f4a151d82c6de"),
    (5, 128, 256, ("rider", "bus")): ("950e915c75e32d59b096647b84bcc69d671e1c3a0b2a04ef05ea32cfd8709e6f",
                                      "f14fa097985bddfbba62f9bd52f0856255a0a046342c2d0aac5656a145387c78",
                                      "81747123ca62757d2083f21a574c0886896bd25223673589d921caf380c2527e"),
}
# sha256 of the decoded arrays of generate_dataset(num_train=1, num_val=1, height=64, width=128, seed=2).
STORED_DATASET_HASHES = {
    "gtFine/train/synthA/synthA_000000_000019_gtFine_color.png":
        "20b88f139c35d5df5fb3dd7cd41e689bc5ca2ab5399a1da5f91dee27afd84639",
    "gtFine/train/synthA/synthA_000000_000019_gtFine_instanceIds.png":
        "38a4e9bdc2e49dc2bedd6dd55a82b9b274be90687c3ccd1fa6fd9430ae6be742",
    "gtFine/train/synthA/synthA_000000_000019_gtFine_labelIds.png":
        "6762723b1fa8d7d8621380ca0fcf849fbf57c3d800aa77ab5c742cfd4e6ba5f8",
    "gtFine/val/synthV/synthV_000000_000019_gtFine_color.png":
        "a68ae31f21b4c4316882ccf63fcfa2b0462ec340aa060fadb9c926354d9a7c29",
    "gtFine/val/synthV/synthV_000000_000019_gtFine_instanceIds.png":
        "2ae81eda98899280eca27ae1cffc480be3ea57cbdd3f97cf88c7db09f24262fa",
    "gtFine/val/synthV/synthV_000000_000019_gtFine_labelIds.png":
        "1b1154ba0fd23d3bb49be30c5258050ae7fe9e10189790a8012e3fe48fc6bca5",
    "leftImg8bit/train/synthA/synthA_000000_000019_leftImg8bit.png":
        "00d2f7d72b804ea51760da9c4057fe3c61d9a92444f404d6721bd8d16f635dc7",
    "leftImg8bit/val/synthV/synthV_000000_000019_leftImg8bit.png":
        "c6de60ea5ce336132648d3666865883284ad5742e935756830e8f592499f3988",
}


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.mark.parametrize("case", list(STORED_SCENE_HASHES), ids=str)
def test_scenes_are_bit_identical_to_the_stored_hashes(case):
    seed, height, width, must_include = case
    kwargs = {"must_include": must_include} if must_include else {}
    arrays = generate_scene(seed, height, width, **kwargs)
    assert tuple(_sha256(a) for a in arrays) == STORED_SCENE_HASHES[case]


def test_dataset_files_are_bit_identical_to_the_stored_hashes(tmp_path):
    root = generate_dataset(tmp_path, num_train=1, num_val=1, height=64, width=128, seed=2, workers=1, progress=False)
    found = {str(p.relative_to(root)): _sha256(cv2.imread(str(p), cv2.IMREAD_UNCHANGED)) for p in root.rglob("*.png")}
    assert found == STORED_DATASET_HASHES


def test_same_seed_gives_identical_scenes_and_another_seed_does_not():
    first = generate_scene(7, 128, 256)
    again = generate_scene(7, 128, 256)
    other = generate_scene(8, 128, 256)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[1], other[1])


def test_scene_arrays_have_the_contract_shapes_and_dtypes():
    image, labels, instances = generate_scene(1, 128, 256)
    assert image.shape == (128, 256, 3) and image.dtype == np.uint8
    assert labels.shape == (128, 256) and labels.dtype == np.uint8
    assert instances.shape == (128, 256) and instances.dtype == np.int32


def test_cli_writes_byte_identical_files_with_a_process_pool_and_without(tmp_path):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["synth", "--out", str(tmp_path / "pool"), "--train", "2", "--val", "1",
                              "--height", "64", "--width", "128", "--seed", "5", "--workers", "2"])
    assert args.func(args) == 0
    generate_dataset(tmp_path / "serial", num_train=2, num_val=1, height=64, width=128, seed=5, workers=1,
                     progress=False)
    generate_dataset(tmp_path / "other", num_train=2, num_val=1, height=64, width=128, seed=6, workers=1,
                     progress=False)
    pool, serial, other = (_file_bytes(tmp_path / d) for d in ("pool", "serial", "other"))
    assert len(pool) == 3 * 4 and pool == serial
    assert pool.keys() == other.keys()
    assert all(pool[k] != other[k] for k in pool if k.endswith("_leftImg8bit.png"))


def test_files_follow_the_cityscapes_layout(dataset):
    images = sorted(dataset.glob("leftImg8bit/*/*/*_leftImg8bit.png"))
    assert [p.parent.parent.name for p in images].count("train") == 4
    assert [p.parent.parent.name for p in images].count("val") == 2
    for image_path in images:
        split, city = image_path.parent.parent.name, image_path.parent.name
        assert city == {"train": "synthA", "val": "synthV"}[split]
        name = image_path.name[: -len("_leftImg8bit.png")]
        assert re.fullmatch(NAME, name) and name.startswith(city + "_")
        gt = dataset / "gtFine" / split / city
        image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
        labels = cv2.imread(str(gt / f"{name}_gtFine_labelIds.png"), cv2.IMREAD_UNCHANGED)
        instances = cv2.imread(str(gt / f"{name}_gtFine_instanceIds.png"), cv2.IMREAD_UNCHANGED)
        color = cv2.imread(str(gt / f"{name}_gtFine_color.png"), cv2.IMREAD_UNCHANGED)
        assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
        assert labels.shape == (HEIGHT, WIDTH) and labels.dtype == np.uint8
        assert instances.shape == (HEIGHT, WIDTH) and instances.dtype == np.uint16
        # Colour annotations are RGBA like Cityscapes', painted with each label's official colour.
        assert color.shape == (HEIGHT, WIDTH, 4)
        for label_id in np.unique(labels):
            b, g, r, a = color[labels == label_id][0]
            assert (r, g, b, a) == (*id2label[int(label_id)].color, 255)
    # First frame name as in Cityscapes: city, 6-digit sequence, 6-digit frame.
    assert (dataset / "leftImg8bit/train/synthA/synthA_000000_000019_leftImg8bit.png").is_file()
    assert len(list(dataset.glob("gtFine/*/*/*.png"))) == 3 * len(images)


def test_label_and_instance_ids_use_the_cityscapes_encoding(maps):
    for _, labels, instances in maps:
        assert all(int(i) in id2label for i in np.unique(labels))
        things = instances >= 1000
        # Thing pixels carry label_id * 1000 + k, everything else its plain label id (no crowd regions).
        np.testing.assert_array_equal(instances[things] // 1000, labels[things])
        np.testing.assert_array_equal(instances[~things], labels[~things])
        assert set(np.unique(labels[things]).tolist()) <= set(THING_LABEL_IDS)
        assert not np.isin(labels[~things], THING_LABEL_IDS).any()
        # Every instance id present has enough visible pixels.
        ids, counts = np.unique(instances[things], return_counts=True)
        assert counts.min() >= MIN_INSTANCE_AREA


def test_scenes_contain_the_stuff_of_a_street(maps):
    names = {"road", "sidewalk", "building", "vegetation", "sky", "pole", "car", "person"}
    for _, labels, _ in maps:
        present = {id2label[int(i)].name for i in np.unique(labels)}
        assert names <= present, names - present
    everywhere = set().union(*({id2label[int(i)].name for i in np.unique(m[1])} for m in maps))
    assert {"terrain", "traffic sign", "traffic light", "fence", "wall"} & everywhere


def test_every_thing_class_appears_in_a_small_dataset(maps):
    present = set()
    for _, labels, instances in maps:
        present |= set((np.unique(instances[instances >= 1000]) // 1000).tolist())
    assert present == set(THING_LABEL_IDS)


def test_default_scenes_always_hold_cars_and_persons():
    for seed in range(6):
        _, labels, _ = generate_scene(seed, 128, 256)
        assert (labels == name2label["car"].id).sum() > 0
        assert (labels == name2label["person"].id).sum() > 0


def test_required_classes_are_visible():
    _, _, instances = generate_scene(11, 128, 256, must_include=("train", "motorcycle"))
    classes = set((np.unique(instances[instances >= 1000]) // 1000).tolist())
    assert {name2label["train"].id, name2label["motorcycle"].id} <= classes
    with pytest.raises(ValueError):
        generate_scene(0, 128, 256, must_include=("road",))


def _touching_pairs(instances: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of distinct instances of the same class with 4-neighbouring pixels."""
    pairs = set()
    for a, b in ((instances[:, 1:], instances[:, :-1]), (instances[1:], instances[:-1])):
        touch = (a != b) & (a >= 1000) & (b >= 1000) & (a // 1000 == b // 1000)
        pairs |= {tuple(sorted(p)) for p in zip(a[touch].tolist(), b[touch].tolist())}
    return pairs


def test_same_class_instances_touch(maps):
    pairs = set().union(*(_touching_pairs(instances) for _, _, instances in maps))
    classes = {a // 1000 for a, _ in pairs}
    # Rows of parked cars and groups of pedestrians: neighbours of one class, told apart only by the ids.
    assert name2label["car"].id in classes and name2label["person"].id in classes


def test_hand_built_touching_pairs_are_found():
    # Cars 26000 and 26001 share an edge; person 24000 touches car 26001 only (another class); car 26002
    # meets 26000 only at a corner, which is not 4-adjacency.
    instances = np.array([
        [26000, 26000, 26001, 24000],
        [26000, 26000, 7, 7],
        [7, 7, 26002, 7],
    ])
    assert _touching_pairs(instances) == {(26000, 26001)}


def test_occluders_split_instances_into_several_parts(maps):
    split = []
    vehicles_and_people = {name2label[n].id for n in ("person", "car", "truck", "bus", "train")}
    for _, _, instances in maps:
        for instance_id in np.unique(instances[instances >= 1000]):
            if instance_id // 1000 not in vehicles_and_people:
                continue  # bicycles are thin and fall apart by themselves
            n, _ = cv2.connectedComponents((instances == instance_id).astype(np.uint8))
            if n - 1 >= 2:
                split.append(int(instance_id))
    # Poles in front of cross traffic, pedestrians crossing in front of cars, parked cars in front of legs.
    assert len(split) >= 3


def test_colour_does_not_give_the_class(maps):
    car = name2label["car"].id
    means = []
    quantised_car, quantised_other = [], []
    for image, labels, instances in maps:
        for instance_id in np.unique(instances[instances // 1000 == car]):
            mask = instances == instance_id
            if mask.sum() >= 200:
                means.append(image[mask].mean(axis=0))
        q = (image // 32).astype(np.int32)
        q = q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]
        quantised_car.append(q[labels == car])
        quantised_other.append(q[labels != car])
    means = np.array(means)
    # Cars come in very different colours...
    assert len(means) >= 8
    assert np.ptp(means.mean(axis=1)) > 80 and means.std(axis=0).max() > 25
    # ...and most car pixels have a colour that also occurs often outside cars.
    other_counts = np.bincount(np.concatenate(quantised_other), minlength=512)
    car_pixels = np.concatenate(quantised_car)
    assert (other_counts[car_pixels] >= 20).mean() > 0.6


def test_far_things_are_small_and_near_the_horizon(maps):
    bottoms, heights = [], []
    for _, _, instances in maps:
        for instance_id in np.unique(instances[instances >= 1000]):
            ys = np.nonzero(instances == instance_id)[0]
            bottoms.append(ys.max())
            heights.append(ys.max() - ys.min() + 1)
    # Perspective: the lower an object stands in the image (nearer), the taller it is.
    rank_b = np.argsort(np.argsort(bottoms))
    rank_h = np.argsort(np.argsort(heights))
    assert np.corrcoef(rank_b, rank_h)[0, 1] > 0.5
    assert min(heights) < HEIGHT * 0.05 and max(heights) > HEIGHT * 0.3


def test_official_panoptic_converter_accepts_the_data(dataset, tmp_path):
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    convert2panoptic(str(dataset / "gtFine"), str(tmp_path), False, ["train", "val"])
    categories = {c["id"]: c for c in json.loads((tmp_path / "cityscapes_panoptic_val.json").read_text())["categories"]}
    for split, count in (("train", 4), ("val", 2)):
        panoptic = json.loads((tmp_path / f"cityscapes_panoptic_{split}.json").read_text())
        assert len(panoptic["images"]) == count and len(panoptic["annotations"]) == count
        for annotation in panoptic["annotations"]:
            assert (tmp_path / f"cityscapes_panoptic_{split}" / annotation["file_name"]).is_file()
            image_id = annotation["image_id"]
            gt = dataset / "gtFine" / split / image_id.split("_")[0]
            instances = cv2.imread(str(gt / f"{image_id}_gtFine_instanceIds.png"), cv2.IMREAD_UNCHANGED)
            things = [s for s in annotation["segments_info"] if categories[s["category_id"]]["isthing"]]
            assert len(things) == len(np.unique(instances[instances >= 1000])) > 0
            assert all(s["iscrowd"] == 0 and s["area"] > 0 for s in annotation["segments_info"])
