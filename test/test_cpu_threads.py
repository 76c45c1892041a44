"""OpenMP's wait policy on a shared CPU (casnet_core/__init__.py): threads that sleep rather than spin between
parallel operations, so that a busy core elsewhere does not stall every operation; and the Predictor's
post-processing on one thread (casnet_core.predictor.POSTPROCESS_THREADS)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _policy_seen_by_openmp(env: dict[str, str]) -> str:
    """The wait policy of the OpenMP runtime in a fresh process that imports casnet_core, then torch."""
    code = ("import casnet_core, os, torch; torch.set_num_threads(2); torch.ones(1 << 16).sum(); "
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_importing_casnet_core_makes_openmp_threads_wait_passively():
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    assert _policy_seen_by_openmp(env) == "PASSIVE"


def test_a_wait_policy_the_user_set_is_kept():
    env = {**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}
    assert _policy_seen_by_openmp(env) == "ACTIVE"


def test_cpu_threads_sets_the_count_inside_and_restores_it_after_an_error():
    import torch

    from casnet_core.predictor import cpu_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(RuntimeError):
            with cpu_threads(1):
                assert torch.get_num_threads() == 1
                raise RuntimeError("the post-processing failed")
        assert torch.get_num_threads() == 2
        with cpu_threads(1, "cuda"):  # computing on another device: the CPU threads stay as they are
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_predictor_post_processes_on_one_thread_and_runs_the_network_on_all(monkeypatch):
    # The post-processing's short operations run faster on one thread (predictor.POSTPROCESS_THREADS); the forward
    # pass keeps the process's threads, and so does the caller afterwards.
    import numpy as np
    import torch

    from casnet_core import predictor as predictor_module
    from casnet_core.model import build_casnet

    seen = {}
    model = build_casnet("hrnet_w18_small", fusion_channels=32, head_channels=16).eval()
    real_forward, real_support = model.forward, predictor_module.common_attribute_support

    def forward(*args, **kwargs):
        seen["forward"] = torch.get_num_threads()
        return real_forward(*args, **kwargs)

    def support(*args, **kwargs):
        seen["postprocess"] = torch.get_num_threads()
        return real_support(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    monkeypatch.setattr(predictor_module, "common_attribute_support", support)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        prediction = predictor_module.Predictor(model, device="cpu").predict(np.zeros((64, 96, 3), np.uint8))
        assert seen == {"forward": 2, "postprocess": predictor_module.POSTPROCESS_THREADS} and seen["forward"] > 1
        assert torch.get_num_threads() == 2
        assert prediction.panoptic.shape == (64, 96)
    finally:
        torch.set_num_threads(before)
