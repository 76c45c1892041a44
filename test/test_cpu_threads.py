"""OpenMP's wait policy on a shared CPU (casnet_core/__init__.py): threads that sleep rather than spin between
parallel operations, so that a busy core elsewhere does not stall every operation."""

from __future__ import annotations

import os
import subprocess
import sys


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
