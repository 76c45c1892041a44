"""Every `casnet` sub-command against bad inputs: missing, empty, truncated and wrong-type files, a folder given
for a file and a file for a folder, outputs that overlap inputs, out-of-range numbers, CUDA asked for where there
is none. Each must exit non-zero with exactly one visible line on stderr (what a terminal shows: a progress bar
erased with carriage returns does not count), never a traceback, and leave every input file as it was (SHA-256 of
every file under the inputs' folder before and after; nothing added there either).

Run in-process (casnet_core.cli.main, as the `casnet` script runs it) with stderr captured at the file-descriptor
level, so that what C libraries print (libpng, OpenCV) counts too.
"""

from __future__ import annotations

import hashlib
import os
import shutil

import cv2
import numpy as np
import pytest
import torch

from bag_helpers import write_bag

from casnet_core.cli import main

TINY = ["model.fusion_channels=16", "model.head_channels=8", "data.short_side=null", "data.crop_size=[64,128]",
        "data.workers=0", "solver.eval_every=0"]
NO_CUDA = not torch.cuda.is_available()

# --max-iters 1: a case that wrongly passed would train one step, not a whole schedule.
T = ["train", "--config", "config/synthetic_cpu.yaml", "--data", "{data}", "--out", "{out}", "--max-iters", "1"]
P = ["predict", "--checkpoint", "{checkpoint}", "--out", "{out}", "--device", "cpu"]
E = ["eval", "--data", "{data}", "--split", "val", "--out", "{out}", "--device", "cpu"]
R = ["replay", "--bag", "{bag}", "--out", "{out}", "--checkpoint", "{checkpoint}", "--device", "cpu"]
X = ["export", "--checkpoint", "{checkpoint}", "--out", "{out}.onnx", "--check-size", "64x128"]


def _with(base: list[str], option: str, value: str) -> list[str]:
    """``base`` with ``option``'s value replaced (or the option added)."""
    if option in base:
        argv = list(base)
        argv[argv.index(option) + 1] = value
        return argv
    return [*base, option, value]


