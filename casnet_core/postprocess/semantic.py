"""Stage 1: semantic channels at the output resolution, from the semantic logits (argmax of their bilinear
upsampling) or from another segmentation model ("separated" mode), and the channel lookup tables."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from casnet_core.postprocess.defaults import LOGIT_BOUND, VOID_CHANNEL


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
    """(B, C, h, w) logits at stride ``stride`` -> (B, H, W) int64 argmax of their bilinear upsampling
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

    # Channels last: the argmax over classes and the gathers of whole logit vectors read contiguous memory.
    logits = semantic_logits.float().permute(0, 2, 3, 1).contiguous()  # (B, h, w, C)
    cell_class = logits.argmax(dim=3)  # (B, h, w)
    # A cell's 2x2 block (right and lower neighbours clamped at the border) agrees on one class.
    down = torch.cat((cell_class[:, 1:], cell_class[:, -1:]), dim=1)
    right = torch.cat((cell_class[:, :, 1:], cell_class[:, :, -1:]), dim=2)
    down_right = torch.cat((right[:, 1:], right[:, -1:]), dim=1)
    agreed = (cell_class == down) & (cell_class == right) & (cell_class == down_right)
    block_class = torch.where(agreed, cell_class, torch.full_like(cell_class, -1))
    semantic = block_class.flatten(1)[:, (row0[:, None] * w + col0[None, :]).flatten()].view(batch, height, width)

    mixed = (semantic < 0).flatten().nonzero().squeeze(1)
    if mixed.numel():
        flat_logits = logits.view(batch * h * w, num_classes)
        flat_semantic = semantic.view(-1)
        for start in range(0, mixed.numel(), chunk_pixels):
            index = mixed[start : start + chunk_pixels]
            image = index // (height * width) * (h * w)
            y, x = (index // width) % height, index % width
            top, bottom = image + row0[y] * w, image + row1[y] * w
            left, right_col = col0[x], col1[x]
            wy, wx = row_weight[y][:, None], col_weight[x][:, None]
            value = (1 - wy) * ((1 - wx) * flat_logits[top + left] + wx * flat_logits[top + right_col]) + wy * (
                (1 - wx) * flat_logits[bottom + left] + wx * flat_logits[bottom + right_col])
            flat_semantic[index] = value.argmax(dim=1)
    return semantic


def checked_semantic_channels(semantic: Tensor, batch: int, num_classes: int,
                              output_size: tuple[int, int] | None = None) -> Tensor:
    """Separated mode: (B, H, W) integer semantic channels from outside -> (B, H, W) int64, every value outside
    0..C-1 void (``VOID_CHANNEL``). Raises ValueError on a shape that does not fit."""
    if semantic.dim() != 3 or semantic.shape[0] != batch:
        raise ValueError(f"semantic {tuple(semantic.shape)}: expected ({batch}, H, W)")
    if output_size is not None and tuple(semantic.shape[1:]) != tuple(output_size):
        raise ValueError(f"semantic {tuple(semantic.shape)} does not match output_size {output_size}")
    semantic = semantic.long()
    return torch.where((semantic >= 0) & (semantic < num_classes), semantic, torch.full_like(semantic, VOID_CHANNEL))


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
