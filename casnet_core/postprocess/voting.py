"""Stages 6-7: the vote of every pair among the seeds of its image and class, then the minimum support
(see the stage list of :mod:`casnet_core.postprocess`)."""

from __future__ import annotations

import torch
from torch import Tensor

from casnet_core.postprocess.boxes import box_iou_pairwise
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
    alive_index = seed_alive.nonzero().squeeze(1)
    counts = torch.bincount(seed_groups[alive_index], minlength=num_groups)
    width = int(counts.max()) if counts.numel() else 0
    if pair_boxes.shape[0] == 0 or width == 0:
        return torch.full((pair_boxes.shape[0],), -1, dtype=torch.int64, device=device)
    # Padded table (G, width) of the alive seeds of each group, -1 in the padding.
    starts = torch.cumsum(counts, 0) - counts
    slots = torch.arange(alive_index.numel(), device=device) - starts[seed_groups[alive_index]]
    table = torch.full((num_groups, width), -1, dtype=torch.int64, device=device)
    table[seed_groups[alive_index], slots] = alive_index
    seed_centres = (seed_boxes[:, :2] + seed_boxes[:, 2:]) / 2

    chosen = torch.empty(pair_boxes.shape[0], dtype=torch.int64, device=device)
    rows = max(1, chunk_elements // width)
    for start in range(0, pair_boxes.shape[0], rows):
        boxes = pair_boxes[start : start + rows]
        candidates = table[pair_groups[start : start + rows]]  # (c, width)
        valid = candidates >= 0
        index = candidates.clamp(min=0)
        iou = box_iou_pairwise(boxes[:, None, :], seed_boxes[index])
        iou = torch.where(valid, iou, torch.full_like(iou, -1.0))
        best = iou.amax(dim=1, keepdim=True)
        near = valid & (iou >= best - tie_margin)
        centres = (boxes[:, None, :2] + boxes[:, None, 2:]) / 2
        distance = (centres - seed_centres[index]).square().sum(-1)
        distance = torch.where(near, distance, torch.full_like(distance, float("inf")))
        # argmin returns the first minimum: among equal distances the better-scored seed wins; a group
        # without alive seeds has only -1 entries, so -1 comes out.
        chosen[start : start + rows] = candidates.gather(1, distance.argmin(dim=1, keepdim=True)).squeeze(1)
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
