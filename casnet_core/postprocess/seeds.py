"""Stages 3-5: seeds from the box-probability head, fallback seeds for seedless classes, the cap per image
and class (see the stage list of :mod:`casnet_core.postprocess`)."""

from __future__ import annotations

import torch
from torch import Tensor

from casnet_core.labels import LABEL_DIVISOR
from casnet_core.postprocess.boxes import nms_per_group
from casnet_core.postprocess.defaults import DEFAULT_THRESHOLDS, NMS_KERNEL, PRE_NMS_TOP_K


def find_seeds(
    box_prob: Tensor,
    cell_boxes: Tensor,
    *,
    box_threshold: float = DEFAULT_THRESHOLDS["box_threshold"],
    nms_iou: float = DEFAULT_THRESHOLDS["nms_iou"],
    nms_kernel: int = NMS_KERNEL,
    pre_nms_top_k: int = PRE_NMS_TOP_K,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Seed points and seed boxes from the box-probability head.

    Args:
        box_prob: (B, K, h, w) box probabilities (after sigmoid), channel k = thing class k.
        cell_boxes: (B, 4, h, w) boxes decoded at every cell (:func:`decode_boxes`).
        box_threshold: candidates need a probability above this.
        nms_iou: NMS discards a seed box whose IoU with a better one of its image and class exceeds this.
        nms_kernel: odd max-pool window; only local maxima are candidates (1 disables the filter).
        pre_nms_top_k: at most this many candidates per image (best first) enter NMS.

    Returns:
        group (S,) int64 = image * K + k, cell (S,) int64 = i * w + j, box (S, 4), score (S,).
    """
    batch, num_things, h, w = box_prob.shape
    flat = (box_prob > box_threshold).flatten().nonzero().squeeze(1)  # index into (B, K, h, w)
    if nms_kernel > 1:
        flat = flat[window_maxima(box_prob, flat, nms_kernel)]
    scores = box_prob.flatten().index_select(0, flat)
    best = _best_per_image(scores, flat // (num_things * h * w), pre_nms_top_k)
    if best is not None:
        flat, scores = flat[best], scores[best]
    group, cell = flat // (h * w), flat % (h * w)
    boxes = cell_boxes.permute(0, 2, 3, 1).reshape(batch, h * w, 4)[group // num_things, cell]
    keep = nms_per_group(boxes, scores, group, nms_iou)
    return group[keep], cell[keep], boxes[keep], scores[keep]


def window_maxima(values: Tensor, flat: Tensor, kernel: int) -> Tensor:
    """(B, K, h, w) values, (N,) int64 flat indices into them -> (N,) bool: the value is at least every other value
    of its odd ``kernel`` x ``kernel`` window inside the map, i.e. ``values >= F.max_pool2d(values, kernel, stride=1,
    padding=kernel // 2)`` at those indices. Checked at the few candidates above the threshold only, neighbour by
    neighbour, instead of a window maximum over the whole map."""
    h, w = values.shape[-2:]
    flat_values = values.flatten()
    row, col = flat // w % h, flat % w
    centre = flat_values.index_select(0, flat)
    keep = torch.ones_like(flat, dtype=torch.bool)
    radius = kernel // 2
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy == 0 and dx == 0:
                continue
            inside = (row + dy >= 0) & (row + dy < h) & (col + dx >= 0) & (col + dx < w)
            neighbour = flat_values.index_select(0, torch.where(inside, flat + dy * w + dx, flat))
            keep &= centre >= neighbour
    return keep


def fallback_seeds(
    pair_boxes: Tensor,
    pair_groups: Tensor,
    pair_scores: Tensor,
    seed_groups: Tensor,
    num_groups: int,
    *,
    nms_iou: float = DEFAULT_THRESHOLDS["nms_iou"],
    top_k: int = PRE_NMS_TOP_K,
    groups_per_image: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Seeds for the groups (image * K + class) that have pixels but no seed: their own pair boxes, NMS'd.

    Args:
        pair_boxes: (P, 4) box of each pair (its cell's box); pair_groups: (P,) int64 group of each pair;
        pair_scores: (P,) box probability of each pair's cell for its class.
        seed_groups: (S,) int64 groups of the seeds found so far.
        num_groups: G.
        nms_iou: as in :func:`find_seeds`.
        top_k: at most this many candidates per image (best first) enter NMS, plus the best pairs of any
            seedless group that the cut would leave without a candidate: every seedless group gets at least one seed.
        groups_per_image: K, the groups of one image (None: all groups belong to one image).

    Returns:
        group (F,) int64, box (F, 4), score (F,) of the new seeds.
    """
    seedless = (torch.bincount(pair_groups, minlength=num_groups) > 0) & (
        torch.bincount(seed_groups, minlength=num_groups) == 0)
    orphans = seedless.index_select(0, pair_groups).nonzero().squeeze(1)
    scores = pair_scores[orphans]
    best = _best_per_image(scores, pair_groups[orphans] // (groups_per_image or num_groups), top_k)
    if best is not None:
        candidates = orphans[best]
        # Groups the cut left without candidate: their best pairs join (ties: all of them).
        represented = torch.zeros(num_groups, dtype=torch.bool, device=orphans.device)
        represented[pair_groups[candidates]] = True
        orphan_groups = pair_groups[orphans]
        group_best = torch.full((num_groups,), -1.0, dtype=pair_scores.dtype, device=orphans.device).scatter_reduce(
            0, orphan_groups, pair_scores[orphans], "amax")
        missing = ~represented[orphan_groups] & (pair_scores[orphans] >= group_best[orphan_groups])
        orphans = torch.cat((candidates, orphans[missing]))
        scores = pair_scores[orphans]
    keep = nms_per_group(pair_boxes[orphans], scores, pair_groups[orphans], nms_iou)
    return pair_groups[orphans[keep]], pair_boxes[orphans[keep]], scores[keep]


def _best_per_image(scores: Tensor, images: Tensor, top_k: int) -> Tensor | None:
    """Indices of the ``top_k`` best ``scores`` of each image, best first within an image; None when no image has
    more than ``top_k``. Per image, so that a frame gets the same seeds alone as in a batch.

    Args:
        scores: (N,); images: (N,) int64 image of each score.
    """
    counts = torch.bincount(images)
    if counts.numel() == 0 or int(counts.max()) <= top_k:
        return None
    kept = []
    for image in range(counts.numel()):
        members = (images == image).nonzero().squeeze(1)
        if members.numel() > top_k:
            members = members[scores[members].topk(top_k).indices]
        kept.append(members)
    return torch.cat(kept)


def select_seeds(
    seed_groups: Tensor,
    seed_scores: Tensor,
    group_has_pixels: Tensor,
    num_things: int,
    *,
    max_instances: int = DEFAULT_THRESHOLDS["max_instances"],
) -> Tensor:
    """The seeds that take part in the vote, in the order the vote and the numbering need.

    Drops the seeds of groups without pixels, then keeps per image the ``max_instances`` best seeds (the
    best seed of each group first, whatever its score, so that no group with pixels loses all its seeds)
    and per group at most ``LABEL_DIVISOR`` (the ids label_id * 1000 + k stay within their label).

    Args:
        seed_groups: (S,) int64 group = image * K + class of each seed; seed_scores: (S,).
        group_has_pixels: (G,) bool.
        num_things: K.
        max_instances: seeds kept per image (>= 1).

    Returns:
        (S',) int64 indices of the kept seeds, sorted by group, best score first within a group (equal
        scores: in input order).
    """
    if max_instances < 1:
        raise ValueError(f"max_instances must be at least 1, got {max_instances}")
    device = seed_groups.device
    order = torch.argsort(seed_scores, descending=True, stable=True)
    order = order[torch.argsort(seed_groups[order], stable=True)]
    order = order[group_has_pixels[seed_groups[order]]]
    groups = seed_groups[order]
    counts = torch.bincount(groups, minlength=group_has_pixels.numel())
    rank_in_group = torch.arange(order.numel(), device=device) - (torch.cumsum(counts, 0) - counts)[groups]
    # Rank within the image: groups' best seeds first, then by score.
    first = rank_in_group == 0
    images = groups // num_things
    by_score = torch.argsort(seed_scores[order], descending=True, stable=True)
    by_first = by_score[torch.argsort((~first[by_score]).to(torch.uint8), stable=True)]
    by_image = by_first[torch.argsort(images[by_first], stable=True)]
    image_counts = torch.bincount(images, minlength=max(1, group_has_pixels.numel() // max(1, num_things)))
    rank_in_image = torch.empty_like(rank_in_group)
    rank_in_image[by_image] = torch.arange(order.numel(), device=device) - (
        torch.cumsum(image_counts, 0) - image_counts)[images[by_image]]
    keep = (rank_in_group < LABEL_DIVISOR) & (first | (rank_in_image < max_instances))
    return order[keep]
