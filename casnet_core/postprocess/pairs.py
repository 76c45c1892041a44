"""Stage 2: the thing pixels grouped into (image, class, cell) pairs, the voters of :mod:`.voting`.

Resolution. Semantics are decided at the output resolution (so that the borders of things and stuff are
pixel accurate), but the vote runs on the stride-s grid of the heads: every output pixel of class c takes
the vote that its cell (the cell whose centre is nearest, i.e. ``floor(x / s)`` at scale 1) casts among the
seeds of class c. All cells of an instance predict the same box, so upsampling the attributes would add
nothing to the vote (at borders it would blend two instances' boxes into a box of neither), while voting
per (class, cell) pair instead of per pixel cuts the pixel-by-seed comparison s^2 = 16 times (131 k cells
instead of 2 M pixels at 1024x2048), which is what keeps post-processing well below the forward time on a
CPU. Pixels of different classes inside one cell
still vote separately (the pair is (class, cell)), so instance masks follow the full-resolution semantics;
only borders between two touching instances of one class are quantised to the stride. The comparison is
dense per pair over the seeds of the pair's image and class, processed in chunks of at most
``chunk_elements`` pair-seed entries, so memory stays bounded whatever the number of seeds.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class ThingPixels(NamedTuple):
    """The Q thing pixels of a batch and the P (image, class, cell) pairs they vote through."""

    index: Tensor  # (Q,) int64 flat index into (B, H, W), ascending
    x: Tensor  # (Q,) int64 column
    y: Tensor  # (Q,) int64 row
    pair: Tensor  # (Q,) int64 the pixel's pair
    pair_key: Tensor  # (P,) int64 (image * K + class) * h * w + cell, i.e. flat index into (B, K, h, w); ascending
    pair_pixels: Tensor  # (P,) int64 number of pixels of each pair


def pixel_cells(output_size: tuple[int, int], grid_size: tuple[int, int], stride: int,
                input_scale: tuple[float, float] = (1.0, 1.0), device: torch.device | str = "cpu",
                ) -> tuple[Tensor, Tensor]:
    """The cell of every output row and column: the cell whose centre is nearest to the pixel centre in the
    network input, clamped into the grid. (H,) int64 cell rows, (W,) int64 cell columns."""
    (height, width), (h, w) = output_size, grid_size
    rows = (((torch.arange(height, device=device, dtype=torch.float64) + 0.5) * input_scale[0]) / stride).floor()
    cols = (((torch.arange(width, device=device, dtype=torch.float64) + 0.5) * input_scale[1]) / stride).floor()
    return rows.long().clamp(0, h - 1), cols.long().clamp(0, w - 1)


def thing_pixel_pairs(thing_map: Tensor, grid_size: tuple[int, int], num_things: int, stride: int,
                      input_scale: tuple[float, float] = (1.0, 1.0)) -> ThingPixels:
    """Groups the thing pixels by (image, thing class, cell).

    Args:
        thing_map: (B, H, W) int64 thing class k of each output pixel, -1 for stuff and void.
        grid_size: (h, w) of the heads' grid.
        num_things: K.
        stride, input_scale: geometry of the grid (:func:`pixel_cells`).
    """
    batch, height, width = thing_map.shape
    h, w = grid_size
    device = thing_map.device
    cells = h * w
    cell_row, cell_col = pixel_cells((height, width), grid_size, stride, input_scale, device)
    pixel_index = (thing_map >= 0).flatten().nonzero().squeeze(1)
    pixel_thing = thing_map.flatten()[pixel_index]
    pixel_batch = pixel_index // (height * width)
    pixel_y = (pixel_index // width) % height
    pixel_x = pixel_index % width
    pixel_key = (pixel_batch * num_things + pixel_thing) * cells + cell_row[pixel_y] * w + cell_col[pixel_x]
    present = torch.zeros(batch * num_things * cells, dtype=torch.bool, device=device)
    present[pixel_key] = True
    pair_key = present.nonzero().squeeze(1)
    # int32: this table spans every (image, class, cell); at stride 1 and 1024x2048 it has 16 M entries.
    pair_of_key = torch.full((batch * num_things * cells,), -1, dtype=torch.int32, device=device)
    pair_of_key[pair_key] = torch.arange(pair_key.numel(), device=device, dtype=torch.int32)
    pixel_pair = pair_of_key[pixel_key].long()
    pair_pixels = torch.bincount(pixel_pair, minlength=pair_key.numel())
    return ThingPixels(pixel_index, pixel_x, pixel_y, pixel_pair, pair_key, pair_pixels)