CASES: dict[str, list[str]] = {
    # -- train
    "train data missing": _with(T, "--data", "{missing}") + TINY,
    "train data empty folder": _with(T, "--data", "{folder}") + TINY,
    "train data is a file": _with(T, "--data", "{text}") + TINY,
    "train config missing": _with(T, "--config", "{missing}") + TINY,
    "train config empty": _with(T, "--config", "{empty_yaml}") + TINY,
    "train config truncated": _with(T, "--config", "{truncated_yaml}") + TINY,
    "train config is a folder": _with(T, "--config", "{folder}") + TINY,
    "train out is a file": _with(T, "--out", "{text}") + TINY,
    "train out is the data": _with(T, "--out", "{data}") + TINY,
    "train out inside the data": _with(T, "--out", "{data}/runs") + TINY,
    "train max-iters 0": _with(T, "--max-iters", "0") + TINY,
    "train max-iters negative": _with(T, "--max-iters", "-3") + TINY,
    "train device cuda": [*T, "--device", "cuda", *TINY],
    "train device not a device": [*T, "--device", "gpu7", *TINY],
    "train unknown config key": [*T, *TINY, "solver.nope=1"],
    "train batch size 0": [*T, *TINY, "solver.batch_size=0"],
    "train truncated training image": _with(T, "--data", "{truncated_data}") + TINY,
    "train resume without a run": [*T, "--resume", *TINY],
    "train init missing": [*T, "--init", "{missing}", *TINY],
    "train init not a checkpoint": [*T, "--init", "{text_pt}", *TINY],
    # -- predict
    "predict image missing": [*P, "{missing}.png"],
    "predict image empty": [*P, "{empty_png}"],
    "predict image truncated": [*P, "{truncated_png}"],
    "predict image is text": [*P, "{text_png}"],
    "predict image is a folder": [*P, "{folder}"],
    "predict out is a file": [*_with(P, "--out", "{text}"), "{image}"],
    "predict checkpoint missing": [*_with(P, "--checkpoint", "{missing}"), "{image}"],
    "predict checkpoint empty": [*_with(P, "--checkpoint", "{empty_pt}"), "{image}"],
    "predict checkpoint truncated": [*_with(P, "--checkpoint", "{truncated_pt}"), "{image}"],
    "predict checkpoint is text": [*_with(P, "--checkpoint", "{text_pt}"), "{image}"],
    "predict checkpoint is a folder": [*_with(P, "--checkpoint", "{folder}"), "{image}"],
    "predict onnx that is text": [*_with(P, "--checkpoint", "{text_onnx}"), "{image}"],
    "predict device cuda": [*_with(P, "--device", "cuda"), "{image}"],
    "predict box threshold 2": [*P, "--box-threshold", "2", "{image}"],
    "predict max instances 0": [*P, "--max-instances", "0", "{image}"],
    "predict input size 0": [*P, "--input-size", "0", "0", "{image}"],
    "predict out overlaps the checkpoint": [*_with(_with(P, "--out", "{folder_with_model}"), "--checkpoint",
                                                   "{model_named_like_output}"), "{image_named_like_model}"],
    # -- eval
    "eval data missing": [*_with(E, "--data", "{missing}"), "--oracle", "full"],
    "eval data is a file": [*_with(E, "--data", "{text}"), "--oracle", "full"],
    "eval data empty folder": [*_with(E, "--data", "{folder}"), "--oracle", "full"],
    "eval split missing": [*_with(E, "--split", "nope"), "--oracle", "full"],
    "eval out is a file": [*_with(E, "--out", "{text}"), "--oracle", "full"],
    "eval out is the data": [*_with(E, "--out", "{data}"), "--oracle", "full"],
    "eval out inside the data": [*_with(E, "--out", "{data}/results"), "--oracle", "full"],
    "eval max images 0": [*E, "--oracle", "full", "--max-images", "0"],
    "eval max images negative": [*E, "--oracle", "full", "--max-images", "-1"],
    "eval checkpoint missing": [*E, "--checkpoint", "{missing}"],
    "eval checkpoint truncated": [*E, "--checkpoint", "{truncated_pt}"],
    "eval checkpoint is text": [*E, "--checkpoint", "{text_pt}"],
    "eval cache dir is a file": [*E, "--oracle", "full", "--cache-dir", "{text}"],
    "eval device cuda": [*_with(E, "--device", "cuda"), "--checkpoint", "{checkpoint}"],
    "eval semantic dir missing": [*E, "--checkpoint", "{checkpoint}", "--semantic-dir", "{missing}"],
    "eval full oracle with a checkpoint": [*E, "--oracle", "full", "--checkpoint", "{checkpoint}"],
    "eval min area negative": [*E, "--oracle", "full", "--min-area", "-1"],
    # -- replay
    "replay bag missing": _with(R, "--bag", "{missing}"),
    "replay bag empty file": _with(R, "--bag", "{empty_db3}"),
    "replay bag empty folder": _with(R, "--bag", "{folder}"),
    "replay bag truncated": _with(R, "--bag", "{truncated_bag}"),
    "replay bag is text": _with(R, "--bag", "{text}"),
    "replay out is a file": _with(R, "--out", "{text}"),
    "replay out is the bag's parent": _with(R, "--out", "{bag_parent}"),
    "replay out is the bag": _with(R, "--out", "{bag}"),
    "replay out under a file": _with(R, "--out", "{text}/replay"),
    "replay checkpoint missing": _with(R, "--checkpoint", "{missing}"),
    "replay checkpoint truncated": _with(R, "--checkpoint", "{truncated_pt}"),
    "replay checkpoint is text": _with(R, "--checkpoint", "{text_pt}"),
    "replay checkpoint is a folder": _with(R, "--checkpoint", "{folder}"),
    "replay onnx that is text": _with(R, "--checkpoint", "{text_onnx}"),
    "replay device cuda": _with(R, "--device", "cuda"),
    "replay device not a device": _with(R, "--device", "tpu"),
    "replay frames 0": [*R, "--frames", "0"],
    "replay rate 0": [*R, "--live", "--rate", "0"],
    "replay rate negative": [*R, "--live", "--rate", "-1"],
    "replay rate without live": [*R, "--rate", "2"],
    "replay max instances 0": [*R, "--max-instances", "0"],
    "replay domain id out of range": [*R, "--live", "--domain-id", "999"],
    "replay image topic missing": [*R, "--image-topic", "/nope"],
    "replay live checkpoint truncated": [*_with(R, "--checkpoint", "{truncated_pt}"), "--live"],
    "replay live device cuda": [*_with(R, "--device", "cuda"), "--live"],
    # -- export
    "export out is a folder": _with(X, "--out", "{folder}"),
    "export out is the checkpoint": _with(X, "--out", "{checkpoint}"),
    "export out under a file": _with(X, "--out", "{text}/casnet.onnx"),
    "export checkpoint missing": _with(X, "--checkpoint", "{missing}"),
    "export checkpoint empty": _with(X, "--checkpoint", "{empty_pt}"),
    "export checkpoint truncated": _with(X, "--checkpoint", "{truncated_pt}"),
    "export checkpoint is text": _with(X, "--checkpoint", "{text_pt}"),
    "export checkpoint is a folder": _with(X, "--checkpoint", "{folder}"),
    "export opset 5": [*X, "--opset", "5"],
    "export check size too small": _with(X, "--check-size", "8x8"),
    "export check size not a size": _with(X, "--check-size", "big"),
    # -- synth
    "synth bag exists": ["synth", "--bag", "{bag}", "--frames", "2", "--height", "64", "--width", "128"],
    "synth frames 0": ["synth", "--bag", "{out}", "--frames", "0", "--height", "64", "--width", "128"],
    "synth negative height": ["synth", "--bag", "{out}", "--frames", "1", "--height", "-1", "--width", "128"],
    "synth out is a file": ["synth", "--out", "{text}", "--train", "1", "--val", "1", "--height", "64",
                            "--width", "128"],
    "synth negative count": ["synth", "--out", "{out}", "--train", "-1", "--val", "1", "--height", "64",
                             "--width", "128"],
    "synth no target": ["synth", "--frames", "2"],
    # -- the command itself
    "no command": [],
    "unknown command": ["nope"],
    "unknown option": ["replay", "--bag", "{bag}", "--out", "{out}", "--colour", "red"],
}
CUDA_CASES = {name for name in CASES if "cuda" in name}


