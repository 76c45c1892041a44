"""The instance tracker (casnet_core.tracking): an object keeps its panoptic id across frames, ids are recycled
least recently used first, the two ByteTrack stages, max age, resets, and 2000 frames of births and deaths."""

from __future__ import annotations

import numpy as np
import pytest

from casnet_core.predictor import Instance, Prediction
from casnet_core.tracking import (MAX_SIZE_CHANGE, MIN_COLOUR_SAMPLES, Tracker, colour_weights, mask_iou, mean_colours,
                                  predicted_boxes, relabel_panoptic)

CAR, PERSON = 26, 24


def _instance(label, k, box, score=0.9):
    x0, y0, x1, y1 = box
    return Instance(id=label * 1000 + k, label_id=label, class_name="x", score=score, box=tuple(map(float, box)),
                    area=int((x1 - x0) * (y1 - y0)), centroid=((x0 + x1) / 2, (y0 + y1) / 2))


def _frame(*objects):
    """Instances numbered per frame (k = 0, 1, ... per class, as the Predictor numbers them)."""
    seen, instances = {}, []
    for label, box, *score in objects:
        k = seen.get(label, 0)
        seen[label] = k + 1
        instances.append(_instance(label, k, box, *score))
    return instances


def test_an_object_keeps_its_id_while_it_moves_and_grows():
    tracker = Tracker()
    ids = []
    for step in range(8):  # 12 pixels right and 2 larger per frame: box IoU with the last box ~0.4
        ids.append(tracker.update(_frame((CAR, (100 + 12 * step, 50, 140 + 14 * step, 80 + 2 * step))))[0])
    assert ids == [26000] * 8


def test_two_objects_keep_their_ids_when_the_frame_numbers_them_the_other_way():
    tracker = Tracker()
    left, right = (0, 0, 20, 20), (100, 0, 120, 20)
    assert tracker.update(_frame((CAR, left), (CAR, right))) == [26000, 26001]
    # The next frame lists (and numbers) the right car first: the tracker gives each its own id back.
    assert tracker.update(_frame((CAR, (102, 0, 122, 20)), (CAR, (2, 0, 22, 20)))) == [26001, 26000]


def test_track_renumbers_the_panoptic_map_with_the_instances():
    tracker = Tracker()
    panoptic = np.array([[7, 26000, 26001]], dtype=np.int32)
    first = Prediction(panoptic, np.zeros((1, 3), np.uint8), _frame((CAR, (1, 0, 2, 1)), (CAR, (2, 0, 3, 1))))
    tracker.track(first)
    # Second frame: the same two cars, listed (and numbered) the other way round: the map's ids swap back.
    swapped = np.array([[7, 26001, 26000]], dtype=np.int32)
    second = Prediction(swapped.copy(), np.zeros((1, 3), np.uint8), _frame((CAR, (2, 0, 3, 1)), (CAR, (1, 0, 2, 1))))
    tracked = tracker.track(second)
    assert [i.id for i in tracked.instances] == [26001, 26000]
    np.testing.assert_array_equal(tracked.panoptic, [[7, 26000, 26001]])
    np.testing.assert_array_equal(second.panoptic, swapped)  # the input is not changed


def test_relabel_swaps_at_once():
    panoptic = np.array([[26000, 26001, 7, 0]])
    np.testing.assert_array_equal(relabel_panoptic(panoptic, {26000: 26001, 26001: 26000}), [[26001, 26000, 7, 0]])


def test_a_briefly_weak_instance_keeps_its_track_in_the_second_stage():
    # Plain box IoU and no third stage, to see the two IoU stages alone.
    tracker = Tracker(high_score=0.6, low_iou_threshold=0.5, box_buffer=0.0, distance_gate=0.0)
    tracker.update(_frame((CAR, (0, 0, 40, 40), 0.9)))
    # A weak instance overlapping the track well (IoU 0.9) keeps it.
    assert tracker.update(_frame((CAR, (0, 0, 40, 36), 0.3))) == [26000]
    # A weak instance overlapping only loosely (IoU 0.31 with the track's predicted box, enough for a confident
    # one) starts a new track.
    assert tracker.update(_frame((CAR, (20, 0, 60, 36), 0.3))) == [26001]


