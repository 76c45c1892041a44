"""Edge cases of the post-processing stages (deeplab2 post-processor test style): the boundaries of each
stage's contract, on tiny hand-built tensors with the expected values written out.

Complements test_postprocess.py (whose scene helpers are reused) and test_postprocess_properties.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import casnet_core.postprocess.boxes as boxes_module
from casnet_core.postprocess.seeds import window_maxima
from casnet_core.postprocess.semantic import first_argmax
from casnet_core.postprocess import (
    LOGIT_BOUND,
    VOID_CHANNEL,
    PairStatistics,
    box_iou_pairwise,
    channel_tables,
    checked_semantic_channels,
    common_attribute_support,
    decode_boxes,
    fallback_seeds,
    find_seeds,
    instance_scores,
    mask_statistics,
    nms_per_group,
    number_instances,
    panoptic_map,
    pair_statistics,
    pieces,
    pixel_cells,
    pixel_values,
    sanitize_heads,
    sanitize_semantic_logits,
    select_seeds,
    thing_pairs,
    upsample_semantic,
    vote,
    vote_with_support,
)
from test_postprocess import (
    CAR,
    FIGURE_1_EXPECTED,
    LABEL_IDS,
    PAIR_SEMANTIC,
    PERSON,
    ROAD,
    THING_CLASSES,
    figure_1_heads,
    make_heads,
    one_hot_logits,
    run,
    single_pixel_pairs,
)

NAN, INF = float("nan"), float("inf")
BOUND = float(torch.tensor(LOGIT_BOUND, dtype=torch.float32))  # LOGIT_BOUND rounded as float32 logits hold it


# ----------------------------------------------------------------------------------------------
# heads: non-finite and out-of-range head outputs.
# ----------------------------------------------------------------------------------------------


def test_sanitize_heads_of_empty_and_single_value_heads():
    # An empty batch has nothing to count; a single NaN box logit (one-element tensor) is counted.
    attributes, box_prob, nonfinite = sanitize_heads(torch.zeros(0, 4, 2, 2), torch.zeros(0, 1, 2, 2))
    assert nonfinite == 0 and attributes.shape == (0, 4, 2, 2) and box_prob.shape == (0, 1, 2, 2)
    attributes, box_prob, nonfinite = sanitize_heads(torch.ones(1, 4, 1, 1), torch.tensor([NAN]).view(1, 1, 1, 1))
    assert nonfinite == 1
    assert box_prob.flatten().tolist() == [0.0]  # NaN: no evidence of a seed


class _HostReads(TorchDispatchMode):
    """Counts the host's reads of device values: `bool(t)`, `int(t)`, `.item()`, and the ops whose output shape
    depends on the values (nonzero, unique, masked_select). On a GPU each is a sync that stalls the launch
    queue, so the post-processing should make few, and none per instance."""

    READS = {"_local_scalar_dense", "nonzero", "masked_select", "_unique", "_unique2", "unique_dim",
             "unique_consecutive"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func.overloadpacket.__name__ in self.READS
        return func(*args, **(kwargs or {}))


def test_sanitizing_finite_heads_reads_the_device_once_per_function():
    # Finite heads, the usual case: one host read answers "all finite?" for both box heads together, one for
    # the semantic logits; the full counts are made only when that answer is no.
    attributes, box_logits, logits = torch.rand(1, 4, 8, 8), torch.randn(1, 3, 8, 8), torch.randn(1, 5, 8, 8)
    with _HostReads() as reads:
        assert sanitize_heads(attributes, box_logits)[2] == 0
    assert reads.count == 1
    with _HostReads() as reads:
        assert sanitize_semantic_logits(logits)[2] == 0
    assert reads.count == 1


def test_sanitize_heads_counts_each_head_on_its_own():
    # One NaN attribute and two infinite box logits: 3 in all; the finite box head's values are untouched by
    # the attributes' NaN, and the box probability of +inf is 1, of -inf 0.
    attributes = torch.ones(1, 4, 2, 2)
    attributes[0, 2, 1, 1] = NAN
    box_logits = torch.zeros(1, 1, 2, 2)
    box_logits[0, 0, 0, 0], box_logits[0, 0, 1, 0] = INF, -INF
    attributes, box_prob, nonfinite = sanitize_heads(attributes, box_logits)
    assert nonfinite == 3
    assert attributes[0, 2].tolist() == [[1.0, 1.0], [1.0, 0.0]]
    assert box_prob[0, 0].tolist() == [[1.0, 0.5], [0.0, 0.5]]


def test_sanitize_semantic_logits_of_empty_and_single_value_logits():
    logits, void_cells, nonfinite = sanitize_semantic_logits(torch.zeros(0, 3, 2, 2))
    assert logits.shape == (0, 3, 2, 2) and void_cells is None and nonfinite == 0
    # One class, one cell, NaN: no evidence at all, so the cell is void with a neutral logit 0.
    logits, void_cells, nonfinite = sanitize_semantic_logits(torch.tensor([NAN]).view(1, 1, 1, 1))
    assert nonfinite == 1 and void_cells.tolist() == [[[True]]] and logits.flatten().tolist() == [0.0]


def test_sanitize_semantic_logits_gives_each_value_its_meaning():
    # Cell 0: (-inf, 0): -inf is no evidence, so class 1 wins. Cell 1: (+inf, NaN): +inf is the bound, NaN
    # no evidence. Cell 2: finite values beyond the bound are clamped to it (-1e38 -> -BOUND, 1e38 -> BOUND).
    # Cell 3: every logit at -BOUND already (finite): no evidence for any class, so void, logits 0.
    logits = torch.tensor([[-INF, INF, -1e38, -BOUND], [0.0, NAN, 1e38, -BOUND]])[None, :, None, :]
    logits, void_cells, nonfinite = sanitize_semantic_logits(logits)
    assert nonfinite == 3
    assert void_cells.tolist() == [[[False, False, False, True]]]
    assert logits[0, :, 0].tolist() == [[-BOUND, BOUND, -BOUND, 0.0], [0.0, -BOUND, BOUND, 0.0]]


def test_finite_logits_at_the_bound_are_void_only_where_every_class_is_at_minus_the_bound():
    # A logit exactly at +BOUND is finite and already within the bound: nothing changes, nothing is void.
    logits = torch.tensor([BOUND, 0.0]).view(1, 2, 1, 1)
    out, void_cells, nonfinite = sanitize_semantic_logits(logits)
    assert out.flatten().tolist() == [BOUND, 0.0] and void_cells is None and nonfinite == 0
    # Both logits of the cell exactly -BOUND: void, although finite.
    out, void_cells, nonfinite = sanitize_semantic_logits(torch.full((1, 2, 1, 1), -BOUND))
    assert void_cells.tolist() == [[[True]]] and out.flatten().tolist() == [0.0, 0.0] and nonfinite == 0


# ----------------------------------------------------------------------------------------------
# semantic: upsampling, separated-mode channels and the channel tables.
# ----------------------------------------------------------------------------------------------


def test_void_cells_follow_the_input_scale():
    # Cells: class 0, void, class 1. With input_scale 2 at stride 1, output pixel x reads the grid at
    # 2x + 0.5: pixel 0 sits between cells 0 and 1 (weight 0.5 each, not more than half from the void
    # cell: class 0 wins its 10 against the neutral 0), pixel 1 between cells 2 and (clamped) 2: class 1.
    # Without the input scale the three pixels would be 0, void, 1.
    logits = torch.tensor([[10.0, NAN, 0.0], [0.0, NAN, 10.0]])[None, :, None, :]
    logits, void_cells, _ = sanitize_semantic_logits(logits)
    assert upsample_semantic(logits, 1, (1, 2), (1.0, 2.0), void_cells=void_cells).tolist() == [[[0, 1]]]


def dense_bilinear_argmax(logits, stride, output_size, input_scale=(1.0, 1.0)):
    """The argmax of the full bilinear interpolation, every pixel and class, in the term order of
    semantic._interpolate: what upsample_semantic's shortcuts must reproduce exactly."""
    from casnet_core.postprocess.semantic import _bilinear_sources
    _, _, h, w = logits.shape
    row0, row1, wy = _bilinear_sources(output_size[0], h, input_scale[0] / stride, logits.device)
    col0, col1, wx = _bilinear_sources(output_size[1], w, input_scale[1] / stride, logits.device)
    wy, wx = wy[:, None], wx[None, :]

    def at(rows, cols):
        return logits[:, :, rows][:, :, :, cols]

    top = (1 - wx) * at(row0, col0) + wx * at(row0, col1)
    bottom = (1 - wx) * at(row1, col0) + wx * at(row1, col1)
    return ((1 - wy) * top + wy * bottom).argmax(dim=1)


