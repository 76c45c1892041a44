"""Common attribute support (paper, section III.C): head outputs -> semantic, instance and panoptic maps.

Pure tensor functions: they run on the device of their inputs, take plain keyword arguments and never
leave torch (no numpy, no Python loop over pixels, seeds or classes). :func:`common_attribute_support` is a
short composition of the stages below, each a function of its own (as detectron2's Panoptic-DeepLab splits
``find_instance_center`` / ``group_pixels`` / ``merge_semantic_and_instance``):

0. :func:`sanitize_heads`, :func:`sanitize_semantic_logits`: non-finite head outputs get the meaning given
   under "Any head output" below, and are counted.
1. Semantics: argmax of the semantic logits, bilinearly upsampled to the output resolution (or label ids
   from another segmentation model: "separated" mode). :func:`upsample_semantic` gives exactly that argmax
   without building the (B, C, H, W) logits: it interpolates only near class borders.
2. Pairs (:func:`thing_pixel_pairs`): every thing pixel votes through its (image, class, cell) pair, see
   "Resolution" below.
3. Seeds (:func:`find_seeds`): box-probability cells above ``box_threshold`` that are local maxima
   (``nms_kernel`` max-pool), each decoding its box from its attributes; NMS over these boxes (box
   probability as score, per image and class) leaves the seed boxes.
4. Fallback (:func:`fallback_seeds`): a thing class that has pixels but no seed at all (its box probability
   never passed the threshold, e.g. a badly trained box head or a class the other model of the separated
   mode found where this one saw nothing) would leave holes. Its pixel boxes become the seed candidates
   instead: the cells of that class, scored by their (sub-threshold) box probability, go through the same
   NMS and vote. The best cell of every such class is always a candidate, whatever ``pre_nms_top_k`` cuts,
   and NMS never removes the best box of a class: every (image, class) with pixels has a seed. This keeps
   the method's principle (pixels that predict the same box form one instance), runs on the device like
   the rest, and the low scores of such instances rank them last for AP. Connected components would need
   the CPU (OpenCV/SciPy) and would merge touching instances of one class.
5. Cap (:func:`select_seeds`): seeds of an (image, class) without pixels are dropped (nobody would vote for
   them); then each image keeps its ``max_instances`` best seeds and each (image, class) at most
   ``LABEL_DIVISOR`` (so that the ids ``label_id * 1000 + k`` never reach the next label), as
   Panoptic-DeepLab's ``top_k`` and FCOS's ``detections_per_img``. The lowest-scored seeds are the ones
   dropped, before the vote, so their pixels vote among the kept seeds of their class. The best seed of
   every (image, class) with pixels is always kept, so an image with more thing classes present than
   ``max_instances`` keeps one instance per class present.
6. Vote (:func:`vote`): every pixel of the class decodes its own box from its (l, t, r, b) and joins the
   seed box of its class with the highest IoU. Seeds whose IoU is within ``tie_margin`` of the best are
   near-ties: the seed whose box centre is nearest to the centre of the pixel's box wins (then the higher
   seed score).
7. Support (:func:`vote_with_support`): seeds with fewer than ``min_area`` pixels are dropped and their
   pixels vote again among the remaining seeds of their class. Dropping only moves pixels onto kept seeds,
   whose areas can only grow, so one re-vote settles it. The best-supported seed of a class is never
   dropped, so that every thing pixel keeps an instance.
8. Numbering, scores, maps, statistics (:func:`number_instances`, :func:`instance_scores`,
   :func:`panoptic_map`, :func:`mask_statistics`).

Result: each thing pixel belongs to exactly one instance (no overlaps, no holes); stuff and void pixels to
none.

Any head output. The result above holds whatever the heads output; non-finite values (an under-trained
model, an fp16 overflow) mean "no evidence" and are counted in ``PanopticOutput.nonfinite``:

* attributes: NaN is a distance of 0 (the box side sits on its cell); every distance is clamped to
  [0, ``MAX_BOX_DISTANCE``] strides, so negative and -inf ones are 0 and +inf or huge ones reach
  ``MAX_BOX_DISTANCE`` strides from the cell;
* box logits: NaN is a box probability of 0 (never a seed); +inf is 1, -inf is 0;
* semantic logits: NaN and -inf are no evidence for their class (-``LOGIT_BOUND``), +inf is
  ``LOGIT_BOUND``; a cell without evidence for any class (all its logits NaN / -inf) is void, and so are
  the output pixels that take more than half of their interpolation weight from such cells.

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
in decreasing score, k < 1000), stuff = label_id, void = 0. In panoptic mode stuff classes covering fewer
than ``stuff_area`` pixels of an image become void (as Panoptic-DeepLab does); in instance mode every
non-thing pixel is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms

from casnet_core.labels import LABEL_DIVISOR

VOID_CHANNEL = 255  # semantic channel of void / ignored pixels (casnet_core.labels.IGNORE_INDEX)
MAX_BOX_DISTANCE = 1e4  # strides; attributes are clamped to [0, this] (huge and +inf distances end here)
LOGIT_BOUND = 1e30  # semantic logits are clamped to +-this; -LOGIT_BOUND is "no evidence"

#: Post-processing thresholds and their defaults, read by the keyword defaults below, the Predictor, the CLI,
#: the evaluation and the ROS node.
DEFAULT_THRESHOLDS: dict[str, float | int] = {
    "box_threshold": 0.5,  # seed box probability (paper: 0.5)
    "nms_iou": 0.6,  # NMS IoU between seed boxes
    "tie_margin": 0.05,  # IoU margin within which the vote is a near-tie, broken by the centre
    "min_area": 32,  # instances with fewer pixels are dropped, their pixels re-vote
    "stuff_area": 2048,  # stuff segments with fewer pixels become void (Panoptic-DeepLab's Cityscapes value)
    "max_instances": 200,  # instances per image at most (Panoptic-DeepLab's Cityscapes top_k); see select_seeds
}
NMS_KERNEL = 3  # max-pool window of the seed candidates
PRE_NMS_TOP_K = 2000  # seed candidates per image entering NMS
CHUNK_ELEMENTS = 1 << 21  # pair x seed entries compared at once in the vote


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
        nonfinite: number of NaN / +-inf values found in the head outputs (all B images); they were given
            the meaning of the module docstring ("Any head output").
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


# ----------------------------------------------------------------------------------------------
# Stage 0: any head output
# ----------------------------------------------------------------------------------------------


def _count_nonfinite(values: Tensor, low: float, high: float) -> int:
    """NaN / inf entries of ``values``; 0 without a full count when every entry lies in (low, high), which
    one cheap min/max pass shows (NaN propagates through it)."""
    if values.numel() == 0:
        return 0
    smallest, largest = torch.aminmax(values)
    if bool(smallest > low) and bool(largest < high):
        return 0
    return int(values.numel() - torch.isfinite(values).sum())


def sanitize_heads(attributes: Tensor, box_logits: Tensor) -> tuple[Tensor, Tensor, int]:
    """Box heads of any values -> finite float32 attributes and box probabilities.

    Args:
        attributes: (B, 4, h, w) distances (l, t, r, b) in strides, any values.
        box_logits: (B, K, h, w) box-probability logits, any values.

    Returns:
        attributes (B, 4, h, w) float32 without NaN (NaN -> 0; :func:`decode_boxes` clamps the range),
        box probabilities (B, K, h, w) float32 in [0, 1] (sigmoid; NaN -> 0), and the number of non-finite
        values found in both.
    """
    attributes, box_logits = attributes.float(), box_logits.float()
    box_prob = torch.sigmoid(box_logits)
    nonfinite_attributes = _count_nonfinite(attributes, -float("inf"), float("inf"))
    nonfinite_box = _count_nonfinite(box_logits, -float("inf"), float("inf"))
    if nonfinite_attributes:
        attributes = attributes.nan_to_num(nan=0.0)
    if nonfinite_box:
        box_prob = box_prob.nan_to_num(nan=0.0)
    return attributes, box_prob, nonfinite_attributes + nonfinite_box


def sanitize_semantic_logits(semantic_logits: Tensor) -> tuple[Tensor, Tensor | None, int]:
    """Semantic logits of any values -> float32 logits in [-LOGIT_BOUND, LOGIT_BOUND].

    Args:
        semantic_logits: (B, C, h, w), any values.

    Returns:
        logits (B, C, h, w) float32 (NaN and -inf -> -LOGIT_BOUND, +inf -> LOGIT_BOUND, finite values
        clamped), void cells (B, h, w) bool, the cells without evidence for any class (every logit at
        -LOGIT_BOUND; their logits become 0, a uniform class probability), or None when there are none,
        and the number of non-finite values found.
    """
    logits = semantic_logits.float()
    if logits.numel() == 0:
        return logits, None, 0
    smallest, largest = torch.aminmax(logits)
    if bool(smallest > -LOGIT_BOUND) and bool(largest < LOGIT_BOUND):
        return logits, None, 0
    nonfinite = int(logits.numel() - torch.isfinite(logits).sum())
    logits = logits.nan_to_num(nan=-LOGIT_BOUND, posinf=LOGIT_BOUND, neginf=-LOGIT_BOUND)
    logits = logits.clamp(-LOGIT_BOUND, LOGIT_BOUND)
    void_cells = logits.amax(dim=1) <= -LOGIT_BOUND
    if not bool(void_cells.any()):
        return logits, None, nonfinite
    # Neutral class logits: near a void cell the classes of the other cells still compare on their own
    # values (-LOGIT_BOUND everywhere would round every class to the same value there).
    return logits.masked_fill(void_cells[:, None], 0.0), void_cells, nonfinite


# ----------------------------------------------------------------------------------------------
# Stage 1: semantics
# ----------------------------------------------------------------------------------------------


def _bilinear_sources(size_out: int, size_in: int, cells_per_pixel: float, device: torch.device):
    """Source cells and weight of bilinear interpolation (align_corners=False), as PyTorch computes them:
    output pixel d reads cells i0 and i1 = i0 + 1 (clamped) at weight lam on i1."""
    position = ((torch.arange(size_out, device=device, dtype=torch.float64) + 0.5) * cells_per_pixel - 0.5).clamp(min=0)
    first = position.floor()
    weight = (position - first).float()
    first = first.long().clamp(max=size_in - 1)
    return first, (first + 1).clamp(max=size_in - 1), weight


def upsample_semantic(semantic_logits: Tensor, stride: int, output_size: tuple[int, int],
                      input_scale: tuple[float, float] = (1.0, 1.0), *, void_cells: Tensor | None = None,
                      chunk_pixels: int = 1 << 18) -> Tensor:
    """(B, C, h, w) logits at stride ``stride`` -> (B, H, W) int64 argmax of their bilinear upsampling
    (align_corners=False) to the output resolution, without materialising the (B, C, H, W) logits.

    ``input_scale`` = (sy, sx) network-input pixels per output pixel: output pixel (x, y) reads the cell grid
    at ((x + 0.5) sx / s - 0.5, (y + 0.5) sy / s - 0.5), the project's geometry.

    ``void_cells`` (B, h, w) bool: cells without evidence (:func:`sanitize_semantic_logits`). They take part
    as one more class, "void", of logit LOGIT_BOUND there and -LOGIT_BOUND elsewhere, so that the pixels
    taking more than half of their interpolation weight from void cells are ``VOID_CHANNEL``.

    Exact shortcut: an interpolated logit vector is a convex combination of its (up to) four source cells,
    so where the four cells share their argmax the pixel has it too. Only pixels whose sources disagree
    (near class borders, typically a few percent) are interpolated, in chunks of ``chunk_pixels``.
    """
    if void_cells is not None:
        void_logit = torch.where(void_cells, LOGIT_BOUND, -LOGIT_BOUND).to(semantic_logits.dtype)[:, None]
        semantic = upsample_semantic(torch.cat((semantic_logits, void_logit), dim=1), stride, output_size,
                                     input_scale, chunk_pixels=chunk_pixels)
        return semantic.masked_fill_(semantic == semantic_logits.shape[1], VOID_CHANNEL)
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


def checked_semantic_channels(semantic: Tensor, batch: int, num_classes: int,
                              output_size: tuple[int, int] | None = None) -> Tensor:
    """Separated mode: (B, H, W) integer semantic channels from outside -> (B, H, W) int64, every value outside
    0..C-1 void (``VOID_CHANNEL``). Raises ValueError on a shape that does not fit."""
    if semantic.dim() != 3 or semantic.shape[0] != batch:
        raise ValueError(f"semantic {tuple(semantic.shape)}: expected ({batch}, H, W)")
    if output_size is not None and tuple(semantic.shape[1:]) != tuple(output_size):
        raise ValueError(f"semantic {tuple(semantic.shape)} does not match output_size {output_size}")
    semantic = semantic.long()
    return torch.where((semantic >= 0) & (semantic < num_classes), semantic, torch.full_like(semantic, VOID_CHANNEL))


def channel_tables(thing_channels: Tensor, label_ids: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Lookup tables over the semantic channels 0..255 (255 = void): (256,) int64 thing class k of each channel
    (-1: stuff or void) and (256,) int64 label id of each channel (0 beyond the C given).

    ``thing_channels`` (K,) int64: semantic channel of thing class k; ``label_ids`` (C,)."""
    device = thing_channels.device
    thing_of_channel = torch.full((256,), -1, dtype=torch.int64, device=device)
    thing_of_channel[thing_channels] = torch.arange(thing_channels.numel(), device=device)
    label_of_channel = torch.zeros(256, dtype=torch.int64, device=device)
    label_of_channel[: len(label_ids)] = torch.as_tensor(list(label_ids), dtype=torch.int64, device=device)
    return thing_of_channel, label_of_channel


