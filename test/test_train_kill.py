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
from casnet_core.formats import partial_writes
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


def _logged_steps(out: Path, *, strict: bool = False) -> list[int]:
    """The steps of OUT/log.jsonl. While a run writes, its last row may be cut short (no newline yet): it
    is left out. ``strict``: every row must be whole JSON with a step (a resumed run must not keep a row
    that a kill cut short); otherwise rows that do not parse (the kill just cut one) are left out."""
    path = out / "log.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().split("\n")
    if not strict:
        lines = lines[:-1]  # the row being written (or "" after the last newline)
    elif lines[-1] == "":
        lines = lines[:-1]
    steps = []
    for line in lines:
        try:
            steps.append(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError, TypeError):
            if strict:
                raise AssertionError(f"log.jsonl holds a broken row: {line!r}") from None
    return steps


def _partial_checkpoint(out: Path) -> bool:
    return bool(partial_writes(out / "last.pt"))


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
    def moment(name: str, start: int):
        """When to kill a run that resumes from step ``start``."""
        if name == "start-up":  # the first last.pt (step 0) has just appeared
            return lambda o: "start-up" if (o / "last.pt").exists() else None
        if name == "mid-checkpoint-write":
            # A checkpoint write in progress: its temporary file exists (written, fsynced, then renamed). The
            # write lasts milliseconds, so the poll may miss it: the run is then killed 3 steps on and resumed.
            return lambda o: "mid-checkpoint-write" if _partial_checkpoint(o) else (
                "missed" if max(_logged_steps(o), default=0) >= start + 3 else None)
        # mid-step: an odd step logged, no checkpoint at odd steps, so the next step is being computed
        return lambda o: "mid-step" if max(_logged_steps(o), default=0) >= max(7, start + 1) else None

    kills = []
    for name in ("start-up", "mid-checkpoint-write", "mid-step"):
        for attempt in range(3 if name == "mid-checkpoint-write" else 1):
            start = read_checkpoint(out / "last.pt")["step"] if kills else 0
            seen = _run_and_kill(command + (["--resume"] if kills else []), env, out, moment(name, start))
            assert seen is not None, f"the run finished before the {name} kill"
            torn = _partial_checkpoint(out)  # the write the kill interrupted (the next resume removes it)
            state = read_checkpoint(out / "last.pt")  # loadable after every kill
            kills.append((seen, torn, state["step"], max(_logged_steps(out), default=0)))
            if seen == name:
                break
        assert seen == name, f"no kill at the {name} moment: {kills}"
        if name == "mid-checkpoint-write":
            assert torn, "a kill in a checkpoint write must leave the write's temporary file behind"
    print("kills (moment, torn write left, last.pt step, last logged step):", kills)
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
    assert _logged_steps(out, strict=True) == list(range(1, STEPS + 1))


def test_the_log_check_refuses_a_row_cut_short(tmp_path):
    # What a resume that kept a row cut by the kill would leave: the final check above must fail on it.
    (tmp_path / "log.jsonl").write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 2}\n')
    assert _logged_steps(tmp_path) == [1, 2]
    with pytest.raises(AssertionError, match="broken row"):
        _logged_steps(tmp_path, strict=True)
