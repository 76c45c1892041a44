"""Output pixels grouped by the grid cell they read: the output rows (or columns) that read one cell are
consecutive, so the pixels of a cell form a block of rows x columns. Stages that need the pixels of a few cells
only (the mixed blocks of :func:`.semantic.upsample_semantic`, the partial pairs of :func:`.pairs.pair_statistics`)
visit those blocks instead of the whole image."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


def pixels_per_cell(stride: int, input_scale: float) -> int:
    """Output pixels per grid cell along an axis, rounded up (at least 1): the usual length of a run."""
    return max(1, math.ceil(stride / input_scale - 1e-6))


class Pieces(NamedTuple):
    """The output indices of one axis grouped by cell, in pieces of at most ``size`` consecutive indices."""

    start: Tensor  # (P,) int64 first output index of each piece
    length: Tensor  # (P,) int64 output indices in each piece, 1..size
    first_of_cell: Tensor  # (n,) int64 first piece of each cell
    count_of_cell: Tensor  # (n,) int64 pieces of each cell (0: no output index reads it)
    size: int


def pieces(cell_of_index: Tensor, num_cells: int, size: int) -> Pieces:
    """The pieces of one axis, from the non-decreasing (size_out,) int64 cell of every output index (in 0..n-1).

    A cell holding more than ``size`` indices (the usual number, from the geometry: output pixels per cell,
    rounded up; more at the clamped border of a bilinear interpolation) is cut into several pieces, so that
    blocks carry little padding."""
    device = cell_of_index.device
    count = torch.bincount(cell_of_index, minlength=num_cells)
    start = torch.cumsum(count, 0) - count
    per_cell = -(-count // size)
    cell = torch.repeat_interleave(torch.arange(num_cells, device=device), per_cell)
    first_of_cell = torch.cumsum(per_cell, 0) - per_cell
    index_in_cell = torch.arange(cell.numel(), device=device) - first_of_cell[cell]
    length = (count[cell] - index_in_cell * size).clamp(max=size)
    return Pieces(start[cell] + index_in_cell * size, length, first_of_cell, per_cell, size)


def cell_blocks(rows: Tensor, cols: Tensor, row_pieces: Pieces, col_pieces: Pieces) -> tuple[Tensor, Tensor, Tensor]:
    """The blocks (row piece x column piece) of the cells (rows[n], cols[n]): (m,) int64 cell n of each block,
    its row piece and its column piece. Cells read by no pixel have no block."""
    device = rows.device
    across = col_pieces.count_of_cell[cols]
    per_cell = row_pieces.count_of_cell[rows] * across
    owner = torch.repeat_interleave(torch.arange(rows.numel(), device=device), per_cell)
    k = torch.arange(owner.numel(), device=device) - (torch.cumsum(per_cell, 0) - per_cell)[owner]
    across = across[owner]
    row_piece = row_pieces.first_of_cell[rows[owner]] + k // across
    return owner, row_piece, col_pieces.first_of_cell[cols[owner]] + k % across


def block_pixels(row_piece: Tensor, col_piece: Tensor, row_pieces: Pieces,
                 col_pieces: Pieces) -> tuple[Tensor, Tensor, Tensor]:
    """The pixels of the blocks (row piece, column piece) (m,), padded to the pieces' sizes R x R': rows (m, R)
    and columns (m, R') int64 (padding clamped onto the piece's last index) and valid (m, R, R') bool."""
    device = row_piece.device
    row_offset = torch.arange(row_pieces.size, device=device)
    col_offset = torch.arange(col_pieces.size, device=device)
    row_length, col_length = row_pieces.length[row_piece][:, None], col_pieces.length[col_piece][:, None]
    ys = row_pieces.start[row_piece][:, None] + torch.minimum(row_offset, row_length - 1)
    xs = col_pieces.start[col_piece][:, None] + torch.minimum(col_offset, col_length - 1)
    valid = (row_offset < row_length)[:, :, None] & (col_offset < col_length)[:, None, :]
    return ys, xs, valid
