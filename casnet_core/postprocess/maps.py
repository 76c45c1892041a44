"""Stage 8: the panoptic map.

Panoptic ids follow the Cityscapes encoding: thing = label_id * 1000 + k (k = 0, 1, ... per image and class,
in decreasing score, k < 1000), stuff = label_id, void = 0. In panoptic mode stuff classes covering fewer
than ``stuff_area`` pixels of an image become void (as Panoptic-DeepLab does); in instance mode every
non-thing pixel is 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from casnet_core.postprocess.defaults import DEFAULT_THRESHOLDS


def panoptic_map(semantic: Tensor, thing_pixels: Tensor, thing_pixel_ids: Tensor, label_of_channel: Tensor,
                 thing_of_channel: Tensor, num_classes: int, *, panoptic: bool = True,
                 stuff_area: int = DEFAULT_THRESHOLDS["stuff_area"]) -> Tensor:
    """(B, H, W) int64 semantic channels -> (B, H, W) int32 panoptic ids.

    Args:
        thing_pixels: (Q,) flat indices into (B, H, W); thing_pixel_ids: (Q,) their panoptic ids.
        label_of_channel, thing_of_channel: (256,) int64 tables of :func:`channel_tables`.
        num_classes: C; the channels below C that are no thing class are stuff.
        panoptic: True: stuff keeps its label id, void below ``stuff_area`` pixels per image; False: 0.
    """
    batch = semantic.shape[0]
    device = semantic.device
    is_stuff = (thing_of_channel < 0) & (torch.arange(256, device=device) < num_classes)
    # Stuff: one lookup per pixel in a per-image table of what each channel becomes.
    channel_key = semantic + 256 * torch.arange(batch, device=device).view(batch, 1, 1) if batch > 1 else semantic
    panoptic_of_channel = torch.zeros(batch * 256, dtype=torch.int32, device=device)
    if panoptic:
        class_area = torch.bincount(channel_key.flatten(), minlength=batch * 256)
        keep_stuff = is_stuff.repeat(batch) & (class_area >= stuff_area)
        panoptic_of_channel = torch.where(keep_stuff, label_of_channel.int().repeat(batch), panoptic_of_channel)
    result = panoptic_of_channel[channel_key].flatten()
    result[thing_pixels] = thing_pixel_ids.int()
    return result.view(semantic.shape)