def _digest(folder) -> dict[str, str]:
    digests = {}
    for parent, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return digests


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_checkpoint) -> dict[str, str]:
    """The inputs, good and bad, all under one folder (hashed around every case)."""
    from casnet_core.synth import generate_dataset

    base = tmp_path_factory.mktemp("fuzz_inputs")
    data = generate_dataset(base / "data", num_train=2, num_val=1, height=64, width=128, seed=0, progress=False)
    truncated_data = shutil.copytree(data, base / "truncated_data")
    for image in (truncated_data / "leftImg8bit" / "train").glob("*/*.png"):
        image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    rng = np.random.default_rng(0)
    write_bag(base / "drive" / "bag", [rng.integers(0, 256, (64, 128, 3), dtype=np.uint8) for _ in range(2)])
    write_bag(base / "truncated_bag", [rng.integers(0, 256, (64, 128, 3), dtype=np.uint8) for _ in range(2)])
    (database,) = (base / "truncated_bag").glob("*.db3")
    database.write_bytes(database.read_bytes()[: database.stat().st_size // 2])
    checkpoint = base / "model.pt"
    checkpoint.write_bytes(tiny_checkpoint.read_bytes())
    image = base / "street.png"
    cv2.imwrite(str(image), rng.integers(0, 256, (64, 128, 3), dtype=np.uint8))
    files = {
        "empty_png": b"", "empty_pt": b"", "empty_db3": b"", "empty_yaml": b"",
        "truncated_png": image.read_bytes()[: image.stat().st_size // 2],
        "truncated_pt": checkpoint.read_bytes()[: checkpoint.stat().st_size // 2],
        "truncated_yaml": b"solver: [1, 2\nmodel: {",
        "text_png": b"not a picture\n", "text_pt": b"not a checkpoint\n", "text_onnx": b"not a network\n",
    }
    paths = {}
    for name, content in files.items():
        stem, suffix = name.rsplit("_", 1)
        path = base / f"{stem}.{suffix}"
        path.write_bytes(content)
        paths[name] = str(path)
    (base / "notes.txt").write_text("a file where a folder or a bag belongs\n")
    (base / "empty_folder").mkdir()
    # A checkpoint named like an output of `casnet predict IMAGE` for an image named "model.png".
    (base / "models").mkdir()
    (base / "models" / "model_instances.json").write_bytes(tiny_checkpoint.read_bytes())
    cv2.imwrite(str(base / "model.png"), rng.integers(0, 256, (64, 128, 3), dtype=np.uint8))
    return {**paths, "base": str(base), "data": str(data), "truncated_data": str(truncated_data),
            "bag": str(base / "drive" / "bag"), "bag_parent": str(base / "drive"),
            "truncated_bag": str(base / "truncated_bag"), "checkpoint": str(checkpoint), "image": str(image),
            "text": str(base / "notes.txt"), "folder": str(base / "empty_folder"), "missing": str(base / "missing"),
            "folder_with_model": str(base / "models"), "image_named_like_model": str(base / "model.png"),
            "model_named_like_output": str(base / "models" / "model_instances.json")}


def visible_lines(text: str) -> list[str]:
    """The non-blank lines a terminal shows for ``text`` (a carriage return starts its line over)."""
    return [shown for line in text.split("\n") if (shown := line.rsplit("\r", 1)[-1]).strip()]


@pytest.mark.parametrize("name", CASES)
def test_bad_input_gets_one_line_and_leaves_the_inputs_alone(name, inputs, tmp_path, capfd):
    if name in CUDA_CASES and not NO_CUDA:
        pytest.skip("checks the message where CUDA is missing")
    # The command line is the user's own: the checkpoint config path relative to the repository root.
    argv = [arg.format(**inputs, out=str(tmp_path / "out")) for arg in CASES[name]]
    before = _digest(inputs["base"])
    capfd.readouterr()
    status = main(argv)
    err = capfd.readouterr().err
    assert status != 0, (name, err)
    lines = visible_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, (name, err)
    assert lines[0].startswith("casnet"), (name, err)
    assert _digest(inputs["base"]) == before, name


def test_the_matrix_is_large_enough():
    assert len(CASES) >= 60
