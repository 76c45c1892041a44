"""Common attribute support holds its promise for any head output (issue 8): hypothesis draws the head
outputs directly (random tensors of any scale with injected NaN, +-inf, 0, huge and negative values, whole
tensors at one extreme), random sizes, strides, batches, output resolutions and thresholds, and checks the
invariants on the result: no exception; every thing pixel exactly one instance id of its own label; no
instance without pixels; ids within their label's range and under the cap; boxes, areas and centroids
those of the masks; non-finite values counted. On CUDA too when there is one.

Derandomized (the same examples every run) so it never flakes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casnet_core.labels import LABEL_DIVISOR
from casnet_core.postprocess import VOID_CHANNEL, common_attribute_support

EXAMPLES = 150
SPECIAL_VALUES = (float("nan"), float("inf"), -float("inf"), 0.0, 1e4, -1e4, 50.0, -50.0, 65504.0, 1e30, -1e30)
# Label ids of semantic channels 0..5 (road, sidewalk, person, rider, car, bicycle in Cityscapes).
LABEL_IDS = (7, 8, 24, 25, 26, 33)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="needs a CUDA device"))]


@st.composite
def head_values(draw, name: str) -> dict:
    """How one head tensor is filled: random of a scale, plus special values on a fraction of entries, or
    constant at one value (every class seedless: box logits -inf; every cell a seed: +inf)."""
    style = draw(st.sampled_from(("random", "specials", "constant")), label=f"{name} style")
    return {
        "style": style,
        "scale": draw(st.sampled_from((0.1, 3.0, 50.0)), label=f"{name} scale"),
        "fraction": draw(st.sampled_from((0.05, 0.3, 1.0)), label=f"{name} fraction"),
        "value": draw(st.sampled_from(SPECIAL_VALUES), label=f"{name} value"),
    }


def make_tensor(shape: tuple[int, ...], spec: dict, generator: torch.Generator, offset: float = 0.0) -> torch.Tensor:
    if spec["style"] == "constant":
        return torch.full(shape, spec["value"])
    values = torch.randn(shape, generator=generator) * spec["scale"] + offset
    if spec["style"] == "specials":
        chosen = torch.rand(shape, generator=generator) < spec["fraction"]
        specials = torch.tensor(SPECIAL_VALUES)[torch.randint(0, len(SPECIAL_VALUES), shape, generator=generator)]
        values = torch.where(chosen, specials, values)
    return values


@st.composite
def scenes(draw) -> dict:
    batch = draw(st.integers(1, 3), label="batch")
    num_classes = draw(st.integers(1, len(LABEL_IDS)), label="classes")
    channels = list(range(num_classes))
    num_things = draw(st.integers(1, num_classes), label="thing classes")
    thing_classes = draw(st.permutations(channels), label="channel order")[:num_things]
    h, w = draw(st.integers(1, 6), label="h"), draw(st.integers(1, 6), label="w")
    stride = draw(st.sampled_from((1, 2, 3, 4, 8)), label="stride")
    geometry = draw(st.sampled_from(("grid", "resized", "any scale")), label="geometry")
    output_size, input_scale = None, (1.0, 1.0)
    if geometry != "grid":
        output_size = (draw(st.integers(1, 20), label="H"), draw(st.integers(1, 20), label="W"))
        if geometry == "resized":  # an image resized for the network, outputs back at its own size
            input_scale = (h * stride / output_size[0], w * stride / output_size[1])
        else:
            input_scale = (draw(st.sampled_from((0.1, 0.7, 1.0, 3.0))), draw(st.sampled_from((0.1, 0.7, 1.0, 3.0))))
    return {
        "seed": draw(st.integers(0, 2**31 - 1), label="seed"),
        "batch": batch, "num_classes": num_classes, "thing_classes": tuple(thing_classes), "h": h, "w": w,
        "stride": stride, "output_size": output_size, "input_scale": input_scale,
        "separated": draw(st.booleans(), label="separated"),
        "attributes": draw(head_values("attributes")),
        "box_logits": draw(head_values("box_logits")),
        "semantic_logits": draw(head_values("semantic_logits")),
        "thresholds": {
            "box_threshold": draw(st.sampled_from((0.0, 1e-9, 0.01, 0.5, 0.99, 1.0)), label="box_threshold"),
            "nms_iou": draw(st.sampled_from((0.0, 0.3, 0.6, 1.0)), label="nms_iou"),
            "nms_kernel": draw(st.sampled_from((1, 3)), label="nms_kernel"),
            "pre_nms_top_k": draw(st.sampled_from((1, 2, 5, 2000)), label="pre_nms_top_k"),
            "tie_margin": draw(st.sampled_from((0.0, 0.05, 1.0)), label="tie_margin"),
            "min_area": draw(st.integers(0, 40), label="min_area"),
            "stuff_area": draw(st.sampled_from((0, 5, 2048)), label="stuff_area"),
            "max_instances": draw(st.sampled_from((1, 2, 3, 5, 200)), label="max_instances"),
            "chunk_elements": draw(st.sampled_from((1, 5, 1 << 21)), label="chunk_elements"),
            "panoptic": draw(st.booleans(), label="panoptic"),
        },
    }


def build_inputs(scene: dict, device: str) -> tuple[dict, int, tuple[int, int]]:
    """The keyword arguments of common_attribute_support, the number of non-finite values in the heads it
    reads, and the output size."""
    generator = torch.Generator().manual_seed(scene["seed"])
    batch, h, w, stride = scene["batch"], scene["h"], scene["w"], scene["stride"]
    num_things = len(scene["thing_classes"])
    attributes = make_tensor((batch, 4, h, w), scene["attributes"], generator, offset=1.0)
    box_logits = make_tensor((batch, num_things, h, w), scene["box_logits"], generator, offset=-1.0)
    heads = [attributes, box_logits]
    kwargs = dict(thing_classes=scene["thing_classes"], label_ids=LABEL_IDS[: scene["num_classes"]], stride=stride,
                  **scene["thresholds"])
    output_size = scene["output_size"] or (h * stride, w * stride)
    if scene["separated"]:
        # Channels of any value, void and out of range included (those are void).
        semantic = torch.randint(-1, scene["num_classes"] + 1, (batch, *output_size), generator=generator)
        semantic[semantic == scene["num_classes"]] = VOID_CHANNEL
        kwargs["semantic"] = semantic.to(device)
    else:
        logits = make_tensor((batch, scene["num_classes"], h, w), scene["semantic_logits"], generator)
        heads.append(logits)
        kwargs.update(semantic_logits=logits.to(device), output_size=scene["output_size"],
                      input_scale=scene["input_scale"])
    nonfinite = sum(int((~torch.isfinite(t)).sum()) for t in heads)
    return dict(attributes=attributes.to(device), box_logits=box_logits.to(device), **kwargs), nonfinite, output_size


def check_invariants(out, scene: dict, nonfinite: int, output_size: tuple[int, int]) -> None:
    batch, (height, width) = scene["batch"], output_size
    panoptic = out.panoptic.cpu().numpy().astype(np.int64)
    channels = out.semantic_channels.cpu().numpy()
    assert out.panoptic.dtype == torch.int32 and panoptic.shape == (batch, height, width)
    assert channels.shape == (batch, height, width)
    assert np.isin(channels, [*range(scene["num_classes"]), VOID_CHANNEL]).all()
    label_of_channel = np.zeros(256, np.int64)
    label_of_channel[: scene["num_classes"]] = LABEL_IDS[: scene["num_classes"]]
    np.testing.assert_array_equal(out.semantic.cpu().numpy(), label_of_channel[channels])
    assert out.nonfinite == nonfinite

    # Every thing pixel has exactly one instance id, of its own label; every other pixel none.
    is_thing = np.isin(channels, scene["thing_classes"])
    assert (panoptic[is_thing] // LABEL_DIVISOR == label_of_channel[channels[is_thing]]).all()
    assert (panoptic[is_thing] >= LABEL_DIVISOR).all()
    other = panoptic[~is_thing]
    assert ((other == 0) | (other == label_of_channel[channels[~is_thing]])).all()
    if not scene["thresholds"]["panoptic"]:
        assert (other == 0).all()

    ids = out.instance_ids.cpu().numpy()
    images = out.instance_batch.cpu().numpy()
    areas = out.instance_areas.cpu().numpy()
    boxes = out.instance_boxes.cpu().numpy()
    centroids = out.instance_centroids.cpu().numpy()
    scores = out.instance_scores.cpu().numpy()
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    assert (out.instance_label_ids.cpu().numpy() == ids // LABEL_DIVISOR).all()
    assert (label_of_channel[out.instance_classes.cpu().numpy()] == ids // LABEL_DIVISOR).all()
    for b in range(batch):
        mine = images == b
        # The instances are exactly the ids on the map: none without pixels, none missing.
        on_map = np.unique(panoptic[b][panoptic[b] >= LABEL_DIVISOR])
        assert sorted(ids[mine].tolist()) == on_map.tolist()
        # Numbers 0, 1, ... per label, below the divisor; at most max_instances per image, or one per
        # thing class present when there are more classes than that.
        labels = ids[mine] // LABEL_DIVISOR
        for label in np.unique(labels):
            assert sorted(ids[mine][labels == label] % LABEL_DIVISOR) == list(range((labels == label).sum()))
        classes_present = len(np.unique(channels[b][is_thing[b]]))
        assert mine.sum() <= max(scene["thresholds"]["max_instances"], classes_present)
        assert mine.sum() <= LABEL_DIVISOR * len(scene["thing_classes"])
        for instance_id, area, box, centroid in zip(ids[mine], areas[mine], boxes[mine], centroids[mine]):
            ys, xs = np.nonzero(panoptic[b] == instance_id)
            assert area == xs.size > 0
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            np.testing.assert_allclose(centroid, [xs.mean() + 0.5, ys.mean() + 0.5], rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(scene=scenes())
def test_any_head_output_gives_a_partition_of_the_thing_pixels(device, scene):
    kwargs, nonfinite, output_size = build_inputs(scene, device)
    out = common_attribute_support(**kwargs)
    check_invariants(out, scene, nonfinite, output_size)

