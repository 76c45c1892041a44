"""The CUDA graphs of a Predictor's forward pass: which batch shapes get a graph, which graphs are kept, and
the device every capture and replay runs on.

A CUDA graph replays a fixed input shape. A batched node sees every batch size from 1 to its camera count
(the cameras whose frames were waiting), so a graph per exact size would be captured again and again
(each capture: three warm-up forwards, a synchronize and an empty_cache). Batches are therefore padded up
to the next power of two (``graph_batch_size``: 1, 2, 4, 8, ...; six cameras need four graphs per image
size), the padding rows of the static input keep whatever earlier frames left there (in eval mode the
images of a batch do not affect each other) and are dropped from the outputs. At most ``max_graphs``
graphs are kept, the least recently used one dropped first.

torch creates the capture stream on the current device, which nothing else sets: capture and replay run
under ``torch.cuda.device(device)`` so that a Predictor on ``cuda:1`` captures its own kernels.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, NamedTuple

import torch

#: Graphs kept at most (each holds its own memory pool).
MAX_CUDA_GRAPHS = 4


class CapturedGraph(NamedTuple):
    """A captured forward pass: ``graph.replay()`` reads ``static_input`` and writes ``static_outputs``."""

    static_input: torch.Tensor
    graph: Any  # torch.cuda.CUDAGraph
    static_outputs: dict[str, torch.Tensor]


def graph_batch_size(batch: int) -> int:
    """The batch size the graph of a ``batch``-image batch is captured at: the next power of two (batch >= 1)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return 1 << (batch - 1).bit_length()


def graph_key(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The cache key of an input of ``shape`` (B, C, H, W): the shape with B padded (``graph_batch_size``)."""
    return (graph_batch_size(shape[0]), *shape[1:])


class CudaGraphs:
    """The forward pass of one model through CUDA graphs, captured on demand, ``max_graphs`` kept (LRU).

    Args:
        device: the CUDA device the model lives on (capture and replay run with it as the current device).
        capture: ``capture(static_input)`` captures the forward pass over that tensor (``Predictor._capture``).
        max_graphs: graphs kept at most.
    """

    def __init__(self, device: torch.device, capture: Callable[[torch.Tensor], CapturedGraph], *,
                 max_graphs: int = MAX_CUDA_GRAPHS) -> None:
        self.device = device
        self._capture = capture
        self.max_graphs = max_graphs
        self.graphs: collections.OrderedDict[tuple[int, ...], CapturedGraph] = collections.OrderedDict()
        self.captures = 0  # graphs captured so far (a benchmark figure)

    def __len__(self) -> int:
        return len(self.graphs)

    def __call__(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """The outputs for ``batch`` (B, C, H, W), views of the graph's own buffers valid until the next call."""
        count = batch.shape[0]
        key = graph_key(tuple(batch.shape))
        with torch.cuda.device(self.device):
            entry = self.graphs.get(key)
            if entry is None:
                while len(self.graphs) >= self.max_graphs:
                    self.graphs.popitem(last=False)  # the least recently used
                entry = self.graphs[key] = self._capture(_padded(batch, key[0]))
                self.captures += 1
            else:
                self.graphs.move_to_end(key)
                entry.static_input[:count].copy_(batch)
            entry.graph.replay()
        if key[0] == count:
            return entry.static_outputs
        return {name: output[:count] for name, output in entry.static_outputs.items()}


def _padded(batch: torch.Tensor, size: int) -> torch.Tensor:
    """``batch`` with zero images appended up to ``size``, in its memory format (channels_last on CUDA)."""
    if size == batch.shape[0]:
        return batch
    padding = batch.new_zeros((size - batch.shape[0], *batch.shape[1:]))
    channels_last = batch.dim() == 4 and batch.is_contiguous(memory_format=torch.channels_last)
    return torch.cat([batch, padding]).contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format)
