"""Stage 2: the thing pixels grouped into (image, class, cell) pairs, the voters of :mod:`.voting`.

Resolution. Semantics are decided at the output resolution (so that the borders of things and stuff are
pixel accurate), but the vote runs on the stride-s grid of the heads: every output pixel of class c takes
the vote that its cell (the cell whose centre is nearest, i.e. ``floor(x / s)`` at scale 1) casts among the
seeds of class c. All cells of an instance predict the same box, so upsampling the attributes would add
nothing to the vote (at borders it would blend two instances' boxes into a box of neither), while voting
per (class, cell) pair instead of per pixel cuts the pixel-by-seed comparison s^2 = 16 times (131 k cells
instead of 2 M pixels at 1024x2048), which is what keeps post-processing well below the forward time on a
CPU. Pixels of different classes inside one cell still vote separately (the pair is (class, cell)), so instance
masks follow the full-resolution semantics; only borders between two touching instances of one class are
quantised to the stride. The comparison is dense per pair over the seeds of the pair's image and class,
processed in chunks of at most ``chunk_elements`` pair-seed entries, so memory stays bounded whatever the number
of seeds.

Pixels are never listed one by one: every output pixel carries the key of its (image, class, cell) (one pass
over the image), the pairs are the keys present, what the pairs decide goes back to the pixels through one
table lookup (:func:`pixel_values`), and the mask statistics come from the pairs (:func:`pair_statistics`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from casnet_core.postprocess.grid import block_pixels, cell_blocks, pieces, pixels_per_cell


class ThingPairs(NamedTuple):
    """The P (image, thing class, cell) pairs of the thing pixels of a batch, and the key of every output pixel."""

    pixel_key: Tensor  # (B, H, W) int32 (int64 if needed): (image * (C + 1) + channel) * h * w + cell, C: void
    pair_key: Tensor  # (P,) int64 (image * K + k) * h * w + cell, i.e. flat index into (B, K, h, w); ascending
    pair_pixels: Tensor  # (P,) int64 number of pixels of each pair
    channel_pixels: Tensor  # (B, C + 1) int64 pixels of each semantic channel per image (C: void)
    thing_channels: Tensor  # (K,) int64 semantic channel of thing class k
    grid_size: tuple[int, int]  # (h, w)
    # pair_key split once (int64 division is slow on the CPU, and every later stage needs one or both):
    pair_group: Tensor  # (P,) int64 image * K + k, i.e. pair_key // (h * w)
    pair_cell: Tensor  # (P,) int64 cell i * w + j, i.e. pair_key % (h * w)


def pixel_cells(output_size: tuple[int, int], grid_size: tuple[int, int], stride: int,
                input_scale: tuple[float, float] = (1.0, 1.0), device: torch.device | str = "cpu",
                ) -> tuple[Tensor, Tensor]:
    """The cell of every output row and column: the cell whose centre is nearest to the pixel centre in the
    network input, clamped into the grid. (H,) int64 cell rows, (W,) int64 cell columns (non-decreasing)."""
    (height, width), (h, w) = output_size, grid_size
    rows = (((torch.arange(height, device=device, dtype=torch.float64) + 0.5) * input_scale[0]) / stride).floor()
    cols = (((torch.arange(width, device=device, dtype=torch.float64) + 0.5) * input_scale[1]) / stride).floor()
    return rows.long().clamp(0, h - 1), cols.long().clamp(0, w - 1)


def group_rows(batch: int, num_channels: int, thing_channels: Tensor) -> Tensor:
    """(B * K,) int64 the row of each group (image * K + k) in a (B, num_channels, ...) layout of channels:
    image * num_channels + the channel of thing class k. A small table that the stages look up by group with
    ``index_select`` (several times faster on the CPU than computing it per pair, or advanced indexing)."""
    images = torch.arange(batch, device=thing_channels.device)
    return (images[:, None] * num_channels + thing_channels[None, :]).flatten()


def thing_pairs(semantic: Tensor, thing_channels: Tensor, num_classes: int, grid_size: tuple[int, int], stride: int,
                input_scale: tuple[float, float] = (1.0, 1.0)) -> ThingPairs:
    """Groups the pixels by (image, semantic channel, cell); the groups of thing channels are the pairs.

    Args:
        semantic: (B, H, W) int32 or int64 semantic channel of each output pixel, 0..C-1 or ``VOID_CHANNEL``.
        thing_channels: (K,) int64 semantic channel of each thing class.
        num_classes: C.
        grid_size: (h, w) of the heads' grid.
        stride, input_scale: geometry of the grid (:func:`pixel_cells`).
    """
    batch, height, width = semantic.shape
    h, w = grid_size
    cells = h * w
    keys = batch * (num_classes + 1) * cells
    # int32 where the keys fit: the per-pixel arithmetic and the lookups run several times faster.
    dtype = torch.int32 if keys < 2**31 else torch.int64
    cell_row, cell_col = pixel_cells((height, width), grid_size, stride, input_scale, semantic.device)
    # One lookup gives channel * cells (void: channel C) in the key's dtype.
    channel_offset = torch.arange(256, device=semantic.device).clamp(max=num_classes).to(dtype) * cells
    pixel_key = channel_offset.index_select(0, semantic.flatten()).view(semantic.shape)
    # Two broadcast additions in place: about half the time of adding one (H, W) grid of cell indices.
    pixel_key += (cell_row.to(dtype) * w)[:, None]
    pixel_key += cell_col.to(dtype)[None, :]
    if batch > 1:
        image = torch.arange(batch, device=semantic.device, dtype=dtype).view(batch, 1, 1)
        pixel_key += image * ((num_classes + 1) * cells)
    # One count of every key gives the pairs (the thing channels' keys, in the (B, K, h, w) layout of pair_key)
    # and the pixels of each channel (the stuff area of maps.panoptic_map).
    counts = torch.bincount(pixel_key.flatten(), minlength=keys).view(batch * (num_classes + 1), cells)
    thing_counts = counts.index_select(0, group_rows(batch, num_classes + 1, thing_channels)).flatten()  # (B, K, h*w)
    pair_key = thing_counts.nonzero().squeeze(1)
    pair_group = pair_key // cells
    channel_pixels = counts.sum(dim=1).view(batch, num_classes + 1)
    return ThingPairs(pixel_key, pair_key, thing_counts.index_select(0, pair_key), channel_pixels, thing_channels,
                      (h, w), pair_group, pair_key - pair_group * cells)


def pair_pixel_key(pairs: ThingPairs) -> Tensor:
    """(P,) int64 the pixel key (:class:`ThingPairs`) of each pair."""
    cells = pairs.grid_size[0] * pairs.grid_size[1]
    batch, num_channels = pairs.channel_pixels.shape
    rows = group_rows(batch, num_channels, pairs.thing_channels)  # pixel-key row: image * (C + 1) + channel
    return rows.index_select(0, pairs.pair_group) * cells + pairs.pair_cell


def pixel_values(pairs: ThingPairs, pair_values: Tensor, channel_values: Tensor) -> Tensor:
    """What every output pixel gets, in one table lookup per pixel: (P,) ``pair_values`` on the pixels of each
    pair, (B, C + 1) ``channel_values`` (per image and semantic channel, C: void) on all other pixels. (B, H, W),
    the dtype of ``pair_values``."""
    cells = pairs.grid_size[0] * pairs.grid_size[1]
    table = channel_values.to(pair_values.dtype)[:, :, None].expand(-1, -1, cells).contiguous().view(-1)
    table.scatter_(0, pair_pixel_key(pairs), pair_values)  # each pair's own entry (faster than table[keys] = ...)
    return table.index_select(0, pairs.pixel_key.flatten()).view(pairs.pixel_key.shape)


class PairStatistics(NamedTuple):
    """Pixel statistics of each of the P pairs, all (P,) int64: the pixels, the sums of their columns and rows,
    and their tight box (x0, y0, x1, y1), x1 and y1 exclusive."""

    area: Tensor
    sum_x: Tensor
    sum_y: Tensor
    x0: Tensor
    y0: Tensor
    x1: Tensor
    y1: Tensor


def pair_statistics(pairs: ThingPairs, stride: int, input_scale: tuple[float, float] = (1.0, 1.0)) -> PairStatistics:
    """The pixel statistics of every pair, exact, without visiting every pixel.

    A pair whose pixels fill its cell's whole block of rows x columns (:mod:`.grid`) has the block's sums and
    box in closed form; only the partial pairs (cells that two classes share, at class borders) visit the
    pixels of their block.
    """
    batch, height, width = pairs.pixel_key.shape
    h, w = pairs.grid_size
    num_things = pairs.thing_channels.numel()
    device = pairs.pixel_key.device
    cell_row, cell_col = pixel_cells((height, width), (h, w), stride, input_scale, device)
    row_pieces = pieces(cell_row, h, pixels_per_cell(stride, input_scale[0]))
    col_pieces = pieces(cell_col, w, pixels_per_cell(stride, input_scale[1]))
    row_count = torch.bincount(cell_row, minlength=h)
    col_count = torch.bincount(cell_col, minlength=w)
    row_start, col_start = torch.cumsum(row_count, 0) - row_count, torch.cumsum(col_count, 0) - col_count
    i = pairs.pair_cell // w
    j = pairs.pair_cell - i * w
    rows, cols = row_count.index_select(0, i), col_count.index_select(0, j)
    y0, x0 = row_start.index_select(0, i), col_start.index_select(0, j)
    area = pairs.pair_pixels.clone()
    # A full block: every column x0..x0+cols-1 appears in each of its rows (and the converse).
    sum_x = rows * (cols * x0 + cols * (cols - 1) // 2)
    sum_y = cols * (rows * y0 + rows * (rows - 1) // 2)
    x1, y1 = x0 + cols, y0 + rows
    partial = (area < rows * cols).nonzero().squeeze(1)
    if partial.numel():
        owner, row_piece, col_piece = cell_blocks(i.index_select(0, partial), j.index_select(0, partial), row_pieces,
                                                  col_pieces)
        ys, xs, valid = block_pixels(row_piece, col_piece, row_pieces, col_pieces)
        # Layout (R, R', m): the reductions over a block's rows and columns vectorise over the blocks.
        ys, xs, valid = ys.t(), xs.t(), valid.permute(1, 2, 0)
        pair = partial.index_select(0, owner)
        image = pairs.pair_group.index_select(0, pair) // num_things
        own_key = pair_pixel_key(pairs).index_select(0, pair).to(pairs.pixel_key.dtype)
        pixel = (image * height + ys[:, None, :]) * width + xs[None, :, :]
        key = pairs.pixel_key.flatten().index_select(0, pixel.flatten()).view(pixel.shape)
        member = valid & (key == own_key)
        per_col, per_row = member.sum(dim=0), member.sum(dim=1)  # (R', m), (R, m) pixels of the pair
        big = height + width
        for target, value in ((sum_x, (xs * per_col).sum(dim=0)), (sum_y, (ys * per_row).sum(dim=0))):
            target.index_fill_(0, partial, 0).scatter_add_(0, pair, value)
        for target, start in ((x0, big), (y0, big), (x1, 0), (y1, 0)):
            target.index_fill_(0, partial, start)
        # min(dim).values, not amin: amin of int64 is ~50x slower on the CPU (torch 2.x).
        x0.scatter_reduce_(0, pair, torch.where(per_col > 0, xs, big).min(dim=0).values, "amin")
        y0.scatter_reduce_(0, pair, torch.where(per_row > 0, ys, big).min(dim=0).values, "amin")
        x1.scatter_reduce_(0, pair, torch.where(per_col > 0, xs, -1).amax(dim=0) + 1, "amax")
        y1.scatter_reduce_(0, pair, torch.where(per_row > 0, ys, -1).amax(dim=0) + 1, "amax")
    return PairStatistics(area, sum_x, sum_y, x0, y0, x1, y1)
