"""Training on the CPU on generated data: the loss falls, checkpoints resume, the CLI drives it."""

import json

import pytest
import torch

from casnet_core.checkpoint import load_model, read_checkpoint
from casnet_core.cli import main as casnet
from casnet_core.config import load_config
from casnet_core.train import train

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


# The optimizer state (SGD's momentum buffers, AdamW's moments and step counts) is part of the resume.
@pytest.mark.parametrize("optimizer, state_key", [("sgd", "momentum_buffer"), ("adamw", "exp_avg_sq")])
def test_resume_continues_from_the_saved_step_as_if_never_stopped(synth_root, tmp_path, optimizer, state_key):
    settings = ["solver.checkpoint_every=2", f"solver.optimizer={optimizer}"]
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
    # The resumed run logged steps 3 and 4 only after its first two.
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


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
