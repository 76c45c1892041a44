"""bench/bench_tracking_quality.py at a tiny size: `--oracle-stride` builds the oracle's heads at another stride than
the model's, so that what the stride costs and what the tracker costs can be read apart."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_tracking_quality import main  # noqa: E402  (a script beside the benchmarks)

TINY = ["--frames", "4", "--size", "256x512", "--seed", "3", "--device", "cpu", "--no-model"]


def _rows(printed: str) -> dict[str, list[float]]:
    """The table's rows: name -> STQ, AQ, SQ (percent)."""
    rows = {}
    for line in printed.splitlines():
        if line.startswith("oracle, "):
            name, values = line[:18].strip(), line[18:].split()
            rows[name] = [float(value) for value in values[:3]]
    return rows


def test_exact_heads_reach_the_ceiling_the_model_stride_does_not(tiny_checkpoint, capsys):
    main([*TINY, "--checkpoint", str(tiny_checkpoint), "--oracle-stride", "1"])
    printed = capsys.readouterr().out
    assert "oracle stride 1;" in printed
    exact = _rows(printed)
    main([*TINY, "--checkpoint", str(tiny_checkpoint)])  # the tiny model's stride: 4
    printed = capsys.readouterr().out
    assert "oracle stride 4;" in printed
    coarse = _rows(printed)
    # Exact heads give every ground-truth segment exactly, so perfect association scores AQ 100; at stride 4 the
    # small objects of a 256x512 drive own no cell or merge with a neighbour, so even the ceiling falls below.
    assert exact["oracle, ceiling"][1] == pytest.approx(100.0)
    assert coarse["oracle, ceiling"][1] < 99.0
    # Semantics are the ground truth's at any stride.
    assert exact["oracle, tracked"][2] == coarse["oracle, tracked"][2] == pytest.approx(100.0)


@pytest.mark.parametrize("stride, message", [("0", "--oracle-stride must be at least 1, got 0"),
                                             ("3", "--oracle-stride 3 does not divide the size 256x512")])
def test_a_stride_the_drive_cannot_have_is_refused_in_one_line(tiny_checkpoint, capsys, stride, message):
    with pytest.raises(SystemExit) as stop:
        main([*TINY, "--checkpoint", str(tiny_checkpoint), "--oracle-stride", stride])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error