def test_a_confident_instance_is_matched_before_a_weak_one():
    tracker = Tracker(distance_gate=0.0)
    tracker.update(_frame((CAR, (0, 0, 40, 40))))
    # The weak instance overlaps the track best, but the confident one is matched first (ByteTrack's order).
    ids = tracker.update(_frame((CAR, (0, 0, 40, 40), 0.3), (CAR, (6, 0, 46, 40), 0.9)))
    assert ids == [26001, 26000]


def test_a_small_fast_object_is_kept_by_the_buffered_iou_or_the_centre_distance():
    # A 6x12 px person moving 8 px a frame: its boxes of consecutive frames do not overlap at all.
    boxes = [(100 + 8 * step, 50, 106 + 8 * step, 62) for step in range(5)]
    plain = Tracker(box_buffer=0.0, distance_gate=0.0)
    assert [plain.update(_frame((PERSON, box)))[0] for box in boxes[:2]] == [24000, 24001]
    # Buffered boxes (C-BIoU, their size again on each side) overlap (IoU 0.38): the track is kept.
    buffered = Tracker(box_buffer=1.0, distance_gate=0.0)
    assert [buffered.update(_frame((PERSON, box)))[0] for box in boxes] == [24000] * 5
    # Without a buffer, the third stage matches it by the distance of the centres (8 px < 1.0 x its size 8.5 px).
    nearby = Tracker(box_buffer=0.0, distance_gate=1.0)
    assert [nearby.update(_frame((PERSON, box)))[0] for box in boxes] == [24000] * 5


def test_a_predicted_box_moves_its_centre_and_keeps_its_size_within_bounds():
    boxes = np.array([[0.0, 0.0, 10.0, 20.0], [0.0, 0.0, 10.0, 20.0]])
    velocities = np.array([[2.0, 0.0, -3.0, 0.0],  # x0 +2, x1 -3 a frame: the centre -0.5, the width -5 a frame
                           [1.0, 1.0, 1.0, 3.0]])  # right by 1, the top down by 1, the bottom by 3 a frame
    moved = predicted_boxes(boxes, velocities, np.array([3.0, 1.0]))
    # First: 3 frames on, the centre x 5 - 1.5 = 3.5; the width 10 - 15 = -5 (inverted) is kept at 10 / 1.25 = 8;
    # the height unchanged. Second: one frame on, the centre (6, 12) and the height 22 (within 1.25 x 20).
    assert MAX_SIZE_CHANGE == 1.25
    np.testing.assert_allclose(moved, [[-0.5, 0.0, 7.5, 20.0], [1.0, 1.0, 11.0, 23.0]])


def test_a_walking_pedestrian_whose_width_changes_keeps_its_id():
    # A 30 px tall person walking 2 px right a frame, legs apart (12 px wide), together (6 px), apart again. Each
    # edge's own velocity would carry the narrowing on into a box of width 0 (x0 and x1 both at 110), which overlaps
    # nothing, and the person would start a second track; the predicted box keeps 6 / 1.25 = 4.8 px of width
    # around the moved centre (107.6..112.4): buffered IoU 0.4 with the person's box, above 0.3.
    boxes = [(100, 100, 112, 130), (105, 100, 111, 130), (104, 100, 116, 130)]
    tracker = Tracker()
    assert [tracker.update(_frame((PERSON, box)))[0] for box in boxes] == [24000] * 3


def _prediction(panoptic):
    """A Prediction of a hand-drawn (H, W) map: one instance per thing id, its box the tight box of its pixels."""
    instances = []
    for panoptic_id in np.unique(panoptic[panoptic >= 1000]).tolist():
        ys, xs = np.nonzero(panoptic == panoptic_id)
        instances.append(_instance(panoptic_id // 1000, panoptic_id % 1000,
                                   (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)))
    return Prediction(panoptic, np.zeros(panoptic.shape, np.uint8), instances)


