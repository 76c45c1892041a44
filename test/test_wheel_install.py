"""The built wheel, installed without the source tree, runs `casnet predict` with its packaged default model.

The editable install of the test venv points into the source tree, so a file that setup.py forgets to
package (the default model, package_data) or a broken entry point goes unnoticed everywhere else. Here:
`pip wheel` of the project, installed with --no-deps into a fresh venv whose only view of the dependencies
is a path line to the project venv's site-packages (so nothing is downloaded, and the editable finder of
the project venv, a .pth file there, is not run: the project is importable from the wheel alone), then
the venv's own `casnet` script in a folder outside the source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from casnet_core.synth import generate_scene

REPO_ROOT = Path(__file__).resolve().parents[1]
ROAD = 7


def _copy_source(source: Path, copy: Path) -> None:
    """The files git knows in ``source`` (tracked, or new and not ignored), copied to ``copy``. Only those: a
    checkout also holds venvs (several GB each), build trees and run outputs that a wheel never sees."""
    listed = subprocess.run(["git", "-C", str(source), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (source / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, copy / name)


def _build_wheel(copy: Path, out: Path) -> Path:
    """``pip wheel`` of the project copied to ``copy`` (:func:`_copy_source`: the build leaves build/ and
    *.egg-info beside the sources), into ``out``/dist."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(out / "dist"), str(copy)], check=True,
                   capture_output=True, text=True)
    (wheel,) = (out / "dist").glob("casnet_ros-*.whl")
    return wheel


def _install(wheel: Path, prefix: Path) -> Path:
    """A fresh venv at ``prefix`` with ``wheel`` installed (--no-deps); returns its bin folder."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(prefix)
    site = Path(subprocess.run([str(prefix / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # The dependencies (and pip) of the project venv, as a plain path: its .pth files, the editable finder
    # of this project among them, are not processed from there.
    (site / "project_venv_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(prefix / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True, text=True)
    return prefix / "bin"


def _clean_environment(tmp_path: Path) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    # The ONNX cache and anything else written under the user's cache goes to the test's folder.
    return {**environment, "PYTHONNOUSERSITE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}


def _predict_from_wheel(wheel: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, Path, np.ndarray]:
    """Installs ``wheel`` into a fresh venv and runs its `casnet predict` (no --checkpoint) on a generated
    scene from a folder outside the source tree; returns the process, the output folder and the labels."""
    bin_dir = _install(wheel, tmp_path / "venv")
    work = tmp_path / "work"
    work.mkdir()
    image, label_ids, _ = generate_scene(104, 256, 512)
    cv2.imwrite(str(work / "scene.png"), image[..., ::-1])
    environment = _clean_environment(tmp_path)
    where = subprocess.run([str(bin_dir / "python"), "-c", "import casnet_core; print(casnet_core.__file__)"],
                           cwd=work, env=environment, check=True, capture_output=True, text=True).stdout
    assert Path(where.strip()).is_relative_to(tmp_path / "venv"), f"casnet_core imported from {where}"
    process = subprocess.run([str(bin_dir / "casnet"), "predict", "--out", "out", "--device", "cpu",
                              "--backend", "torch", "scene.png"], cwd=work, env=environment,
                             capture_output=True, text=True, timeout=600)
    return process, work / "out", label_ids


def test_the_installed_wheel_predicts_with_its_packaged_default_model(tmp_path):
    from casnet_core.formats import read_panoptic_png

    _copy_source(REPO_ROOT, tmp_path / "source")
    wheel = _build_wheel(tmp_path / "source", tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "casnet_core/models/casnet_default.pt" in names
    assert not [n for n in names if n.startswith("test/")], "the tests are not part of the wheel"
    process, out, label_ids = _predict_from_wheel(wheel, tmp_path)
    assert process.returncode == 0, process.stderr[-3000:]
    panoptic = read_panoptic_png(out / "scene_panoptic.png")
    # The packaged trained model, not any model: the road is found (random weights: IoU ~0).
    road, predicted = label_ids == ROAD, panoptic == ROAD
    assert (road & predicted).sum() / (road | predicted).sum() >= 0.5


def test_a_wheel_without_the_model_fails_this_check(tmp_path):
    # Negative control: setup.py without package_data builds a wheel without the model; its `casnet predict`
    # fails with one line (and so would the test above).
    setup = (REPO_ROOT / "setup.py").read_text()
    assert setup.count('package_data={"casnet_core": ["models/*.pt"]},') == 1
    source = tmp_path / "source"
    _copy_source(REPO_ROOT, source)
    (source / "setup.py").write_text(setup.replace('package_data={"casnet_core": ["models/*.pt"]},', ""))
    wheel = _build_wheel(source, tmp_path)
    assert "casnet_core/models/casnet_default.pt" not in zipfile.ZipFile(wheel).namelist()
    process, _, _ = _predict_from_wheel(wheel, tmp_path)
    assert process.returncode != 0
    assert "default model" in process.stderr and "missing" in process.stderr
    assert "Traceback" not in process.stderr, process.stderr[-3000:]


@pytest.fixture(autouse=True)
def _no_source_tree_on_the_path(monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)