# ----------------------------------------------------------------------------------------------
# Stage 2: (image, class, cell) pairs of the thing pixels
# ----------------------------------------------------------------------------------------------


class ThingPixels(NamedTuple):
    """The Q thing pixels of a batch and the P (image, class, cell) pairs they vote through."""

    index: Tensor  # (Q,) int64 flat index into (B, H, W), ascending
    x: Tensor  # (Q,) int64 column
    y: Tensor  # (Q,) int64 row
    pair: Tensor  # (Q,) int64 the pixel's pair
    pair_key: Tensor  # (P,) int64 (image * K + class) * h * w + cell, i.e. flat index into (B, K, h, w); ascending
    pair_pixels: Tensor  # (P,) int64 number of pixels of each pair


def pixel_cells(output_size: tuple[int, int], grid_size: tuple[int, int], stride: int,
                input_scale: tuple[float, float] = (1.0, 1.0), device: torch.device | str = "cpu",
                ) -> tuple[Tensor, Tensor]:
    """The cell of every output row and column: the cell whose centre is nearest to the pixel centre in the
    network input, clamped into the grid. (H,) int64 cell rows, (W,) int64 cell columns."""
    (height, width), (h, w) = output_size, grid_size
    rows = (((torch.arange(height, device=device, dtype=torch.float64) + 0.5) * input_scale[0]) / stride).floor()
    cols = (((torch.arange(width, device=device, dtype=torch.float64) + 0.5) * input_scale[1]) / stride).floor()
    return rows.long().clamp(0, h - 1), cols.long().clamp(0, w - 1)


