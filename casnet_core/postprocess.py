"""Common attribute support (paper, section III.C): head outputs -> semantic, instance and panoptic maps.

Pure tensor functions: they run on the device of their inputs, take plain keyword arguments and never
leave torch (no numpy, no Python loop over pixels, seeds or classes).

The procedure, per image and per thing class:

1. Semantics: argmax of the semantic logits, bilinearly upsampled to the output resolution (or label ids
   from another segmentation model: "separated" mode). :func:`upsample_semantic` gives exactly that argmax
   without building the (B, C, H, W) logits: it interpolates only near class borders.
2. Seeds: box-probability cells above ``box_threshold`` that are local maxima (``nms_kernel`` max-pool),
   each decoding its box from its attributes; NMS over these boxes (box probability as score,
   ``torchvision.ops.batched_nms`` per image and class) leaves the seed boxes.
3. Vote: every pixel of the class decodes its own box from its (l, t, r, b) and joins the seed box of its
   class with the highest IoU. Seeds whose IoU is within ``tie_margin`` of the best are near-ties: the
   seed whose box centre is nearest to the centre of the pixel's box wins (then the higher seed score).
4. Support: seeds with fewer than ``min_area`` pixels are dropped and their pixels vote again among the
   remaining seeds of their class. Dropping only moves pixels onto kept seeds, whose areas can only
   grow, so one re-vote settles it. The best-supported seed of a class is never dropped, so that every
   thing pixel keeps an instance.
5. Fallback: a thing class that has pixels but no seed at all (its box probability never passed the
   threshold, e.g. a badly trained box head or a class the other model of the separated mode found
   where this one saw nothing) would leave holes. Its pixel boxes become the seed candidates instead: the
   cells of that class, scored by their (sub-threshold) box probability, go through the same NMS and vote.
   This keeps the method's principle (pixels that predict the same box form one instance), runs on the
   device like the rest, and the low scores of such instances rank them last for AP. Connected components
   would need the CPU (OpenCV/SciPy) and would merge touching instances of one class.

Result: each thing pixel belongs to exactly one instance (no overlaps, no holes); stuff and void pixels to
none.

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

Geometry (the project's convention): pixel (x, y) covers [x, x+1) x [y, y+1); cell (i, j) of a stride-s
grid sits at ((j + 0.5) s, (i + 0.5) s); boxes are (x0, y0, x1, y1) with x1, y1 exclusive; decoding is
(px - l s, py - t s, px + r s, py + b s). Output instance boxes are the tight boxes of the final masks in
output pixels ((min x, min y, max x + 1, max y + 1)): the final pixel range calibrates the box (paper III.C).

Instance score (for AP ranking): seed box probability x mean probability of the instance's class over its
mask, the class probability being the softmax of the semantic logits at each pixel's cell (weighted by the
pixels each cell contributes). This is Panoptic-DeepLab's "center score x semantic score" for CASNet's seeds.
In separated mode (semantics from outside, no logits) the score is the seed box probability alone.

Panoptic ids follow the Cityscapes encoding: thing = label_id * 1000 + k (k = 0, 1, ... per image and class,
in decreasing score), stuff = label_id, void = 0. In panoptic mode stuff classes covering fewer than
``stuff_area`` pixels of an image become void (as Panoptic-DeepLab does); in instance mode every non-thing
pixel is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms

from casnet_core.labels import LABEL_DIVISOR

VOID_CHANNEL = 255  # semantic channel of void / ignored pixels (casnet_core.labels.IGNORE_INDEX)


@dataclass
class PanopticOutput:
    """Batched result of :func:`common_attribute_support`. N instances over all B images.

    Attributes:
        panoptic: (B, H, W) int32 Cityscapes panoptic ids (thing label_id*1000+k, stuff label_id, void 0).
        semantic: (B, H, W) uint8 Cityscapes label ids (0 where void).
        semantic_channels: (B, H, W) int64 semantic channel per pixel (255 where void).
        instance_batch: (N,) int64 image index of each instance.
        instance_ids: (N,) int64 panoptic id.
        instance_classes: (N,) int64 semantic channel.
        instance_label_ids: (N,) int64 Cityscapes label id.
        instance_scores: (N,) float32, see the module docstring.
        instance_boxes: (N, 4) float32 tight (x0, y0, x1, y1) of the mask, x1/y1 exclusive, output pixels.
        instance_areas: (N,) int64 pixels.
        instance_centroids: (N, 2) float32 (x, y), mean of the pixel centres.
    """

    panoptic: Tensor
    semantic: Tensor
    semantic_channels: Tensor
    instance_batch: Tensor
    instance_ids: Tensor
    instance_classes: Tensor
    instance_label_ids: Tensor
    instance_scores: Tensor
    instance_boxes: Tensor
    instance_areas: Tensor
    instance_centroids: Tensor


def decode_boxes(attributes: Tensor, stride: int) -> Tensor:
    """(B, 4, h, w) distances (l, t, r, b) in units of ``stride`` -> (B, 4, h, w) boxes (x0, y0, x1, y1) in
    input pixels, cell (i, j) sitting at ((j + 0.5) * stride, (i + 0.5) * stride)."""
    _, _, h, w = attributes.shape
    distances = attributes.float().clamp(min=0) * stride
    px = (torch.arange(w, device=attributes.device, dtype=torch.float32) + 0.5) * stride
    py = (torch.arange(h, device=attributes.device, dtype=torch.float32) + 0.5) * stride
    px, py = px.view(1, w), py.view(h, 1)
    return torch.stack(
        (px - distances[:, 0], py - distances[:, 1], px + distances[:, 2], py + distances[:, 3]), dim=1
    )


def box_iou_pairwise(boxes: Tensor, others: Tensor) -> Tensor:
    """IoU of boxes (..., 4) with others (..., 4) (broadcast), 0 where the union is empty."""
    iw = (torch.minimum(boxes[..., 2], others[..., 2]) - torch.maximum(boxes[..., 0], others[..., 0])).clamp(min=0)
    ih = (torch.minimum(boxes[..., 3], others[..., 3]) - torch.maximum(boxes[..., 1], others[..., 1])).clamp(min=0)
    inter = iw * ih
    area = (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)
    other_area = (others[..., 2] - others[..., 0]).clamp(min=0) * (others[..., 3] - others[..., 1]).clamp(min=0)
    return inter / (area + other_area - inter).clamp(min=1e-6)


def nms_per_group(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """``batched_nms`` that also accepts boxes with negative coordinates (seeds near the border decode
    boxes reaching outside the image; torchvision's coordinate-offset trick assumes coordinates >= 0 and
    could then suppress across groups). IoU is translation invariant, so shift everything to >= 0 first.
    Returns kept indices, by decreasing score."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    return batched_nms(boxes - boxes.min(), scores, groups, iou_threshold)


