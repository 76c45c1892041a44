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
from casnet_core.postprocess.pairs import ThingPairs, pixel_values


def panoptic_map(pairs: ThingPairs, pair_ids: Tensor, label_of_channel: Tensor, thing_of_channel: Tensor,
                 num_classes: int, *, panoptic: bool = True,
                 stuff_area: int = DEFAULT_THRESHOLDS["stuff_area"]) -> Tensor:
    """(B, H, W) int32 panoptic ids of the pixels of :func:`.pairs.thing_pairs`.

    Args:
        pair_ids: (P,) integer panoptic id of each pair's pixels (0: no instance claims them).
        label_of_channel, thing_of_channel: (256,) int64 tables of :func:`channel_tables`.
        num_classes: C; the channels below C that are no thing class are stuff.
        panoptic: True: stuff keeps its label id, void below ``stuff_area`` pixels per image; False: 0.
    """
    batch = pairs.channel_pixels.shape[0]
    channels = torch.arange(num_classes + 1, device=pair_ids.device)
    is_stuff = (thing_of_channel[channels] < 0) & (channels < num_classes)
    channel_ids = torch.zeros((batch, num_classes + 1), dtype=torch.int32, device=pair_ids.device)
    if panoptic:
        keep_stuff = is_stuff & (pairs.channel_pixels >= stuff_area)
        channel_ids = torch.where(keep_stuff, label_of_channel[channels].int(), channel_ids)
    return pixel_values(pairs, pair_ids.int(), channel_ids)
