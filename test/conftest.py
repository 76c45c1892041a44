"""Shared fixtures: one small generated dataset and one small random-weights checkpoint per session."""

from __future__ import annotations

import pytest

from casnet_ros import transport

# Every DDS participant of the session (test clients here, node processes started from here) uses the
# shipped Fast DDS profile, as on a vehicle. Fast DDS reads it when a process creates its first
# participant, so it is set before any test runs.
transport.use_large_image_profile()


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory):
    """The ONNX export cache of the session (``casnet_core.onnx_cache``: ``$CASNET_CACHE_DIR/onnx``), inherited by
    the node and command processes the tests start: the tests neither fill the user's own cache with the exports of
    their test models nor evict the user's exports from it (it keeps the 16 most recently used)."""
    folder = tmp_path_factory.mktemp("casnet-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CASNET_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A small Cityscapes-format dataset from the synthetic generator: 6 train, 3 val, 256x512."""
    from casnet_core.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("synth"), num_train=6, num_val=3, height=256, width=512, seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A real CASNet (hrnet_w18_small, narrow heads) with seeded random weights, saved as a checkpoint."""
    import torch

    from casnet_core.checkpoint import save_checkpoint
    from casnet_core.model import build_casnet

    torch.manual_seed(0)
    model = build_casnet("hrnet_w18_small", mode="panoptic", fusion_channels=32, head_channels=16)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", model.eval())
