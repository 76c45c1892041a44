"""Instance tracking across the frames of one camera: the same object keeps its panoptic id.

``Tracker.track(prediction)`` renumbers a ``Prediction``'s thing instances (and its panoptic map) so that an
object keeps ``label_id * 1000 + k`` from frame to frame while it is tracked. The association is ByteTrack's
(Zhang et al. 2022) in two stages, on box IoU within a class, solved optimally by
``scipy.optimize.linear_sum_assignment``:

1. instances scoring at least ``high_score`` against every live track (IoU >= ``iou_threshold``);
2. the lower-scoring instances against the tracks still unmatched (IoU >= ``low_iou_threshold``), so that a
   briefly weak instance keeps its track rather than starting a new one;
3. (not ByteTrack's) the instances still unmatched against the tracks still unmatched by the distance of their box
   centres, within ``distance_gate`` box sizes: small objects (a distant pedestrian) move by more than their size.

The IoU is that of boxes widened by ``box_buffer`` of their size on each side (C-BIoU, Yang et al. 2023), again
for small or fast objects whose boxes of consecutive frames barely overlap. With ``mask_iou`` (and the panoptic map,
as ``track`` has it), the IoU of a pair is the larger of that box IoU and the IoU of the instance's mask with the
track's mask of the previous frame: masks tell apart neighbours whose boxes overlap (parked cars, a group of
pedestrians) and ignore the few stray pixels that stretch a box. The masks are compared on a regular grid of about
``MASK_SAMPLES`` pixels, so the cost does not grow with the image.

With ``appearance_scale`` (and the camera image, ``track(..., image=...)``), each allowed pair's IoU (or centre
closeness) is weighted by how alike the mean colours of the instance and the track are, exp(-difference / scale),
before the assignment: colour chooses between the candidates a stage allows (two pedestrians of a group, a small
object that moved by more than its size) but never allows or forbids a pair itself, so a change of light costs at
worst the choice colour would have made. Instances with fewer than ``MIN_COLOUR_SAMPLES`` pixels on the sampling
grid have no colour (their pairs are weighted 1), as have tracks that never had one.

The box a track is compared with is its last box moved on by its velocity (the mean per-frame change of its box,
smoothed), so objects that move or grow (the camera drives towards them) stay matched; its width and height stay
within ``MAX_SIZE_CHANGE`` of the last box's (``predicted_boxes``). Unlike ByteTrack, an
instance left unmatched always starts a track, whatever its score: every instance of the panoptic map needs a
number. A track not seen for more than ``max_age`` frames dies.

Numbers: k < 1000 per class (the Cityscapes encoding). A new track takes the number of its class used least
recently: first the numbers never used (0, 1, 2, ...), then those of dead tracks, the longest dead first, so a
number comes back as late as possible. Should all 1000 be held (more than 999 tracks of one class within
``max_age`` frames), the track of that class seen least recently gives its number up.

Deterministic: the same frames give the same ids. No ROS here; the node keeps one tracker per camera and
starts it afresh when stamps go backwards (``track(..., stamp_ns=...)``) or on deactivate.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from casnet_core.labels import LABEL_DIVISOR
from casnet_core.predictor import Instance, Prediction

#: Defaults of ``Tracker``'s settings (and of the node's track_* parameters).
DEFAULT_TRACKING = {
    "iou_threshold": 0.3,  # first stage: least box IoU of a confident instance with its track
    "low_iou_threshold": 0.5,  # second stage: least box IoU of a weak instance with a track (ByteTrack: 0.5)
    "high_score": 0.4,  # instances scoring at least this are matched first
    "max_age": 5,  # frames a track is kept without being seen
    "box_buffer": 0.3,  # boxes widened by this fraction of their size on each side before the IoU (C-BIoU)
    "distance_gate": 1.0,  # third stage: centres at most this many box sizes apart (0: no third stage)
    "mask_iou": True,  # the IoU of a pair is the larger of its box IoU and its mask IoU (with the previous frame)
    "appearance_scale": 60.0,  # a pair is weighted by exp(-mean-colour difference / this) (0: colour unused)
}
# appearance_scale, measured (mean tracked AQ, colour off -> on): tuning drives (seeds 31 / 33 / 35) default model
# 29.7 -> 31.0, stride-4 oracle 64.4 -> 64.7, exact heads 89.5 -> 88.4; eight drives never used before (seeds
# 37-51) model 24.1 -> 25.4, oracle 60.9 -> 62.1, exact heads 86.1 -> 85.2 (scales 40 and 90 there: within 0.2).
#: Pixels sampled (on a regular grid) for the mask IoU: 512x1024 every 4th row and column.
MASK_SAMPLES = 32768
#: A predicted box's width and height stay between 1 / this and this times the last box's: the velocity of each edge
#: would carry a walking pedestrian's width changes (legs apart, then together) on into an empty or inverted box,
#: which no instance overlaps. Measured on the tuning drives (seeds 31, 33, 35; mean tracked AQ): exact
#: heads 87.9 -> 89.5, stride-4 oracle 64.1 -> 64.4, default model 29.2 -> 29.7 (1.1 to 1.5 within 0.4 of those).
MAX_SIZE_CHANGE = 1.25
#: Instances with fewer pixels than this on the sampling grid (about 160 at 512x1024) have no mean colour: too few
#: to average over, and a stray border pixel would move it.
MIN_COLOUR_SAMPLES = 10
# Weight of the newest box change in a track's velocity, and of the newest mean colour in a track's colour.
_VELOCITY_SMOOTHING = 0.5
_COLOUR_SMOOTHING = 0.5
_NO_MATCH = 1e6


@dataclass
class _Track:
    label_id: int
    number: int
    box: np.ndarray  # (4,) x0, y0, x1, y1 when last seen
    velocity: np.ndarray  # (4,) box change per frame
    last_seen: int  # frame index
    hits: int = 1
    colour: np.ndarray | None = None  # (3,) smoothed mean colour of its instances (None: none had one)

    @property
    def panoptic_id(self) -> int:
        return self.label_id * LABEL_DIVISOR + self.number


class _Numbers:
    """The numbers k of one class: the never-used ones in order, then the released ones, least recently used
    first."""

    def __init__(self) -> None:
        self._next_fresh = 0
        self._released: OrderedDict[int, None] = OrderedDict()

    def take(self) -> int | None:
        if self._next_fresh < LABEL_DIVISOR:
            self._next_fresh += 1
            return self._next_fresh - 1
        if self._released:
            return self._released.popitem(last=False)[0]
        return None

    def release(self, number: int) -> None:
        self._released[number] = None


def predicted_boxes(boxes: np.ndarray, velocities: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(N, 4) x0, y0, x1, y1 boxes, (N, 4) their per-frame change, (N,) frames ahead -> (N, 4) the boxes moved on:
    the centre by its velocity, the width and height by theirs but kept within ``MAX_SIZE_CHANGE`` of the box's."""
    ahead = frames[:, None]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2 + (velocities[:, :2] + velocities[:, 2:]) / 2 * ahead
    sizes = boxes[:, 2:] - boxes[:, :2]
    sizes = np.clip(sizes + (velocities[:, 2:] - velocities[:, :2]) * ahead, sizes / MAX_SIZE_CHANGE,
                    sizes * MAX_SIZE_CHANGE)
    return np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """(A, 4), (B, 4) x0, y0, x1, y1 boxes -> (A, B) IoU (0 where either box is empty)."""
    x0 = np.maximum(boxes_a[:, None, 0], boxes_b[None, :, 0])
    y0 = np.maximum(boxes_a[:, None, 1], boxes_b[None, :, 1])
    x1 = np.minimum(boxes_a[:, None, 2], boxes_b[None, :, 2])
    y1 = np.minimum(boxes_a[:, None, 3], boxes_b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = np.clip(boxes_a[:, 2] - boxes_a[:, 0], 0, None) * np.clip(boxes_a[:, 3] - boxes_a[:, 1], 0, None)
    area_b = np.clip(boxes_b[:, 2] - boxes_b[:, 0], 0, None) * np.clip(boxes_b[:, 3] - boxes_b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def buffered(boxes: np.ndarray, buffer: float) -> np.ndarray:
    """(N, 4) boxes widened by ``buffer`` times their width and height on each side (C-BIoU's buffered boxes)."""
    if buffer == 0:
        return boxes
    size = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([boxes[:, :2] - buffer * size, boxes[:, 2:] + buffer * size], axis=1)


def centre_closeness(boxes_a: np.ndarray, boxes_b: np.ndarray, gate: float) -> np.ndarray:
    """(A, 4), (B, 4) boxes -> (A, B) 1 - centre distance / (``gate`` x their mean size), at least 0; the size of a
    box is the square root of its area, so the gate scales with the objects, and a size change beyond 2x is no
    match."""
    centres_a, centres_b = (boxes_a[:, :2] + boxes_a[:, 2:]) / 2, (boxes_b[:, :2] + boxes_b[:, 2:]) / 2
    size_a = np.sqrt(np.clip(np.prod(boxes_a[:, 2:] - boxes_a[:, :2], axis=1), 1e-6, None))
    size_b = np.sqrt(np.clip(np.prod(boxes_b[:, 2:] - boxes_b[:, :2], axis=1), 1e-6, None))
    distance = np.linalg.norm(centres_a[:, None] - centres_b[None, :], axis=2)
    scale = gate * (size_a[:, None] + size_b[None, :]) / 2
    closeness = np.clip(1.0 - distance / scale, 0.0, None)
    ratio = size_a[:, None] / size_b[None, :]
    closeness[(ratio > 2.0) | (ratio < 0.5)] = 0.0
    return closeness


def mean_colours(image: np.ndarray, ids: np.ndarray, instance_ids: np.ndarray) -> np.ndarray:
    """(h, w, C) image (a strided view will do) and (h, w) map of ids on the same grid, (N,) ids -> (N, C) float mean
    colour of each id's pixels; NaN for an id with fewer than ``MIN_COLOUR_SAMPLES`` pixels."""
    count = instance_ids.size
    pixel_index = positions(instance_ids, int(max(ids.max(initial=0), instance_ids.max(initial=0))) + 1)[ids.ravel()]
    pixels = np.bincount(pixel_index, minlength=count + 1)[:count]
    sums = np.stack([np.bincount(pixel_index, weights=image[..., channel].ravel(), minlength=count + 1)[:count]
                     for channel in range(image.shape[-1])], axis=1)
    colours = sums / np.maximum(pixels, 1)[:, None]
    colours[pixels < MIN_COLOUR_SAMPLES] = np.nan
    return colours


def colour_weights(track_colours: np.ndarray, colours: np.ndarray, scale: float) -> np.ndarray:
    """(T, 3), (N, 3) mean colours (NaN: none) -> (T, N) exp(-sum of |colour differences| / ``scale``), 1 where
    either has no colour."""
    difference = np.abs(track_colours[:, None, :] - colours[None, :, :]).sum(axis=2)
    return np.where(np.isnan(difference), 1.0, np.exp(-difference / scale))


def _assign(iou: np.ndarray, threshold: float, weights: np.ndarray | None = None) -> list[tuple[int, int]]:
    """(row, column) pairs of the assignment that maximises the summed IoU (times ``weights``, where given), pairs
    whose IoU is below ``threshold`` (or 0) left out."""
    if iou.size == 0:
        return []
    cost = np.where((iou >= threshold) & (iou > 0), 1.0 - iou * (1.0 if weights is None else weights), _NO_MATCH)
    rows, columns = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, columns) if cost[r, c] < _NO_MATCH]


