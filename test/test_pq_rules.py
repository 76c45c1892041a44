"""The in-memory panoptic quality on a hand-built row of segments, every figure checked: each rule of the official
evaluator (match at IoU > 0.5, void left out of the union, crowd and void predictions not false positives, the
averages over present classes) found to need a check by mutation testing (docs/mutation.md)."""

import math

import numpy as np
import pytest

from casnet_core.evaluation import panoptic_quality

CAR, PERSON, ROAD, BUILDING = 26, 24, 7, 11


def _row(segments):
    return np.concatenate([np.full(width, value, np.int32) for value, width in segments])[None]


# (ground truth, width) and (prediction, width), left to right, 109 pixels.
GROUND_TRUTH = _row([(26000, 10), (26001, 10), (26002, 10), (26003, 10), (ROAD, 10), (0, 10), (PERSON, 10),
                     (BUILDING, 10), (26004, 10), (0, 5), (26005, 10), (0, 4)])
PREDICTION = _row([
    (26010, 10),                  # car A exactly: IoU 1
    (26011, 6), (ROAD, 4),        # car B: IoU 0.6
    (BUILDING, 10),               # on car C (missed): a building false positive
    (26012, 4), (0, 6),           # car D: IoU 0.4, a car false positive; D missed
    (ROAD, 10),                   # road: 10 / 14
    (26013, 10),                  # on void: not a false positive
    (24005, 10),                  # on a person crowd region: not a false positive
    (26014, 10),                  # on a building (missed): a car false positive
    (26015, 5), (0, 5), (26015, 5),  # half on car I, half on void: IoU exactly 0.5, no match; half void is not
                                  # more than half: a false positive; I missed
    (26016, 6), (0, 4), (26016, 4),  # car J: 6 / (10 + 10 - 6 - 4 on void) = 0.6
])


def test_every_figure_of_a_hand_built_case():
    metrics = panoptic_quality([PREDICTION], [GROUND_TRUTH])
    car_pq, road = 2.2 / 6, 10 / 14
    expected = {
        "PQ": (car_pq + 0 + road) / 3, "SQ": (2.2 / 3 + 0 + road) / 3, "RQ": (0.5 + 0 + 1) / 3,
        "PQ_th": car_pq, "SQ_th": 2.2 / 3, "RQ_th": 0.5,
        "PQ_st": road / 2, "SQ_st": road / 2, "RQ_st": 0.5,
        "n": 3, "n_th": 1, "n_st": 2,
    }
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key
    per_class = metrics["per_class"]
    assert per_class["car"] == pytest.approx({"PQ": car_pq, "SQ": 2.2 / 3, "RQ": 0.5, "tp": 3, "fp": 3, "fn": 3})
    assert per_class["building"] == {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "tp": 0, "fp": 1, "fn": 1}
    assert per_class["road"] == pytest.approx({"PQ": road, "SQ": road, "RQ": 1.0, "tp": 1, "fp": 0, "fn": 0})
    assert per_class["person"] == {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "tp": 0, "fp": 0, "fn": 0}


def test_nothing_to_evaluate_gives_nan_figures_and_no_classes():
    metrics = panoptic_quality([np.zeros((2, 2), np.int32)], [np.zeros((2, 2), np.int32)])
    for group in ("", "_th", "_st"):
        assert all(math.isnan(metrics[key + group]) for key in ("PQ", "SQ", "RQ"))
        assert metrics["n" + group] == 0


def test_mismatched_inputs_are_named():
    with pytest.raises(ValueError, match=r"prediction \(1, 2\) and ground truth \(2, 2\) differ in size"):
        panoptic_quality([np.zeros((1, 2), np.int32)], [np.zeros((2, 2), np.int32)])
    with pytest.raises(ValueError, match="1 predictions for 2 ground-truth images"):
        panoptic_quality([np.zeros((2, 2), np.int32)], [np.zeros((2, 2), np.int32)] * 2)


def test_one_pixel_and_partly_void_partly_crowd_predictions():
    # No void in the ground truth; a 1-pixel car on the road is a false positive.
    gt_x = np.array([[26000] * 4 + [ROAD] * 4])
    pred_x = np.array([[26001] * 4 + [ROAD] * 3 + [26002]])
    # A car prediction 2 pixels on void and 2 on a car crowd region of its 5: more than half ignored, not a
    # false positive; a 1-pixel car on the road beside a crowd region is one.
    gt_y = np.array([[0, 0, CAR, CAR, ROAD, ROAD, ROAD, ROAD]])
    pred_y = np.array([[26003] * 5 + [ROAD, ROAD, 26004]])
    car = panoptic_quality([pred_x, pred_y], [gt_x, gt_y])["per_class"]["car"]
    assert (car["tp"], car["fp"], car["fn"]) == (1, 2, 0)
