"""Stages 6-7: the vote of every pair among the seeds of its image and class, then the minimum support
(see the stage list of :mod:`casnet_core.postprocess`)."""

from __future__ import annotations

import torch
from torch import Tensor

from casnet_core.postprocess.defaults import CHUNK_ELEMENTS, DEFAULT_THRESHOLDS


def vote(
    pair_boxes: Tensor,
    pair_groups: Tensor,
    seed_boxes: Tensor,
    seed_groups: Tensor,
    seed_alive: Tensor,
    num_groups: int,
    *,
    tie_margin: float = DEFAULT_THRESHOLDS["tie_margin"],
    chunk_elements: int = CHUNK_ELEMENTS,
) -> Tensor:
    """Common attribute support: each voter joins the seed of its group whose box it agrees with most.

    Args:
        pair_boxes: (P, 4) the box each voter decodes from its own attributes.
        pair_groups: (P,) int64 group (image * K + thing class) of each voter.
        seed_boxes: (S, 4); seed_groups: (S,) int64; seed_alive: (S,) bool, only alive seeds take votes.
            Seeds must be sorted by group, best score first within a group (exact ties go to the first).
        num_groups: G, the number of groups.
        tie_margin: seeds whose IoU is within this of the best IoU are near-ties, decided by the distance
            between the voter's box centre and the seed box centres.
        chunk_elements: bound on voter x seed entries held at once (memory stays O(chunk_elements)).

    Returns:
        (P,) int64 index of the chosen seed, -1 for voters whose group has no alive seed.
    """
    device = pair_boxes.device
    chosen = torch.full((pair_boxes.shape[0],), -1, dtype=torch.int64, device=device)
    alive_index = seed_alive.nonzero().squeeze(1)
    if pair_boxes.shape[0] == 0 or alive_index.numel() == 0:
        return chosen
    # Group by group: the pairs of a group (contiguous once sorted) against exactly the alive seeds of that group,
    # in their order; at most B x K groups. One host read brings the groups' bounds and whether the pairs need
    # sorting (the bounds do not depend on their order).
    pair_counts = torch.bincount(pair_groups, minlength=num_groups)
    seed_counts = torch.bincount(seed_groups[alive_index], minlength=num_groups)
    pair_ends = torch.cumsum(pair_counts, 0)
    seed_ends = torch.cumsum(seed_counts, 0)
    bounds = torch.stack((pair_ends - pair_counts, pair_ends, seed_ends - seed_counts, seed_ends), dim=1)
    unsorted = (pair_groups[1:] < pair_groups[:-1]).any().view(1).long()
    *flat_bounds, needs_sorting = torch.cat((bounds.flatten(), unsorted)).tolist()
    order = None
    if needs_sorting:
        order = torch.argsort(pair_groups, stable=True)
        pair_boxes = pair_boxes[order]
    # Coordinates first, (4, P): the pairs of a chunk are contiguous rows, and the comparisons below run in the
    # layout (seeds, pairs), pairs innermost: long rows for the elementwise work (a group has a handful of seeds
    # and up to many thousand pairs), reductions over the seeds along the leading dimension.
    coords = pair_boxes.t().contiguous()
    centres = (coords[:2] + coords[2:]) / 2  # (2, P)
    areas = (coords[2] - coords[0]).clamp(min=0) * (coords[3] - coords[1]).clamp(min=0)
    seed_centres = (seed_boxes[:, :2] + seed_boxes[:, 2:]) / 2
    seed_area = (seed_boxes[:, 2] - seed_boxes[:, 0]).clamp(min=0) * (seed_boxes[:, 3] - seed_boxes[:, 1]).clamp(min=0)
    found = torch.full_like(chosen, -1)
    for group in range(num_groups):
        pair_start, pair_end, seed_start, seed_end = flat_bounds[4 * group : 4 * group + 4]
        if pair_end == pair_start or seed_end == seed_start:
            continue
        seeds = alive_index[seed_start:seed_end]
        # (n, 1) columns of the group's seeds; box_iou_pairwise below, term by term (the same floats).
        sx0, sy0, sx1, sy1 = seed_boxes[seeds].t()[:, :, None]
        area_s, centre_s = seed_area[seeds][:, None], seed_centres[seeds][:, None, :]
        columns = max(1, chunk_elements // seeds.numel())
        for start in range(pair_start, pair_end, columns):
            end = min(start + columns, pair_end)
            x0, y0, x1, y1 = coords[:, start:end]  # (c,) each
            iw = torch.minimum(x1, sx1).sub_(torch.maximum(x0, sx0)).clamp_(min=0)  # (n, c)
            ih = torch.minimum(y1, sy1).sub_(torch.maximum(y0, sy0)).clamp_(min=0)
            inter = iw.mul_(ih)
            iou = inter.div_((area_s + areas[start:end]).sub_(inter).clamp_(min=1e-6))
            # Mostly one seed is near the best: it wins (max returns the first maximum). Near-ties go to the
            # nearest centre, then the better score (argmin returns the first minimum).
            best, pick = iou.max(dim=0)
            near = iou >= best - tie_margin
            ties = (near.sum(dim=0) > 1).nonzero().squeeze(1)
            if ties.numel():
                distance = (centres[:, start:end].index_select(1, ties).t()[None] - centre_s).square().sum(-1)
                distance = torch.where(near[:, ties], distance, torch.full_like(distance, float("inf")))
                pick[ties] = distance.argmin(dim=0)
            found[start:end] = seeds[pick]
    if order is None:
        return found
    chosen[order] = found
    return chosen


def vote_with_support(
    pair_boxes: Tensor,
    pair_groups: Tensor,
    pair_pixels: Tensor,
    seed_boxes: Tensor,
    seed_groups: Tensor,
    num_groups: int,
    *,
    min_area: int = DEFAULT_THRESHOLDS["min_area"],
    tie_margin: float = DEFAULT_THRESHOLDS["tie_margin"],
    chunk_elements: int = CHUNK_ELEMENTS,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`vote`, then the seeds with fewer than ``min_area`` pixels are dropped (except the
    best-supported seed of each group) and the pixels they held vote again among the seeds left.

    Args:
        pair_boxes, pair_groups, seed_boxes, seed_groups, num_groups: as in :func:`vote` (every seed alive).
        pair_pixels: (P,) int64 pixels each voter stands for.

    Returns:
        seed of each voter (P,) int64, area of each seed (S,) int64 (pixels), alive (S,) bool: the seeds
        that remain, each with at least one pixel.
    """
    num_seeds = seed_groups.numel()
    device = pair_boxes.device
    alive = torch.ones(num_seeds, dtype=torch.bool, device=device)
    pair_seed = vote(pair_boxes, pair_groups, seed_boxes, seed_groups, alive, num_groups,
                     tie_margin=tie_margin, chunk_elements=chunk_elements)
    area = torch.zeros(num_seeds, dtype=torch.int64, device=device).scatter_add_(0, pair_seed, pair_pixels)
    best_area = torch.zeros(num_groups, dtype=torch.int64, device=device).scatter_reduce_(
        0, seed_groups, area, "amax")
    alive = (area >= min_area) | ((area > 0) & (area == best_area[seed_groups]))
    revote = (~alive[pair_seed]).nonzero().squeeze(1)
    if revote.numel():
        pair_seed[revote] = vote(pair_boxes[revote], pair_groups[revote], seed_boxes, seed_groups, alive,
                                 num_groups, tie_margin=tie_margin, chunk_elements=chunk_elements)
        area = torch.zeros(num_seeds, dtype=torch.int64, device=device).scatter_add_(0, pair_seed, pair_pixels)
    return pair_seed, area, alive & (area > 0)