class Tracker:
    """Tracks the thing instances of one camera's frames (see the module docstring).

    Args:
        iou_threshold: least box IoU, within a class, between a confident instance and the predicted box of its
            track (first stage).
        low_iou_threshold: the same for instances scoring below ``high_score`` (second stage).
        high_score: instances scoring at least this are matched in the first stage, the others in the second.
        max_age: frames a track survives without being seen (0: only consecutive frames).
        box_buffer: boxes are widened by this fraction of their width and height on each side before the IoU.
        distance_gate: third stage, centres at most this many box sizes apart (0: no third stage).
        mask_iou: with the panoptic map (``track``, or ``update(..., panoptic=...)``), a pair's IoU is the larger of
            its box IoU and the IoU of the instance's mask with the track's mask in the previous frame.
        appearance_scale: with the image (``track(..., image=...)``), each allowed pair is weighted by
            exp(-d / ``appearance_scale``) in the assignment, d the sum over the channels of the difference of the
            instance's and the track's mean colour (0..255 each); 0: colour unused.
    """

    def __init__(self, *, iou_threshold: float = DEFAULT_TRACKING["iou_threshold"],
                 low_iou_threshold: float = DEFAULT_TRACKING["low_iou_threshold"],
                 high_score: float = DEFAULT_TRACKING["high_score"],
                 max_age: int = DEFAULT_TRACKING["max_age"],
                 box_buffer: float = DEFAULT_TRACKING["box_buffer"],
                 distance_gate: float = DEFAULT_TRACKING["distance_gate"],
                 mask_iou: bool = DEFAULT_TRACKING["mask_iou"],
                 appearance_scale: float = DEFAULT_TRACKING["appearance_scale"]) -> None:
        if not (0.0 <= iou_threshold <= 1.0 and 0.0 <= low_iou_threshold <= 1.0):
            raise ValueError(f"IoU thresholds must be in [0, 1], got {iou_threshold}, {low_iou_threshold}")
        if max_age < 0:
            raise ValueError(f"max_age must be >= 0, got {max_age}")
        if box_buffer < 0:
            raise ValueError(f"box_buffer must be >= 0, got {box_buffer}")
        self.box_buffer = float(box_buffer)
        if distance_gate < 0:
            raise ValueError(f"distance_gate must be >= 0, got {distance_gate}")
        self.distance_gate = float(distance_gate)
        self.mask_iou = bool(mask_iou)
        if appearance_scale < 0:
            raise ValueError(f"appearance_scale must be >= 0, got {appearance_scale}")
        self.appearance_scale = float(appearance_scale)
        self.iou_threshold, self.low_iou_threshold = float(iou_threshold), float(low_iou_threshold)
        self.high_score, self.max_age = float(high_score), int(max_age)
        self.reset()

    def reset(self) -> None:
        """Forgets every track: the next frame numbers its instances afresh from 0."""
        self._tracks: list[_Track] = []
        self._numbers: dict[int, _Numbers] = {}
        self._frame = -1
        self._last_stamp_ns: int | None = None
        self._previous_masks: np.ndarray | None = None  # the last frame's tracked ids on the sampling grid

    @property
    def live_tracks(self) -> int:
        return len(self._tracks)

    def track(self, prediction: Prediction, stamp_ns: int | None = None, image: np.ndarray | None = None) -> Prediction:
        """The prediction with its instances renumbered by their tracks (ids and panoptic map; instances keep
        their order). A ``stamp_ns`` earlier than the previous frame's (a bag played again from the start)
        resets the tracker first. ``image``: the (H, W, 3) image the prediction is of, for the instances' colours
        (``appearance_scale``)."""
        if stamp_ns is not None:
            if self._last_stamp_ns is not None and stamp_ns < self._last_stamp_ns:
                self.reset()
            self._last_stamp_ns = stamp_ns
        ids = self.update(prediction.instances, panoptic=prediction.panoptic, image=image)
        mapping = {instance.id: new_id for instance, new_id in zip(prediction.instances, ids)}
        instances = [dataclasses.replace(instance, id=mapping[instance.id]) for instance in prediction.instances]
        return dataclasses.replace(prediction, instances=instances,
                                   panoptic=relabel_panoptic(prediction.panoptic, mapping))

    def update(self, instances: list[Instance], panoptic: np.ndarray | None = None,
               image: np.ndarray | None = None) -> list[int]:
        """Associates one frame's instances with the live tracks; returns each instance's tracked panoptic id
        (``label_id * 1000 + k``), in the order given. ``panoptic``: the frame's (H, W) panoptic map (the
        instances' ids), for the mask IoU; without it (or with ``mask_iou`` off) boxes alone decide. ``image``:
        the frame's (H, W, 3) image, with ``panoptic`` for the instances' mean colours (ValueError for another
        size); without it colour is unused."""
        if image is not None and panoptic is not None and (image.ndim != 3 or image.shape[2] != 3
                                                           or image.shape[:2] != panoptic.shape[:2]):
            raise ValueError(f"the image must be (H, W, 3) with the panoptic map's (H, W) {panoptic.shape[:2]}, got "
                             f"{image.shape}")
        self._frame += 1
        frame = self._frame
        self._tracks = [t for t in self._tracks if not self._expired(t, frame)]
        count = len(instances)
        boxes = np.array([instance.box for instance in instances], dtype=np.float64).reshape(count, 4)
        labels = np.array([instance.label_id for instance in instances], dtype=np.int64)
        scores = np.array([instance.score for instance in instances], dtype=np.float64)
        tracks = self._tracks
        predicted = predicted_boxes(np.array([t.box for t in tracks]).reshape(len(tracks), 4),
                                    np.array([t.velocity for t in tracks]).reshape(len(tracks), 4),
                                    np.array([frame - t.last_seen for t in tracks], dtype=np.float64))
        track_labels = np.array([t.label_id for t in tracks], dtype=np.int64)
        iou = box_iou(buffered(predicted, self.box_buffer), buffered(boxes, self.box_buffer))
        masks = None
        instance_ids = np.array([instance.id for instance in instances], dtype=np.int64)
        if self.mask_iou and panoptic is not None:
            masks = sampled(panoptic)
            if self._previous_masks is not None and self._previous_masks.shape == masks.shape and tracks and count:
                track_ids = np.array([t.panoptic_id for t in tracks], dtype=np.int64)
                iou = np.maximum(iou, mask_iou(self._previous_masks, masks, track_ids, instance_ids))
        iou[track_labels[:, None] != labels[None, :]] = 0.0  # never across classes
        colours = weights = None
        if self.appearance_scale > 0 and image is not None and panoptic is not None:
            step = sampling_step(panoptic.shape)
            colours = mean_colours(image[::step, ::step], sampled(panoptic) if masks is None else masks, instance_ids)
            track_colours = np.array([np.full(3, np.nan) if t.colour is None else t.colour for t in tracks])
            weights = colour_weights(track_colours.reshape(len(tracks), 3), colours, self.appearance_scale)

        matched: dict[int, _Track] = {}  # instance index -> track
        free_tracks = np.ones(len(tracks), dtype=bool)
        for selected, threshold in ((scores >= self.high_score, self.iou_threshold),
                                    (scores < self.high_score, self.low_iou_threshold)):
            rows, columns = np.flatnonzero(free_tracks), np.flatnonzero(selected)
            pairs = np.ix_(rows, columns)
            for r, c in _assign(iou[pairs], threshold, None if weights is None else weights[pairs]):
                track, index = tracks[rows[r]], int(columns[c])
                matched[index] = track
                free_tracks[rows[r]] = False
        if self.distance_gate > 0:
            rows = np.flatnonzero(free_tracks)
            columns = np.array([index for index in range(count) if index not in matched], dtype=np.int64)
            closeness = centre_closeness(predicted[rows], boxes[columns], self.distance_gate)
            closeness[track_labels[rows][:, None] != labels[columns][None, :]] = 0.0
            for r, c in _assign(closeness, 0.0, None if weights is None else weights[np.ix_(rows, columns)]):
                matched[int(columns[c])] = tracks[rows[r]]
        ids = []
        for index in range(count):
            track = matched.get(index)
            if track is None:
                track = self._start(int(labels[index]), boxes[index], frame, taken=matched.values())
                matched[index] = track
            else:
                self._follow(track, boxes[index], frame)
            ids.append(track.panoptic_id)
        if colours is not None:
            for index in np.flatnonzero(~np.isnan(colours[:, 0])).tolist():
                track = matched[index]
                track.colour = colours[index] if track.colour is None else (
                    _COLOUR_SMOOTHING * colours[index] + (1.0 - _COLOUR_SMOOTHING) * track.colour)
        self._previous_masks = None if masks is None else relabel_panoptic(
            masks, {instance.id: new_id for instance, new_id in zip(instances, ids)})
        return ids

    def _expired(self, track: _Track, frame: int) -> bool:
        if frame - track.last_seen - 1 <= self.max_age:  # frames missed so far
            return False
        self._numbers[track.label_id].release(track.number)
        return True

    def _follow(self, track: _Track, box: np.ndarray, frame: int) -> None:
        step = (box - track.box) / max(frame - track.last_seen, 1)
        track.velocity = step if track.hits == 1 else (
            _VELOCITY_SMOOTHING * step + (1.0 - _VELOCITY_SMOOTHING) * track.velocity)
        track.box, track.last_seen, track.hits = box.copy(), frame, track.hits + 1

    def _start(self, label_id: int, box: np.ndarray, frame: int, taken) -> _Track:
        numbers = self._numbers.setdefault(label_id, _Numbers())
        number = numbers.take()
        if number is None:  # all 1000 held: the track of this class seen least recently gives its number up
            held = {id(t) for t in taken}
            lost = [t for t in self._tracks if t.label_id == label_id and id(t) not in held]
            if not lost:
                raise ValueError(f"more than {LABEL_DIVISOR} instances of label id {label_id} in one frame")
            oldest = min(lost, key=lambda t: (t.last_seen, t.number))
            self._tracks.remove(oldest)
            number = oldest.number
        track = _Track(label_id, number, box.copy(), np.zeros(4), frame)
        self._tracks.append(track)
        return track


