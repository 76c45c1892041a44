"""casnet_core.cuda_graphs: the batch sizes graphs are captured at, the least-recently-used cache, the device
every capture and replay runs on (issue 31, items 3 and 4), and the graphs on real CUDA devices (skipped
without them)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from casnet_core.cuda_graphs import CapturedGraph, CudaGraphs, graph_batch_size, graph_key
from casnet_core.model import build_casnet
from casnet_core.predictor import Predictor
from casnet_core.synth import generate_scene

# A low box threshold: random weights give box probabilities near the 0.01 prior (as test_predictor).
THRESHOLDS = dict(box_threshold=0.005, min_area=4, stuff_area=16)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_casnet("hrnet_w18_small", mode="panoptic", fusion_channels=32, head_channels=16).eval()


@pytest.fixture(scope="module")
def scenes():
    return [generate_scene(seed, 128, 256)[0] for seed in (1, 2, 3, 4, 5, 6)]


def test_batches_are_padded_to_powers_of_two():
    # 1..6 cameras' frames need graphs of 1, 2, 4 and 8 images: four, not six.
    assert [graph_batch_size(n) for n in range(1, 10)] == [1, 2, 4, 4, 8, 8, 8, 8, 16]
    assert graph_key((3, 3, 64, 128)) == (4, 3, 64, 128)
    assert len({graph_key((n, 3, 64, 128)) for n in range(1, 7)}) == 4
    with pytest.raises(ValueError):
        graph_batch_size(0)


class _EagerGraph:
    """Stands in for a torch.cuda.CUDAGraph on the CPU: ``replay`` runs ``forward`` over the static input into the
    static outputs, as a replay of the captured kernels does."""

    def __init__(self, forward, static_input: torch.Tensor) -> None:
        self.forward, self.static_input = forward, static_input
        with torch.inference_mode():
            self.static_outputs = forward(static_input)

    def replay(self) -> None:
        with torch.inference_mode():
            for name, value in self.forward(self.static_input).items():
                self.static_outputs[name].copy_(value)


def _eager_capture(forward, captured: list):
    def capture(batch: torch.Tensor) -> CapturedGraph:
        static_input = batch.clone()
        graph = _EagerGraph(forward, static_input)
        captured.append(tuple(static_input.shape))
        return CapturedGraph(static_input, graph, graph.static_outputs)

    return capture


@pytest.fixture
def device_calls(monkeypatch):
    """The devices torch.cuda.device is entered with (recorded; nothing else is done on a machine without CUDA)."""
    calls = []

    @contextlib.contextmanager
    def recording_device(device):
        calls.append(torch.device(device))
        yield

    monkeypatch.setattr(torch.cuda, "device", recording_device)
    return calls


def test_the_cache_keeps_the_least_recently_used_graphs_and_runs_on_its_device(device_calls):
    captured = []
    graphs = CudaGraphs(torch.device("cuda", 1), _eager_capture(lambda x: {"twice": 2 * x}, captured), max_graphs=2)

    def run(batch_size: int, height: int = 4) -> None:
        batch = torch.arange(batch_size * 3 * height * 4, dtype=torch.float32).reshape(batch_size, 3, height, 4)
        outputs = graphs(batch)
        assert torch.equal(outputs["twice"], 2 * batch)  # the padding rows are dropped from the outputs

    run(1)
    run(3)  # a graph of 4 images
    run(1)  # replayed: the graph of 1 becomes the most recently used
    run(4)  # replays the graph of 4 (the padding of the batch of 3 is its own batch now)
    assert captured == [(1, 3, 4, 4), (4, 3, 4, 4)]
    run(2)  # a third graph: the least recently used one (of 1, used before the 4) is dropped, not the oldest-made
    assert list(graphs.graphs) == [(4, 3, 4, 4), (2, 3, 4, 4)]
    run(3)
    assert graphs.captures == 3 and len(graphs) == 2
    # Every capture and replay ran with the cache's device current (issue 31, item 3).
    assert device_calls and set(device_calls) == {torch.device("cuda", 1)}
    assert len(device_calls) == 6


def _batched_steps(steps: int, cameras: int, seed: int = 0) -> list[int]:
    """Batch sizes of a batched node: each step takes the frames of 1..cameras cameras."""
    rng = np.random.default_rng(seed)
    return [int(n) for n in rng.integers(1, cameras + 1, steps)]


def test_six_cameras_capture_once_per_padded_size(device_calls):
    # Batches of 1..6 frames in any order: four graphs, captured once each (the cache before issue 31 held the four
    # most recently made shapes of six and captured again and again).
    captured = []
    graphs = CudaGraphs(torch.device("cuda", 0), _eager_capture(lambda x: {"same": x.clone()}, captured))
    for batch_size in _batched_steps(1000, cameras=6):
        graphs(torch.zeros(batch_size, 3, 2, 2))
    assert sorted(captured) == [(1, 3, 2, 2), (2, 3, 2, 2), (4, 3, 2, 2), (8, 3, 2, 2)]


def test_a_padded_batch_through_the_predictor_changes_no_result(model, scenes, device_calls):
    # The Predictor's forward pass through a graph cache (on cuda:1, captured eagerly on the CPU): a padded batch
    # (3 frames run as 4) gives each frame what it gives alone, instances included.
    images = scenes[:3]
    plain = Predictor(model, device="cpu", backend="torch", **THRESHOLDS)
    expected = [plain.predict(image) for image in images]
    assert any(prediction.instances for prediction in expected)  # the comparison covers instances
    graphed = Predictor(model, device="cpu", backend="torch", **THRESHOLDS)
    captured = []
    graphed._graphs = CudaGraphs(torch.device("cuda", 1), _eager_capture(graphed.model, captured))
    for _ in range(2):  # captured, then replayed
        found = graphed.predict_batch(images)
        for prediction, reference in zip(found, expected):
            np.testing.assert_array_equal(prediction.panoptic, reference.panoptic)
            assert [i.id for i in prediction.instances] == [i.id for i in reference.instances]
    assert [shape[0] for shape in captured] == [4]
    assert set(device_calls) == {torch.device("cuda", 1)}


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_cuda_graphs_on_the_second_gpu(model, scenes):
    images = scenes[:3]
    eager = Predictor(model, device="cuda:1", backend="torch", **THRESHOLDS)
    graphed = Predictor(model, device="cuda:1", backend="torch", cuda_graph=True, **THRESHOLDS)
    assert graphed._graphs.device == torch.device("cuda", 1)
    torch.cuda.set_device(0)  # the current device is another one than the Predictor's
    for _ in range(2):
        for image in images:  # each frame its own result, not the first frame's (an empty graph)
            np.testing.assert_array_equal(graphed.predict(image).panoptic, eager.predict(image).panoptic)
        batch = graphed.predict_batch(images)  # run as 4 (cuDNN may pick other kernels than at batch 1)
        for prediction, image in zip(batch, images):
            assert _agreement(prediction.panoptic, eager.predict(image).panoptic) > 0.99
    assert graphed._graphs.captures == 2  # batch sizes 1 and 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_padding_on_the_gpu(model, scenes):
    images = scenes
    eager = Predictor(model, device="cuda", backend="torch", **THRESHOLDS)
    graphed = Predictor(model, device="cuda", backend="torch", cuda_graph=True, **THRESHOLDS)
    for count in (1, 2, 3, 4, 5, 6, 3, 1):
        for prediction, image in zip(graphed.predict_batch(images[:count]), images):
            assert _agreement(prediction.panoptic, eager.predict(image).panoptic) > 0.99
    assert graphed._graphs.captures == 4  # 1, 2, 4, 8
