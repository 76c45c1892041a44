"""Stage 8: numbering, scores and mask statistics of the instances.

Instance score (for AP ranking): seed box probability x mean probability of the instance's class over its
mask, the class probability being the softmax of the semantic logits at each pixel's cell (weighted by the
pixels each cell contributes). This is Panoptic-DeepLab's "center score x semantic score" for CASNet's seeds.
In separated mode (semantics from outside, no logits) the score is the seed box probability alone.
"""

from __future__ import annotations

import torch
from torch import Tensor

from casnet_core.labels import LABEL_DIVISOR
from casnet_core.postprocess.pairs import PairStatistics, group_rows


def number_instances(alive: Tensor, seed_groups: Tensor, num_things: int,
                     label_of_thing: Tensor) -> tuple[Tensor, Tensor]:
    """Panoptic ids of the alive seeds: label_id * LABEL_DIVISOR + k, k = 0, 1, ... per group in seed order.

    Args:
        alive: (S,) bool; seed_groups: (S,) int64, sorted, best seed first within a group.
        num_things: K.
        label_of_thing: (K,) int64 Cityscapes label id of each thing class.

    Returns:
        seed of each instance (N,) int64, panoptic id of each instance (N,) int64.
    """
    instance_seed = alive.nonzero().squeeze(1)
    instance_group = seed_groups[instance_seed]
    counts = torch.bincount(instance_group)
    rank = torch.arange(instance_seed.numel(), device=alive.device) - (torch.cumsum(counts, 0) - counts)[
        instance_group]
    return instance_seed, label_of_thing[instance_group % num_things] * LABEL_DIVISOR + rank


def pair_class_probability(semantic_logits: Tensor, pair_key: Tensor, thing_channels: Tensor) -> Tensor:
    """(B, C, h, w) semantic logits -> (P,) softmax probability of each pair's class at its cell.

    ``pair_key`` (P,) = (image * K + k) * h * w + cell; ``thing_channels`` (K,) semantic channel of class k."""
    batch, num_classes, h, w = semantic_logits.shape
    class_prob = torch.softmax(semantic_logits.float(), dim=1).flatten()  # (B * C * h * w)
    group = pair_key // (h * w)
    rows = group_rows(batch, num_classes, thing_channels)  # row of each group's class map in (B * C, h * w)
    return class_prob.index_select(0, rows.index_select(0, group) * (h * w) + (pair_key - group * (h * w)))


def instance_scores(seed_scores: Tensor, instance_seed: Tensor, pair_seed: Tensor, pair_pixels: Tensor,
                    pair_prob: Tensor | None = None) -> Tensor:
    """(N,) float32 score of each instance: its seed's score (S,) times, when ``pair_prob`` (P,) is given,
    the mean class probability over its pixels (pairs weighted by their ``pair_pixels``)."""
    scores = seed_scores[instance_seed].float()
    if pair_prob is None:
        return scores
    num_seeds = seed_scores.numel()
    area = torch.zeros(num_seeds, dtype=torch.int64, device=pair_seed.device).scatter_add_(0, pair_seed, pair_pixels)
    prob_sum = torch.zeros(num_seeds, dtype=torch.float32, device=pair_seed.device).scatter_add_(
        0, pair_seed, pair_prob * pair_pixels)
    return scores * prob_sum[instance_seed] / area[instance_seed].clamp(min=1)


def mask_statistics(pair_instance: Tensor, statistics: PairStatistics,
                    num_instances: int) -> tuple[Tensor, Tensor, Tensor]:
    """Area (N,) int64, tight box (N, 4) float32 (x0, y0, x1, y1, x1/y1 exclusive) and centroid (N, 2)
    float32 (mean pixel centre) of each instance, from the instance (P,) int64 and the pixel statistics
    (:func:`.pairs.pair_statistics`) of each pair. An instance without pixels has area 0, box 0 and
    centroid (0.5, 0.5)."""
    device = pair_instance.device
    areas = torch.zeros(num_instances, dtype=torch.int64, device=device).scatter_add_(0, pair_instance,
                                                                                       statistics.area)
    # Reduced onto a start value (include_self, about 3x faster on the CPU than without): the largest int64 for the
    # minima, -1 for the maxima (pixel coordinates are >= 0); instances without pixels get 0 after.
    largest = torch.iinfo(torch.int64).max
    boxes = torch.tensor([largest, largest, -1, -1], dtype=torch.int64, device=device).repeat(num_instances, 1)
    if num_instances:
        for column, (value, reduce) in enumerate(((statistics.x0, "amin"), (statistics.y0, "amin"),
                                                  (statistics.x1, "amax"), (statistics.y1, "amax"))):
            boxes[:, column].scatter_reduce_(0, pair_instance, value, reduce)
        boxes.masked_fill_((areas == 0)[:, None], 0)
    sums = torch.zeros(num_instances, 2, dtype=torch.int64, device=device)
    sums[:, 0].scatter_add_(0, pair_instance, statistics.sum_x)
    sums[:, 1].scatter_add_(0, pair_instance, statistics.sum_y)
    centroids = sums.double() / areas.clamp(min=1).double()[:, None] + 0.5
    return areas, boxes.float(), centroids.float()