def thing_pixel_pairs(thing_map: Tensor, grid_size: tuple[int, int], num_things: int, stride: int,
                      input_scale: tuple[float, float] = (1.0, 1.0)) -> ThingPixels:
    """Groups the thing pixels by (image, thing class, cell).

    Args:
        thing_map: (B, H, W) int64 thing class k of each output pixel, -1 for stuff and void.
        grid_size: (h, w) of the heads' grid.
        num_things: K.
        stride, input_scale: geometry of the grid (:func:`pixel_cells`).
    """
    batch, height, width = thing_map.shape
    h, w = grid_size
    device = thing_map.device
    cells = h * w
    cell_row, cell_col = pixel_cells((height, width), grid_size, stride, input_scale, device)
    pixel_index = (thing_map >= 0).flatten().nonzero().squeeze(1)
    pixel_thing = thing_map.flatten()[pixel_index]
    pixel_batch = pixel_index // (height * width)
    pixel_y = (pixel_index // width) % height
    pixel_x = pixel_index % width
    pixel_key = (pixel_batch * num_things + pixel_thing) * cells + cell_row[pixel_y] * w + cell_col[pixel_x]
    present = torch.zeros(batch * num_things * cells, dtype=torch.bool, device=device)
    present[pixel_key] = True
    pair_key = present.nonzero().squeeze(1)
    # int32: this table spans every (image, class, cell); at stride 1 and 1024x2048 it has 16 M entries.
    pair_of_key = torch.full((batch * num_things * cells,), -1, dtype=torch.int32, device=device)
    pair_of_key[pair_key] = torch.arange(pair_key.numel(), device=device, dtype=torch.int32)
    pixel_pair = pair_of_key[pixel_key].long()
    pair_pixels = torch.bincount(pixel_pair, minlength=pair_key.numel())
    return ThingPixels(pixel_index, pixel_x, pixel_y, pixel_pair, pair_key, pair_pixels)


# ----------------------------------------------------------------------------------------------
# Stages 3-5: seeds
# ----------------------------------------------------------------------------------------------


def decode_boxes(attributes: Tensor, stride: int) -> Tensor:
    """(B, 4, h, w) distances (l, t, r, b) in units of ``stride`` -> (B, 4, h, w) boxes (x0, y0, x1, y1) in
    input pixels, cell (i, j) sitting at ((j + 0.5) * stride, (i + 0.5) * stride). Distances are clamped to
    [0, MAX_BOX_DISTANCE] (NaN stays NaN: :func:`sanitize_heads` first)."""
    _, _, h, w = attributes.shape
    distances = attributes.float().clamp(0, MAX_BOX_DISTANCE) * stride
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
    could then suppress across groups). IoU is translation invariant, so shift everything to >= 0 first;
    in float64, so that the offsets of many groups times boxes up to MAX_BOX_DISTANCE strides long keep
    the small boxes exact. Returns kept indices, by decreasing score."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    boxes = boxes.double()
    return batched_nms(boxes - boxes.min(), scores.double(), groups, iou_threshold)


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