@pytest.mark.parametrize("stride, output_size, input_scale, noise", [
    (4, (64, 96), (1.0, 1.0), 0.5),  # blocky classes: few classes can win in a mixed block
    (4, (64, 96), (1.0, 1.0), 4.0),  # noisy: many can, the blocks with more than four go apart
    (4, (61, 93), (1.0, 1.0), 1.0),  # cropped
    (4, (97, 203), (64 / 97, 96 / 203), 1.0),  # resized: uneven blocks, cut into pieces
    (2, (40, 24), (1.0, 1.0), 1.0),
])
def test_upsampling_equals_the_dense_interpolation_exactly(stride, output_size, input_scale, noise):
    generator = torch.Generator().manual_seed(1)
    h, w = (16, 24) if input_scale != (1.0, 1.0) else (-(-output_size[0] // stride), -(-output_size[1] // stride))
    regions = torch.randint(0, 6, (2, 1, h // 3 + 1, w // 3 + 1), generator=generator)
    regions = regions.repeat_interleave(3, 2).repeat_interleave(3, 3)[:, :, :h, :w]
    logits = noise * torch.randn((2, 6, h, w), generator=generator)
    logits.scatter_add_(1, regions, torch.full(regions.shape, 3.0))
    logits[0, :, 0, 0] = logits[0, 0, 0, 0]  # a cell where every class ties: the first wins
    expected = dense_bilinear_argmax(logits, stride, output_size, input_scale)
    assert torch.equal(upsample_semantic(logits, stride, output_size, input_scale), expected)
    assert torch.equal(upsample_semantic(logits, stride, output_size, input_scale, chunk_pixels=7), expected)


def test_grid_pieces_cut_the_long_runs_of_a_clamped_border():
    # Stride 4 at scale 1: the first source row of output rows 0..5 is cell 0 (rows 0 and 1 clamp onto it), then
    # four rows per cell, and the last two rows read the last cell. The usual run (stride / scale) is 4 rows: cell 0
    # becomes two pieces (rows 0-3 and 4-5).
    first_row = torch.tensor([0] * 6 + [1] * 4 + [2] * 2)
    pieces_of_rows = pieces(first_row, 3, size=4)
    assert pieces_of_rows.size == 4
    assert pieces_of_rows.start.tolist() == [0, 4, 6, 10] and pieces_of_rows.length.tolist() == [4, 2, 4, 2]
    assert pieces_of_rows.first_of_cell.tolist() == [0, 2, 3] and pieces_of_rows.count_of_cell.tolist() == [2, 1, 1]


def test_window_maxima_are_where_max_pool_with_minus_infinity_outside_is_reached():
    generator = torch.Generator().manual_seed(0)
    values = torch.rand((2, 3, 7, 5), generator=generator)
    values[0, 0, 2, 2] = values[0, 0, 2, 3]  # equal neighbours: a tie is a maximum (>=), as with max_pool2d
    every_index = torch.arange(values.numel())
    for kernel in (1, 3, 5):
        expected = values >= torch.nn.functional.max_pool2d(values, kernel, stride=1, padding=kernel // 2)
        assert torch.equal(window_maxima(values, every_index, kernel), expected.flatten())


def test_first_argmax_takes_the_first_of_equal_maxima_as_torch_argmax():
    logits = torch.tensor([[[[1.0, 2.0]], [[3.0, 2.0]], [[3.0, 0.0]]]])  # (1, 3, 1, 2): ties at both pixels
    assert first_argmax(logits).tolist() == [[[1, 0]]] == logits.argmax(dim=1).tolist()


def test_upsampling_in_chunks_of_one_pixel_equals_the_unchunked_result():
    # Stride 2 over cells (class 0, class 1, class 0): output pixels at grid positions 0 (clamped), 0.25,
    # 0.75, 1.25, 1.75, 2.25 (reads cell 2 only): every pixel but the last reads cells of two classes, so
    # five pixels are interpolated, one per chunk here.
    logits = one_hot_logits(torch.tensor([[[0, 1, 0]]]), 4.0)
    expected = [[[0, 0, 1, 1, 0, 0]]]
    assert upsample_semantic(logits, 2, (1, 6)).tolist() == expected
    assert upsample_semantic(logits, 2, (1, 6), chunk_pixels=1).tolist() == expected


def test_checked_semantic_channels_rejects_shapes_that_do_not_fit():
    with pytest.raises(ValueError, match=r"^semantic \(1, 2, 3\): expected \(2, H, W\)$"):
        checked_semantic_channels(torch.zeros(1, 2, 3, dtype=torch.int64), 2, 3)
    with pytest.raises(ValueError, match=r"^semantic \(2, 3\): expected \(2, H, W\)$"):
        checked_semantic_channels(torch.zeros(2, 3, dtype=torch.int64), 2, 3)
    with pytest.raises(ValueError, match=r"^semantic \(1, 2, 3\) does not match output_size \(3, 2\)$"):
        checked_semantic_channels(torch.zeros(1, 2, 3, dtype=torch.int64), 1, 3, (3, 2))


def test_checked_semantic_channels_makes_every_value_outside_the_classes_void():
    # Three classes 0..2: -1 and 3 (the first channel beyond them) are void, 255 stays void. The result is int32;
    # 2**32 + 1 would wrap to class 1 if it were narrowed before the check: void.
    semantic = torch.tensor([[[-1, 0, 1], [2, 3, 255]]], dtype=torch.int32)
    checked = checked_semantic_channels(semantic, 1, 3, (2, 3))
    assert checked.dtype == torch.int32
    assert checked.tolist() == [[[VOID_CHANNEL, 0, 1], [2, VOID_CHANNEL, VOID_CHANNEL]]]
    huge = torch.tensor([[[2**32 + 1, 1]]], dtype=torch.int64)
    assert checked_semantic_channels(huge, 1, 3).tolist() == [[[VOID_CHANNEL, 1]]]


def test_channel_tables_are_int64_with_minus_1_beyond_the_things():
    # Things at channels 1 and 2 (car, person); channel 0 is stuff, 3..255 are beyond the classes.
    thing_of_channel, label_of_channel = channel_tables(torch.tensor([1, 2]), LABEL_IDS)
    assert thing_of_channel.dtype == torch.int64 and label_of_channel.dtype == torch.int64
    assert thing_of_channel[:4].tolist() == [-1, 0, 1, -1]
    assert thing_of_channel[4:].eq(-1).all()
    assert label_of_channel[:4].tolist() == [7, 26, 24, 0]
    assert label_of_channel[4:].eq(0).all()


# ----------------------------------------------------------------------------------------------
# maps: the panoptic map.
# ----------------------------------------------------------------------------------------------


def tables():
    return channel_tables(torch.tensor(THING_CLASSES), LABEL_IDS)


def panoptic_of(semantic, pair_ids, **kwargs):
    """panoptic_map at stride 1 (one cell per pixel), the pairs' ids given."""
    thing_of_channel, label_of_channel = tables()
    pairs = thing_pairs(semantic, torch.tensor(THING_CLASSES), 3, tuple(semantic.shape[1:]), stride=1)
    return panoptic_map(pairs, torch.tensor(pair_ids, dtype=torch.int64), label_of_channel, thing_of_channel, 3,
                        **kwargs)


def test_panoptic_map_keeps_stuff_by_default_and_exactly_at_stuff_area():
    # One image: 2 road pixels, 1 car pixel (the only pair) claimed by instance 26000, 1 void pixel. stuff_area 2:
    # road's 2 pixels are enough (>=), so road keeps its label id 7 (panoptic is the default mode).
    semantic = torch.tensor([[[ROAD, ROAD], [CAR, VOID_CHANNEL]]])
    out = panoptic_of(semantic, [26000], stuff_area=2)
    assert out.dtype == torch.int32
    assert out.tolist() == [[[7, 7], [26000, 0]]]
    assert panoptic_of(semantic, [26000], stuff_area=3).tolist() == [[[0, 0], [26000, 0]]]


def test_panoptic_map_thing_pixels_no_instance_claims_are_void():
    # Car (thing 0) and person (thing 1) pixels that no instance claims (id 0) are never stuff: 0, not 26 / 24.
    assert panoptic_of(torch.tensor([[[ROAD, CAR, PERSON]]]), [0, 0], stuff_area=1).tolist() == [[[7, 0, 0]]]


@pytest.mark.parametrize("batch", [2, 3])
def test_panoptic_map_decides_the_stuff_area_per_image(batch):
    # Image 0 has 1 road pixel, image 1 has 3 (image 2, if any, 2): with stuff_area 2 only the road of
    # image 0 is void. Each image is decided on its own pixels, not on the batch's. The pairs, in key order: the
    # cars of image 0 (columns 1, 2), then the car of image 2.
    semantic = torch.tensor([[[ROAD, CAR, CAR]], [[ROAD, ROAD, ROAD]], [[ROAD, ROAD, CAR]]])[:batch]
    out = panoptic_of(semantic, [26000, 26001, 26000][: 2 * batch - 2], stuff_area=2)
    expected = [[[0, 26000, 26001]], [[7, 7, 7]], [[7, 7, 26000]]]
    assert out.tolist() == expected[:batch]


# ----------------------------------------------------------------------------------------------
# pairs: the cell of each pixel.
# ----------------------------------------------------------------------------------------------


def test_pixel_cells_take_each_axis_scale_on_its_own():
    # input_scale (sy, sx) = (2, 1), stride 4: row y sits at 2y + 1 (cells 0, 0, 1, 1), column x at x + 0.5
    # (cell 0 for x < 4).
    rows, cols = pixel_cells((4, 4), (2, 2), 4, (2.0, 1.0))
    assert rows.tolist() == [0, 0, 1, 1] and cols.tolist() == [0, 0, 0, 0]
    rows, cols = pixel_cells((4, 4), (2, 2), 4, (1.0, 2.0))
    assert rows.tolist() == [0, 0, 0, 0] and cols.tolist() == [0, 0, 1, 1]


# ----------------------------------------------------------------------------------------------
# seeds: candidates above the threshold, local maxima, the cut before NMS.
# ----------------------------------------------------------------------------------------------


def one_row_seeds(probabilities, **kwargs):
    """find_seeds on one image, one class, a 1 x n grid whose cell j decodes the box of its own cell
    [j, 0, j + 1, 1] (disjoint boxes: NMS removes nothing). Returns (cells, scores) of the seeds."""
    n = len(probabilities)
    box_prob = torch.tensor(probabilities).view(1, 1, 1, n)
    j = torch.arange(n, dtype=torch.float32)
    cell_boxes = torch.stack((j, torch.zeros(n), j + 1, torch.ones(n))).view(1, 4, 1, n)
    group, cell, boxes, scores = find_seeds(box_prob, cell_boxes, **kwargs)
    assert group.eq(0).all() and boxes[:, 0].tolist() == cell.float().tolist()
    return cell.tolist(), scores.tolist()


def test_seeds_need_a_probability_above_the_threshold_and_a_local_maximum():
    # Probabilities (exact in binary): 0.5 at cell 0 is at the threshold, not above: no seed. Cells 3 and 5
    # are local maxima of the 3-wide window; the 5-wide window sees 0.875 from cell 3, so only 5 is left.
    probabilities = [0.5, 0.0, 0.0, 0.75, 0.0, 0.875, 0.0]
    assert one_row_seeds(probabilities, box_threshold=0.5) == ([5, 3], [0.875, 0.75])
    assert one_row_seeds(probabilities, box_threshold=0.5, nms_kernel=5) == ([5], [0.875])
    # Without the window (kernel 1) cell 0 still is at the threshold; a lower threshold takes it.
    assert one_row_seeds(probabilities, box_threshold=0.25, nms_kernel=1) == ([5, 3, 0], [0.875, 0.75, 0.5])


def test_pre_nms_top_k_keeps_the_best_candidates_of_the_image():
    probabilities = [0.5, 0.0, 0.0, 0.75, 0.0, 0.875, 0.0]
    assert one_row_seeds(probabilities, box_threshold=0.25, pre_nms_top_k=2) == ([5, 3], [0.875, 0.75])
    assert one_row_seeds(probabilities, box_threshold=0.25, pre_nms_top_k=1) == ([5], [0.875])


def test_fallback_cut_adds_no_pixel_box_to_a_group_it_already_represents():
    # One seedless group, two pixel boxes of equal score 0.3 (disjoint); top_k 1 keeps one of them. The
    # group is represented, so its other best box does not join: one fallback seed, not two.
    boxes = torch.tensor([[0, 0, 4, 4], [10, 0, 14, 4.0]])
    groups, new_boxes, scores = fallback_seeds(boxes, torch.tensor([0, 0]), torch.tensor([0.3, 0.3]),
                                               torch.zeros(0, dtype=torch.int64), 1, top_k=1)
    assert groups.tolist() == [0] and scores.tolist() == pytest.approx([0.3])
    assert new_boxes.tolist() in ([[0, 0, 4, 4]], [[10, 0, 14, 4]])


def test_select_seeds_caps_every_image_on_its_own_seeds():
    # Two images, one class (K = 1): groups 0 and 1 are the images. max_instances 2 keeps both seeds of
    # each image; 1 keeps the best of each.
    groups, scores = torch.tensor([0, 0, 1, 1]), torch.tensor([0.9, 0.8, 0.7, 0.6])
    has_pixels = torch.tensor([True, True])
    assert select_seeds(groups, scores, has_pixels, 1, max_instances=2).tolist() == [0, 1, 2, 3]
    assert select_seeds(groups, scores, has_pixels, 1, max_instances=1).tolist() == [0, 2]


def test_select_seeds_keeps_equal_scores_in_input_order():
    # 20 seeds of one class with the same score (enough for torch's unstable sort to reorder them): the
    # order is the input order, and the cap of 5 keeps the first 5.
    groups, scores, has_pixels = torch.zeros(20, dtype=torch.int64), torch.full((20,), 0.5), torch.tensor([True])
    assert select_seeds(groups, scores, has_pixels, 1).tolist() == list(range(20))
    assert select_seeds(groups, scores, has_pixels, 1, max_instances=5).tolist() == [0, 1, 2, 3, 4]
    # Two classes alternating, equal scores, cap 4: each class's first seed (0, 1), then the next ones in
    # the sorted order (by class, then input order): cars 2 and 4. Output by class.
    groups = torch.tensor([0, 1] * 10)
    assert select_seeds(groups, scores, torch.tensor([True, True]), 2, max_instances=4).tolist() == [0, 2, 4, 1]


# ----------------------------------------------------------------------------------------------
# boxes: IoU.
# ----------------------------------------------------------------------------------------------


def test_box_iou_pairwise_of_offset_disjoint_and_thin_boxes():
    # Box [1, 2, 3, 6] (2 x 4, area 8) against: [2, 4, 6, 5] (area 4, overlap 1 x 1): 1 / 11; [5, 2, 7, 6]
    # (disjoint in x): 0; the thin box [1, 2, 1.5, 2.25] (0.5 x 0.25, inside it): 0.125 / 8 = 1 / 64. The
    # thin box against the big one (arguments swapped): 1 / 64 too.
    big, thin = [1, 2, 3, 6], [1, 2, 1.5, 2.25]
    boxes = torch.tensor([big, big, big, thin])
    others = torch.tensor([[2, 4, 6, 5], [5, 2, 7, 6], thin, big])
    assert box_iou_pairwise(boxes, others).tolist() == pytest.approx([1 / 11, 0.0, 1 / 64, 1 / 64], rel=1e-6)
    # Broadcast: every box against every other, (4, 1, 4) x (1, 4, 4) -> (4, 4), 1 on the diagonal.
    assert torch.diagonal(box_iou_pairwise(others[:, None], others[None])).tolist() == [1.0, 1.0, 1.0, 1.0]


# ----------------------------------------------------------------------------------------------
# voting: voters without an alive seed.
# ----------------------------------------------------------------------------------------------

VOTER_BOXES = torch.tensor([[0, 0, 2, 2], [4, 0, 8, 2.0]])


def test_voters_of_a_group_without_alive_seeds_get_minus_1():
    # Voter 0 is in group 0, voter 1 in group 1 (the last group), which has no seed: -1.
    chosen = vote(VOTER_BOXES, torch.tensor([0, 1]), VOTER_BOXES, torch.tensor([0, 0]), torch.tensor([True, True]), 2)
    assert chosen.tolist() == [0, -1]
    # No alive seed at all: every voter gets -1.
    chosen = vote(VOTER_BOXES, torch.tensor([0, 1]), VOTER_BOXES, torch.tensor([0, 1]), torch.tensor([False, False]), 2)
    assert chosen.dtype == torch.int64 and chosen.tolist() == [-1, -1]
    # No group at all (an empty batch): nothing to vote.
    none = torch.zeros(0, dtype=torch.int64)
    chosen = vote(torch.zeros(0, 4), none, torch.zeros(0, 4), none, torch.zeros(0, dtype=torch.bool), 0)
    assert chosen.dtype == torch.int64 and chosen.shape == (0,)


def test_voters_in_any_order_get_the_seeds_they_get_in_group_order():
    # The vote runs group by group over the voters sorted by group; voters given out of order get the same seeds.
    # Voters 0 and 2 (group 1) decode the boxes of seeds 2 and 3, voter 1 (group 0) the box of seed 1.
    seed_boxes = torch.tensor([[0, 0, 2, 2], [0, 0, 4, 2], [4, 0, 8, 2], [4, 0, 6, 2.0]])
    seed_groups = torch.tensor([0, 0, 1, 1])
    voters = torch.tensor([[4, 0, 8, 2], [0, 0, 4, 2], [4, 0, 6, 2.0]])
    alive = torch.ones(4, dtype=torch.bool)
    chosen = vote(voters, torch.tensor([1, 0, 1]), seed_boxes, seed_groups, alive, 2)
    assert chosen.tolist() == [2, 1, 3]
    in_order = vote(voters[[1, 0, 2]], torch.tensor([0, 1, 1]), seed_boxes, seed_groups, alive, 2)
    assert in_order.tolist() == [1, 2, 3]


def test_a_voter_picks_among_the_seeds_of_its_group_when_another_group_has_more():
    # Group 0 has 3 seeds, group 1 two (its row of the seed table is padded). The voter of group 1 decodes
    # [0, 10] x [0, 1]: IoU 0.5 with seed 4 ([0, 5]) and 1/19 with seed 3 ([9, 19]): seed 4, whatever the
    # padding.
    seed_boxes = torch.tensor([[100, 0, 101, 1], [102, 0, 103, 1], [104, 0, 105, 1], [9, 0, 19, 1], [0, 0, 5, 1.0]])
    chosen = vote(torch.tensor([[0, 0, 10, 1.0]]), torch.tensor([1]), seed_boxes, torch.tensor([0, 0, 0, 1, 1]),
                  torch.ones(5, dtype=torch.bool), 2)
    assert chosen.tolist() == [4]


def test_seeds_at_exactly_min_area_stay_and_the_re_vote_keeps_the_tie_margin():
    # One group, 1-pixel-high boxes. Seeds S0 [0, 8], S1 [1.1, 8.9], S2 [0, 10]. Voters: q [0, 8] (3 pixels)
    # joins S0, r [1.1, 8.9] (2 pixels) joins S1, p [0, 10] (1 pixel) joins S2. min_area 2: S1 has exactly
    # 2 pixels and stays; S2 goes and p re-votes: IoU 0.8 with S0, 0.78 with S1. With tie_margin 0 that is
    # no near-tie, so S0 (with the default 0.05 it would be, and S1's centre, nearer to p's, would win).
    boxes = torch.tensor([[0, 0, 8, 1], [1.1, 0, 8.9, 1], [0, 0, 10, 1]])
    pair_seed, area, alive = vote_with_support(boxes, torch.tensor([0, 0, 0]), torch.tensor([3, 2, 1]), boxes,
                                               torch.tensor([0, 0, 0]), 1, min_area=2, tie_margin=0.0)
    assert pair_seed.tolist() == [0, 1, 0]
    assert area.tolist() == [4, 2, 0]
    assert alive.tolist() == [True, True, False]


# ----------------------------------------------------------------------------------------------
# instances: numbering, scores and statistics.
# ----------------------------------------------------------------------------------------------


def test_instance_score_of_a_one_pixel_instance_is_its_class_probability_times_its_seed_score():
    # Seed 0 supports 1 pixel of class probability 0.5, seed 1 three pixels (pairs of 1 and 2 pixels, class
    # probabilities 0.25 and 1.0: mean (0.25 + 2) / 3 = 0.75).
    scores = instance_scores(torch.tensor([0.8, 0.4]), torch.tensor([0, 1]), torch.tensor([0, 1, 1]),
                             torch.tensor([1, 1, 2]), torch.tensor([0.5, 0.25, 1.0]))
    assert scores.dtype == torch.float32
    assert scores.tolist() == pytest.approx([0.4, 0.3], rel=1e-6)


def test_mask_statistics_of_instances_without_pixels():
    # Instance 1, the last one, has no pixel: it still has its row, of area 0 (centroid: the 0.5 offset).
    areas, boxes, centroids = mask_statistics(torch.tensor([0]), single_pixel_pairs([3], [1]), 2)
    assert areas.tolist() == [1, 0]
    assert boxes.shape == (2, 4) and boxes[0].tolist() == [3, 1, 4, 2]
    assert centroids.tolist() == [[3.5, 1.5], [0.5, 0.5]]
    areas, boxes, centroids = mask_statistics(torch.zeros(0, dtype=torch.int64), single_pixel_pairs([], []), 0)
    assert areas.shape == (0,) and boxes.shape == (0, 4) and centroids.shape == (0, 2)


# ----------------------------------------------------------------------------------------------
# Every stage runs on the device of its inputs, whatever torch's default device and dtype.
# ----------------------------------------------------------------------------------------------


def stage_inputs():
    """Figure 1 of the paper, from semantic logits (with a void cell) and separated (a batch of 2), and small
    inputs of the instance stages."""
    attributes, box_logits, semantic = figure_1_heads()
    logits = one_hot_logits(semantic, 4.0)
    logits[0, :, 7, 11] = float("nan")  # a road corner cell without evidence: void
    return {
        "attributes": attributes, "box_logits": box_logits, "semantic": semantic, "logits": logits,
        "batch_attributes": attributes.repeat(2, 1, 1, 1), "batch_box_logits": box_logits.repeat(2, 1, 1, 1),
        "batch_semantic": semantic.repeat(2, 1, 1), "thing_channels": torch.tensor(THING_CLASSES),
        "alive": torch.tensor([True, False, True]), "seed_groups": torch.tensor([0, 0, 1]),
        "label_of_thing": torch.tensor([26, 24]), "seed_scores": torch.tensor([0.8, 0.4]),
        "instance_seed": torch.tensor([0, 1]), "pair_seed": torch.tensor([0, 1, 1]),
        "pair_pixels": torch.tensor([1, 1, 2]), "pair_prob": torch.tensor([0.5, 0.25, 1.0]),
        "pair_instance": torch.tensor([0, 0, 1]), "pair_x": torch.tensor([0, 1, 5]),
        "pair_y": torch.tensor([0, 2, 3]), "pair_semantic": PAIR_SEMANTIC,
        "pair_ids": torch.tensor([26000, 24000, 24001]), "channel_values": torch.tensor([[7, -1, -1, 0]]),
        "pair_boxes": torch.tensor([[0, 0, 2, 2], [0, 0, 4, 2], [4, 0, 8, 2.0]]),
        "pair_groups": torch.tensor([0, 0, 1]), "vote_pixels": torch.tensor([3, 1, 2]),
        "seed_boxes": torch.tensor([[0, 0, 2, 2], [0, 0, 4, 2], [4, 0, 8, 2.0]]),
        "vote_seed_groups": torch.tensor([0, 0, 1]), "seed_alive": torch.tensor([True, True, True]),
        "select_groups": torch.tensor([0, 0, 1, 0, 2, 3, 1]),
        "select_scores": torch.tensor([0.9, 0.8, 0.3, 0.7, 0.6, 0.5, 0.2]),
        "has_pixels": torch.tensor([True, True, True, False]),
    }


def run_pipeline(t: dict) -> list[torch.Tensor]:
    kwargs = {"thing_classes": THING_CLASSES, "label_ids": LABEL_IDS, "stride": 1, "stuff_area": 1, "min_area": 1}
    from_logits = common_attribute_support(t["attributes"], t["box_logits"], semantic_logits=t["logits"], **kwargs)
    separated = common_attribute_support(t["batch_attributes"], t["batch_box_logits"], semantic=t["batch_semantic"],
                                         max_instances=1, **kwargs)
    return [from_logits.panoptic, from_logits.instance_scores, from_logits.instance_boxes, separated.panoptic,
            separated.instance_ids]


def run_stages(t: dict) -> list[torch.Tensor]:
    logits, void_cells, _ = sanitize_semantic_logits(t["logits"])
    semantic = upsample_semantic(logits, 2, (16, 24), (1.0, 1.0), void_cells=void_cells)
    thing_of_channel, label_of_channel = channel_tables(t["thing_channels"], LABEL_IDS)
    separated = checked_semantic_channels(t["batch_semantic"], 2, 3)
    separated_pairs = thing_pairs(separated, t["thing_channels"], 3, (8, 12), stride=1)
    # Every pair claimed, by an id made from its key (so that it stays on the inputs' device).
    panoptic = panoptic_map(separated_pairs, separated_pairs.pair_key + 26000, label_of_channel, thing_of_channel, 3,
                            stuff_area=1)
    instance_seed, ids = number_instances(t["alive"], t["seed_groups"], 2, t["label_of_thing"])
    scores = instance_scores(t["seed_scores"], t["instance_seed"], t["pair_seed"], t["pair_pixels"], t["pair_prob"])
    x, y = t["pair_x"], t["pair_y"]
    statistics = mask_statistics(t["pair_instance"], PairStatistics(torch.ones_like(x), x, y, x, y, x + 1, y + 1), 2)
    pairs = thing_pairs(t["pair_semantic"], t["thing_channels"], 3, (1, 2), stride=2)
    pair_stats = pair_statistics(pairs, stride=2)
    pair_ids = pixel_values(pairs, t["pair_ids"], t["channel_values"])
    chosen = vote(t["pair_boxes"], t["pair_groups"], t["seed_boxes"], t["vote_seed_groups"], t["seed_alive"], 3)
    supported = vote_with_support(t["pair_boxes"], t["pair_groups"], t["vote_pixels"], t["seed_boxes"],
                                  t["vote_seed_groups"], 3, min_area=2)
    selected = select_seeds(t["select_groups"], t["select_scores"], t["has_pixels"], 2, max_instances=2)
    no_seed = vote(t["pair_boxes"], t["pair_groups"], t["seed_boxes"], t["vote_seed_groups"], ~t["seed_alive"], 3)
    cell_boxes = decode_boxes(t["attributes"], 2)
    no_box = nms_per_group(t["pair_boxes"][:0], t["seed_scores"][:0], t["pair_groups"][:0], 0.5)
    return [logits, void_cells, semantic, thing_of_channel, label_of_channel, separated, panoptic, instance_seed, ids,
            scores, *statistics, chosen, *supported, selected, no_seed, cell_boxes, no_box,
            pairs.pixel_key, pairs.pair_key, pairs.pair_pixels, pairs.channel_pixels, *pair_stats, pair_ids]


def assert_same_outputs(expected, got):
    assert len(got) == len(expected)
    for want, have in zip(expected, got):
        assert have.device == want.device and have.dtype == want.dtype
        assert torch.equal(have, want)


def outputs(out) -> list[torch.Tensor]:
    return [value for value in dataclasses.asdict(out).values() if isinstance(value, torch.Tensor)]


def test_stage_results_hold_on_the_scene():
    # What the device and dtype tests below compare, on its own: figure 1 from logits with a void cell ...
    expected_pipeline, expected = run_pipeline(stage_inputs()), run_stages(stage_inputs())
    np.testing.assert_array_equal(expected_pipeline[0][0, :7].numpy(), FIGURE_1_EXPECTED[:7])
    assert expected_pipeline[0][0, 7, 11] == 0  # the void cell
    # ... and separated, capped at 1 instance per image: A, the best seed; B's pixels re-vote for it.
    assert expected_pipeline[4].tolist() == [26000, 26000]
    assert expected[2][0, 14:, 22:].tolist() == [[VOID_CHANNEL] * 2] * 2  # the void cell, 2x2 pixels
    # Pixels 13 and 14 are car pixels of both images (stride 1: a pair each, keys 13, 14 and 2 * 96 + 13, + 14).
    assert expected[6].view(2, -1)[:, 13:15].tolist() == [[26013, 26014], [26205, 26206]]
    assert expected[8].tolist() == [26000, 24000]
    assert expected[13].tolist() == [0, 1, 2]  # vote: each pair's own box is a seed box
    # vote_with_support, min_area 2: seed 1 holds 1 pixel and goes; its pair re-votes for seed 0.
    assert [r.tolist() for r in expected[14:17]] == [[0, 0, 2], [4, 0, 2], [True, False, True]]
    assert expected[17].tolist() == [0, 2, 4]  # select_seeds, as in test_postprocess.py
    assert expected[18].tolist() == [-1, -1, -1]  # vote without alive seeds
    assert expected[19].dtype == torch.float32
    # decode_boxes at stride 2: cell (row 1, column 0) sits at (1, 3); A's attributes there are
    # (l, t, r, b) = (0.5, 0.5, 6.5, 6.5), times the stride: A's box doubled.
    assert expected[19][0, :, 1, 0].tolist() == [0.0, 2.0, 14.0, 16.0]
    assert expected[20].dtype == torch.int64 and expected[20].shape == (0,)  # NMS of no box keeps none
    # The pairs of the hand-built thing map (test_postprocess.py), their statistics and ids on the pixels.
    assert expected[23].tolist() == [3, 1, 3] and expected[25].tolist() == [3, 1, 3]  # pair pixels, areas
    assert expected[32].tolist() == [[[26000, 26000, 24001, 7], [26000, 24000, 24001, 24001]]]


def test_stages_follow_the_dtype_of_their_inputs_not_torchs_default():
    # torch's default dtype float64: a float tensor made without a dtype would change the results' dtypes.
    inputs = stage_inputs()
    expected_pipeline, expected = run_pipeline(inputs), run_stages(inputs)
    # Two cars without seed in one image, cut to one pixel box by pre_nms_top_k: the fallback's group_best
    # (found by this test: it was made without a dtype, and scatter_reduce failed on float64 vs float32).
    cut = make_heads(TWO_CARS, {"A": CAR, "B": CAR}, seeds=[(0, 0, 0, 0.2), (4, 0, 0, 0.1)])
    expected_cut = car_ids(run(*cut, pre_nms_top_k=1))
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got_pipeline, got = run_pipeline(inputs), run_stages(inputs)
        got_cut = car_ids(run(*cut, pre_nms_top_k=1))
    finally:
        torch.set_default_dtype(default_dtype)
    assert_same_outputs(expected_pipeline + expected, got_pipeline + got)
    assert got_cut == expected_cut == [[26000, 26000, 7, 7, 26000, 26000]]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_void_cells_upsample_alike_in_every_float_dtype(dtype):
    # Cells (class 0, void, class 1) at stride 2: each half-way pixel takes more than half of its weight from
    # its nearer cell. In float16 the void bound used to overflow to inf, and 0 * inf = NaN won the argmax.
    logits = torch.tensor([[[[2.0, 0.0, -1.0]], [[-1.0, 0.0, 2.0]]]], dtype=dtype)
    void_cells = torch.tensor([[[False, True, False]]])
    semantic = upsample_semantic(logits, 2, (1, 6), void_cells=void_cells)
    assert semantic[0, 0].tolist() == [0, 0, VOID_CHANNEL, VOID_CHANNEL, 1, 1]


def test_stages_run_on_the_device_of_their_inputs_not_torchs_default(monkeypatch):
    # torch's default device is another one (meta: no data): a tensor made without following the inputs
    # would land there. torchvision's batched_nms itself makes a tensor on the default device (its
    # coordinate trick), so it alone runs with the CPU as default.
    def cpu_batched_nms(*args, **kwargs):
        with torch.device("cpu"):
            return batched_nms(*args, **kwargs)

    batched_nms = boxes_module.batched_nms
    monkeypatch.setattr(boxes_module, "batched_nms", cpu_batched_nms)
    inputs = stage_inputs()
    # A third scene: no box probability above the threshold and pre_nms_top_k 1: the fallback's cut bites.
    attributes, box_logits, semantic = figure_1_heads()
    cut = {"semantic": semantic, "pre_nms_top_k": 1, "box_threshold": 0.95}
    expected = run_pipeline(inputs) + run_stages(inputs) + outputs(run(attributes, box_logits, **cut))
    with torch.device("meta"):
        got = run_pipeline(inputs) + run_stages(inputs) + outputs(run(attributes, box_logits, **cut))
    assert_same_outputs(expected, got)


# ----------------------------------------------------------------------------------------------
# support: the arguments reach their stages.
# ----------------------------------------------------------------------------------------------

TWO_CARS = """
AA..BB
AA..BB
"""


def car_ids(out) -> list[list[int]]:
    return out.panoptic[:, 0].tolist()  # the first row of each image tells the instances apart


def test_default_stride_is_4():
    # One cell of road logits: at the default stride 4 the output is 4 x 4 pixels of road.
    out = common_attribute_support(torch.zeros(1, 4, 1, 1), torch.full((1, 2, 1, 1), -10.0),
                                   semantic_logits=torch.tensor([5.0, 0.0, 0.0]).view(1, 3, 1, 1),
                                   thing_classes=THING_CLASSES, label_ids=LABEL_IDS, stuff_area=1)
    assert out.panoptic.tolist() == [[[7] * 4] * 4]
    # The semantic output holds label ids as uint8 (the channels are in semantic_channels).
    assert out.semantic.dtype == torch.uint8 and out.semantic.tolist() == [[[7] * 4] * 4]
    assert out.semantic_channels.tolist() == [[[ROAD] * 4] * 4]


def test_seed_thresholds_reach_find_seeds():
    # Two cars with seeds 0.9 (A) and 0.2 (B): at box_threshold 0.1 both are seeds; at the default 0.3 only
    # A, and B's pixels join A (cars have a seed, so no fallback).
    heads = make_heads(TWO_CARS, {"A": CAR, "B": CAR}, seeds=[(0, 0, 0, 0.9), (4, 0, 0, 0.2)])
    assert car_ids(run(*heads, box_threshold=0.1)) == [[26000, 26000, 7, 7, 26001, 26001]]
    assert car_ids(run(*heads)) == [[26000, 26000, 7, 7, 26000, 26000]]
    # Seeds 0.9 and 0.8: pre_nms_top_k 1 keeps only A's.
    heads = make_heads(TWO_CARS, {"A": CAR, "B": CAR}, seeds=[(0, 0, 0, 0.9), (4, 0, 0, 0.8)])
    assert car_ids(run(*heads)) == [[26000, 26000, 7, 7, 26001, 26001]]
    assert car_ids(run(*heads, pre_nms_top_k=1)) == [[26000, 26000, 7, 7, 26000, 26000]]


def test_nms_kernel_reaches_find_seeds():
    # Touching cars, seeds in adjacent cells (0.9 at x 1 for A, 0.8 at x 2 for B): the default 3-wide window
    # leaves only A's; kernel 1 keeps both.
    heads = make_heads("AABB AABB", {"A": CAR, "B": CAR}, seeds=[(1, 0, 0, 0.9), (2, 0, 0, 0.8)])
    assert car_ids(run(*heads)) == [[26000] * 4]
    assert car_ids(run(*heads, nms_kernel=1)) == [[26000, 26000, 26001, 26001]]


@pytest.mark.parametrize("probabilities", [(0.9, 0.8), (0.25, 0.2)], ids=["seeds", "fallback"])
def test_nms_iou_reaches_find_seeds_and_the_fallback(probabilities):
    # A predicts [0, 0, 4, 2], B [2, 0, 6, 2]: IoU 4 / 12 = 1/3. NMS at the default 0.4 keeps both seed
    # boxes, at 0.3 it removes B's and B's pixels join A; the same for the fallback's pixel boxes (no
    # probability above the threshold).
    heads = make_heads(TWO_CARS, {"A": CAR, "B": CAR}, seeds=[(0, 0, 0, probabilities[0]), (4, 0, 0, probabilities[1])],
                       predicted_boxes={"A": (0, 0, 4, 2), "B": (2, 0, 6, 2)})
    assert car_ids(run(*heads)) == [[26000, 26000, 7, 7, 26001, 26001]]
    assert car_ids(run(*heads, nms_iou=0.3)) == [[26000, 26000, 7, 7, 26000, 26000]]


def test_the_fallback_cut_is_per_image():
    # Two images of two cars without seed (fallback): box probabilities 0.2 / 0.1 in image 0 and
    # 0.25 / 0.15 in image 1. pre_nms_top_k 2 keeps the 2 best pixel boxes of each image, so both images
    # keep both cars (a cut over the batch would keep image 1's two and only A of image 0). pre_nms_top_k 1
    # leaves one car per image.
    first = make_heads(TWO_CARS, {"A": CAR, "B": CAR}, seeds=[(0, 0, 0, 0.2), (4, 0, 0, 0.1)])
    second = make_heads(TWO_CARS, {"A": CAR, "B": CAR}, seeds=[(0, 0, 0, 0.25), (4, 0, 0, 0.15)])
    heads = [torch.cat(pair) for pair in zip(first, second)]
    assert car_ids(run(*heads, pre_nms_top_k=2)) == [[26000, 26000, 7, 7, 26001, 26001]] * 2
    assert car_ids(run(*heads, pre_nms_top_k=1)) == [[26000, 26000, 7, 7, 26000, 26000]] * 2


def test_a_seed_of_a_class_without_pixels_takes_no_place_in_the_cap():
    # Cars A (0.9) and B (0.8), and a person seed (0.95) on the road: nobody votes for it, so it is dropped
    # before max_instances 2 keeps the two cars.
    heads = make_heads(TWO_CARS, {"A": CAR, "B": CAR}, seeds=[(0, 0, 0, 0.9), (4, 0, 0, 0.8), (2, 0, 1, 0.95)])
    out = run(*heads, max_instances=2)
    assert car_ids(out) == [[26000, 26000, 7, 7, 26001, 26001]]
    assert out.instance_classes.tolist() == [CAR, CAR]


def test_common_attribute_support_rejects_inputs_that_do_not_fit():
    attributes, box_logits, semantic = make_heads(TWO_CARS, {"A": CAR, "B": CAR}, seeds=[(0, 0, 0, 0.9)])
    logits = one_hot_logits(semantic, 4.0)
    with pytest.raises(ValueError, match=r"^give exactly one of semantic_logits and semantic$"):
        run(attributes, box_logits, semantic, semantic_logits=logits)
    with pytest.raises(ValueError, match=r"^attributes \(1, 4, 2, 5\) do not match box_logits \(1, 2, 2, 6\)$"):
        run(attributes[..., :5], box_logits, semantic)
    with pytest.raises(ValueError, match=r"^1 thing classes for 2 box-probability channels$"):
        common_attribute_support(attributes, box_logits, semantic=semantic, thing_classes=(CAR,), label_ids=LABEL_IDS)
    with pytest.raises(ValueError, match=r"^semantic_logits \(2, 3, 2, 6\): expected \(1, 3, \.\.\.\)$"):
        run(attributes, box_logits, None, semantic_logits=logits.repeat(2, 1, 1, 1))
    with pytest.raises(ValueError, match=r"^semantic \(1, 2, 6\) does not match output_size \(2, 5\)$"):
        run(attributes, box_logits, semantic, output_size=(2, 5))


def test_bilinear_positions_are_exact_where_float32_would_round():
    # Stride 7, scale 1: output pixel 10 reads position (10 + 0.5) / 7 - 0.5 = 1.0 exactly, cell 1 alone. In
    # float32 (PyTorch's F.interpolate) the position is 1.0000001, and cell 2 gets a weight of ~1e-7. Cells
    # (class 0 ahead by 1), (an exact tie), (class 1 ahead by 1): cell 1's tie goes to the first class, 0; the
    # float32 weight on cell 2 would tip pixel 10 to class 1.
    logits = torch.tensor([[[[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]]]])
    assert upsample_semantic(logits, 7, (1, 21))[0, 0, 10].item() == 0


def _cars_in_a_row(count: int) -> dict[str, torch.Tensor]:
    """Panoptic-mode heads (stride 4, the targets' own values) of ``count`` 12x12 cars in a row on road, each
    in its own 16-pixel column: ``count`` instances, separate and easy."""
    from casnet_core.labels import class_space
    from casnet_core.targets import build_targets

    label_ids = np.full((32, 16 * count), 7, dtype=np.uint8)  # road
    instance_ids = label_ids.astype(np.int32)
    for k in range(count):
        label_ids[8:20, 16 * k + 2:16 * k + 14] = 26  # car
        instance_ids[8:20, 16 * k + 2:16 * k + 14] = 26000 + k
    targets = build_targets(label_ids, instance_ids, mode="panoptic", stride=4)
    semantic = torch.from_numpy(targets["semantic"]).long()
    num_classes = class_space("panoptic").num_classes
    logits = torch.nn.functional.one_hot(semantic.clamp(max=num_classes - 1), num_classes).permute(2, 0, 1) * 10.0
    box_prob = torch.from_numpy(targets["box_prob"]) * 0.9 + 0.05
    return {"attributes": torch.from_numpy(targets["attributes"])[None], "box_logits": torch.logit(box_prob)[None],
            "semantic_logits": logits[None].float()}


def test_host_reads_of_the_post_processing_do_not_grow_with_the_instances():
    # Each host read of a device value is a sync on a GPU; a read per seed or per instance (a Python loop over
    # them) would make the post-processing slower with every car in view. 2 cars and 12 cars: the same reads.
    from casnet_core.labels import class_space

    space = class_space("panoptic")
    reads, found = [], []
    for count in (2, 12):
        heads = _cars_in_a_row(count)
        with _HostReads() as counter:
            out = common_attribute_support(**heads, thing_classes=space.thing_classes, label_ids=space.label_ids,
                                           stride=4, min_area=16, stuff_area=16)
        reads.append(counter.count)
        found.append(len(out.instance_ids))
    assert found == [2, 12]
    assert reads[0] == reads[1]
