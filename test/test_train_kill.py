"""A real `casnet train` process killed with SIGKILL at several moments (start-up, in the middle of a
checkpoint write, in the middle of a step) always leaves a loadable last.pt, and `--resume` reaches
the same weights as a run that was never stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from casnet_core.checkpoint import read_checkpoint
from casnet_core.config import load_config
from casnet_core.train import train

STEPS = 10
OVERRIDES = [
    "model.fusion_channels=16", "model.head_channels=8", "data.short_side=null", "data.crop_size=[64,128]",
    "data.workers=0", "solver.batch_size=2", "solver.log_every=1", "solver.checkpoint_every=2",
]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """4 training images of 64x128: 2 steps per epoch, so 10 steps cross 4 epoch boundaries."""
    from casnet_core.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("tiny"), num_train=4, num_val=0, height=64, width=128,
                            seed=1, progress=False)


def _logged_steps(out: Path) -> list[int]:
    path = out / "log.jsonl"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
            pass  # a row being written
    return steps


def _partial_checkpoint(out: Path) -> bool:
    return any(out.glob(".last.pt.*.tmp"))


def _run_and_kill(command: list[str], env: dict[str, str], out: Path, moment) -> str | None:
    """Starts ``command``, SIGKILLs it as soon as ``moment(out)`` holds; returns what was seen at the kill
    (None if the process ended first)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while process.poll() is None and time.monotonic() < deadline:
            seen = moment(out)
            if seen:
                process.kill()  # SIGKILL
                process.wait()
                return seen
            time.sleep(0.001)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, process.stderr.read()[-3000:]
    return None


def test_sigkill_at_any_moment_then_resume_reaches_the_uninterrupted_weights(tiny_root, tmp_path):
    # The subprocesses compute with this process's thread count, so both runs do the same arithmetic.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    reference = train(load_config("config/synthetic_cpu.yaml", OVERRIDES), tiny_root, tmp_path / "reference",
                      device="cpu", max_iters=STEPS, progress=False)

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "casnet_core.cli", "train", "--config", "config/synthetic_cpu.yaml",
               "--data", str(tiny_root), "--out", str(out), "--device", "cpu", "--max-iters", str(STEPS), *OVERRIDES]
    moments = [
        # start-up: the first last.pt (step 0) has just appeared
        lambda o: "start-up" if (o / "last.pt").exists() else None,
        # a checkpoint write in progress (its temporary file exists), or failing that, mid-run
        lambda o: "mid-checkpoint-write" if _partial_checkpoint(o) else
        ("mid-run" if max(_logged_steps(o), default=0) >= 5 else None),
        # mid-step: step 7 logged, no checkpoint at odd steps, so step 8 is being computed
        lambda o: "mid-step" if max(_logged_steps(o), default=0) >= 7 else None,
    ]
    kills = []
    for index, moment in enumerate(moments):
        seen = _run_and_kill(command + (["--resume"] if index else []), env, out, moment)
        assert seen is not None, f"the run finished before kill {index + 1}"
        state = read_checkpoint(out / "last.pt")  # loadable after every kill
        kills.append((seen, state["step"], max(_logged_steps(out), default=0)))
    print("kills (moment, last.pt step, last logged step):", kills)
    assert _run_and_kill(command + ["--resume"], env, out, lambda o: None) is None
    assert not _partial_checkpoint(out)

    expected = read_checkpoint(reference)["model"]
    resumed = read_checkpoint(out / "model_final.pt")
    assert resumed["step"] == STEPS
    difference = max((resumed["model"][k].double() - v.double()).abs().max().item() for k, v in expected.items())
    print(f"max abs weight difference, killed {len(kills)}x and resumed vs. uninterrupted: {difference:.3g}")
    for key, value in expected.items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=1e-6, msg=key)
    # Every step logged exactly once: rows after the step of last.pt are dropped on resume.
    assert _logged_steps(out) == list(range(1, STEPS + 1))
