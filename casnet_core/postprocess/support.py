"""The composition: :func:`common_attribute_support` runs the stages of :mod:`casnet_core.postprocess` in order
and gathers their results in a :class:`PanopticOutput`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from casnet_core.postprocess.boxes import decode_boxes
from casnet_core.postprocess.defaults import CHUNK_ELEMENTS, DEFAULT_THRESHOLDS, NMS_KERNEL, PRE_NMS_TOP_K
from casnet_core.postprocess.heads import sanitize_heads, sanitize_semantic_logits
from casnet_core.postprocess.instances import instance_scores, mask_statistics, number_instances, pair_class_probability
from casnet_core.postprocess.maps import panoptic_map
from casnet_core.postprocess.pairs import pair_statistics, thing_pairs
from casnet_core.postprocess.seeds import fallback_seeds, find_seeds, select_seeds
from casnet_core.postprocess.semantic import channel_tables, checked_semantic_channels, upsample_semantic
from casnet_core.postprocess.voting import vote_with_support


@dataclass
class PanopticOutput:
    """Batched result of :func:`common_attribute_support`. N instances over all B images.

    Attributes:
        panoptic: (B, H, W) int32 Cityscapes panoptic ids (thing label_id*1000+k, stuff label_id, void 0).
        semantic: (B, H, W) uint8 Cityscapes label ids (0 where void).
        semantic_channels: (B, H, W) int32 semantic channel per pixel (255 where void).
        instance_batch: (N,) int64 image index of each instance.
        instance_ids: (N,) int64 panoptic id.
        instance_classes: (N,) int64 semantic channel.
        instance_label_ids: (N,) int64 Cityscapes label id.
        instance_scores: (N,) float32, see :mod:`casnet_core.postprocess.instances`.
        instance_boxes: (N, 4) float32 tight (x0, y0, x1, y1) of the mask, x1/y1 exclusive, output pixels.
        instance_areas: (N,) int64 pixels.
        instance_centroids: (N, 2) float32 (x, y), mean of the pixel centres.
        nonfinite: number of NaN / +-inf values found in the head outputs (all B images); they were given
            the meaning stated in :mod:`casnet_core.postprocess.heads`.
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
    nonfinite: int = 0


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
    box_threshold: float = DEFAULT_THRESHOLDS["box_threshold"],
    nms_iou: float = DEFAULT_THRESHOLDS["nms_iou"],
    nms_kernel: int = NMS_KERNEL,
    pre_nms_top_k: int = PRE_NMS_TOP_K,
    tie_margin: float = DEFAULT_THRESHOLDS["tie_margin"],
    min_area: int = DEFAULT_THRESHOLDS["min_area"],
    stuff_area: int = DEFAULT_THRESHOLDS["stuff_area"],
    max_instances: int = DEFAULT_THRESHOLDS["max_instances"],
    chunk_elements: int = CHUNK_ELEMENTS,
) -> PanopticOutput:
    """CASNet post-processing (the stages: :mod:`casnet_core.postprocess`; resolution: ``.pairs``; score:
    ``.instances``; the meaning of non-finite head outputs: ``.heads``).

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
        max_instances: instances per image at most (:func:`select_seeds`).
        chunk_elements: memory bound of the voter x seed comparison.
    """
    if (semantic_logits is None) == (semantic is None):
        raise ValueError("give exactly one of semantic_logits and semantic")
    batch, num_things, h, w = box_logits.shape
    if attributes.shape != (batch, 4, h, w):
        raise ValueError(f"attributes {tuple(attributes.shape)} do not match box_logits {tuple(box_logits.shape)}")
    if len(thing_classes) != num_things:
        raise ValueError(f"{len(thing_classes)} thing classes for {num_things} box-probability channels")
    device = attributes.device
    num_classes = len(label_ids)
    num_groups, cells = batch * num_things, h * w
    attributes, box_prob, nonfinite = sanitize_heads(attributes, box_logits)

    if semantic is None:
        if semantic_logits.shape[0] != batch or semantic_logits.shape[1] != num_classes:
            raise ValueError(f"semantic_logits {tuple(semantic_logits.shape)}: expected ({batch}, {num_classes}, ...)")
        semantic_logits, void_cells, nonfinite_semantic = sanitize_semantic_logits(semantic_logits)
        nonfinite += nonfinite_semantic
        semantic = upsample_semantic(semantic_logits, stride, output_size or (h * stride, w * stride), input_scale,
                                     void_cells=void_cells)
    else:
        semantic = checked_semantic_channels(semantic.to(device), batch, num_classes, output_size)

    thing_channels = torch.as_tensor(list(thing_classes), dtype=torch.int64, device=device)
    thing_of_channel, label_of_channel = channel_tables(thing_channels, label_ids)
    pairs = thing_pairs(semantic, thing_channels, num_classes, (h, w), stride, input_scale)
    pair_groups, pair_cells = pairs.pair_group, pairs.pair_cell
    cell_boxes = decode_boxes(attributes, stride)
    image_offset = torch.arange(num_groups, device=device) // num_things * cells  # (G,) first cell of the image
    pair_cell_index = image_offset.index_select(0, pair_groups) + pair_cells  # into (B * h * w)
    # Coordinate by coordinate: index_select of long rows, several times faster than of (B * h * w, 4) rows.
    pair_boxes = cell_boxes.transpose(0, 1).reshape(4, batch * cells).index_select(1, pair_cell_index).t()

    seed_groups, _, seed_boxes, seed_scores = find_seeds(
        box_prob, cell_boxes, box_threshold=box_threshold, nms_iou=nms_iou, nms_kernel=nms_kernel,
        pre_nms_top_k=pre_nms_top_k)
    pair_scores = box_prob.flatten().index_select(0, pairs.pair_key)
    extra_groups, extra_boxes, extra_scores = fallback_seeds(
        pair_boxes, pair_groups, pair_scores, seed_groups, num_groups, nms_iou=nms_iou, top_k=pre_nms_top_k,
        groups_per_image=num_things)
    seed_groups, seed_boxes = torch.cat((seed_groups, extra_groups)), torch.cat((seed_boxes, extra_boxes))
    seed_scores = torch.cat((seed_scores, extra_scores))
    group_has_pixels = torch.bincount(pair_groups, minlength=num_groups) > 0
    kept = select_seeds(seed_groups, seed_scores, group_has_pixels, num_things, max_instances=max_instances)
    seed_groups, seed_boxes, seed_scores = seed_groups[kept], seed_boxes[kept], seed_scores[kept]

    pair_seed, _, alive = vote_with_support(
        pair_boxes, pair_groups, pairs.pair_pixels, seed_boxes, seed_groups, num_groups, min_area=min_area,
        tie_margin=tie_margin, chunk_elements=chunk_elements)
    instance_seed, instance_ids = number_instances(alive, seed_groups, num_things, label_of_channel[thing_channels])
    number_of_seed = torch.full((seed_groups.numel(),), -1, dtype=torch.int64, device=device)
    number_of_seed[instance_seed] = torch.arange(instance_seed.numel(), device=device)
    pair_instance = number_of_seed[pair_seed]

    pair_prob = None
    if semantic_logits is not None:
        pair_prob = pair_class_probability(semantic_logits, pairs.pair_key, thing_channels)
    scores = instance_scores(seed_scores, instance_seed, pair_seed, pairs.pair_pixels, pair_prob)
    panoptic_ids = panoptic_map(pairs, instance_ids[pair_instance], label_of_channel, thing_of_channel, num_classes,
                                panoptic=panoptic, stuff_area=stuff_area)
    areas, boxes, centroids = mask_statistics(pair_instance, pair_statistics(pairs, stride, input_scale),
                                              instance_seed.numel())
    instance_things = seed_groups[instance_seed] % num_things
    return PanopticOutput(
        panoptic=panoptic_ids,
        semantic=label_of_channel.to(torch.uint8).index_select(0, semantic.flatten()).view(semantic.shape),
        semantic_channels=semantic,
        instance_batch=seed_groups[instance_seed] // num_things,
        instance_ids=instance_ids,
        instance_classes=thing_channels[instance_things],
        instance_label_ids=label_of_channel[thing_channels][instance_things],
        instance_scores=scores,
        instance_boxes=boxes,
        instance_areas=areas,
        instance_centroids=centroids,
        nonfinite=nonfinite,
    )