def sampling_step(shape: tuple[int, ...]) -> int:
    """s for an (H, W) map: every s-th row and column make a regular grid of about ``MASK_SAMPLES`` pixels (s >= 1)."""
    return max(1, int(round(np.sqrt(shape[0] * shape[1] / MASK_SAMPLES))))


def sampled(panoptic: np.ndarray) -> np.ndarray:
    """(H, W) map -> its pixels on the grid of ``sampling_step``."""
    step = sampling_step(panoptic.shape)
    return panoptic[::step, ::step].copy()


def positions(ids: np.ndarray, size: int) -> np.ndarray:
    """(size,) table: the position of each value among ``ids`` (N,) distinct values below ``size``, N for any other
    value, so that a map of ids becomes a map of positions with one lookup per pixel."""
    table = np.full(size, ids.size, dtype=np.int64)
    table[ids] = np.arange(ids.size)
    return table


def mask_iou(previous: np.ndarray, current: np.ndarray, track_ids: np.ndarray, instance_ids: np.ndarray) -> np.ndarray:
    """(T, N) IoU of the masks of ``track_ids`` (T,) in the ``previous`` map with those of ``instance_ids`` (N,) in
    the ``current`` map (two maps of ids of the same shape), from one joint count of the pixels."""
    tracks, count = track_ids.size, instance_ids.size
    size = int(max(previous.max(initial=0), current.max(initial=0), track_ids.max(initial=0),
                   instance_ids.max(initial=0))) + 1
    joint = np.bincount(positions(track_ids, size)[previous.ravel()] * (count + 1)
                        + positions(instance_ids, size)[current.ravel()],
                        minlength=(tracks + 1) * (count + 1)).reshape(tracks + 1, count + 1)
    inter = joint[:tracks, :count]
    union = joint[:tracks].sum(axis=1)[:, None] + joint[:, :count].sum(axis=0)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def relabel_panoptic(panoptic: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """(H, W) panoptic ids with each key of ``mapping`` replaced by its value (all at once, so ids may swap);
    the array itself when nothing changes."""
    changes = {old: new for old, new in mapping.items() if old != new}
    if not changes:
        return panoptic
    size = max(int(panoptic.max(initial=0)), *changes) + 1
    table = np.arange(size, dtype=panoptic.dtype)
    table[list(changes)] = list(changes.values())
    return table[panoptic]