def test_the_mask_keeps_an_object_whose_box_a_stray_pixel_stretched():
    # Frame 1: car A fills columns 0-9 plus one stray pixel at column 39 (its box spans the whole row, 0..40); car B
    # fills columns 20-38. Frame 2: the stray pixel is gone (A's box 0..10) and B also takes column 39; the
    # frame numbers B first. Plain boxes: A's track (0..40) has IoU 0.25 with A (0..10), below 0.3, and A
    # starts a new track (26002). Mask IoU of A's pixels with its track's pixels: 100 / 101: A keeps 26000.
    first = np.full((10, 40), 7, dtype=np.int32)
    first[:, :10], first[:, 20:39], first[0, 39] = 26000, 26001, 26000
    second = np.full((10, 40), 7, dtype=np.int32)
    second[:, 20:], second[:, :10] = 26000, 26001
    for mask_iou_on, expected in ((False, [26001, 26002]), (True, [26001, 26000])):
        tracker = Tracker(box_buffer=0.0, distance_gate=0.0, mask_iou=mask_iou_on)
        assert [i.id for i in tracker.track(_prediction(first)).instances] == [26000, 26001]
        tracked = tracker.track(_prediction(second))
        assert [i.id for i in tracked.instances] == expected
    np.testing.assert_array_equal(tracked.panoptic[0, [0, 20, 39]], [26000, 26001, 26001])


RED, BLUE, GREY = (200, 30, 30), (30, 30, 200), (90, 90, 90)


def _painted(panoptic, colours):
    """(H, W, 3) uint8 image: each id of ``colours`` (id -> RGB) painted in its colour, the rest grey."""
    image = np.empty((*panoptic.shape, 3), np.uint8)
    image[:] = GREY
    for panoptic_id, colour in colours.items():
        image[panoptic == panoptic_id] = colour
    return image


def test_colour_chooses_between_two_pedestrians_of_a_group_that_cross():
    # Two persons walking across each other, boxes 20 px tall: red A (x 0..10) and blue B (x 4..14), then blue at
    # x 1..11 and red at x 3..13 (the frame numbers blue 24000, red 24001). Box IoUs (no buffer): A with blue 9/11
    # = 0.82, A with red 7/13 = 0.54, B with blue 0.54, B with red 0.82: every pair is allowed (>= 0.3) and boxes
    # alone give A's id to the blue person (0.82 + 0.82 against 0.54 + 0.54). Colour weights the red-blue pairs by
    # exp(-340 / 60) = 0.003: 0.54 + 0.54 wins, each person keeps its id. (Masks off: the boxes decide alone.)
    first = np.full((20, 16), 7, dtype=np.int32)
    first[:, 0:4], first[:10, 4:10] = 24000, 24000  # A: columns 0-3, and 4-9 in the top half
    first[10:, 4:10], first[:, 10:14] = 24001, 24001  # B: 4-9 in the bottom half, and 10-13
    second = np.full((20, 16), 7, dtype=np.int32)
    second[:, 1:3], second[10:, 3:11] = 24000, 24000  # blue: x 1..11
    second[:10, 3:11], second[:, 11:13] = 24001, 24001  # red: x 3..13
    for scale, expected in ((0.0, [24000, 24001]), (60.0, [24001, 24000])):
        tracker = Tracker(box_buffer=0.0, mask_iou=False, appearance_scale=scale)
        tracker.track(_prediction(first), image=_painted(first, {24000: RED, 24001: BLUE}))
        tracked = tracker.track(_prediction(second), image=_painted(second, {24000: BLUE, 24001: RED}))
        assert [i.id for i in tracked.instances] == expected


def test_colour_never_forbids_a_match():
    # A red car drives into shade and comes out blue-grey: the one track of its class with box IoU 1 is kept
    # whatever the colour (its weight exp(-340 / 60) = 0.003 only ranks the pairs a stage allows).
    panoptic = np.full((20, 20), 7, dtype=np.int32)
    panoptic[5:15, 2:18] = 26000
    tracker = Tracker()
    tracker.track(_prediction(panoptic), image=_painted(panoptic, {26000: RED}))
    tracked = tracker.track(_prediction(panoptic), image=_painted(panoptic, {26000: BLUE}))
    assert [i.id for i in tracked.instances] == [26000]