def fallback_seeds(
    pair_boxes: Tensor,
    pair_groups: Tensor,
    pair_scores: Tensor,
    seed_groups: Tensor,
    num_groups: int,
    *,
    nms_iou: float = DEFAULT_THRESHOLDS["nms_iou"],
    top_k: int = PRE_NMS_TOP_K,
) -> tuple[Tensor, Tensor, Tensor]:
    """Seeds for the groups (image * K + class) that have pixels but no seed: their own pair boxes, NMS'd.

    Args:
        pair_boxes: (P, 4) box of each pair (its cell's box); pair_groups: (P,) int64 group of each pair;
        pair_scores: (P,) box probability of each pair's cell for its class.
        seed_groups: (S,) int64 groups of the seeds found so far.
        num_groups: G.
        nms_iou: as in :func:`find_seeds`.
        top_k: at most this many candidates (best first) enter NMS, plus the best pairs of any seedless group
            that the cut would leave without a candidate: every seedless group gets at least one seed.

    Returns:
        group (F,) int64, box (F, 4), score (F,) of the new seeds.
    """
    seedless = (torch.bincount(pair_groups, minlength=num_groups) > 0) & (
        torch.bincount(seed_groups, minlength=num_groups) == 0)
    orphans = seedless[pair_groups].nonzero().squeeze(1)
    scores = pair_scores[orphans]
    if orphans.numel() > top_k:
        scores, best = scores.topk(top_k)
        candidates = orphans[best]
        # Groups the cut left without candidate: their best pairs join (ties: all of them).
        represented = torch.zeros(num_groups, dtype=torch.bool, device=orphans.device)
        represented[pair_groups[candidates]] = True
        orphan_groups = pair_groups[orphans]
        group_best = torch.full((num_groups,), -1.0, device=orphans.device).scatter_reduce(
            0, orphan_groups, pair_scores[orphans], "amax")
        missing = ~represented[orphan_groups] & (pair_scores[orphans] >= group_best[orphan_groups])
        orphans = torch.cat((candidates, orphans[missing]))
        scores = pair_scores[orphans]
    keep = nms_per_group(pair_boxes[orphans], scores, pair_groups[orphans], nms_iou)
    return pair_groups[orphans[keep]], pair_boxes[orphans[keep]], scores[keep]


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


