"""`casnet replay` scores tracking: STQ, AQ and SQ in metrics.json and the summary, with the instances tracked
(--tracking on) or numbered per frame (off), and `--oracle full` measures grouping and tracking without the
network, on a small generated drive (the CI-sized version of bench/bench_tracking_quality.py)."""

from __future__ import annotations

import json

import pytest

from casnet_core.cli import main
from casnet_core.synth.drive import write_drive_bag

FRAMES, HEIGHT, WIDTH = 8, 256, 512


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    return write_drive_bag(tmp_path_factory.mktemp("drive") / "bag", FRAMES, seed=5, height=HEIGHT, width=WIDTH)


def _replay(drive, out, checkpoint, *extra):
    assert main(["replay", "--bag", str(drive), "--out", str(out), "--checkpoint", str(checkpoint),
                 "--device", "cpu", *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_oracle_full_tracked_against_numbered_per_frame(drive, tmp_path, tiny_checkpoint, capsys):
    on = _replay(drive, tmp_path / "on", tiny_checkpoint, "--oracle", "full")  # tracking on: the default
    printed = capsys.readouterr().out
    off = _replay(drive, tmp_path / "off", tiny_checkpoint, "--oracle", "full", "--tracking", "off")
    assert on["tracking"] == "on" and off["tracking"] == "off" and on["oracle"] == "full"
    quality_on, quality_off = on["tracking_quality"], off["tracking_quality"]
    assert quality_on["frames"] == FRAMES and quality_on["tracks"] == quality_off["tracks"] > 0
    # Semantics are the ground truth's: SQ 1 whichever numbering. (The random weights of the checkpoint play no
    # part: the full oracle uses only its output stride.)
    assert quality_on["SQ"] == pytest.approx(1.0) and quality_off["SQ"] == pytest.approx(1.0)
    # Numbering per frame loses the objects from frame to frame (AQ about 0.3 on generated drives); tracking keeps
    # most of them (the stride-4 oracle's own merges of small objects cap AQ below 1: bench_tracking_quality.py
    # prints that ceiling).
    assert quality_off["AQ"] < 0.45
    assert quality_on["AQ"] > quality_off["AQ"] + 0.2
    assert quality_on["STQ"] == pytest.approx((quality_on["AQ"] * quality_on["SQ"]) ** 0.5)
    assert "tracking quality (tracking on) on 8 frames" in printed and "STQ" in printed
    # Tracking changes the ids, never the segments: PQ is the same either way.
    assert on["accuracy"]["PQ"] == pytest.approx(off["accuracy"]["PQ"])


def test_oracle_needs_ground_truth_and_runs_in_process(drive, tmp_path, tiny_checkpoint, capsys):
    base = ["replay", "--bag", str(drive), "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--oracle", "full"]
    assert main([*base, "--out", str(tmp_path / "a"), "--live"]) == 2
    assert "leave out --live" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b"), "--gt-topic", "/camera/image_raw"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("casnet replay: error: ") and "\n" not in error
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