def test_mean_colours_and_their_weights():
    ids = np.array([[1, 1, 1, 2], [1, 1, 1, 2], [1, 1, 1, 1], [1, 1, 1, 1]])
    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 0] = 100
    image[0, 0] = (140, 40, 0)  # one pixel of id 1 differs: its mean (100 + 40/14, 40/14, 0) over 16 - 2 = 14 pixels
    colours = mean_colours(image, ids, np.array([1, 2, 3]))
    # Id 2 has 2 pixels and id 3 none: fewer than MIN_COLOUR_SAMPLES (10), no colour (NaN).
    assert MIN_COLOUR_SAMPLES == 10
    np.testing.assert_allclose(colours[0], [100 + 40 / 14, 40 / 14, 0])
    assert np.isnan(colours[1:]).all()
    weights = colour_weights(np.array([[100.0, 0.0, 0.0], [np.nan] * 3]), colours, 60.0)
    # Track 0 against id 1: |40/14| + |40/14| + 0 = 5.71 -> exp(-5.71 / 60); against the colourless ids, and the
    # colourless track against any: 1.
    np.testing.assert_allclose(weights, [[np.exp(-80 / 14 / 60), 1, 1], [1, 1, 1]])


def test_an_image_of_another_size_than_the_map_or_without_colours_is_refused():
    panoptic = np.full((4, 6), 7, dtype=np.int32)
    for image in (np.zeros((4, 5, 3), np.uint8), np.zeros((4, 6), np.uint8)):  # another size; no colour channels
        with pytest.raises(ValueError, match="must be"):
            Tracker().track(_prediction(panoptic), image=image)


def test_mask_iou_counts_each_pair_of_masks():
    previous = np.array([[26000, 26000, 26001, 7]])
    current = np.array([[26005, 26000, 26000, 26000]])
    # Track 26000 (2 px) with instance 26000 (3 px): 1 px in common, IoU 1 / 4; with 26005 (1 px): 1 / 2.
    # Track 26001 (1 px) with 26000: 1 / 3; with 26005: 0. A track absent from the map: 0.
    np.testing.assert_allclose(mask_iou(previous, current, np.array([26001, 26000, 26009]), np.array([26000, 26005])),
                               [[1 / 3, 0], [1 / 4, 1 / 2], [0, 0]])


def test_tracks_survive_max_age_missing_frames_then_die():
    tracker = Tracker(max_age=2)
    box = (0, 0, 40, 40)
    tracker.update(_frame((CAR, box)))
    tracker.update([])
    tracker.update([])
    assert tracker.update(_frame((CAR, box))) == [26000]  # missed 2 frames: still alive
    for _ in range(3):
        tracker.update([])
    assert tracker.update(_frame((CAR, box))) == [26001]  # missed 3: dead, a new track (fresh numbers first)


def test_classes_never_share_a_track():
    tracker = Tracker()
    tracker.update(_frame((CAR, (0, 0, 40, 40))))
    # A person where the car was does not take the car's track; a car far away then cannot take number 0 either
    # (the car's track is alive), so it gets 1.
    assert tracker.update(_frame((PERSON, (0, 0, 40, 40)), (CAR, (200, 0, 240, 40)))) == [24000, 26001]


def test_a_stamp_going_back_starts_afresh():
    tracker = Tracker(mask_iou=False)  # boxes alone: the map of these frames is a single pixel
    panoptic = np.array([[26000]], dtype=np.int32)

    def frame(box):
        return Prediction(panoptic, np.zeros((1, 1), np.uint8), _frame((CAR, box)))

    assert tracker.track(frame((0, 0, 1, 1)), stamp_ns=10).instances[0].id == 26000
    assert tracker.track(frame((500, 0, 501, 1)), stamp_ns=20).instances[0].id == 26001  # a second car
    assert tracker.track(frame((500, 0, 501, 1)), stamp_ns=20).instances[0].id == 26001  # same stamp: no reset
    # The bag starts again: stamp 10 < 20, everything is forgotten, the car is numbered 0.
    assert tracker.track(frame((500, 0, 501, 1)), stamp_ns=10).instances[0].id == 26000


def _grid_box(cell, offset_y=0):
    row, column = divmod(cell, 40)
    return (20 * column, 20 * row + offset_y, 20 * column + 16, 20 * row + 16 + offset_y)


