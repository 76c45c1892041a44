"""bench/bench_overfit.py at a tiny size: it trains, scores the learner and, beside it, the ceiling of its heads'
stride (all three heads replaced by their ground truth), so that its figures can be read against what any
network of that stride could reach."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_overfit import main  # noqa: E402  (a script beside the benchmarks)


def test_overfit_bench_reports_the_learner_and_the_ceiling_of_its_stride(tmp_path, capsys):
    out = tmp_path / "overfit"
    assert main(["--out", str(out), "--images", "2", "--height", "128", "--width", "256", "--steps", "2",
                 "--batch-size", "2", "--threads", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["size"] == [128, 256]
    assert set(summary["first_losses"]) == {"loss", "semantic", "attributes", "box_prob"}
    # The generated scenes have things, and exact heads at stride 4 find most of them; 2 steps from random
    # weights find next to none.
    assert summary["ceiling"]["PQ_th"] > 0.5
    assert summary["PQ_th"] < summary["ceiling"]["PQ_th"]
    assert "ceiling (ground-truth heads): PQ" in capsys.readouterr().out
    # The learner's evaluation and the ceiling's are written apart (neither overwrites the other's metrics).
    learner = json.loads((out / "eval" / "metrics.json").read_text())
    ceiling = json.loads((out / "ceiling" / "metrics.json").read_text())
    assert learner["PQ_th"] == summary["PQ_th"] and ceiling["PQ_th"] == summary["ceiling"]["PQ_th"]
    assert ceiling["source"] == "oracle-semantic+seeds+attributes"
