"""Stage 1: semantic channels at the output resolution, from the semantic logits (argmax of their bilinear
upsampling) or from another segmentation model ("separated" mode), and the channel lookup tables."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from casnet_core.postprocess.defaults import LOGIT_BOUND, VOID_CHANNEL
from casnet_core.postprocess.grid import block_pixels, cell_blocks, pieces, pixels_per_cell

#: Candidate classes of a mixed block in the common case (_interpolate_mixed_blocks); blocks with more go apart.
FEW_CANDIDATES = 4


def _bilinear_sources(size_out: int, size_in: int, cells_per_pixel: float, device: torch.device):
    """Source cells and weight of bilinear interpolation (align_corners=False), PyTorch's formula: output pixel d
    reads cells i0 and i1 = i0 + 1 (clamped) at weight lam on i1. In float64 where PyTorch uses float32: a
    position on a cell is exactly on it here, while PyTorch may give the next cell a weight of ~1e-7, which changes
    the argmax only where two classes tie exactly."""
    position = ((torch.arange(size_out, device=device, dtype=torch.float64) + 0.5) * cells_per_pixel - 0.5).clamp(min=0)
    first = position.floor()
    weight = (position - first).float()
    first = first.long().clamp(max=size_in - 1)
    return first, (first + 1).clamp(max=size_in - 1), weight


def upsample_semantic(semantic_logits: Tensor, stride: int, output_size: tuple[int, int],
                      input_scale: tuple[float, float] = (1.0, 1.0), *, void_cells: Tensor | None = None,
                      chunk_pixels: int = 1 << 18) -> Tensor:
    """(B, C, h, w) logits at stride ``stride`` -> (B, H, W) int32 argmax of their bilinear upsampling
    (align_corners=False) to the output resolution, without materialising the (B, C, H, W) logits.

    ``input_scale`` = (sy, sx) network-input pixels per output pixel: output pixel (x, y) reads the cell grid
    at ((x + 0.5) sx / s - 0.5, (y + 0.5) sy / s - 0.5), the project's geometry.

    ``void_cells`` (B, h, w) bool: cells without evidence (:func:`sanitize_semantic_logits`). They take part
    as one more class, "void", of logit LOGIT_BOUND there and -LOGIT_BOUND elsewhere, so that the pixels
    taking more than half of their interpolation weight from void cells are ``VOID_CHANNEL``.

    Exact shortcut: an interpolated logit vector is a convex combination of its (up to) four source cells,
    so where the four cells share their argmax the pixel has it too. Only pixels whose sources disagree
    (near class borders, typically a few percent) are interpolated, in chunks of ``chunk_pixels``.
    """
    if void_cells is not None:
        # In float32, as the interpolation below: +-LOGIT_BOUND would be +-inf in float16, and 0 * inf is NaN.
        void_logit = torch.where(void_cells, LOGIT_BOUND, -LOGIT_BOUND).float()[:, None]
        semantic = upsample_semantic(torch.cat((semantic_logits.float(), void_logit), dim=1), stride, output_size,
                                     input_scale, chunk_pixels=chunk_pixels)
        return semantic.masked_fill_(semantic == semantic_logits.shape[1], VOID_CHANNEL)
    batch, num_classes, h, w = semantic_logits.shape
    height, width = output_size
    device = semantic_logits.device
    row0, row1, row_weight = _bilinear_sources(height, h, input_scale[0] / stride, device)
    col0, col1, col_weight = _bilinear_sources(width, w, input_scale[1] / stride, device)

    logits = semantic_logits.float()
    cell_class = first_argmax(logits)  # (B, h, w)
    # A cell's 2x2 block (right and lower neighbours clamped at the border) agrees on one class.
    down = torch.cat((cell_class[:, 1:], cell_class[:, -1:]), dim=1)
    right = torch.cat((cell_class[:, :, 1:], cell_class[:, :, -1:]), dim=2)
    down_right = torch.cat((right[:, 1:], right[:, -1:]), dim=1)
    agreed = (cell_class == down) & (cell_class == right) & (cell_class == down_right)
    # int32: half the memory of int64 for the (B, H, W) map, which every later stage reads.
    block_class = torch.where(agreed, cell_class, torch.full_like(cell_class, -1)).int()
    # Every output pixel reads its top-left source cell: one flat gather (index_select, int32 index: several
    # times faster on the CPU than advanced indexing with int64 arithmetic).
    source = _flat_cell_index(row0, col0, batch, h, w)
    semantic = block_class.flatten().index_select(0, source).view(batch, height, width)

    block_size = (pixels_per_cell(stride, input_scale[0]), pixels_per_cell(stride, input_scale[1]))
    _interpolate_mixed_blocks(semantic, logits, cell_class, (row0, row_weight), (col0, col_weight), block_class < 0,
                              block_size=block_size, chunk_pixels=chunk_pixels)
    return semantic


def first_argmax(logits: Tensor) -> Tensor:
    """(B, C, ...) finite logits -> (B, ...) int64 argmax over C, the first channel among equal maxima (as
    ``torch.argmax``). Through ``amax`` and a comparison: ``argmax`` over the channels of a channels-first tensor
    is several times slower on the CPU."""
    num_classes = logits.shape[1]
    if num_classes > 32767:
        return logits.argmax(dim=1)
    best = logits.amax(dim=1, keepdim=True)
    countdown = torch.arange(num_classes, 0, -1, dtype=torch.int16, device=logits.device)
    countdown = countdown.view((1, num_classes) + (1,) * (logits.dim() - 2))
    return num_classes - torch.where(logits == best, countdown, 0).amax(dim=1).long()


def _flat_cell_index(rows: Tensor, cols: Tensor, batch: int, h: int, w: int) -> Tensor:
    """(B * H * W,) flat index into (B, h, w) of the cell (rows[y], cols[x]) of every output pixel; int32 when
    it fits (index_select takes it), int64 beyond."""
    dtype = torch.int32 if batch * h * w < 2**31 else torch.int64
    index = (rows.to(dtype)[:, None] * w + cols.to(dtype)[None, :]).flatten()
    if batch > 1:
        index = (torch.arange(batch, device=rows.device, dtype=dtype)[:, None] * (h * w) + index[None, :]).flatten()
    return index


def _interpolate_mixed_blocks(semantic: Tensor, logits: Tensor, cell_class: Tensor, rows: tuple[Tensor, Tensor],
                              cols: tuple[Tensor, Tensor], mixed_cells: Tensor, *, block_size: tuple[int, int],
                              chunk_pixels: int) -> None:
    """Writes into ``semantic`` (B, H, W) the argmax of the bilinear interpolation of ``logits`` (B, C, h, w) at
    the pixels whose top-left source cell is in ``mixed_cells`` (B, h, w) bool; ``cell_class`` (B, h, w) is the
    argmax of each cell, ``rows`` = (first source row, weight of the next) of every output row, ``cols`` the same
    for the columns, ``block_size`` the usual output rows and columns per cell (:func:`.grid.pieces`).

    The pixels of one top-left cell form blocks (:mod:`.grid`) that share their four source cells, gathered once
    per block. Only the classes that can win somewhere in a block are interpolated: an interpolated logit lies
    between the smallest and the largest of its four sources, and the winner of a pixel is at least the
    interpolated logit of any class there. So a class whose largest source is below the best smallest source of
    any class, or below the smallest (over the block's pixels) interpolated logit of the best of the four
    sources' own classes, loses everywhere in the block. Each value is computed term by term as in the full
    interpolation, so it is the same float and the result the same argmax.
    """
    batch, num_classes, h, w = logits.shape
    height, width = semantic.shape[1:]
    device = logits.device
    cells = mixed_cells.flatten().nonzero().squeeze(1)
    if cells.numel() == 0:
        return
    # Classes first, (C, B * h * w): the gathers below read one contiguous row per class, and the arithmetic runs
    # in the layout (classes, R, R', blocks), blocks innermost: long contiguous rows for the elementwise work,
    # reductions over the classes along the leading dimension (both vectorise on the CPU).
    flat_logits = logits.transpose(0, 1).reshape(num_classes, batch * h * w)
    flat_class = cell_class.flatten()
    (row0, row_weight), (col0, col_weight) = rows, cols
    row_pieces, col_pieces = pieces(row0, h, block_size[0]), pieces(col0, w, block_size[1])
    cell_image, i, j = cells // (h * w), cells // w % h, cells % w
    owner, row_piece, col_piece = cell_blocks(i, j, row_pieces, col_pieces)
    cell_image, i, j = cell_image[owner], i[owner], j[owner]
    per_chunk = max(1, chunk_pixels // (row_pieces.size * col_pieces.size))
    for first in range(0, owner.numel(), per_chunk):
        part = slice(first, first + per_chunk)
        top_left = (cell_image[part] * h + i[part]) * w + j[part]
        below = (i[part] + 1).clamp(max=h - 1) - i[part]
        beside = (j[part] + 1).clamp(max=w - 1) - j[part]
        source_cells = torch.stack((top_left, top_left + beside, top_left + below * w, top_left + below * w + beside))
        n = top_left.numel()
        sources = flat_logits.index_select(1, source_cells.flatten()).view(num_classes, 4, n)
        # Padding pixels repeat the last pixel of their piece (grid.block_pixels): same weights, same label, so
        # every entry can be written.
        ys, xs, _ = block_pixels(row_piece[part], col_piece[part], row_pieces, col_pieces)
        # Weights block by block, (n, R) and (n, R'): selecting blocks is then a fast index_select of whole rows;
        # _weights gives the layout of _interpolate.
        row_weights, col_weights = row_weight[ys], col_weight[xs]
        # Classes that can win, (C, n): first against the best smallest source of any class (cheap, and enough for
        # a trained network's logits), then, where that leaves many, against the smallest interpolated logit of
        # the best of the four sources' own classes (noisy logits).
        highest = sources.amax(dim=1)  # (C, n)
        can_win = highest >= sources.amin(dim=1).amax(dim=0)
        crowded = (can_win.sum(dim=0) > FEW_CANDIDATES).nonzero().squeeze(1)
        if crowded.numel():
            own = flat_class.index_select(0, source_cells.index_select(1, crowded).flatten()).view(4, -1)
            floor = _interpolate(_source_logits(sources, own, crowded),
                                 *_weights(row_weights, col_weights, crowded)).amax(dim=0).amin(dim=(0, 1))
            can_win.index_copy_(1, crowded, highest.index_select(1, crowded) >= floor)
        label = torch.empty((n,) + ys.shape[1:] + xs.shape[1:], dtype=torch.int32, device=device)
        # Mostly two or three classes can win: padded to FEW_CANDIDATES; the few blocks with more go apart.
        few = can_win.sum(dim=0) <= FEW_CANDIDATES
        for blocks, most in ((few.nonzero().squeeze(1), FEW_CANDIDATES), ((~few).nonzero().squeeze(1), num_classes)):
            if blocks.numel():
                # index_select along the blocks' dimension: advanced indexing of an inner dimension is slow.
                label.index_copy_(0, blocks, _best_candidate(sources, blocks, can_win.index_select(1, blocks),
                                                             *_weights(row_weights, col_weights, blocks),
                                                             min(most, num_classes)).int())
        pixel = (cell_image[part][:, None, None] * height + ys[:, :, None]) * width + xs[:, None, :]
        # scatter_, several times faster on the CPU than an indexed assignment; a padding pixel written twice gets
        # the same label both times.
        semantic.view(-1).scatter_(0, pixel.flatten(), label.flatten())


def _weights(row_weights: Tensor, col_weights: Tensor, blocks: Tensor) -> tuple[Tensor, Tensor]:
    """(n, R) and (n, R') interpolation weights of n blocks, (m,) int64 blocks -> the weights of those blocks in
    the layout of :func:`_interpolate`: wy (1, R, 1, m), wx (1, 1, R', m)."""
    # Contiguous, blocks innermost: the broadcast arithmetic of _interpolate is several times slower on a view.
    wy = row_weights.index_select(0, blocks).t().contiguous()[None, :, None, :]
    wx = col_weights.index_select(0, blocks).t().contiguous()[None, None, :, :]
    return wy, wx


def _source_logits(sources: Tensor, classes: Tensor, blocks: Tensor) -> Tensor:
    """(C, 4, n) source logits, (T, m) int64 classes of m blocks (indices into n) -> (T, 4, m) the logits of those
    classes at the four sources of those blocks: one flat gather, without copying the blocks' other classes."""
    num_classes, _, n = sources.shape
    corner = torch.arange(4, device=sources.device)[None, :, None] * n
    index = classes[:, None, :] * (4 * n) + corner + blocks[None, None, :]
    return sources.flatten().index_select(0, index.flatten()).view(index.shape)


def _best_candidate(sources: Tensor, blocks: Tensor, can_win: Tensor, wy: Tensor, wx: Tensor, width: int) -> Tensor:
    """(C, 4, n) source logits, (m,) int64 blocks among the n, (C, m) bool the classes that can win there (at most
    ``width`` per block), weights as in :func:`_interpolate` -> (m, R, R') int64 argmax of the interpolated logits
    (the first among equal maxima)."""
    num_classes = sources.shape[0]
    # The first ``width`` candidate classes of each block in ascending order (so that the first maximum wins, as in
    # torch.argmax), padded with C: each class goes to the row of its rank among the block's candidates; the
    # classes that cannot win (or rank beyond) go to a spare row that is dropped.
    rank = can_win.cumsum(dim=0) - 1
    row = torch.where(can_win & (rank < width), rank, width)
    candidates = torch.full((width + 1, blocks.numel()), num_classes, dtype=torch.int64, device=sources.device)
    classes = torch.arange(num_classes, device=sources.device)[:, None].expand(-1, blocks.numel())
    candidates = candidates.scatter_(0, row, classes)[:width]  # (T, m)
    padding = candidates >= num_classes
    candidates = candidates.masked_fill(padding, 0)
    value = _interpolate(_source_logits(sources, candidates, blocks), wy, wx)
    value = value.masked_fill_(padding[:, None, None, :], float("-inf"))
    winner = first_argmax(value[None])[0]  # (R, R', m)
    return candidates.t().gather(1, winner.permute(2, 0, 1).flatten(1)).view(-1, *winner.shape[:2])


def _interpolate(sources: Tensor, wy: Tensor, wx: Tensor) -> Tensor:
    """(T, 4, n) logits of T classes at the four source cells (top-left, top-right, bottom-left, bottom-right)
    of n blocks, weights wy (1, R, 1, n) and wx (1, 1, R', n) -> (T, R, R', n) interpolated logits, term by term
    as PyTorch's bilinear interpolation: (1 - wy) ((1 - wx) a + wx b) + wy ((1 - wx) c + wx d)."""
    a, b, c, d = sources[:, :, None, None, :].unbind(1)  # (T, 1, 1, n) each
    top = (1 - wx) * a + wx * b
    bottom = (1 - wx) * c + wx * d
    return (1 - wy) * top + wy * bottom


def checked_semantic_channels(semantic: Tensor, batch: int, num_classes: int,
                              output_size: tuple[int, int] | None = None) -> Tensor:
    """Separated mode: (B, H, W) integer semantic channels from outside -> (B, H, W) int32, every value outside
    0..C-1 void (``VOID_CHANNEL``). Raises ValueError on a shape that does not fit."""
    if semantic.dim() != 3 or semantic.shape[0] != batch:
        raise ValueError(f"semantic {tuple(semantic.shape)}: expected ({batch}, H, W)")
    if output_size is not None and tuple(semantic.shape[1:]) != tuple(output_size):
        raise ValueError(f"semantic {tuple(semantic.shape)} does not match output_size {output_size}")
    semantic = semantic.long()  # checked before narrowing: a value beyond int32 must not wrap into a class
    valid = (semantic >= 0) & (semantic < num_classes)
    return torch.where(valid, semantic, torch.full_like(semantic, VOID_CHANNEL)).int()


def channel_tables(thing_channels: Tensor, label_ids: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Lookup tables over the semantic channels 0..255 (255 = void): (256,) int64 thing class k of each channel
    (-1: stuff or void) and (256,) int64 label id of each channel (0 beyond the C given).

    ``thing_channels`` (K,) int64: semantic channel of thing class k; ``label_ids`` (C,)."""
    device = thing_channels.device
    thing_of_channel = torch.full((256,), -1, dtype=torch.int64, device=device)
    thing_of_channel[thing_channels] = torch.arange(thing_channels.numel(), device=device)
    label_of_channel = torch.zeros(256, dtype=torch.int64, device=device)
    label_of_channel[: len(label_ids)] = torch.as_tensor(list(label_ids), dtype=torch.int64, device=device)
    return thing_of_channel, label_of_channel
