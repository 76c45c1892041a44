"""Config values and overrides are checked against the type and range of their key, with one-line errors."""

import pytest

from casnet_core.cli import main as casnet
from casnet_core.config import DEFAULTS, SCHEMA, ConfigError, check_config, load_config


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield prefix + key


def test_every_default_has_a_schema_entry_and_passes_it():
    assert sorted(_leaves(DEFAULTS)) == sorted(SCHEMA)
    assert check_config(DEFAULTS) == DEFAULTS
    for path in ("config/synthetic_cpu.yaml", "config/cityscapes_hrnet_w48.yaml"):
        load_config(path)


def test_yaml_1_1_strings_become_the_numbers_they_spell():
    # YAML 1.1 (PyYAML) reads 1e-3 as the string '1e-3'.
    config = load_config(None, ["solver.lr=1e-3", "solver.epochs=2.0", "solver.log_every=1e1", "loss.alpha=1"])
    assert config["solver"]["lr"] == 0.001 and isinstance(config["solver"]["lr"], float)
    assert config["solver"]["epochs"] == 2 and isinstance(config["solver"]["epochs"], int)
    assert config["solver"]["log_every"] == 10
    assert config["loss"]["alpha"] == 1.0 and isinstance(config["loss"]["alpha"], float)


def test_a_config_file_value_is_converted_and_checked_too(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("solver:\n  lr: 1e-3\n")
    assert load_config(path)["solver"]["lr"] == 0.001
    path.write_text("solver:\n  batch_size: two\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: solver\.batch_size must be an integer >= 1, got 'two'"):
        load_config(path)


def test_nullable_values_and_lists():
    config = load_config(None, ["model.weights_path=null", "data.short_side=null", "data.val_split=null",
                                "model.weights_path=/w/hrnet.pth", "data.crop_size=[64,128]", "solver.grad_clip=null"])
    assert config["model"]["weights_path"] == "/w/hrnet.pth"
    assert config["data"]["short_side"] is None and config["data"]["crop_size"] == [64, 128]
    assert config["solver"]["grad_clip"] is None


@pytest.mark.parametrize("override, message", [
    ("solver.lr=abc", "solver.lr must be a number > 0, got 'abc'"),
    ("solver.lr=0", "solver.lr must be a number > 0, got 0"),
    ("solver.lr=.nan", "solver.lr must be a number > 0"),
    ("solver.batch_size=1.5", "solver.batch_size must be an integer >= 1, got 1.5"),
    ("solver.batch_size=0", "solver.batch_size must be an integer >= 1, got 0"),
    ("solver.epochs=true", "solver.epochs must be an integer >= 1, got True"),
    ("solver.amp=maybe", "solver.amp must be true or false, got 'maybe'"),
    ("solver.momentum=1", "solver.momentum must be a number >= 0 and < 1, got 1"),
    ("solver.optimizer=adam", "solver.optimizer must be one of sgd, adamw, got 'adam'"),
    ("solver.warmup_steps=-1", "solver.warmup_steps must be an integer >= 0, got -1"),
    ("solver.warmup_factor=0", "solver.warmup_factor must be a number > 0 and <= 1, got 0"),
    ("solver.lr_steps=[22,18]", "solver.lr_steps must be in increasing order"),
    ("data.crop_size=[640]", "data.crop_size must be a list of 2 integers, each >= 1, got [640]"),
    ("data.crop_size=null", "data.crop_size must be a list of 2 integers, each >= 1, got None"),
    ("data.short_side=[1024,512]", "data.short_side must be [min, max]"),
    ("model.mode=semantic", "model.mode must be one of panoptic, instance, got 'semantic'"),
    ("model.backbone=18", "model.backbone must be a string, got 18"),
    ("model.weights_path=3", "model.weights_path must be a string (or null), got 3"),
    ("solver=1", "'solver' must be a mapping"),
    ("solver.lrr=1", "unknown config key 'solver.lrr'"),
    ("solver.lr", "is not key.sub=value"),
    ("data.crop_size=[1,", "the value is not valid YAML"),
])
def test_bad_overrides_name_their_key_in_one_line(override, message):
    with pytest.raises(ConfigError) as error:
        load_config("config/synthetic_cpu.yaml", [override])
    assert message in str(error.value) and "\n" not in str(error.value)


def _train_with_bad_lr(tmp_path):
    from casnet_core.train import train

    config = load_config(None)
    config["solver"]["lr"] = "fast"
    train(config, tmp_path / "data", tmp_path / "out", device="cpu", max_iters=1, progress=False)


def test_a_programmatic_config_is_checked_by_train_too(tmp_path):
    # A config built in Python, not through load_config: train() itself checks it, before it writes anything.
    with pytest.raises(ConfigError, match="solver.lr must be a number"):
        _train_with_bad_lr(tmp_path)
    assert not (tmp_path / "out").exists()


def test_the_programmatic_config_test_fails_when_train_does_not_check(tmp_path, monkeypatch):
    # Negative control: without the check in train(), the bad value surfaces as another error (or none).
    from casnet_core import train as train_module

    monkeypatch.setattr(train_module, "check_config", lambda config: config)
    with pytest.raises(Exception) as error:
        _train_with_bad_lr(tmp_path)
    assert not isinstance(error.value, ConfigError)


def test_the_cli_prints_one_line_and_exits_2_on_a_bad_override(capsys, tmp_path):
    assert casnet(["train", "--config", "config/synthetic_cpu.yaml", "--data", str(tmp_path), "--out",
                   str(tmp_path / "out"), "solver.lr=abc"]) == 2
    err = capsys.readouterr().err
    assert err == ("casnet train: override 'solver.lr=abc': solver.lr must be a number > 0, got 'abc'\n")


def test_a_missing_or_broken_config_file_is_one_line(capsys, tmp_path):
    assert casnet(["train", "--config", str(tmp_path / "none.yaml"), "--data", str(tmp_path), "--out",
                   str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith(f"casnet train: cannot read config file {tmp_path / 'none.yaml'}")
    (tmp_path / "bad.yaml").write_text("solver: [unclosed\n")
    assert casnet(["train", "--config", str(tmp_path / "bad.yaml"), "--data", str(tmp_path), "--out",
                   str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("casnet train: ") and "is not valid YAML" in err and err.count("\n") == 1
