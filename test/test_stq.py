"""STQ, AQ and SQ (casnet_core.evaluation.stq) on tiny hand-built sequences, the expected figures worked out by
hand in the comments (Weber et al. 2021: AQ = 1/|tracks| sum_g 1/|g| sum_p TPA * TPA / (TPA + FPA + FNA))."""

from __future__ import annotations

import math

import numpy as np
import pytest

from casnet_core.evaluation.stq import SegmentationTrackingQuality

ROAD, CAR, PERSON = 7, 26, 24


def _score(frames, sequence=""):
    metric = SegmentationTrackingQuality()
    for gt, predicted in frames:
        metric.add(np.array([gt]), np.array([predicted]), sequence)
    return metric.result()


def test_perfect_tracks_score_one_whatever_the_predicted_numbers():
    # Two cars over three frames, predicted with other numbers (26005, 26009) but consistently: every gt track
    # overlaps one predicted id exactly, TPA = |g|, FPA = FNA = 0, so each track adds 1/|g| * |g| * 1 = 1.
    # The predicted car pixels on void (0) and on a crowd region (26, a car without an instance id) are left
    # out of |p|: AQ stays 1. SQ: road and car IoU 1 (the crowd pixel is a car pixel predicted car).
    frames = [([ROAD, 26001, 26001, 26002, 0, CAR], [ROAD, 26005, 26005, 26009, 26005, 26009])] * 3
    result = _score(frames)
    assert result["AQ"] == pytest.approx(1.0)
    assert result["SQ"] == pytest.approx(1.0)
    assert result["STQ"] == pytest.approx(1.0)
    assert result["tracks"] == 2 and result["frames"] == 3


def test_ids_swapped_half_way():
    # Cars g1 = 26001 and g2 = 26002, 2 pixels each over 4 frames: |g1| = |g2| = 8. The prediction swaps their
    # ids after frame 1: p1 = 26001 lies on g1 in frames 0-1 and on g2 in frames 2-3 (|p1| = 8), p2 the reverse.
    # For g1: p1 & g1 = 4, IoU = 4 / (4 + 4 + 4) = 1/3, TPA * IoU = 4/3; the same for p2 & g1.
    # AQ(g1) = 1/8 * (4/3 + 4/3) = 1/3, AQ(g2) = 1/3, AQ = 1/3. SQ = 1 (every pixel's class is right).
    before = ([26001, 26001, 26002, 26002], [26001, 26001, 26002, 26002])
    after = ([26001, 26001, 26002, 26002], [26002, 26002, 26001, 26001])
    result = _score([before, before, after, after])
    assert result["AQ"] == pytest.approx(1 / 3)
    assert result["SQ"] == pytest.approx(1.0)
    assert result["STQ"] == pytest.approx(math.sqrt(1 / 3))


def test_one_object_split_into_two_tracks():
    # One person g, 2 pixels in each of 4 frames: |g| = 8. Predicted as p1 in frame 0 (2 pixels) and as p2 in
    # frames 1-3 (6 pixels). p1: TPA 2, FPA 0, FNA 6, IoU 2/8; p2: TPA 6, FNA 2, IoU 6/8.
    # AQ = 1/8 * (2 * 2/8 + 6 * 6/8) = 1/8 * (0.5 + 4.5) = 5/8. SQ = 1.
    gt = [ROAD, 24001, 24001]
    frames = [(gt, [ROAD, 24000, 24000])] + [(gt, [ROAD, 24003, 24003])] * 3
    result = _score(frames)
    assert result["AQ"] == pytest.approx(5 / 8)
    assert result["SQ"] == pytest.approx(1.0)
    assert result["STQ"] == pytest.approx(math.sqrt(5 / 8))


def test_a_false_track_costs_segmentation_not_association():
    # One car g (2 pixels x 2 frames) tracked right by p1; a false track p2 on a road pixel in both frames.
    # AQ: p2 overlaps no gt track, so it adds nothing: AQ = 1/4 * (4 * 4/4) = 1.
    # SQ: road gt 4 pixels, predicted road 2 -> IoU 2/4; car gt 4, predicted car 6 (4 of them right) -> 4/6.
    # SQ = (1/2 + 2/3) / 2 = 7/12; STQ = sqrt(7/12).
    frames = [([ROAD, ROAD, 26001, 26001], [ROAD, 26002, 26001, 26001])] * 2
    result = _score(frames)
    assert result["AQ"] == pytest.approx(1.0)
    assert result["SQ"] == pytest.approx(7 / 12)
    assert result["STQ"] == pytest.approx(math.sqrt(7 / 12))


def test_a_false_track_over_an_object_costs_association():
    # Car g over 2 frames (2 pixels each, |g| = 4); p1 covers it in frame 0 and half of it in frame 1 where a
    # false track p2 takes the other pixel. p1: TPA 3, FPA 0, FNA 1, IoU 3/4; p2: TPA 1, FNA 3, IoU 1/4.
    # AQ = 1/4 * (3 * 3/4 + 1 * 1/4) = 1/4 * 10/4 = 5/8.
    frames = [([26001, 26001], [26001, 26001]), ([26001, 26001], [26001, 26002])]
    assert _score(frames)["AQ"] == pytest.approx(5 / 8)


def test_sequences_pool_their_tracks_and_report_each():
    # Camera a: perfect (AQ 1, one track). Camera b: the split of one track into halves (AQ = 1/4 * (2 * 2/4 +
    # 2 * 2/4) = 1/2). Together AQ sums over both tracks: (1 + 1/2) / 2 = 3/4. SQ = 1 everywhere.
    metric = SegmentationTrackingQuality()
    for _ in range(2):
        metric.add(np.array([[26001, 26001]]), np.array([[26001, 26001]]), "a")
    metric.add(np.array([[26001, 26001]]), np.array([[26001, 26001]]), "b")
    metric.add(np.array([[26001, 26001]]), np.array([[26002, 26002]]), "b")
    result = metric.result()
    assert result["sequences"]["a"]["AQ"] == pytest.approx(1.0)
    assert result["sequences"]["b"]["AQ"] == pytest.approx(0.5)
    assert result["AQ"] == pytest.approx(0.75)
    assert result["tracks"] == 2 and result["frames"] == 4


def test_frame_by_frame_numbering_is_what_tracking_must_beat():
    # A car whose per-frame number changes every frame (the node without tracking, a new object appearing
    # first each frame): 3 frames of 1 pixel, each its own predicted id: AQ = 1/3 * 3 * (1 * 1/3) = 1/3.
    frames = [([26001], [26000]), ([26001], [26001]), ([26001], [26002])]
    assert _score(frames)["AQ"] == pytest.approx(1 / 3)


def test_no_track_no_aq_and_mismatched_sizes_refused():
    result = _score([([ROAD, ROAD], [ROAD, 0])])
    assert result["AQ"] is None and result["STQ"] is None
    assert result["SQ"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="differ in size"):
        SegmentationTrackingQuality().add(np.zeros((2, 2)), np.zeros((2, 3)))
