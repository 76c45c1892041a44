"""Per-head oracles: each head of a real (random-weights) CASNet replaced by its ground truth at the network's
stride; with all of them replaced the result is the full oracle at that stride, whatever the network says."""

from __future__ import annotations

import numpy as np
import pytest

from casnet_core.data import list_samples, read_image, read_instance_ids, read_label_ids
from casnet_core.evaluation import evaluate
from casnet_core.evaluation.oracles import (
    HEAD_ORACLES,
    ORACLES,
    full_oracle_prediction,
    head_oracle_prediction,
    oracle_heads,
)
from casnet_core.labels import LABEL_DIVISOR
from casnet_core.predictor import Predictor


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    return Predictor.from_checkpoint(str(tiny_checkpoint), device="cpu")


def _scene(root, index=0):
    sample = list_samples(root, "val")[index]
    return read_image(sample.image_path), read_label_ids(sample.label_ids_path), read_instance_ids(sample.instance_ids_path)


def _thresholds(predictor):
    return {k: getattr(predictor, k) for k in ("box_threshold", "nms_iou", "tie_margin", "min_area", "stuff_area",
                                               "max_instances")}


@pytest.mark.parametrize("index", [0, 1, 2])
def test_all_heads_replaced_is_the_full_oracle_at_the_network_stride(synth_root, predictor, index):
    image, labels, instances = _scene(synth_root, index)
    replaced = head_oracle_prediction(predictor, image, labels, instances, heads="semantic+seeds+attributes")
    full = full_oracle_prediction(labels, instances, stride=predictor.model.output_stride, **_thresholds(predictor))
    np.testing.assert_array_equal(replaced.panoptic, full.panoptic)
    np.testing.assert_array_equal(replaced.semantic, full.semantic)
    assert replaced.scores == full.scores
    # The ground truth has things, and the oracle finds them (random weights never would).
    assert (full.panoptic >= LABEL_DIVISOR).any()


def test_semantic_head_oracle_is_the_predictors_semantic_oracle(synth_root, predictor):
    image, labels, instances = _scene(synth_root)
    replaced = head_oracle_prediction(predictor, image, labels, instances, heads="semantic")
    expected = predictor.predict(image, semantic_label_ids=labels)
    np.testing.assert_array_equal(replaced.panoptic, expected.panoptic)


def test_unreplaced_heads_are_the_networks(synth_root, predictor):
    image, labels, instances = _scene(synth_root)
    network = predictor.predict(image)
    full = head_oracle_prediction(predictor, image, labels, instances, heads="semantic+seeds+attributes")
    # Network semantics with perfect instance heads: the semantic map is the network's.
    instance_heads = head_oracle_prediction(predictor, image, labels, instances, heads="seeds+attributes")
    np.testing.assert_array_equal(instance_heads.semantic, network.semantic)
    # Ground-truth semantics with the network's (random) attributes: semantics perfect, instances not.
    semantic_seeds = head_oracle_prediction(predictor, image, labels, instances, heads="semantic+seeds")
    np.testing.assert_array_equal(semantic_seeds.semantic, full.semantic)
    assert not np.array_equal(semantic_seeds.panoptic, full.panoptic)


def test_oracle_names():
    assert oracle_heads("seeds+attributes") == {"seeds", "attributes"}
    assert set(HEAD_ORACLES) < set(ORACLES) and "full" in ORACLES and "semantic" in ORACLES
    for bad in ("attributes+seeds", "box", "", "semantic+semantic"):
        with pytest.raises(ValueError, match="unknown oracle"):
            oracle_heads(bad)


def test_head_oracle_refuses_a_resized_image(synth_root, tiny_checkpoint):
    image, labels, instances = _scene(synth_root)
    small = Predictor.from_checkpoint(str(tiny_checkpoint), device="cpu", max_input_size=256)
    with pytest.raises(ValueError, match="network's size"):
        head_oracle_prediction(small, image, labels, instances, heads="seeds")


def test_eval_command_runs_a_head_oracle(synth_root, tiny_checkpoint, tmp_path):
    metrics = evaluate(synth_root, "val", tmp_path / "eval", checkpoint=tiny_checkpoint, oracle="seeds+attributes",
                       device="cpu", max_images=1, progress=False)
    assert metrics["source"] == "oracle-seeds+attributes"
    assert metrics["mIoU"] < 0.9  # the network's (random) semantics
    all_heads = evaluate(synth_root, "val", tmp_path / "all", checkpoint=tiny_checkpoint,
                         oracle="semantic+seeds+attributes", device="cpu", max_images=1, progress=False)
    assert all_heads["mIoU"] == pytest.approx(1.0) and all_heads["PQ_th"] > 0.5
