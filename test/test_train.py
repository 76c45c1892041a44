"""Training on the CPU on generated data: the loss falls, checkpoints resume, the CLI drives it."""

import json

import pytest
import torch

from casnet_core.checkpoint import load_model, read_checkpoint
from casnet_core.cli import main as casnet
from casnet_core.config import DEFAULTS, load_config
from casnet_core.train import train
from casnet_core.training.run import build_scheduler

SMALL = [
    "model.fusion_channels=32", "model.head_channels=16",
    "data.short_side=[128,192]", "data.crop_size=[128,256]", "data.workers=0",
    "solver.batch_size=2", "solver.log_every=1", "solver.lr=0.02",
]


def _losses(out_dir):
    return [json.loads(line)["loss"] for line in (out_dir / "log.jsonl").read_text().splitlines()]


def test_loss_falls_on_a_short_cpu_run(synth_root, tmp_path):
    # Whole images, no flip: the same 6 images come back every 3 steps, so the fall is not hidden by
    # the variance of random crops.
    config = load_config("config/synthetic_cpu.yaml", SMALL + ["data.short_side=null", "data.crop_size=[256,512]",
                                                              "data.flip=false"])
    final = train(config, synth_root, tmp_path, device="cpu", max_iters=30, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 30

    def mean(key, part):
        return sum(r[key] for r in part) / len(part)

    first, last = rows[:6], rows[-6:]
    assert mean("loss", last) < 0.85 * mean("loss", first), [r["loss"] for r in rows]
    assert mean("semantic", last) < 0.8 * mean("semantic", first)
    assert mean("attributes", last) < mean("attributes", first)
    model, meta = load_model(final)
    assert meta["step"] == 30 and meta["mode"] == "panoptic"
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "config.yaml").is_file()


# The optimizer state (SGD's momentum buffers, AdamW's moments and step counts) is part of the resume, and so is
# the lr schedule: stopped at step 2 of a 3-step warm-up, the resumed run goes on with the ramp.
@pytest.mark.parametrize("optimizer, state_key, warmup_steps", [
    ("sgd", "momentum_buffer", 0), ("adamw", "exp_avg_sq", 0), ("adamw", "exp_avg_sq", 3)])
def test_resume_continues_from_the_saved_step_as_if_never_stopped(synth_root, tmp_path, optimizer, state_key,
                                                                  warmup_steps):
    settings = ["solver.checkpoint_every=2", f"solver.optimizer={optimizer}", f"solver.warmup_steps={warmup_steps}",
                "solver.warmup_factor=0.25"]
    if optimizer == "adamw":
        settings += ["solver.lr=0.001", "solver.momentum=0.8"]
    config = load_config("config/synthetic_cpu.yaml", SMALL + settings)
    train(config, synth_root, tmp_path / "straight", device="cpu", max_iters=4, progress=False)
    train(config, synth_root, tmp_path / "resumed", device="cpu", max_iters=2, progress=False)
    half_way = read_checkpoint(tmp_path / "resumed" / "last.pt")
    assert half_way["step"] == 2
    assert all(state_key in state for state in half_way["optimizer"]["state"].values())
    if optimizer == "adamw":  # solver.momentum is Adam's beta1
        assert tuple(half_way["optimizer"]["param_groups"][0]["betas"]) == (0.8, 0.999)
    train(config, synth_root, tmp_path / "resumed", device="cpu", max_iters=4, resume=True, progress=False)
    straight = read_checkpoint(tmp_path / "straight" / "model_final.pt")
    resumed = read_checkpoint(tmp_path / "resumed" / "model_final.pt")
    assert resumed["step"] == 4
    for key, value in straight["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    # The resumed run logged steps 3 and 4 only after its first two, at the lr of the uninterrupted run.
    rows = {name: [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
            for name in ("straight", "resumed")}
    assert [row["step"] for row in rows["resumed"]] == [1, 2, 3, 4]
    assert [row["lr"] for row in rows["resumed"]] == pytest.approx([row["lr"] for row in rows["straight"]])


def test_warmup_ramps_the_lr_linearly_then_the_steps_apply():
    # lr 1, warm-up from 0.2 over 4 steps, epochs of 3 steps, x0.1 at epochs 2 and 3 (steps 6 and 9): the lr
    # of each of the first 11 optimizer steps.
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.0)
    solver = {**DEFAULTS["solver"], "warmup_steps": 4, "warmup_factor": 0.2, "lr_steps": [2, 3]}
    scheduler = build_scheduler(optimizer, solver, steps_per_epoch=3)
    lrs = []
    for _ in range(11):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01, 0.01])
    # Without a warm-up: the paper's steps alone, from the first step.
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = build_scheduler(optimizer, {**solver, "warmup_steps": 0}, steps_per_epoch=3)
    assert isinstance(scheduler, torch.optim.lr_scheduler.MultiStepLR)


def test_resume_without_a_checkpoint_fails_clearly(synth_root, tmp_path):
    config = load_config("config/synthetic_cpu.yaml", SMALL)
    with pytest.raises(ValueError, match="checkpoint not found"):
        train(config, synth_root, tmp_path, device="cpu", max_iters=1, resume=True, progress=False)


def test_separated_mode_trains_without_a_semantic_head(synth_root, tmp_path):
    config = load_config("config/synthetic_cpu.yaml", SMALL + ["model.semantic_head=false"])
    model, _ = load_model(train(config, synth_root, tmp_path, device="cpu", max_iters=2, progress=False))
    assert not model.has_semantic_head


def test_cli_trains_with_overrides(synth_root, tmp_path):
    assert casnet(["train", "--config", "config/synthetic_cpu.yaml", "--data", str(synth_root), "--out", str(tmp_path),
                   "--device", "cpu", "--max-iters", "2", *SMALL]) == 0
    assert load_model(tmp_path / "model_final.pt")[1]["step"] == 2


def test_unknown_config_keys_are_errors():
    with pytest.raises(ValueError, match="unknown config key 'solver.lrr'"):
        load_config("config/synthetic_cpu.yaml", ["solver.lrr=0.1"])
    with pytest.raises(ValueError, match="unknown config key"):
        load_config("config/cityscapes_hrnet_w48.yaml", ["modle.backbone=x"])
