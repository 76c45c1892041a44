"""Common attribute support on tiny hand-built head outputs (deeplab2 post-processor test style).

The maps are drawn as text: '.' is road (stuff), a letter is one instance. Unless a test says otherwise
the heads are at stride 1, every pixel of an instance predicts the tight box of that instance, and the
box probability is -10 (p ~ 0) except at the seeds listed. The expected panoptic ids are written out.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from casnet_core.postprocess import (
    VOID_CHANNEL,
    PairStatistics,
    common_attribute_support,
    decode_boxes,
    fallback_seeds,
    find_seeds,
    mask_statistics,
    number_instances,
    pair_statistics,
    pixel_cells,
    pixel_values,
    sanitize_heads,
    sanitize_semantic_logits,
    select_seeds,
    thing_pairs,
    upsample_semantic,
    vote_with_support,
)

# Semantic channels of the test class space: 0 road (label id 7), 1 car (26), 2 person (24).
ROAD, CAR, PERSON = 0, 1, 2
LABEL_IDS = (7, 26, 24)
THING_CLASSES = (CAR, PERSON)  # box-probability channel 0 = car, 1 = person
# Two rows of four pixels for the pair stages (stride 2: two cells of 2 x 2 pixels).
PAIR_SEMANTIC = torch.tensor([[[CAR, CAR, PERSON, ROAD],
                               [CAR, PERSON, PERSON, PERSON]]])


def draw(rows: str) -> np.ndarray:
    return np.array([list(r) for r in rows.split()])


def tight_box(letters: np.ndarray, letter: str) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(letters == letter)
    return (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def make_heads(rows: str, classes: dict[str, int], seeds, predicted_boxes=None):
    """Stride-1 heads of a drawn scene.

    classes: letter -> semantic channel; seeds: [(x, y, thing channel, probability)];
    predicted_boxes: letter -> the box its pixels predict (default: the tight box of its pixels).
    Returns (attributes (1,4,H,W), box_logits (1,2,H,W), semantic channels (1,H,W)).
    """
    letters = draw(rows)
    height, width = letters.shape
    semantic = np.full((height, width), ROAD)
    attributes = np.zeros((4, height, width), np.float32)
    px = np.arange(width)[None, :] + 0.5
    py = np.arange(height)[:, None] + 0.5
    for letter, channel in classes.items():
        mask = letters == letter
        semantic[mask] = channel
        x0, y0, x1, y1 = (predicted_boxes or {}).get(letter, tight_box(letters, letter))
        field = np.stack(np.broadcast_arrays(px - x0, py - y0, x1 - px, y1 - py))
        attributes[:, mask] = field[:, mask]
    box_logits = torch.full((1, len(THING_CLASSES), height, width), -10.0)
    for x, y, thing, probability in seeds:
        box_logits[0, thing, y, x] = float(torch.logit(torch.tensor(probability)))
    return torch.from_numpy(attributes)[None], box_logits, torch.from_numpy(semantic)[None]


def run(attributes, box_logits, semantic, **kwargs):
    kwargs = {"stride": 1, "stuff_area": 1, "min_area": 1, **kwargs}
    return common_attribute_support(attributes, box_logits, semantic=semantic, thing_classes=THING_CLASSES,
                                    label_ids=LABEL_IDS, **kwargs)


# Figure 1 of the paper: two cars whose boxes overlap; inside the overlap (x 4..6, y 1..5) rows 2-3 belong
# to A and rows 1, 4, 5 to B. Neither box containment nor distance to a centre can split them; the box each
# pixel predicts can.
FIGURE_1 = """
....BBBBBBBB
AAAABBBBBBBB
AAAAAAABBBBB
AAAAAAABBBBB
AAAABBBBBBBB
AAAABBBBBBBB
AAAAAAA.....
AAAAAAA.....
"""


def figure_1_heads():
    # A's seed scores higher, so A is car instance 0 and B car instance 1.
    return make_heads(FIGURE_1, {"A": CAR, "B": CAR}, seeds=[(3, 4, 0, 0.9), (8, 2, 0, 0.8)])


FIGURE_1_EXPECTED = np.array([
    [7,     7,     7,     7,     26001, 26001, 26001, 26001, 26001, 26001, 26001, 26001],
    [26000, 26000, 26000, 26000, 26001, 26001, 26001, 26001, 26001, 26001, 26001, 26001],
    [26000, 26000, 26000, 26000, 26000, 26000, 26000, 26001, 26001, 26001, 26001, 26001],
    [26000, 26000, 26000, 26000, 26000, 26000, 26000, 26001, 26001, 26001, 26001, 26001],
    [26000, 26000, 26000, 26000, 26001, 26001, 26001, 26001, 26001, 26001, 26001, 26001],
    [26000, 26000, 26000, 26000, 26001, 26001, 26001, 26001, 26001, 26001, 26001, 26001],
    [26000, 26000, 26000, 26000, 26000, 26000, 26000, 7,     7,     7,     7,     7],
    [26000, 26000, 26000, 26000, 26000, 26000, 26000, 7,     7,     7,     7,     7],
])


def test_overlapping_boxes_go_to_the_box_each_pixel_predicts():
    out = run(*figure_1_heads())
    np.testing.assert_array_equal(out.panoptic[0].numpy(), FIGURE_1_EXPECTED)
    assert out.panoptic.dtype == torch.int32
    assert out.instance_ids.tolist() == [26000, 26001]
    assert out.instance_label_ids.tolist() == [26, 26]
    assert out.instance_classes.tolist() == [CAR, CAR]


def test_instance_statistics_come_from_the_final_masks():
    out = run(*figure_1_heads())
    # A: 4 + 7 + 7 + 4 + 4 + 7 + 7 = 40 pixels, x 0..6, y 1..7 -> box (0, 1, 7, 8) with exclusive ends;
    # centroid = mean pixel centre = (sum x / 40 + 0.5, sum y / 40 + 0.5) = (2.55 + 0.5, 4.15 + 0.5).
    # B: 8 + 8 + 5 + 5 + 8 + 8 = 42 pixels, x 4..11, y 0..5 -> box (4, 0, 12, 6).
    assert out.instance_areas.tolist() == [40, 42]
    assert out.instance_boxes.tolist() == [[0, 1, 7, 8], [4, 0, 12, 6]]
    np.testing.assert_allclose(out.instance_centroids[0].numpy(), [3.05, 4.65], atol=1e-5)
    ys, xs = np.nonzero(FIGURE_1_EXPECTED == 26001)
    np.testing.assert_allclose(out.instance_centroids[1].numpy(), [xs.mean() + 0.5, ys.mean() + 0.5], atol=1e-5)
    # Separated mode (no logits): the score is the seed's box probability.
    np.testing.assert_allclose(out.instance_scores.numpy(), [0.9, 0.8], atol=1e-5)
    assert out.semantic[0, 0].tolist() == [7, 7, 7, 7] + [26] * 8


# Near-tie: A (x 0..6) predicts box x [0, 8), B (x 8..11) predicts x [8, 12); column 7 ('T', car pixels)
# predicts x [2.5, 13.5), all full height. IoU(T, A) = 5.5 / 13.5 = 0.407, IoU(T, B) = 4 / 11 = 0.364:
# within the 0.05 margin, so the centre decides: T's box centre x = 8 is 2 from B's centre (10) and 4
# from A's (4): T joins B. Without a margin the higher IoU (A) wins.
NEAR_TIE = """
AAAAAAATBBBB
AAAAAAATBBBB
AAAAAAATBBBB
AAAAAAATBBBB
AAAAAAATBBBB
AAAAAAATBBBB
AAAAAAATBBBB
AAAAAAATBBBB
"""


def test_near_tie_is_decided_by_the_box_centre():
    heads = make_heads(NEAR_TIE, {"A": CAR, "T": CAR, "B": CAR}, seeds=[(3, 4, 0, 0.9), (10, 4, 0, 0.8)],
                       predicted_boxes={"A": (0, 0, 8, 8), "T": (2.5, 0, 13.5, 8), "B": (8, 0, 12, 8)})
    with_margin = run(*heads, tie_margin=0.05)
    without_margin = run(*heads, tie_margin=0.0)
    # Every row is the same.
    expected_row_with_margin = [26000] * 7 + [26001] + [26001] * 4
    expected_row_without_margin = [26000] * 7 + [26000] + [26001] * 4
    np.testing.assert_array_equal(with_margin.panoptic[0].numpy(), np.tile(expected_row_with_margin, (8, 1)))
    np.testing.assert_array_equal(without_margin.panoptic[0].numpy(), np.tile(expected_row_without_margin, (8, 1)))


# One car A. Two more seeds: a car seed on the road at (10, 1) whose pixel predicts the box x [8, 12),
# y [0, 3) that no car pixel predicts, and a person seed where no pixel is a person. Neither gets a vote:
# both are dropped and the car keeps instance number 0.
UNSUPPORTED = """
............
..AAAAAA....
..AAAAAA....
..AAAAAA....
..AAAAAA....
............
............
............
"""


def test_seed_without_support_is_dropped():
    attributes, box_logits, semantic = make_heads(
        UNSUPPORTED, {"A": CAR}, seeds=[(4, 3, 0, 0.7), (10, 1, 0, 0.95), (5, 6, 1, 0.9)])
    attributes[0, :, 1, 10] = torch.tensor([2.5, 1.5, 1.5, 1.5])  # road pixel (10, 1) predicts (8, 0, 12, 3)
    out = run(attributes, box_logits, semantic)
    expected = np.array([
        [7, 7, 7,     7,     7,     7,     7,     7,     7, 7, 7, 7],
        [7, 7, 26000, 26000, 26000, 26000, 26000, 26000, 7, 7, 7, 7],
        [7, 7, 26000, 26000, 26000, 26000, 26000, 26000, 7, 7, 7, 7],
        [7, 7, 26000, 26000, 26000, 26000, 26000, 26000, 7, 7, 7, 7],
        [7, 7, 26000, 26000, 26000, 26000, 26000, 26000, 7, 7, 7, 7],
        [7, 7, 7,     7,     7,     7,     7,     7,     7, 7, 7, 7],
        [7, 7, 7,     7,     7,     7,     7,     7,     7, 7, 7, 7],
        [7, 7, 7,     7,     7,     7,     7,     7,     7, 7, 7, 7],
    ])
    np.testing.assert_array_equal(out.panoptic[0].numpy(), expected)
    assert out.instance_ids.tolist() == [26000]
    np.testing.assert_allclose(out.instance_scores.numpy(), [0.7], atol=1e-5)


# Car A, plus two car pixels 'S' that predict a box of their own (x [6, 12), y [0, 3)) with a seed there.
# With min_area 4 the seed of S (2 pixels) is dropped and its two pixels vote again: the only seed left is
# A's, so they join A and no pixel is left without an instance.
SMALL = """
......SS....
..AAAAAA....
..AAAAAA....
..AAAAAA....
............
............
............
............
"""


def test_seed_below_min_area_is_dropped_and_its_pixels_join_the_best_remaining_seed():
    heads = make_heads(SMALL, {"A": CAR, "S": CAR}, seeds=[(4, 2, 0, 0.9), (7, 0, 0, 0.8)],
                       predicted_boxes={"S": (6, 0, 12, 3)})
    kept = run(*heads, min_area=1)
    dropped = run(*heads, min_area=4)
    top_rows_kept = [[7, 7, 7, 7, 7, 7, 26001, 26001, 7, 7, 7, 7],
                     [7, 7, 26000, 26000, 26000, 26000, 26000, 26000, 7, 7, 7, 7]]
    top_rows_dropped = [[7, 7, 7, 7, 7, 7, 26000, 26000, 7, 7, 7, 7],
                        [7, 7, 26000, 26000, 26000, 26000, 26000, 26000, 7, 7, 7, 7]]
    np.testing.assert_array_equal(kept.panoptic[0, :2].numpy(), top_rows_kept)
    np.testing.assert_array_equal(dropped.panoptic[0, :2].numpy(), top_rows_dropped)
    assert kept.instance_areas.tolist() == [18, 2]
    assert dropped.instance_areas.tolist() == [20]


# A car behind a person: the person (P, columns 5-6) splits the car into a left and a right part. Both
# parts predict the car's full box (0, 2, 12, 8), so they vote for the same seed and share one id.
OCCLUDED = """
.....PP.....
.....PP.....
AAAAAPPAAAAA
AAAAAPPAAAAA
AAAAAPPAAAAA
AAAAAPPAAAAA
AAAAAPPAAAAA
AAAAAPPAAAAA
"""


def test_instance_split_by_an_occluder_keeps_one_id():
    heads = make_heads(OCCLUDED, {"A": CAR, "P": PERSON}, seeds=[(2, 5, 0, 0.9), (5, 4, 1, 0.8)],
                       predicted_boxes={"A": (0, 2, 12, 8)})
    out = run(*heads)
    road, car, person = 7, 26000, 24000
    expected = np.array(
        [[road] * 5 + [person] * 2 + [road] * 5] * 2 + [[car] * 5 + [person] * 2 + [car] * 5] * 6)
    np.testing.assert_array_equal(out.panoptic[0].numpy(), expected)
    assert sorted(out.instance_ids.tolist()) == [24000, 26000]
    assert out.instance_areas[out.instance_ids == 26000].item() == 60


# Things cut by the image border predict boxes that reach outside it (the object goes on beyond the
# frame): L predicts x0 = -3, R predicts x1 = 15, T (a person) predicts y0 = -2. The seed boxes have
# negative coordinates, which NMS must handle per class, and the output boxes are the masks' own boxes.
BORDER = """
...TTTT.....
...TTTT.....
LL.TTTT...RR
LL........RR
LL........RR
LL........RR
LL........RR
............
"""


def test_instances_touching_the_image_border():
    heads = make_heads(BORDER, {"L": CAR, "R": CAR, "T": PERSON},
                       seeds=[(0, 4, 0, 0.9), (11, 4, 0, 0.8), (4, 0, 1, 0.7)],
                       predicted_boxes={"L": (-3, 2, 2, 7), "R": (10, 2, 15, 7), "T": (2, -2, 8, 3)})
    out = run(*heads)
    expected = np.array([
        [7,     7,     7, 24000, 24000, 24000, 24000, 7, 7, 7, 7,     7],
        [7,     7,     7, 24000, 24000, 24000, 24000, 7, 7, 7, 7,     7],
        [26000, 26000, 7, 24000, 24000, 24000, 24000, 7, 7, 7, 26001, 26001],
        [26000, 26000, 7, 7,     7,     7,     7,     7, 7, 7, 26001, 26001],
        [26000, 26000, 7, 7,     7,     7,     7,     7, 7, 7, 26001, 26001],
        [26000, 26000, 7, 7,     7,     7,     7,     7, 7, 7, 26001, 26001],
        [26000, 26000, 7, 7,     7,     7,     7,     7, 7, 7, 26001, 26001],
        [7,     7,     7, 7,     7,     7,     7,     7, 7, 7, 7,     7],
    ])
    np.testing.assert_array_equal(out.panoptic[0].numpy(), expected)
    boxes = dict(zip(out.instance_ids.tolist(), out.instance_boxes.tolist()))
    assert boxes == {26000: [0, 2, 2, 7], 26001: [10, 2, 12, 7], 24000: [3, 0, 7, 3]}


def test_seeds_of_different_classes_never_suppress_each_other_across_the_border():
    # A car seed predicting (0, 0, 12, 12) and a person seed in the corner predicting (-12, -12, 1, 1).
    # torchvision's batched NMS separates classes by shifting boxes by class * (max coordinate + 1),
    # which assumes coordinates >= 0: the person box shifted by 13 would be (1, 1, 14, 14), IoU 0.63 with
    # the car box, and be suppressed. Both seeds must survive.
    attributes = torch.zeros(1, 4, 8, 12)
    attributes[0, :, 4, 6] = torch.tensor([6.5, 4.5, 5.5, 7.5])  # cell (6, 4) -> (0, 0, 12, 12)
    attributes[0, :, 0, 0] = torch.tensor([12.5, 12.5, 0.5, 0.5])  # cell (0, 0) -> (-12, -12, 1, 1)
    box_prob = torch.zeros(1, 2, 8, 12)
    box_prob[0, 0, 4, 6] = 0.9
    box_prob[0, 1, 0, 0] = 0.8
    groups, cells, boxes, scores = find_seeds(box_prob, decode_boxes(attributes, 1))
    assert groups.tolist() == [0, 1]
    assert cells.tolist() == [4 * 12 + 6, 0]
    assert boxes.tolist() == [[0, 0, 12, 12], [-12, -12, 1, 1]]


# Two persons and no box probability above the threshold for the person class anywhere: the fallback
# seeds them from their own pixel boxes (NMS over the person pixels' boxes, scored by their low box
# probability), so each person still gets an instance and no person pixel is left without one.
NO_SEED = """
............
.PPP....QQQ.
.PPP....QQQ.
.PPP....QQQ.
.PPP....QQQ.
............
............
............
"""


def test_class_with_pixels_but_no_seed_falls_back_to_its_pixel_boxes():
    attributes, box_logits, semantic = make_heads(NO_SEED, {"P": PERSON, "Q": PERSON}, seeds=[])
    box_logits[0, 1, 2, 2] = float(torch.logit(torch.tensor(0.3)))  # below the threshold of 0.5
    out = run(attributes, box_logits, semantic)
    row = [7, 24000, 24000, 24000, 7, 7, 7, 7, 24001, 24001, 24001, 7]
    expected = np.array([[7] * 12] + [row] * 4 + [[7] * 12] * 3)
    np.testing.assert_array_equal(out.panoptic[0].numpy(), expected)
    # P's best cell has p = 0.3; Q's cells all have sigmoid(-10).
    np.testing.assert_allclose(out.instance_scores.numpy(), [0.3, torch.sigmoid(torch.tensor(-10.0)).item()],
                               rtol=1e-4)


def test_small_stuff_becomes_void_and_instance_mode_keeps_things_only():
    # Road everywhere except one sidewalk-like stuff pixel (channel 3, label id 8) and one void pixel.
    attributes, box_logits, semantic = figure_1_heads()
    semantic[0, 7, 11] = 3
    semantic[0, 7, 10] = 255
    label_ids = LABEL_IDS + (8,)
    kwargs = dict(semantic=semantic, thing_classes=THING_CLASSES, label_ids=label_ids, stride=1, min_area=1)
    panoptic = common_attribute_support(attributes, box_logits, stuff_area=2, **kwargs)
    # The sidewalk (1 pixel) is below stuff_area 2: void. Road (8 pixels) stays; void stays void.
    assert panoptic.panoptic[0, 7, 7:].tolist() == [7, 7, 7, 0, 0]
    assert panoptic.semantic[0, 7, 7:].tolist() == [7, 7, 7, 0, 8]
    instance = common_attribute_support(attributes, box_logits, panoptic=False, stuff_area=2, **kwargs)
    expected = np.where(FIGURE_1_EXPECTED >= 1000, FIGURE_1_EXPECTED, 0)
    np.testing.assert_array_equal(instance.panoptic[0].numpy(), expected)


def one_hot_logits(semantic: torch.Tensor, strength: float) -> torch.Tensor:
    return torch.nn.functional.one_hot(semantic, len(LABEL_IDS)).permute(0, 3, 1, 2).float() * strength


def test_stride_2_from_semantic_logits_matches_the_stride_1_result_upsampled():
    # The same scene on a stride-2 grid: the attributes in units of the stride are unchanged, every box
    # doubles. Bilinear upsampling of one-hot logits by 2 has the argmax of the nearest cell, so the
    # expected map is the stride-1 one with every pixel repeated 2x2.
    attributes, box_logits, semantic = figure_1_heads()
    out = common_attribute_support(attributes, box_logits, semantic_logits=one_hot_logits(semantic, 4.0),
                                   thing_classes=THING_CLASSES, label_ids=LABEL_IDS, stride=2, stuff_area=1,
                                   min_area=1)
    np.testing.assert_array_equal(out.panoptic[0].numpy(), np.kron(FIGURE_1_EXPECTED, np.ones((2, 2), int)))
    assert out.instance_boxes.tolist() == [[0, 2, 14, 16], [8, 0, 24, 12]]
    # Score = box probability x mean probability of the class: softmax of (4, 0, 0) at every car cell.
    class_prob = np.exp(4.0) / (np.exp(4.0) + 2)
    np.testing.assert_allclose(out.instance_scores.numpy(), [0.9 * class_prob, 0.8 * class_prob], rtol=1e-5)


def test_output_at_another_resolution_than_the_network_input():
    # The network saw the image at twice its size (input_scale 2) with stride 2: output pixel x sits at
    # network point 2x + 1, i.e. in cell x, so the result equals the stride-1 one.
    attributes, box_logits, semantic = figure_1_heads()
    out = common_attribute_support(attributes, box_logits, semantic_logits=one_hot_logits(semantic, 4.0),
                                   thing_classes=THING_CLASSES, label_ids=LABEL_IDS, stride=2, stuff_area=1,
                                   min_area=1, output_size=(8, 12), input_scale=(2.0, 2.0))
    np.testing.assert_array_equal(out.panoptic[0].numpy(), FIGURE_1_EXPECTED)


def test_decode_boxes_follows_the_geometry_convention():
    # Cell (0, 1) of a stride-4 grid sits at (6, 2); (l, t, r, b) = (1, 0.5, 2, 1) strides.
    attributes = torch.zeros(1, 4, 1, 2)
    attributes[0, :, 0, 1] = torch.tensor([1.0, 0.5, 2.0, 1.0])
    assert decode_boxes(attributes, 4)[0, :, 0, 1].tolist() == [2.0, 0.0, 14.0, 6.0]


@pytest.mark.parametrize("stride, output_size, input_scale", [
    (4, (64, 80), (1.0, 1.0)),  # the network frame itself
    (4, (61, 77), (1.0, 1.0)),  # cropped: an image padded to the size divisor
    (4, (97, 203), (64 / 97, 128 / 203)),  # an image resized for the network, back at its own size
    (2, (40, 24), (1.0, 1.0)),
])
def test_semantic_upsampling_equals_bilinear_interpolation_then_argmax(stride, output_size, input_scale):
    # Blocky logits (classes in regions, like real ones) plus noise, so both shortcut and exact paths run.
    generator = torch.Generator().manual_seed(0)
    h, w = (16, 32) if input_scale != (1.0, 1.0) else (-(-output_size[0] // stride), -(-output_size[1] // stride))
    regions = torch.randint(0, 5, (2, 1, h // 4 + 1, w // 4 + 1), generator=generator)
    regions = regions.repeat_interleave(4, 2).repeat_interleave(4, 3)[:, :, :h, :w]
    logits = torch.randn((2, 5, h, w), generator=generator)
    logits.scatter_add_(1, regions, torch.full(regions.shape, 3.0))
    reference = torch.nn.functional.interpolate(
        logits, scale_factor=(stride / input_scale[0], stride / input_scale[1]), mode="bilinear",
        align_corners=False, recompute_scale_factor=False)[:, :, : output_size[0], : output_size[1]]
    assert reference.shape[2:] == output_size
    result = upsample_semantic(logits, stride, output_size, input_scale)
    differ = result != reference.argmax(1)
    # Only exact near-ties may differ (rounding of the two interpolations).
    top2 = reference.topk(2, dim=1).values
    assert ((top2[:, 0] - top2[:, 1])[differ] < 1e-4).all()
    assert differ.sum() <= 2


def random_heads(seed: int, batch: int, h: int, w: int, *, void: bool = True):
    generator = torch.Generator().manual_seed(seed)
    attributes = torch.rand((batch, 4, h, w), generator=generator) * 3
    box_logits = torch.randn((batch, 2, h, w), generator=generator) * 3 - 1
    logits = torch.randn((batch, len(LABEL_IDS), h, w), generator=generator) * 3
    choices = torch.tensor([ROAD, CAR, PERSON, 255] if void else [ROAD, CAR, PERSON])
    semantic = choices[torch.randint(0, len(choices), (batch, h, w), generator=generator)]
    return attributes, box_logits, logits, semantic


def check_partition(out, batch: int, height: int, width: int) -> None:
    """Every thing pixel has exactly one instance id of its own class; no other pixel has one; the
    instance list matches the map."""
    panoptic = out.panoptic.numpy().astype(np.int64)
    semantic = out.semantic_channels.numpy()
    assert panoptic.shape == semantic.shape == (batch, height, width)
    is_thing = np.isin(semantic, THING_CLASSES)
    label_of_channel = np.zeros(256, np.int64)
    label_of_channel[: len(LABEL_IDS)] = LABEL_IDS
    assert (panoptic[is_thing] // 1000 == label_of_channel[semantic[is_thing]]).all()
    assert (panoptic[~is_thing] < 1000).all()
    for b in range(batch):
        ids, areas = np.unique(panoptic[b][panoptic[b] >= 1000], return_counts=True)
        mine = (out.instance_batch == b).numpy()
        assert sorted(out.instance_ids[mine].tolist()) == ids.tolist()
        assert dict(zip(out.instance_ids[mine].tolist(), out.instance_areas[mine].tolist())) == dict(
            zip(ids.tolist(), areas.tolist()))
        for instance_id, box in zip(out.instance_ids[mine].tolist(), out.instance_boxes[mine].tolist()):
            ys, xs = np.nonzero(panoptic[b] == instance_id)
            assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        # Instance numbers run 0, 1, ... per class without gaps.
        for label in np.unique(ids // 1000):
            assert sorted(ids[ids // 1000 == label] % 1000) == list(range((ids // 1000 == label).sum()))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 2),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    stride=st.sampled_from([1, 2, 4]),
    separated=st.booleans(),
    min_area=st.integers(1, 12),
    box_threshold=st.sampled_from([0.3, 0.5, 0.9, 1.0]),
)
def test_every_thing_pixel_gets_exactly_one_instance(seed, batch, h, w, stride, separated, min_area, box_threshold):
    attributes, box_logits, logits, semantic_cells = random_heads(seed, batch, h, w)
    kwargs = dict(thing_classes=THING_CLASSES, label_ids=LABEL_IDS, stride=stride, min_area=min_area,
                  box_threshold=box_threshold, stuff_area=3)
    if separated:
        semantic = semantic_cells.repeat_interleave(stride, 1).repeat_interleave(stride, 2)
        out = common_attribute_support(attributes, box_logits, semantic=semantic, **kwargs)
    else:
        out = common_attribute_support(attributes, box_logits, semantic_logits=logits, **kwargs)
    check_partition(out, batch, h * stride, w * stride)
    assert ((out.instance_scores >= 0) & (out.instance_scores <= 1)).all()


def test_chunked_vote_equals_the_unchunked_one():
    attributes, box_logits, logits, _ = random_heads(3, 2, 16, 20)
    kwargs = dict(semantic_logits=logits, thing_classes=THING_CLASSES, label_ids=LABEL_IDS, stride=2,
                  box_threshold=0.3)
    whole = common_attribute_support(attributes, box_logits, **kwargs)
    chunked = common_attribute_support(attributes, box_logits, chunk_elements=5, **kwargs)
    assert torch.equal(whole.panoptic, chunked.panoptic)
    assert whole.instance_ids.numel() > 3  # the case is not trivial


def test_exactly_one_semantic_source_is_required():
    attributes, box_logits, logits, semantic = random_heads(0, 1, 4, 4)
    with pytest.raises(ValueError):
        common_attribute_support(attributes, box_logits, thing_classes=THING_CLASSES, label_ids=LABEL_IDS)
    with pytest.raises(ValueError):
        common_attribute_support(attributes, box_logits, semantic_logits=logits, semantic=semantic,
                                 thing_classes=THING_CLASSES, label_ids=LABEL_IDS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_give_the_same_result():
    attributes, box_logits, logits, _ = random_heads(5, 2, 24, 32, void=False)
    logits = logits * 3  # well separated classes: no argmax near-ties that rounding could flip
    kwargs = dict(thing_classes=THING_CLASSES, label_ids=LABEL_IDS, stride=4, box_threshold=0.3, min_area=4)
    cpu = common_attribute_support(attributes, box_logits, semantic_logits=logits, **kwargs)
    cuda = common_attribute_support(attributes.cuda(), box_logits.cuda(), semantic_logits=logits.cuda(), **kwargs)
    assert torch.equal(cpu.panoptic, cuda.panoptic.cpu())
    assert torch.equal(cpu.instance_ids, cuda.instance_ids.cpu())
    torch.testing.assert_close(cpu.instance_scores, cuda.instance_scores.cpu())
    figure = run(*figure_1_heads())
    figure_cuda = run(*(t.cuda() for t in figure_1_heads()))
    assert torch.equal(figure.panoptic, figure_cuda.panoptic.cpu())


# ----------------------------------------------------------------------------------------------
# The stages alone, on hand-built tensors.
# ----------------------------------------------------------------------------------------------


def test_thing_pairs_group_the_pixels_by_image_class_and_cell():
    # Stride 2, one image, a 1 x 2 grid: columns 0-1 are cell 0, columns 2-3 cell 1. Thing classes 0 (car) and
    # 1 (person). Pairs are keyed (image * K + class) * cells + cell: car in cell 0 -> 0, person in cell 0 -> 2,
    # person in cell 1 -> 3. The person pixel (1, 1) shares cell 0 with three car pixels but votes through a
    # pair of its own. Pixel keys are (image * (C + 1) + channel) * cells + cell: road (0) in cell 1 -> 1, car (1)
    # in cell 0 -> 2, person (2) in cells 0 and 1 -> 4, 5.
    pairs = thing_pairs(PAIR_SEMANTIC, torch.tensor(THING_CLASSES), 3, (1, 2), stride=2)
    assert pairs.pixel_key.tolist() == [[[2, 2, 5, 1],
                                         [2, 4, 5, 5]]]
    assert pairs.pair_key.tolist() == [0, 2, 3]
    assert pairs.pair_pixels.tolist() == [3, 1, 3]
    assert pairs.channel_pixels.tolist() == [[1, 3, 4, 0]]  # road, car, person, void
    # What the pairs decide reaches their pixels; the other pixels get their channel's value.
    ids = pixel_values(pairs, torch.tensor([26000, 24000, 24001]), torch.tensor([[7, -1, -1, 0]]))
    assert ids.tolist() == [[[26000, 26000, 24001, 7],
                             [26000, 24000, 24001, 24001]]]


def test_pair_statistics_are_the_pixel_sums_and_tight_boxes_of_each_pair():
    # The map above: the car pair (0) holds (0, 0), (1, 0), (0, 1): partial in its 2 x 2 block; the person pair of
    # cell 0 (2) only (1, 1); the person pair of cell 1 (3) holds (2, 0), (2, 1), (3, 1): its block misses (3, 0).
    stats = pair_statistics(thing_pairs(PAIR_SEMANTIC, torch.tensor(THING_CLASSES), 3, (1, 2), stride=2), stride=2)
    assert stats.area.tolist() == [3, 1, 3]
    assert stats.sum_x.tolist() == [0 + 1 + 0, 1, 2 + 2 + 3]
    assert stats.sum_y.tolist() == [0 + 0 + 1, 1, 0 + 1 + 1]
    assert [stats.x0.tolist(), stats.y0.tolist(), stats.x1.tolist(), stats.y1.tolist()] == [
        [0, 1, 2], [0, 1, 0], [2, 2, 4], [2, 2, 2]]
    # A pair filling its whole block takes the closed form: cars everywhere, 2 x 2 cells of a 4 x 4 image.
    cars = torch.full((1, 4, 4), CAR)
    full = pair_statistics(thing_pairs(cars, torch.tensor(THING_CLASSES), 3, (2, 2), stride=2), stride=2)
    assert full.area.tolist() == [4, 4, 4, 4]
    assert full.sum_x.tolist() == [2, 10, 2, 10] and full.sum_y.tolist() == [2, 2, 10, 10]
    assert full.x1.tolist() == [2, 4, 2, 4] and full.y0.tolist() == [0, 0, 2, 2]


def test_pixel_cells_follow_the_input_scale_and_stay_in_the_grid():
    # Stride 4, output pixels twice the network's (input_scale 2): pixel x sits at 2x + 1 in the network
    # input, i.e. in cell floor((2x + 1) / 4): 0, 0, 1, 1. At input_scale 3 the pixels sit at 1.5, 4.5,
    # 7.5, 10.5: cells 0, 1, 1, 2, and a 2-cell grid clamps the last to 1.
    rows, cols = pixel_cells((1, 4), (1, 2), 4, (2.0, 2.0))
    assert rows.tolist() == [0] and cols.tolist() == [0, 0, 1, 1]
    assert pixel_cells((1, 4), (1, 2), 4, (3.0, 3.0))[1].tolist() == [0, 1, 1, 1]


def test_fallback_gives_every_seedless_class_a_seed_even_when_the_cut_spans_classes():
    # Group 0 (cars of image 0) and group 1 (persons) have pixels and no seed; group 2 already has one.
    # top_k = 1 keeps only the best pair overall (a car, 0.4): persons would have nobody to vote for
    # (issue 8: "index -1 is out of bounds"). Their best pair (0.2) joins; NMS removes the car pair whose
    # box equals the better one. Group 2's pair is no candidate: that group has its seed.
    boxes = torch.tensor([[0, 0, 4, 4], [0, 0, 4, 4], [10, 0, 14, 4], [20, 0, 24, 4], [30, 0, 34, 4.0]])
    groups = torch.tensor([0, 0, 1, 1, 2])
    scores = torch.tensor([0.4, 0.3, 0.1, 0.2, 0.9])
    new_groups, new_boxes, new_scores = fallback_seeds(boxes, groups, scores, torch.tensor([2]), 3, top_k=1)
    assert new_groups.tolist() == [0, 1]
    assert new_boxes.tolist() == [[0, 0, 4, 4], [20, 0, 24, 4]]
    assert new_scores.tolist() == pytest.approx([0.4, 0.2])
    # Without a cut both person pairs are candidates and both survive NMS (disjoint boxes).
    assert fallback_seeds(boxes, groups, scores, torch.tensor([2]), 3)[0].tolist() == [0, 1, 1]


def test_select_seeds_caps_each_image_and_keeps_the_best_seed_of_every_class():
    # Two images, K = 2: groups 0 (image 0 car), 1 (image 0 person), 2 (image 1 car), 3 (image 1 person).
    groups = torch.tensor([0, 0, 1, 0, 2, 3, 1])
    scores = torch.tensor([0.9, 0.8, 0.3, 0.7, 0.6, 0.5, 0.2])
    has_pixels = torch.tensor([True, True, True, False])  # nobody votes in group 3: seed 5 goes
    # max_instances 2: image 0 keeps the best car (0) and the best person (2), although the cars 1 and 3
    # score higher than person 2: dropping them only merges cars, dropping 2 would leave persons without
    # an instance. Output order: by group, best first.
    assert select_seeds(groups, scores, has_pixels, 2, max_instances=2).tolist() == [0, 2, 4]
    assert select_seeds(groups, scores, has_pixels, 2, max_instances=3).tolist() == [0, 1, 2, 4]
    # max_instances 1 < two classes present: one seed per class present.
    assert select_seeds(groups, scores, has_pixels, 2, max_instances=1).tolist() == [0, 2, 4]
    assert select_seeds(groups, scores, has_pixels, 2, max_instances=200).tolist() == [0, 1, 3, 2, 6, 4]
    with pytest.raises(ValueError, match="max_instances"):
        select_seeds(groups, scores, has_pixels, 2, max_instances=0)


def test_select_seeds_keeps_at_most_1000_per_class_so_ids_stay_within_their_label():
    # 1001 seeds of one class: the 1001st would be k = 1000, i.e. label_id * 1000 + 1000, the next label.
    scores = torch.linspace(1.0, 0.0, 1001)
    kept = select_seeds(torch.zeros(1001, dtype=torch.int64), scores, torch.tensor([True]), 1, max_instances=5000)
    assert kept.tolist() == list(range(1000))


def test_vote_with_support_drops_small_seeds_and_re_votes_their_pixels():
    # Group 0 has seeds A (0, 0, 10, 10) and B (10, 0, 12, 2). Voter 0 (20 pixels) predicts A's box, voter 1
    # (2 pixels) B's. With min_area 4, B (2 pixels) is dropped and voter 1 re-votes: A is the only seed
    # left (IoU 0 with it, the best there is), so A ends with all 22 pixels.
    seed_boxes = torch.tensor([[0, 0, 10, 10], [10, 0, 12, 2.0]])
    pair_boxes = seed_boxes.clone()
    args = (pair_boxes, torch.tensor([0, 0]), torch.tensor([20, 2]), seed_boxes, torch.tensor([0, 0]), 1)
    pair_seed, area, alive = vote_with_support(*args, min_area=4)
    assert (pair_seed.tolist(), area.tolist(), alive.tolist()) == ([0, 0], [22, 0], [True, False])
    pair_seed, area, alive = vote_with_support(*args, min_area=1)
    assert (pair_seed.tolist(), area.tolist(), alive.tolist()) == ([0, 1], [20, 2], [True, True])


def test_number_instances_counts_per_image_and_class():
    # K = 2 (car 26, person 24); seeds sorted by group: 0 and 1 image-0 cars, 2 an image-0 person, 3 an
    # image-1 person. Seed 1 is dead: numbers are consecutive over the alive seeds of a group, and restart
    # per image and class, so both persons are k = 0.
    instance_seed, ids = number_instances(torch.tensor([True, False, True, True]), torch.tensor([0, 0, 1, 3]), 2,
                                          torch.tensor([26, 24]))
    assert instance_seed.tolist() == [0, 2, 3]
    assert ids.tolist() == [26000, 24000, 24000]


def test_mask_statistics_are_the_tight_box_area_and_mean_pixel_centre():
    # Instance 0 holds the pairs of pixels (0, 0) and (1, 2), instance 1 the pair of pixel (5, 3).
    areas, boxes, centroids = mask_statistics(torch.tensor([0, 0, 1]), single_pixel_pairs([0, 1, 5], [0, 2, 3]), 2)
    assert areas.tolist() == [2, 1]
    assert boxes.tolist() == [[0, 0, 2, 3], [5, 3, 6, 4]]
    assert centroids.tolist() == [[1.0, 1.5], [5.5, 3.5]]


def single_pixel_pairs(xs: list[int], ys: list[int]) -> PairStatistics:
    """The statistics of pairs of one pixel each, at (xs[p], ys[p])."""
    x, y = torch.tensor(xs, dtype=torch.int64), torch.tensor(ys, dtype=torch.int64)
    return PairStatistics(torch.ones_like(x), x, y, x, y, x + 1, y + 1)


def test_sanitize_heads_gives_nonfinite_values_their_meaning_and_counts_them():
    nan, inf = float("nan"), float("inf")
    attributes = torch.tensor([nan, inf, -inf, 2.0]).view(1, 4, 1, 1)
    box_logits = torch.tensor([nan, inf, -inf, 0.0]).view(1, 4, 1, 1)
    attributes, box_prob, nonfinite = sanitize_heads(attributes, box_logits)
    assert nonfinite == 6
    # NaN -> 0; +-inf are left to decode_boxes, which clamps to [0, MAX_BOX_DISTANCE] strides.
    assert decode_boxes(attributes, 1).flatten().tolist() == [0.5, 0.5 - 1e4, 0.5, 2.5]
    assert box_prob.flatten().tolist() == [0.0, 1.0, 0.0, 0.5]  # NaN: no evidence of a seed
    finite = torch.randn(1, 4, 2, 2)
    assert sanitize_heads(finite, finite)[2] == 0


def test_semantic_cells_without_evidence_are_void_nearest_cell_wide():
    # Three cells: class 0, all-NaN (no evidence for any class), class 1. At stride 1 the middle pixel is
    # void; at stride 2 each output pixel follows the cell with most of its interpolation weight
    # (positions 0, 0.25, 0.75, 1.25, 1.75, 2 on the grid): 0, 0, void, void, 1, 1.
    nan = float("nan")
    logits = torch.tensor([[10.0, nan, 0.0], [0.0, nan, 10.0]])[None, :, None, :]  # (1, 2, 1, 3)
    logits, void_cells, nonfinite = sanitize_semantic_logits(logits)
    assert nonfinite == 2 and void_cells.tolist() == [[[False, True, False]]]
    assert upsample_semantic(logits, 1, (1, 3), void_cells=void_cells).tolist() == [[[0, VOID_CHANNEL, 1]]]
    assert upsample_semantic(logits, 2, (1, 6), void_cells=void_cells).tolist() == [
        [[0, 0, VOID_CHANNEL, VOID_CHANNEL, 1, 1]]]


# ----------------------------------------------------------------------------------------------
# Any head output and the instance cap, end to end.
# ----------------------------------------------------------------------------------------------


def test_two_seedless_classes_cut_by_pre_nms_top_k_both_get_instances():
    # Issue 8's failure on a tiny scene: a person P and a car Q, no box probability above the threshold
    # for either, and pre_nms_top_k 1: the fallback's cut keeps only P's best cell (0.3); Q's best cell
    # joins anyway, so the car keeps its pixels (it used to raise "index -1 is out of bounds").
    attributes, box_logits, semantic = make_heads(NO_SEED, {"P": PERSON, "Q": CAR}, seeds=[])
    box_logits[0, 1, 2, 2] = float(torch.logit(torch.tensor(0.3)))
    out = run(attributes, box_logits, semantic, pre_nms_top_k=1)
    row = [7, 24000, 24000, 24000, 7, 7, 7, 7, 26000, 26000, 26000, 7]
    np.testing.assert_array_equal(out.panoptic[0].numpy(), np.array([[7] * 12] + [row] * 4 + [[7] * 12] * 3))


# Three cars; C scores lowest. With max_instances 2 its seed goes before the vote and its pixels vote among
# A and B: C's box overlaps neither (IoU 0 with both, a near-tie), so the nearest box centre decides: B's
# (x 14) is 5 from C's (x 9), A's (x 2) is 7. C's pixels become part of B, never a hole or a foreign id.
THREE_CARS = """
AAAA....CC..BBBB
AAAA....CC..BBBB
"""


def test_max_instances_drops_the_lowest_scored_seeds_and_their_pixels_re_vote():
    heads = make_heads(THREE_CARS, {"A": CAR, "B": CAR, "C": CAR},
                       seeds=[(1, 0, 0, 0.9), (13, 0, 0, 0.8), (8, 0, 0, 0.7)])
    capped = run(*heads, max_instances=2)
    uncapped = run(*heads, max_instances=3)
    capped_row = [26000] * 4 + [7] * 4 + [26001] * 2 + [7] * 2 + [26001] * 4
    uncapped_row = [26000] * 4 + [7] * 4 + [26002] * 2 + [7] * 2 + [26001] * 4
    np.testing.assert_array_equal(capped.panoptic[0].numpy(), np.tile(capped_row, (2, 1)))
    np.testing.assert_array_equal(uncapped.panoptic[0].numpy(), np.tile(uncapped_row, (2, 1)))
    assert capped.instance_areas.tolist() == [8, 12]


def test_nan_attributes_mean_no_box_evidence_and_pixels_join_the_nearest_seed():
    # Every attribute NaN: each cell's box is its own point, IoU 0 with every seed, so every vote is a
    # near-tie and the nearest seed (by box centre) wins: seeds at x 1.5 and 6.5 split the row at x 4.
    attributes, box_logits, semantic = make_heads("AAAAAAAA AAAAAAAA", {"A": CAR},
                                                  seeds=[(1, 0, 0, 0.9), (6, 0, 0, 0.8)])
    attributes[:] = float("nan")
    out = run(attributes, box_logits, semantic)
    np.testing.assert_array_equal(out.panoptic[0].numpy(), np.tile([26000] * 4 + [26001] * 4, (2, 1)))
    assert out.nonfinite == 4 * 2 * 8


def test_nan_box_logits_mean_no_seed_and_the_fallback_seeds_the_class():
    # Every box logit NaN: probability 0, no seed anywhere; car A's pixels all predict the same box, so the
    # fallback makes one instance of score 0 from them.
    attributes, box_logits, semantic = make_heads(UNSUPPORTED, {"A": CAR}, seeds=[])
    box_logits[:] = float("nan")
    out = run(attributes, box_logits, semantic)
    assert out.instance_ids.tolist() == [26000] and out.instance_areas.tolist() == [24]
    assert out.instance_scores.tolist() == [0.0]
    assert out.nonfinite == 2 * 8 * 12


def test_finite_heads_report_no_nonfinite_values():
    assert run(*figure_1_heads()).nonfinite == 0


def test_a_batched_image_gets_the_same_instances_as_alone_when_the_top_k_cut_bites():
    # pre_nms_top_k 2 is below the candidates of each image, so the cut decides which seeds exist. It must cut
    # per image: a busy neighbour in the batch must not take an image's seeds (the multi-camera node batches
    # the cameras' frames and promises each camera the result of its frame alone).
    attributes, box_logits, logits, _ = random_heads(5, 2, 16, 20)
    kwargs = dict(thing_classes=THING_CLASSES, label_ids=LABEL_IDS, stride=2, box_threshold=0.3, pre_nms_top_k=2)
    batched = common_attribute_support(attributes, box_logits, semantic_logits=logits, **kwargs)
    for image in range(2):
        alone = common_attribute_support(attributes[image:image + 1], box_logits[image:image + 1],
                                         semantic_logits=logits[image:image + 1], **kwargs)
        assert torch.equal(batched.panoptic[image], alone.panoptic[0])
        mine = batched.instance_batch == image
        assert torch.equal(batched.instance_ids[mine], alone.instance_ids)
        assert alone.instance_ids.numel() >= 2  # the case is not trivial