# ----------------------------------------------------------------------------------------------
# Stages 6-7: vote and support
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Stage 8: numbering, scores, maps, statistics
# ----------------------------------------------------------------------------------------------


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
    batch, _, h, w = semantic_logits.shape
    num_things = thing_channels.numel()
    class_prob = torch.softmax(semantic_logits.float(), dim=1).flatten(2)  # (B, C, h*w)
    group, cell = pair_key // (h * w), pair_key % (h * w)
    return class_prob[group // num_things, thing_channels[group % num_things], cell]


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


def mask_statistics(pixel_instance: Tensor, pixel_x: Tensor, pixel_y: Tensor,
                    num_instances: int) -> tuple[Tensor, Tensor, Tensor]:
    """Area (N,) int64, tight box (N, 4) float32 (x0, y0, x1, y1, x1/y1 exclusive) and centroid (N, 2)
    float32 (mean pixel centre) of each instance, from the instance (Q,) and position of each pixel."""
    device = pixel_instance.device
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
    return areas, boxes.float(), centroids.float()


# ----------------------------------------------------------------------------------------------
# The composition
# ----------------------------------------------------------------------------------------------


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
    """CASNet post-processing (see the module docstring for the stages, resolution, score and the meaning
    of non-finite head outputs).

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
    pixels = thing_pixel_pairs(thing_of_channel[semantic], (h, w), num_things, stride, input_scale)
    pair_groups, pair_cells = pixels.pair_key // cells, pixels.pair_key % cells
    cell_boxes = decode_boxes(attributes, stride)
    pair_boxes = cell_boxes.permute(0, 2, 3, 1).reshape(batch, cells, 4)[pair_groups // num_things, pair_cells]

    seed_groups, _, seed_boxes, seed_scores = find_seeds(
        box_prob, cell_boxes, box_threshold=box_threshold, nms_iou=nms_iou, nms_kernel=nms_kernel,
        pre_nms_top_k=pre_nms_top_k)
    extra_groups, extra_boxes, extra_scores = fallback_seeds(
        pair_boxes, pair_groups, box_prob.flatten()[pixels.pair_key], seed_groups, num_groups, nms_iou=nms_iou,
        top_k=pre_nms_top_k * batch)
    seed_groups, seed_boxes = torch.cat((seed_groups, extra_groups)), torch.cat((seed_boxes, extra_boxes))
    seed_scores = torch.cat((seed_scores, extra_scores))
    group_has_pixels = torch.bincount(pair_groups, minlength=num_groups) > 0
    kept = select_seeds(seed_groups, seed_scores, group_has_pixels, num_things, max_instances=max_instances)
    seed_groups, seed_boxes, seed_scores = seed_groups[kept], seed_boxes[kept], seed_scores[kept]

    pair_seed, _, alive = vote_with_support(
        pair_boxes, pair_groups, pixels.pair_pixels, seed_boxes, seed_groups, num_groups, min_area=min_area,
        tie_margin=tie_margin, chunk_elements=chunk_elements)
    instance_seed, instance_ids = number_instances(alive, seed_groups, num_things, label_of_channel[thing_channels])
    number_of_seed = torch.full((seed_groups.numel(),), -1, dtype=torch.int64, device=device)
    number_of_seed[instance_seed] = torch.arange(instance_seed.numel(), device=device)
    pixel_instance = number_of_seed[pair_seed][pixels.pair]  # (via the pairs: one pass over the pixels)

    pair_prob = None
    if semantic_logits is not None:
        pair_prob = pair_class_probability(semantic_logits, pixels.pair_key, thing_channels)
    scores = instance_scores(seed_scores, instance_seed, pair_seed, pixels.pair_pixels, pair_prob)
    panoptic_ids = panoptic_map(semantic, pixels.index, instance_ids[pixel_instance], label_of_channel,
                                thing_of_channel, num_classes, panoptic=panoptic, stuff_area=stuff_area)
    areas, boxes, centroids = mask_statistics(pixel_instance, pixels.x, pixels.y, instance_seed.numel())
    instance_things = seed_groups[instance_seed] % num_things
    return PanopticOutput(
        panoptic=panoptic_ids,
        semantic=label_of_channel.to(torch.uint8)[semantic],
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
