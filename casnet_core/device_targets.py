"""The training targets of ``casnet_core.targets.build_targets``, built with torch for a whole batch on the
batch's device (the GPU during training), vectorised from the instance maps: no per-instance Python loop.

Same geometry and the same values as the numpy reference (a test compares them on random scenes): see
``casnet_core.targets`` for the conventions. Workers then only decode and augment uint8 maps, and the GPU
builds the targets in a few kernels instead of waiting on numpy.
"""

from __future__ import annotations

import functools

import torch

from casnet_core.labels import LABEL_DIVISOR, NUM_THING_CLASSES, class_space

# Instance keys: batch index in the high bits, the Cityscapes instance id (< 2^31) in the low ones.
_BATCH_SHIFT = 32


@functools.lru_cache(maxsize=None)
def _tables(mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(256,) semantic channel of each label id (IGNORE_INDEX for void), (256,) thing channel of each
    label id (-1 for no evaluated thing class), on the CPU."""
    classes = class_space(mode)
    channel = torch.from_numpy(classes.label_id_lut().astype("int64"))
    thing = torch.full((256,), -1, dtype=torch.int64)
    for index, label_id in enumerate(classes.label_ids):
        if classes.is_thing[index]:
            thing[label_id] = classes.thing_channel[index]
    return channel, thing


def build_targets_torch(
    label_ids: torch.Tensor,
    instance_ids: torch.Tensor,
    *,
    mode: str,
    stride: int,
    center_radius: float = 1.5,
    small_instance_area: int | None = None,
) -> dict[str, torch.Tensor]:
    """Targets of a batch on the stride-``stride`` grid, on the device of the inputs.

    Args:
        label_ids: (B, H, W) Cityscapes label ids (any integer type); H, W multiples of stride.
        instance_ids: (B, H, W) Cityscapes instanceIds (any integer type).
        mode, stride, center_radius: as ``casnet_core.targets.build_targets``.
        small_instance_area: when given, also "small_instance": (B, H, W) bool, the pixels of thing
            instances of fewer pixels than this (the small-instance weight of the semantic loss).

    Returns (h, w = H/s, W/s), each as ``build_targets`` per image, stacked over the batch:
        "semantic" (B, h, w) int64, "semantic_full" (B, H, W) uint8, "attributes" (B, 4, h, w) float32,
        "thing_mask" (B, h, w) bool, "box_prob" (B, 8, h, w) float32.
    """
    if label_ids.dim() != 3 or label_ids.shape != instance_ids.shape:
        raise ValueError(f"expected (B, H, W) label and instance maps, got {tuple(label_ids.shape)} and "
                         f"{tuple(instance_ids.shape)}")
    batch, height, width = label_ids.shape
    if height % stride or width % stride:
        raise ValueError(f"ground truth size {(height, width)} is not a multiple of stride {stride}")
    device = label_ids.device
    channel_of_label, thing_of_label = (table.to(device) for table in _tables(mode))
    labels = label_ids.long()

    # Instances on the full-resolution ground truth: index 0..N-1 over the batch, -1 elsewhere.
    ids = instance_ids.long()
    thing_of_pixel = torch.where(ids >= LABEL_DIVISOR, thing_of_label[(ids // LABEL_DIVISOR).clamp(0, 255)], -1)
    is_thing = thing_of_pixel >= 0
    b_idx, y_idx, x_idx = is_thing.nonzero(as_tuple=True)
    keys = (b_idx << _BATCH_SHIFT) | ids[b_idx, y_idx, x_idx]
    unique_keys, inverse = torch.unique(keys, return_inverse=True)
    count = unique_keys.numel()
    full_index = torch.full((batch, height, width), -1, dtype=torch.int64, device=device)
    full_index[b_idx, y_idx, x_idx] = inverse
    instance_thing = thing_of_label[((unique_keys & ((1 << _BATCH_SHIFT) - 1)) // LABEL_DIVISOR).clamp(0, 255)]

    # Boxes (x0, y0, x1, y1), x1 and y1 exclusive, in float32 as the numpy reference.
    boxes = torch.zeros((count, 4), dtype=torch.int64, device=device)
    if count:
        big = max(height, width) + 1
        boxes[:, 0] = torch.full((count,), big, device=device).scatter_reduce(0, inverse, x_idx, "amin")
        boxes[:, 1] = torch.full((count,), big, device=device).scatter_reduce(0, inverse, y_idx, "amin")
        boxes[:, 2] = torch.full((count,), -1, device=device).scatter_reduce(0, inverse, x_idx, "amax") + 1
        boxes[:, 3] = torch.full((count,), -1, device=device).scatter_reduce(0, inverse, y_idx, "amax") + 1
    boxes = boxes.float()

    # Subsample at the cell points.
    offset = stride // 2
    cell_index = full_index[:, offset::stride, offset::stride]
    h, w = cell_index.shape[-2:]
    thing_mask = cell_index >= 0
    px = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) * stride
    py = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) * stride
    cell_box = torch.cat([boxes.new_zeros(1, 4), boxes])[cell_index + 1]  # (B, h, w, 4), zeros off things
    attributes = torch.stack([px - cell_box[..., 0], py[:, None] - cell_box[..., 1],
                              cell_box[..., 2] - px, cell_box[..., 3] - py[:, None]], dim=1) / stride
    attributes = torch.where(thing_mask[:, None], attributes, attributes.new_zeros(()))

    box_prob = torch.zeros((batch, NUM_THING_CLASSES, h, w), dtype=torch.float32, device=device)
    if count:
        centers = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], dim=1)
        cb, cy_idx, cx_idx = thing_mask.nonzero(as_tuple=True)  # thing cells, row-major per image
        cell_instance = cell_index[cb, cy_idx, cx_idx]
        dx = px[cx_idx] - centers[cell_instance, 0]
        dy = py[cy_idx] - centers[cell_instance, 1]
        reach = center_radius * stride
        central = (dx.abs() <= reach) & (dy.abs() <= reach)
        box_prob[cb[central], instance_thing[cell_instance[central]], cy_idx[central], cx_idx[central]] = 1.0
        # An instance with cells but none central: its cell nearest the box centre (the first in row-major
        # order among equals, as numpy's argmin).
        has_positive = torch.zeros(count, dtype=torch.bool, device=device)
        has_positive[cell_instance[central]] = True
        lacking = ~has_positive[cell_instance]
        if lacking.any():
            distance = dx[lacking] ** 2 + dy[lacking] ** 2
            instance = cell_instance[lacking]
            nearest = torch.full((count,), float("inf"), device=device).scatter_reduce(0, instance, distance, "amin")
            flat = cy_idx[lacking] * w + cx_idx[lacking]
            candidate = torch.where(distance == nearest[instance], flat, h * w)
            chosen = torch.full((count,), h * w, dtype=torch.int64, device=device).scatter_reduce(
                0, instance, candidate, "amin")
            has_cell = chosen < h * w
            batch_of_instance = unique_keys >> _BATCH_SHIFT
            chosen, picked = chosen[has_cell], has_cell.nonzero(as_tuple=True)[0]
            box_prob[batch_of_instance[picked], instance_thing[picked], chosen // w, chosen % w] = 1.0

    targets = {
        "semantic": channel_of_label[labels[:, offset::stride, offset::stride]],
        "semantic_full": channel_of_label[labels].to(torch.uint8),
        "attributes": attributes,
        "thing_mask": thing_mask,
        "box_prob": box_prob,
    }
    if small_instance_area is not None:
        areas = torch.bincount(inverse, minlength=count)
        small = torch.cat([areas.new_zeros(1), (areas < small_instance_area).long()])
        targets["small_instance"] = small[full_index + 1].bool()
    return targets
