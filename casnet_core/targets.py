"""Training targets of CASNet (paper, section III.B), computed from Cityscapes ground truth.

Geometry (the one convention of the project; post-processing decodes with the same rules):

* Continuous pixel coordinates: pixel (x, y) covers [x, x+1) x [y, y+1); its centre is (x+0.5, y+0.5).
* An instance's box is (x0, y0, x1, y1) = (min x, min y, max x + 1, max y + 1) over its pixels.
* A grid of stride s: cell (i, j) sits at the point p = ((j + 0.5) s, (i + 0.5) s) and belongs to the
  instance of input pixel (x, y) = (j s + s // 2, i s + s // 2), the pixel whose area holds p.
* Common attribute of a thing cell: (l, t, r, b) = (px - x0, py - y0, x1 - px, y1 - py) / s.
  Decoding: box = (px - l s, py - t s, px + r s, py + b s), exact by construction
  (``casnet_core.postprocess.decode_boxes``).
* Box probability (FCOS-style, class specific): 1 on the cells of an instance that lie in its central
  area, the box shrunk around its centre to ``center_radius`` strides each way (FCOS "center
  sampling", radius 1.5). An occluded centre may leave no cell of the instance there; then the
  instance's cell nearest the box centre is the one positive, so every instance has a seed.
  Positives are restricted to the instance's own cells because the seed box is decoded from the
  attributes at the seed: a seed on another instance's cell would decode that instance's box.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from casnet_core.labels import LABEL_DIVISOR, NUM_THING_CLASSES, class_space



def build_targets(
    label_ids: np.ndarray,
    instance_ids: np.ndarray,
    *,
    mode: str,
    stride: int,
    center_radius: float = 1.5,
    small_instance_area: int | None = None,
) -> dict[str, np.ndarray]:
    """Targets on the stride-``stride`` grid of an (H, W) ground truth; H, W multiples of stride.

    Args:
        label_ids: (H, W) Cityscapes label ids.
        instance_ids: (H, W) Cityscapes instanceIds encoding.
        mode: "panoptic" or "instance" (class space of the semantic target).
        stride: output stride s of the network (1 for exact full-resolution targets).
        center_radius: half size, in cells, of the central area that is positive for box probability.
        small_instance_area: when given, also "small_instance": (H, W) bool, the pixels of thing instances
            of fewer pixels than this (the small-instance weight of the semantic loss).

    Returns (h, w = H/s, W/s):
        "semantic": (h, w) int64 semantic channel, IGNORE_INDEX for void.
        "semantic_full": (H, W) uint8 semantic channel of every input pixel, IGNORE_INDEX for void: the
            cross-entropy is computed at this resolution on upsampled logits (HRNet-seg, Panoptic-DeepLab),
            so thin classes are not lost to the stride-s sampling of "semantic".
        "attributes": (4, h, w) float32 (l, t, r, b) in units of s; 0 off thing cells.
        "thing_mask": (h, w) bool, cells of a thing instance (where the attribute loss applies).
        "box_prob": (8, h, w) float32 in {0, 1}.
        "instance": (h, w) int64 instance index 1..N per cell, 0 elsewhere.
        "boxes": (N, 4) float32 box of instance n+1 in input pixels (x0, y0, x1, y1).
        "instance_classes": (N,) int64 thing channel (box-probability channel) of instance n+1.
    """
    height, width = label_ids.shape
    if height % stride or width % stride:
        raise ValueError(f"ground truth size {label_ids.shape} is not a multiple of stride {stride}")
    classes = class_space(mode)
    thing_channel_of_label = np.full(256, -1, dtype=np.int64)
    for channel, label_id in enumerate(classes.label_ids):
        if classes.is_thing[channel]:
            thing_channel_of_label[label_id] = classes.thing_channel[channel]

    # Instances on the full-resolution ground truth: the box is a property of the whole instance,
    # not of its subsampled cells.
    instance_ids = instance_ids.astype(np.int64)
    is_instance = instance_ids >= LABEL_DIVISOR
    ids, inverse = np.unique(np.where(is_instance, instance_ids, 0), return_inverse=True)
    inverse = inverse.reshape(height, width)
    keep = ids >= LABEL_DIVISOR
    thing_ch = np.where(keep, thing_channel_of_label[np.minimum(ids // LABEL_DIVISOR, 255)], -1)
    keep &= thing_ch >= 0  # caravan/trailer have instances but are not evaluated thing classes
    ids, thing_ch = ids[keep], thing_ch[keep]
    # index 1..N on the full-resolution map
    remap = np.zeros(len(keep), dtype=np.int64)
    remap[np.flatnonzero(keep)] = np.arange(1, len(ids) + 1)
    full_index = remap[inverse]
    boxes = _boxes_of(full_index, len(ids))

    # Subsample at the cell points.
    offset = stride // 2
    cell_index = full_index[offset::stride, offset::stride]
    cell_labels = label_ids[offset::stride, offset::stride]
    h, w = cell_index.shape
    semantic = classes.label_id_lut()[cell_labels].astype(np.int64)

    px = (np.arange(w, dtype=np.float32) + 0.5) * stride
    py = (np.arange(h, dtype=np.float32) + 0.5) * stride
    thing_mask = cell_index > 0
    cell_box = np.concatenate([np.zeros((1, 4), np.float32), boxes])[cell_index]  # (h, w, 4)
    attributes = np.stack(
        [px[None, :] - cell_box[..., 0], py[:, None] - cell_box[..., 1], cell_box[..., 2] - px[None, :], cell_box[..., 3] - py[:, None]]
    ) / stride
    attributes = np.where(thing_mask[None], attributes, 0.0).astype(np.float32)

    box_prob = np.zeros((NUM_THING_CLASSES, h, w), dtype=np.float32)
    if len(ids):
        centers = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
        reach = center_radius * stride
        cx, cy = centers[cell_index - 1, 0], centers[cell_index - 1, 1]
        in_center = thing_mask & (np.abs(px[None, :] - cx) <= reach) & (np.abs(py[:, None] - cy) <= reach)
        ys, xs = np.nonzero(in_center)
        box_prob[thing_ch[cell_index[ys, xs] - 1], ys, xs] = 1.0
        has_positive = np.zeros(len(ids) + 1, dtype=bool)
        has_positive[cell_index[ys, xs]] = True
        for n in np.flatnonzero(~has_positive[1:]) + 1:
            ys, xs = np.nonzero(cell_index == n)
            if len(ys) == 0:
                continue  # too small to own a cell at this stride
            nearest = np.argmin((px[xs] - centers[n - 1, 0]) ** 2 + (py[ys] - centers[n - 1, 1]) ** 2)
            box_prob[thing_ch[n - 1], ys[nearest], xs[nearest]] = 1.0

    targets = {
        "semantic": semantic,
        "semantic_full": classes.label_id_lut()[label_ids],
        "attributes": attributes,
        "thing_mask": thing_mask,
        "box_prob": box_prob,
        "instance": cell_index,
        "boxes": boxes,
        "instance_classes": thing_ch,
    }
    if small_instance_area is not None:
        areas = np.bincount(full_index.ravel(), minlength=len(ids) + 1)
        targets["small_instance"] = (full_index > 0) & (areas[full_index] < small_instance_area)
    return targets


def _boxes_of(index_map: np.ndarray, count: int) -> np.ndarray:
    """(N, 4) float32 boxes (x0, y0, x1 exclusive, y1 exclusive) of labels 1..count of ``index_map``."""
    boxes = np.zeros((count, 4), dtype=np.float32)
    for n, found in enumerate(ndimage.find_objects(index_map, max_label=count)):
        if found is not None:
            rows, cols = found
            boxes[n] = (cols.start, rows.start, cols.stop, rows.stop)
    return boxes
