"""backend "auto" on the CPU: onnxruntime with the checkpoint's export cached in the user's cache folder
(casnet_core.onnx_cache), the same panoptic maps as PyTorch, and a log line naming the backend."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from casnet_core import default_model_path
from casnet_core.onnx_cache import MAX_ENTRIES, _evict, cache_dir, cache_path, cached_export
from casnet_core.predictor import Predictor
from casnet_core.synth import generate_scene

#: The tolerance of the agreement: at most this fraction of an image's pixels may get another panoptic id from
#: onnxruntime than from PyTorch (the heads agree within casnet_core.export's CHECK_ATOL / CHECK_RTOL; a pixel
#: can only flip where two classes or two instances are within that of a tie). Measured: 0 on these scenes.
MAX_DIFFERING_PIXELS = 1e-3


@pytest.fixture()
def user_cache(tmp_path, monkeypatch) -> Path:
    """An empty XDG cache folder of this test (the real user's cache is left alone)."""
    monkeypatch.delenv("CASNET_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache" / "casnet" / "onnx"


def _folder_state(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_the_tests_use_a_cache_of_their_own(export_cache):
    # conftest's session cache: the suite never writes into, or evicts from, the user's cache.
    assert cache_dir() == export_cache / "onnx"
    assert Path(os.environ["CASNET_CACHE_DIR"]) == export_cache


def test_the_cache_is_under_the_user_cache_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("CASNET_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == Path.home() / ".cache" / "casnet" / "onnx"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "casnet" / "onnx"
    monkeypatch.setenv("CASNET_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine" / "onnx"


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto means CUDA and PyTorch where CUDA is available")
def test_auto_on_the_cpu_runs_onnxruntime_from_the_cache_and_says_so(tiny_checkpoint, user_cache, caplog):
    checkpoint_folder = Path(tiny_checkpoint).parent
    before = _folder_state(checkpoint_folder)
    with caplog.at_level(logging.INFO, logger="casnet_core"):
        predictor = Predictor.from_checkpoint(str(tiny_checkpoint))  # device auto: the CPU here
    assert (predictor.backend, predictor.device.type) == ("onnxruntime", "cpu")
    assert "cached ONNX export" in predictor.backend_note
    assert any("backend onnxruntime on cpu" in record.getMessage() for record in caplog.records)
    cached = cache_path(tiny_checkpoint)
    assert cached.parent == user_cache and cached.is_file()
    assert hashlib.sha256(Path(tiny_checkpoint).read_bytes()).hexdigest() in cached.name
    assert [p.name for p in user_cache.iterdir()] == [cached.name]  # no temporary file left behind
    assert _folder_state(checkpoint_folder) == before  # nothing written beside the checkpoint

    # The second predictor loads the same file, not a new export.
    inode = cached.stat().st_ino
    again = Predictor.from_checkpoint(str(tiny_checkpoint), device="cpu")
    assert again.backend == "onnxruntime" and cached.stat().st_ino == inode


def test_explicit_backends_and_cuda_are_not_changed(tiny_checkpoint, user_cache):
    torch_predictor = Predictor.from_checkpoint(str(tiny_checkpoint), device="cpu", backend="torch")
    assert torch_predictor.backend == "torch" and "'torch' asked for" in torch_predictor.backend_note
    assert not user_cache.exists()  # only auto uses the cache
    if torch.cuda.is_available():
        assert Predictor.from_checkpoint(str(tiny_checkpoint), device="cuda").backend == "torch"


def test_auto_gives_the_panoptic_maps_of_pytorch_with_the_default_model(user_cache):
    checkpoint = str(default_model_path())
    auto = Predictor.from_checkpoint(checkpoint, device="cpu")
    reference = Predictor.from_checkpoint(checkpoint, device="cpu", backend="torch")
    assert (auto.backend, reference.backend) == ("onnxruntime", "torch")
    instances = 0
    for seed in range(3):
        image = generate_scene(seed, 256, 512)[0]
        got, expected = auto.predict(image), reference.predict(image)
        assert np.mean(got.panoptic != expected.panoptic) <= MAX_DIFFERING_PIXELS
        assert np.mean(got.semantic != expected.semantic) <= MAX_DIFFERING_PIXELS
        assert abs(len(got.instances) - len(expected.instances)) <= 1
        instances += len(expected.instances)
    assert instances > 0  # the comparison covered instances, not only stuff


def test_a_changed_checkpoint_gets_its_own_export_and_a_torn_file_is_remade(tiny_checkpoint, tmp_path, user_cache):
    from casnet_core.checkpoint import load_model, save_checkpoint

    model, _ = load_model(tiny_checkpoint)
    first = cached_export(tiny_checkpoint, model)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    changed = save_checkpoint(tmp_path / "changed.pt", model)
    second = cached_export(changed, model)
    assert first != second and first.is_file() and second.is_file()

    first.write_bytes(first.read_bytes()[:1000])  # a torn file (e.g. written by a crashed older version)
    remade = cached_export(tiny_checkpoint, load_model(tiny_checkpoint)[0])
    assert remade == first and remade.stat().st_size > 1000
    assert Predictor.from_checkpoint(str(tiny_checkpoint), device="cpu").backend == "onnxruntime"


def test_an_unwritable_cache_falls_back_to_pytorch_with_a_warning(tiny_checkpoint, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache folder cannot be made under a file")
    monkeypatch.setenv("CASNET_CACHE_DIR", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="backend auto runs PyTorch"):
        predictor = Predictor.from_checkpoint(str(tiny_checkpoint), device="cpu")
    assert predictor.backend == "torch" and "no usable ONNX export" in predictor.backend_note


def test_the_least_recently_used_exports_beyond_the_limit_are_removed(tmp_path):
    files = []
    for index in range(MAX_ENTRIES + 3):
        path = tmp_path / f"{index:02d}.onnx"
        path.write_bytes(b"x")
        os.utime(path, (1000 + index, 1000 + index))
        files.append(path)
    other = tmp_path / "notes.txt"
    other.write_text("not an export")
    _evict(tmp_path, keep=files[0])
    # The oldest beyond MAX_ENTRIES go, except the one just used; other files stay.
    expected = {files[0].name} | {p.name for p in files[3:]}
    assert {p.name for p in tmp_path.glob("*.onnx")} == expected and other.is_file()


def test_casnet_predict_prints_the_backend(tiny_checkpoint, tmp_path, user_cache):
    import cv2

    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), generate_scene(0, 128, 256)[0][..., ::-1])
    env = {**os.environ, "XDG_CACHE_HOME": str(user_cache.parents[1])}
    result = subprocess.run([sys.executable, "-m", "casnet_core.cli", "predict", "--checkpoint", str(tiny_checkpoint),
                             "--device", "cpu", "--out", str(tmp_path / "out"), str(image)],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    assert "backend onnxruntime on cpu" in result.stdout
