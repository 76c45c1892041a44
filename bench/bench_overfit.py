"""Overfit check: can the learner memorise a few generated scenes?

N generated scenes (``casnet synth``, seed 0, default 8 at 256x512), ``config/synthetic_cpu.yaml`` without
augmentation (short side = crop = the scene size, no flip), K optimizer steps with the learning rate constant
until 80 % of them (x0.1 at 80 % and 95 %, as scripts/train_default_model.sh), 0 data workers; then
``casnet eval`` (official evaluators) on the same scenes. Prints PQ, PQ_th, AP, mIoU and the loss parts of
the first and last logged steps, and writes them to OUT/summary.json. Beside them, the ceiling: the same
scenes through the same post-processing with all three heads replaced by their ground truth at the network's
stride (``casnet eval --oracle semantic+seeds+attributes``), the most any network of that stride can score
there with the default thresholds. A correct learner comes close to it (the issue's bar is PQ_th >= 0.9; at
256x512 and stride 4 the ceiling itself is 0.84: instances a few cells across, ``min_area`` set for 1024x2048).

    .venv/bin/python bench/bench_overfit.py --out /tmp/overfit [--images 8] [--steps 600] [KEY=VALUE ...]

KEY=VALUE are config overrides applied after the no-augmentation settings; the config file's losses are the
paper's (L1 attributes, plain cross-entropy): ``loss.attribute_loss=giou loss.semantic_top_k=0.2`` is the
recipe of config/synthetic_default.yaml.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from casnet_core.config import load_config
from casnet_core.evaluation.command import evaluate
from casnet_core.synth.dataset import generate_dataset
from casnet_core.train import train

REPOSITORY = Path(__file__).resolve().parents[1]


def overfit_config(config_path: Path, *, height: int, width: int, steps: int, batch_size: int,
                   images: int, overrides: list[str]) -> dict:
    """The config of an overfit run: no augmentation, 0 workers, no validation, the schedule fitted to ``steps``."""
    steps_per_epoch = -(-images // batch_size)
    epochs = max(1, -(-steps // steps_per_epoch))
    fixed = [f"data.short_side=[{height},{height}]", f"data.crop_size=[{height},{width}]", "data.flip=false",
             "data.workers=0", f"solver.batch_size={batch_size}", f"solver.epochs={epochs}",
             f"solver.lr_steps=[{max(1, round(0.8 * epochs))},{max(1, round(0.95 * epochs))}]",
             "solver.eval_every=0", f"solver.checkpoint_every={steps}", "solver.log_every=10"]
    return load_config(config_path, fixed + list(overrides))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="work folder (data, run, eval, summary.json)")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--config", type=Path, default=REPOSITORY / "config" / "synthetic_cpu.yaml")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    data = args.out / "data"
    if not (data / "leftImg8bit" / "train").is_dir():
        generate_dataset(data, num_train=args.images, num_val=0, height=args.height, width=args.width, seed=0,
                         workers=1, progress=False)
    config = overfit_config(args.config, height=args.height, width=args.width, steps=args.steps,
                            batch_size=args.batch_size, images=args.images, overrides=args.overrides)
    started = time.perf_counter()
    final = train(config, data, args.out / "run", device="cpu", max_iters=args.steps, overwrite=True,
                  progress=False)
    train_seconds = time.perf_counter() - started
    metrics = evaluate(data, "train", args.out / "eval", checkpoint=final, device="cpu", progress=False)
    ceiling = evaluate(data, "train", args.out / "ceiling", checkpoint=final, oracle="semantic+seeds+attributes",
                       device="cpu", progress=False)

    rows = [json.loads(line) for line in (args.out / "run" / "log.jsonl").read_text().splitlines()]
    loss_rows = [row for row in rows if "loss" in row]
    parts = ("loss", "semantic", "attributes", "box_prob")
    summary = {
        "images": args.images, "size": [args.height, args.width], "steps": args.steps,
        "train_seconds": round(train_seconds, 1), "torch_threads": torch.get_num_threads(),
        "overrides": args.overrides, "loss": config["loss"],
        **{k: metrics.get(k) for k in ("PQ", "PQ_th", "PQ_st", "AP", "AP50", "mIoU")},
        "first_losses": {k: loss_rows[0][k] for k in parts}, "last_losses": {k: loss_rows[-1][k] for k in parts},
        "per_class_PQ": {name: round(values["PQ"], 3)
                         for name, values in metrics["per_class"]["panoptic"].items()},
        "ceiling": {k: ceiling.get(k) for k in ("PQ", "PQ_th", "PQ_st", "AP", "AP50", "mIoU")},
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    last = " ".join(f"{k} {summary['last_losses'][k]:.4f}" for k in parts)
    print(f"overfit {args.images} images {args.height}x{args.width}, {args.steps} steps in {train_seconds:.0f} s: "
          f"{_figures(summary)}; last losses: {last}; ceiling (ground-truth heads): {_figures(summary['ceiling'])}")
    return 0


def _figures(metrics: dict) -> str:
    return " ".join(f"{k} {metrics[k]:.3f}" if metrics[k] is not None else f"{k} -" for k in ("PQ", "PQ_th", "AP", "mIoU"))


if __name__ == "__main__":
    sys.exit(main())
