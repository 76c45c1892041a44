"""`make demo` (scripts/demo.sh) on a clean checkout, twice in a row (issue 31, item 2): both runs exit 0, the
second replaces the first's replay and keeps its drive bag; and the demo runs the Makefile's venv.

The checkout is the tracked files of this working tree copied with their times (so the venv's set-up stamps
stay newer than their inputs) and pointed at this venv (VENV=...): `make demo` then sets nothing up again, and
runs the demo exactly as a user does. A CI-sized drive: 2 frames of 128x256 (DEMO_FRAMES, DEMO_HEIGHT,
DEMO_WIDTH).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent


def _clean_checkout(target: Path) -> Path:
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, check=True, capture_output=True).stdout
    for name in tracked.decode().split("\0"):
        source = REPO_ROOT / name
        if name and source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)  # keeps the modification time
    return target


def _make_demo(checkout: Path, environment: dict) -> subprocess.CompletedProcess:
    # Its own session: on a timeout the whole demo (replay, node) is stopped, not only make.
    process = subprocess.Popen(["make", "demo", f"VENV={VENV}"], cwd=checkout, env=environment, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGINT)
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        raise AssertionError(f"make demo timed out: {stdout[-3000:]} {stderr[-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_make_demo_runs_twice_on_a_clean_checkout(tmp_path):
    checkout = _clean_checkout(tmp_path / "casnet")
    environment = {**os.environ, "DEMO_FRAMES": "2", "DEMO_HEIGHT": "128", "DEMO_WIDTH": "256",
                   "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    first = _make_demo(checkout, environment)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for step in ("pip install", "build_interfaces"):  # nothing set up again: the venv's stamps held
        assert step not in first.stdout, first.stdout
    drive = checkout / "demo_out" / "drive" / "metadata.yaml"
    metrics = checkout / "demo_out" / "replay" / "metrics.json"
    drive_time, first_metrics = drive.stat().st_mtime_ns, json.loads(metrics.read_text())
    assert first_metrics["frames"]["processed"] == 2

    second = _make_demo(checkout, environment)  # before issue 31: "already holds a replay"
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert drive.stat().st_mtime_ns == drive_time  # the drive is kept
    assert json.loads(metrics.read_text())["frames"]["processed"] == 2
    assert (checkout / "demo_out" / "replay" / "bag" / "metadata.yaml").is_file()


def test_make_demo_runs_the_venv_of_the_makefile():
    # PYTHON=3.10 selects .venv-py3.10: the demo must run that venv's casnet, not .venv's.
    dry_run = subprocess.run(["make", "-n", "demo", "VENV=.venv-py3.10"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=120)
    assert dry_run.returncode == 0, dry_run.stderr
    assert "VENV=.venv-py3.10 bash scripts/demo.sh" in dry_run.stdout.splitlines(), dry_run.stdout


def test_demo_without_its_venv_says_so_in_one_line(tmp_path):
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "demo.sh")], capture_output=True, text=True,
                            env={**os.environ, "VENV": str(tmp_path / "no-venv"), "DEMO_OUT": str(tmp_path / "out")},
                            timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == f"demo: {tmp_path / 'no-venv'}/bin/casnet not found: run `make demo` (it sets " \
                                    "up the venv first)"
    assert not (tmp_path / "out").exists()