def find_seeds(
    box_prob: Tensor,
    cell_boxes: Tensor,
    *,
    box_threshold: float = 0.5,
    nms_iou: float = 0.6,
    nms_kernel: int = 3,
    pre_nms_top_k: int = 2000,
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
    candidates = box_prob > box_threshold
    if nms_kernel > 1:
        pooled = F.max_pool2d(box_prob, nms_kernel, stride=1, padding=nms_kernel // 2)
        candidates &= box_prob >= pooled
    flat = candidates.flatten().nonzero().squeeze(1)  # index into (B, K, h, w)
    scores = box_prob.flatten()[flat]
    if flat.numel() > pre_nms_top_k * batch:
        scores, best = scores.topk(pre_nms_top_k * batch)
        flat = flat[best]
    group, cell = flat // (h * w), flat % (h * w)
    boxes = cell_boxes.permute(0, 2, 3, 1).reshape(batch, h * w, 4)[group // num_things, cell]
    keep = nms_per_group(boxes, scores, group, nms_iou)
    return group[keep], cell[keep], boxes[keep], scores[keep]


def vote(
    pair_boxes: Tensor,
    pair_groups: Tensor,
    seed_boxes: Tensor,
    seed_groups: Tensor,
    seed_alive: Tensor,
    num_groups: int,
    *,
    tie_margin: float = 0.05,
    chunk_elements: int = 1 << 21,
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


def _bilinear_sources(size_out: int, size_in: int, cells_per_pixel: float, device: torch.device):
    """Source cells and weight of bilinear interpolation (align_corners=False), as PyTorch computes them:
    output pixel d reads cells i0 and i1 = i0 + 1 (clamped) at weight lam on i1."""
    position = ((torch.arange(size_out, device=device, dtype=torch.float64) + 0.5) * cells_per_pixel - 0.5).clamp(min=0)
    first = position.floor()
    weight = (position - first).float()
    first = first.long().clamp(max=size_in - 1)
    return first, (first + 1).clamp(max=size_in - 1), weight


def upsample_semantic(semantic_logits: Tensor, stride: int, output_size: tuple[int, int],
                      input_scale: tuple[float, float] = (1.0, 1.0), *, chunk_pixels: int = 1 << 18) -> Tensor:
    """(B, C, h, w) logits at stride ``stride`` -> (B, H, W) int64 argmax of their bilinear upsampling
    (align_corners=False) to the output resolution, without materialising the (B, C, H, W) logits.

    ``input_scale`` = (sy, sx) network-input pixels per output pixel: output pixel (x, y) reads the cell grid
    at ((x + 0.5) sx / s - 0.5, (y + 0.5) sy / s - 0.5), the project's geometry.

    Exact shortcut: an interpolated logit vector is a convex combination of its (up to) four source cells,
    so where the four cells share their argmax the pixel has it too. Only pixels whose sources disagree
    (near class borders, typically a few percent) are interpolated, in chunks of ``chunk_pixels``.
    """
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


def common_attribute_support(
    attributes: Tensor,
    box_logits: Tensor,
    *,
    thing_classes: Sequence[int],
    label_ids: Sequence[int],
    semantic_logits: Tensor | None = None,
    semantic: Tensor | None = None,
    stride: int = 4,
    output_size: tuple[int, int] | None = None,
    input_scale: tuple[float, float] = (1.0, 1.0),
    panoptic: bool = True,
    box_threshold: float = 0.5,
    nms_iou: float = 0.6,
    nms_kernel: int = 3,
    pre_nms_top_k: int = 2000,
    tie_margin: float = 0.05,
    min_area: int = 32,
    stuff_area: int = 2048,
    chunk_elements: int = 1 << 21,
) -> PanopticOutput:
    """CASNet post-processing (see the module docstring for the procedure, resolution and score).

    Args:
        attributes: (B, 4, h, w) distances (l, t, r, b) in units of ``stride``.
        box_logits: (B, K, h, w) box-probability logits, channel k = thing class k.
        thing_classes: (K,) semantic channel of each box-probability channel.
        label_ids: (C,) Cityscapes label id of each semantic channel.
        semantic_logits: (B, C, h, w) semantic head logits; or
        semantic: (B, H, W) int semantic channels at the output resolution, 255 = void (separated mode).
            Exactly one of the two.
        stride: output stride s of the heads.
        output_size: (H, W) of the outputs; default (h * s, w * s), or the size of ``semantic``.
        input_scale: (sy, sx) network-input pixels per output pixel (1 unless the image was resized for the
            network): output pixel (x, y) sits at ((x + 0.5) sx, (y + 0.5) sy) in the network input.
        panoptic: True: stuff keeps its label id (void below ``stuff_area``); False (instance mode): things only.
        box_threshold, nms_iou, nms_kernel, pre_nms_top_k: seed selection (:func:`find_seeds`).
        tie_margin: IoU margin of a near-tie, decided by box centres (:func:`vote`).
        min_area: seeds supported by fewer output pixels are dropped (their pixels re-vote).
        stuff_area: panoptic mode, stuff classes smaller than this (pixels per image) become void.
        chunk_elements: memory bound of the voter x seed comparison.
    """
    if (semantic_logits is None) == (semantic is None):
        raise ValueError("give exactly one of semantic_logits and semantic")
    device = attributes.device
    attributes = attributes.float()
    box_prob = torch.sigmoid(box_logits.float())
    batch, num_things, h, w = box_prob.shape
    if attributes.shape != (batch, 4, h, w):
        raise ValueError(f"attributes {tuple(attributes.shape)} do not match box_logits {tuple(box_logits.shape)}")
    if len(thing_classes) != num_things:
        raise ValueError(f"{len(thing_classes)} thing classes for {num_things} box-probability channels")
    num_classes = len(label_ids)
    num_groups, cells = batch * num_things, h * w

    if semantic is None:
        if semantic_logits.shape[0] != batch or semantic_logits.shape[1] != num_classes:
            raise ValueError(f"semantic_logits {tuple(semantic_logits.shape)}: expected ({batch}, {num_classes}, ...)")
        if output_size is None:
            output_size = (h * stride, w * stride)
        semantic = upsample_semantic(semantic_logits, stride, output_size, input_scale)
    else:
        semantic = semantic.to(device=device, dtype=torch.int64)
        if semantic.dim() != 3 or semantic.shape[0] != batch:
            raise ValueError(f"semantic {tuple(semantic.shape)}: expected ({batch}, H, W)")
        if output_size is not None and tuple(semantic.shape[1:]) != tuple(output_size):
            raise ValueError(f"semantic {tuple(semantic.shape)} does not match output_size {output_size}")
        output_size = (semantic.shape[1], semantic.shape[2])
        semantic = torch.where((semantic >= 0) & (semantic < num_classes), semantic,
                               torch.full_like(semantic, VOID_CHANNEL))
    height, width = output_size

    # Lookup tables over semantic channels 0..255 (255 = void).
    thing_of_channel = torch.full((256,), -1, dtype=torch.int64, device=device)
    thing_of_channel[torch.as_tensor(list(thing_classes), dtype=torch.int64, device=device)] = torch.arange(
        num_things, device=device)
    label_of_channel = torch.zeros(256, dtype=torch.int64, device=device)
    label_of_channel[:num_classes] = torch.as_tensor(list(label_ids), dtype=torch.int64, device=device)
    label_of_thing = label_of_channel[torch.as_tensor(list(thing_classes), dtype=torch.int64, device=device)]

    # Thing pixels of the output and the (group, cell) pair each one votes through.
    thing_map = thing_of_channel[semantic]  # (B, H, W): thing class k or -1
    pixel_index = (thing_map >= 0).flatten().nonzero().squeeze(1)
    pixel_thing = thing_map.flatten()[pixel_index]
    pixel_batch = pixel_index // (height * width)
    pixel_y = (pixel_index // width) % height
    pixel_x = pixel_index % width
    cell_row = (((torch.arange(height, device=device, dtype=torch.float64) + 0.5) * input_scale[0]) / stride).floor()
    cell_col = (((torch.arange(width, device=device, dtype=torch.float64) + 0.5) * input_scale[1]) / stride).floor()
    cell_row = cell_row.long().clamp(0, h - 1)
    cell_col = cell_col.long().clamp(0, w - 1)
    pixel_key = (pixel_batch * num_things + pixel_thing) * cells + cell_row[pixel_y] * w + cell_col[pixel_x]
    present = torch.zeros(num_groups * cells, dtype=torch.bool, device=device)
    present[pixel_key] = True
    pair_key = present.nonzero().squeeze(1)  # index into (B, K, h, w), like box_prob
    # int32: this table spans every (image, class, cell); at stride 1 and 1024x2048 it has 16 M entries.
    pair_of_key = torch.full((num_groups * cells,), -1, dtype=torch.int32, device=device)
    pair_of_key[pair_key] = torch.arange(pair_key.numel(), device=device, dtype=torch.int32)
    pixel_pair = pair_of_key[pixel_key].long()
    del present, pair_of_key, pixel_key, thing_map
    num_pairs = pair_key.numel()
    pair_pixels = torch.bincount(pixel_pair, minlength=num_pairs)
    pair_group, pair_cell = pair_key // cells, pair_key % cells
    cell_boxes = decode_boxes(attributes, stride)
    flat_cell_boxes = cell_boxes.permute(0, 2, 3, 1).reshape(batch, cells, 4)
    pair_boxes = flat_cell_boxes[pair_group // num_things, pair_cell]

    # Seeds; the fallback for classes with pixels and no seed.
    seed_group, _, seed_boxes, seed_scores = find_seeds(
        box_prob, cell_boxes, box_threshold=box_threshold, nms_iou=nms_iou, nms_kernel=nms_kernel,
        pre_nms_top_k=pre_nms_top_k)
    seedless = (torch.bincount(pair_group, minlength=num_groups) > 0) & (
        torch.bincount(seed_group, minlength=num_groups) == 0)
    orphan_pairs = seedless[pair_group].nonzero().squeeze(1)
    if orphan_pairs.numel():
        scores = box_prob.flatten()[pair_key[orphan_pairs]]
        if orphan_pairs.numel() > pre_nms_top_k * batch:
            scores, best = scores.topk(pre_nms_top_k * batch)
            orphan_pairs = orphan_pairs[best]
        keep = nms_per_group(pair_boxes[orphan_pairs], scores, pair_group[orphan_pairs], nms_iou)
        seed_group = torch.cat((seed_group, pair_group[orphan_pairs[keep]]))
        seed_boxes = torch.cat((seed_boxes, pair_boxes[orphan_pairs[keep]]))
        seed_scores = torch.cat((seed_scores, scores[keep]))
    # Sort seeds by group, best score first (vote() and the instance numbering rely on it).
    order = torch.argsort(seed_scores, descending=True, stable=True)
    order = order[torch.argsort(seed_group[order], stable=True)]
    seed_group, seed_boxes, seed_scores = seed_group[order], seed_boxes[order], seed_scores[order]
    num_seeds = seed_group.numel()

    # Vote, drop the seeds without enough support, re-vote their pixels.
    alive = torch.ones(num_seeds, dtype=torch.bool, device=device)
    pair_seed = vote(pair_boxes, pair_group, seed_boxes, seed_group, alive, num_groups,
                     tie_margin=tie_margin, chunk_elements=chunk_elements)
    area = torch.zeros(num_seeds, dtype=torch.int64, device=device).scatter_add_(0, pair_seed, pair_pixels)
    best_area = torch.zeros(num_groups, dtype=torch.int64, device=device).scatter_reduce_(
        0, seed_group, area, "amax")
    alive = (area >= min_area) | ((area > 0) & (area == best_area[seed_group]))
    revote = (~alive[pair_seed]).nonzero().squeeze(1)
    if revote.numel():
        pair_seed[revote] = vote(pair_boxes[revote], pair_group[revote], seed_boxes, seed_group, alive,
                                 num_groups, tie_margin=tie_margin, chunk_elements=chunk_elements)
        area = torch.zeros(num_seeds, dtype=torch.int64, device=device).scatter_add_(0, pair_seed, pair_pixels)
    alive &= area > 0

    # Instances: alive seeds, numbered per image and class by decreasing score (seeds are sorted so).
    instance_seed = alive.nonzero().squeeze(1)
    instance_group = seed_group[instance_seed]
    group_counts = torch.bincount(instance_group, minlength=num_groups)
    rank = torch.arange(instance_seed.numel(), device=device) - (torch.cumsum(group_counts, 0) - group_counts)[
        instance_group]
    instance_thing = instance_group % num_things
    instance_label = label_of_thing[instance_thing]
    instance_id = instance_label * LABEL_DIVISOR + rank
    number_of_seed = torch.full((num_seeds,), -1, dtype=torch.int64, device=device)
    number_of_seed[instance_seed] = torch.arange(instance_seed.numel(), device=device)

    instance_scores = seed_scores[instance_seed]
    if semantic_logits is not None:
        class_prob = torch.softmax(semantic_logits.float(), dim=1).flatten(2)  # (B, C, h*w)
        thing_channels = torch.as_tensor(list(thing_classes), dtype=torch.int64, device=device)
        pair_prob = class_prob[pair_group // num_things, thing_channels[pair_group % num_things], pair_cell]
        prob_sum = torch.zeros(num_seeds, dtype=torch.float32, device=device).scatter_add_(
            0, pair_seed, pair_prob * pair_pixels)
        instance_scores = instance_scores * prob_sum[instance_seed] / area[instance_seed].clamp(min=1)

    # Maps. Stuff: one lookup per pixel in a per-image table of what each channel becomes.
    pixel_instance = number_of_seed[pair_seed][pixel_pair]  # (via the pairs: one pass over the pixels)
    channel_key = semantic + 256 * torch.arange(batch, device=device).view(batch, 1, 1) if batch > 1 else semantic
    panoptic_of_channel = torch.zeros(batch * 256, dtype=torch.int32, device=device)
    if panoptic:
        is_stuff = (thing_of_channel < 0) & (torch.arange(256, device=device) < num_classes)
        class_area = torch.bincount(channel_key.flatten(), minlength=batch * 256)
        keep_stuff = is_stuff.repeat(batch) & (class_area >= stuff_area)
        panoptic_of_channel = torch.where(keep_stuff, label_of_channel.int().repeat(batch), panoptic_of_channel)
    panoptic_map = panoptic_of_channel[channel_key].flatten()
    panoptic_map[pixel_index] = instance_id.int()[pixel_instance]

    # Per-instance statistics from the final masks.
    num_instances = instance_seed.numel()
    areas = torch.bincount(pixel_instance, minlength=num_instances)
    boxes = torch.zeros(num_instances, 4, dtype=torch.int64, device=device)
    if num_instances:
        boxes[:, 0].scatter_reduce_(0, pixel_instance, pixel_x, "amin", include_self=False)
        boxes[:, 1].scatter_reduce_(0, pixel_instance, pixel_y, "amin", include_self=False)
        boxes[:, 2].scatter_reduce_(0, pixel_instance, pixel_x, "amax", include_self=False)
        boxes[:, 3].scatter_reduce_(0, pixel_instance, pixel_y, "amax", include_self=False)
        boxes[:, 2:] += 1  # exclusive x1, y1
    sum_x = torch.zeros(num_instances, dtype=torch.int64, device=device).scatter_add_(0, pixel_instance, pixel_x)
    sum_y = torch.zeros(num_instances, dtype=torch.int64, device=device).scatter_add_(0, pixel_instance, pixel_y)
    centroids = torch.stack((sum_x, sum_y), dim=1).double() / areas.clamp(min=1).double()[:, None] + 0.5

    return PanopticOutput(
        panoptic=panoptic_map.view(batch, height, width),
        semantic=label_of_channel.to(torch.uint8)[semantic],
        semantic_channels=semantic,
        instance_batch=instance_group // num_things,
        instance_ids=instance_id,
        instance_classes=torch.as_tensor(list(thing_classes), dtype=torch.int64, device=device)[instance_thing],
        instance_label_ids=instance_label,
        instance_scores=instance_scores.float(),
        instance_boxes=boxes.float(),
        instance_areas=areas,
        instance_centroids=centroids.float(),
    )