def test_numbers_come_back_least_recently_used_first():
    tracker = Tracker(max_age=0)
    # Frame 0: 1000 cars take every number 0..999.
    assert tracker.update(_frame(*[(CAR, _grid_box(c)) for c in range(1000)])) == [26000 + k for k in range(1000)]
    # Frame 1 keeps cars 0..499; frame 2 keeps 0..99. Numbers 500..999 die first (frame 2), 100..499 next.
    tracker.update(_frame(*[(CAR, _grid_box(c)) for c in range(500)]))
    tracker.update(_frame(*[(CAR, _grid_box(c)) for c in range(100)]))
    tracker.update(_frame(*[(CAR, _grid_box(c)) for c in range(100)]))
    # 501 new cars elsewhere: the 500 numbers dead longest first, then 100, the first of the later ones.
    new = tracker.update(_frame(*[(CAR, _grid_box(c)) for c in range(100)],
                                *[(CAR, _grid_box(c, offset_y=1000)) for c in range(501)]))
    assert new[:100] == [26000 + k for k in range(100)]
    assert new[100:] == [26000 + k for k in range(500, 1000)] + [26100]


def test_all_numbers_held_the_least_recently_seen_track_gives_its_number_up():
    tracker = Tracker(max_age=10_000)
    for cell in range(1000):  # one new car per frame, never seen again: 1000 live tracks of one class
        tracker.update(_frame((CAR, _grid_box(cell))))
    assert tracker.update(_frame((CAR, _grid_box(0, offset_y=1000)))) == [26000]
    assert tracker.live_tracks == 1000


def _drive(seed, frames=2000, cells=60, classes=(CAR, PERSON, 33)):
    """Objects in non-overlapping cells, moving a little each frame, born and dying at random: ~5 births per frame,
    so each class uses its 1000 numbers several times over. Yields (frame's instances, object of each)."""
    rng = np.random.default_rng(seed)
    alive: dict[int, tuple[int, int]] = {}  # cell -> (object, class)
    next_object = 0
    for _ in range(frames):
        for cell in range(cells):
            if cell in alive and rng.random() < 0.1:
                del alive[cell]
            elif cell not in alive and rng.random() < 0.1:
                alive[cell] = (next_object, classes[next_object % len(classes)])
                next_object += 1
        cells_now = sorted(alive, key=lambda _: rng.random())  # any order, as a network would list them
        objects = []
        for cell in cells_now:
            x0, y0, x1, y1 = _grid_box(cell)
            jitter = rng.integers(0, 2, size=2)  # a pixel of shake
            objects.append((alive[cell][1], (x0 + jitter[0], y0 + jitter[1], x1 + jitter[0], y1 + jitter[1]),
                            float(rng.uniform(0.3, 1.0))))
        yield _frame(*objects), [alive[cell][0] for cell in cells_now]


def test_2000_frames_ids_unique_per_frame_below_1000_and_kept_while_tracked():
    tracker = Tracker()
    id_of_object: dict[int, int] = {}
    largest_k, births = 0, 0
    for instances, objects in _drive(seed=7):
        ids = tracker.update(instances)
        assert len(set(ids)) == len(ids)  # unique within the frame
        assert all(i // 1000 == instance.label_id for i, instance in zip(ids, instances))
        largest_k = max([largest_k, *(i % 1000 for i in ids)])
        for obj, track_id in zip(objects, ids):
            if obj in id_of_object:
                assert id_of_object[obj] == track_id  # an object keeps its id while it lives
            else:
                births += 1
            id_of_object[obj] = track_id
    assert largest_k == 999 and births > 3 * 1500  # every class went through its numbers more than once


def test_deterministic():
    runs = []
    for _ in range(2):
        tracker = Tracker()
        runs.append([tracker.update(instances) for instances, _ in _drive(seed=3, frames=200)])
    assert runs[0] == runs[1]


def test_bad_settings_refused():
    with pytest.raises(ValueError):
        Tracker(iou_threshold=1.5)
    with pytest.raises(ValueError):
        Tracker(max_age=-1)
    with pytest.raises(ValueError):
        Tracker(box_buffer=-0.1)
    with pytest.raises(ValueError):
        Tracker(distance_gate=-1)
    with pytest.raises(ValueError):
        Tracker(appearance_scale=-1)
