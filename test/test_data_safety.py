"""Nothing lost, nothing wrong unreported (issue 17): replay never touches its inputs, exports are checked before
they are written, atomic writes keep the umask, frames are keyed by their position in the bag, ground truth is
matched wherever it was recorded and its absence explained, the evaluation cache never serves another dataset,
a resume never silently ignores a changed solver setting. Real bags, real models, the real official evaluators.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat

import numpy as np
import pytest
import torch

from bag_helpers import PERIOD, T0, write_bag

from casnet_core import bags
from casnet_core.cli import main
from casnet_core.formats import atomic_write


def tree_digest(path) -> dict[str, str]:
    """{relative path: SHA-256} of every file under ``path`` (or of the file itself)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return {"": hashlib.sha256(open(path, "rb").read()).hexdigest()}
    digests = {}
    for folder, _, files in os.walk(path):
        for name in files:
            full = os.path.join(folder, name)
            digests[os.path.relpath(full, path)] = hashlib.sha256(open(full, "rb").read()).hexdigest()
    return digests


def small_images(count: int, seed: int = 0, height: int = 64, width: int = 128) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def street_truth(count: int, height: int = 64, width: int = 128) -> list[np.ndarray]:
    """Cityscapes panoptic ground truth: road (7) below, sky (23) above, one car (26000 + i) in the middle."""
    truths = []
    for i in range(count):
        gt = np.full((height, width), 23, dtype=np.int32)
        gt[height // 2:] = 7
        gt[height // 3: 2 * height // 3, width // 4: width // 2] = 26000 + i
        truths.append(gt)
    return truths


def one_error_line(capsys_or_capfd, command: str) -> str:
    err = capsys_or_capfd.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"casnet {command}: ") and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------ 1. replay never deletes the input
@pytest.mark.parametrize("layout", ["out is the bag's parent", "out is the bag", "out inside the bag",
                                    "bag given as its .db3, out its parent"])
def test_replay_refuses_an_out_that_overlaps_the_input_bag(tmp_path, tiny_checkpoint, capsys, layout):
    """`casnet replay --bag x/bag --out x` used to delete x/bag (the only recording) before failing."""
    bag = tmp_path / "x" / "bag"
    write_bag(bag, small_images(3), ground_truth=street_truth(3))
    before = tree_digest(tmp_path / "x")
    source, out = {
        "out is the bag's parent": (bag, tmp_path / "x"),
        "out is the bag": (bag, bag),
        "out inside the bag": (bag, bag / "replay"),
        "bag given as its .db3, out its parent": (next(bag.glob("*.db3")), tmp_path / "x"),
    }[layout]
    status = main(["replay", "--bag", str(source), "--out", str(out), "--checkpoint", str(tiny_checkpoint),
                   "--device", "cpu"])
    assert status == 2
    assert "overlaps --bag" in one_error_line(capsys, "replay")
    assert tree_digest(tmp_path / "x") == before  # not a byte changed, nothing added
    assert len(list(bags.read_frames(bag))) == 3


def test_replay_refuses_an_out_that_overlaps_the_checkpoint(tmp_path, tiny_checkpoint, capsys):
    write_bag(tmp_path / "bag", small_images(1))
    checkpoint = tmp_path / "models" / "metrics.json"  # a checkpoint named like an output of the replay
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(tiny_checkpoint.read_bytes())
    status = main(["replay", "--bag", str(tmp_path / "bag"), "--out", str(tmp_path / "models"),
                   "--checkpoint", str(checkpoint), "--device", "cpu"])
    assert status == 2 and "overlaps --checkpoint" in one_error_line(capsys, "replay")
    assert checkpoint.read_bytes() == tiny_checkpoint.read_bytes()


def test_an_earlier_replay_is_replaced_only_with_overwrite(tmp_path, tiny_checkpoint, capsys):
    write_bag(tmp_path / "bag", small_images(2))
    out = tmp_path / "out"
    command = ["replay", "--bag", str(tmp_path / "bag"), "--out", str(out), "--checkpoint", str(tiny_checkpoint),
               "--device", "cpu"]
    assert main(command) == 0
    capsys.readouterr()
    (out / "notes.txt").write_text("the user's own notes")
    first = tree_digest(out)
    assert main(command) == 2
    assert "--overwrite" in one_error_line(capsys, "replay")
    assert tree_digest(out) == first
    assert main([*command, "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "the user's own notes"  # only the replay's own outputs replaced
    assert len(list(bags.read_messages(out / "bag", ["/casnet/panoptic"]))) == 2


# ------------------------------------------------------------------------------ 3. export checked, then written
def test_an_export_that_fails_the_check_never_replaces_the_file(tmp_path, capsys):
    """A checkpoint whose weights hold a NaN (a diverged run) exports a file onnxruntime and PyTorch cannot agree
    on: the good export already at --out stays, byte for byte, and no temporary file is left."""
    from casnet_core.checkpoint import save_checkpoint
    from casnet_core.model import build_casnet

    torch.manual_seed(0)
    model = build_casnet("hrnet_w18_small", mode="panoptic", fusion_channels=16, head_channels=8).eval()
    with torch.no_grad():
        next(p for name, p in model.named_parameters() if "head" in name and p.dim() > 1).view(-1)[0] = float("nan")
    checkpoint = save_checkpoint(tmp_path / "diverged.pt", model)
    out = tmp_path / "casnet.onnx"
    out.write_bytes(b"the good export of yesterday")
    status = main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--check-size", "64x128"])
    assert status != 0
    assert "disagrees" in capsys.readouterr().err
    assert out.read_bytes() == b"the good export of yesterday"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["casnet.onnx", "diverged.pt"]


# ------------------------------------------------------------------------------ 4. atomic writes keep the umask
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_write_gives_new_files_the_mode_of_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        with atomic_write(tmp_path / "model.pt") as f:
            f.write(b"weights")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "model.pt").stat().st_mode) == mode


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("{}")
    path.chmod(0o640)
    with atomic_write(path) as f:
        f.write(b'{"PQ": 1}')
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_text() == '{"PQ": 1}'


# ------------------------------------------------------------------------------ 5. frames keyed by position
def test_frames_that_share_a_stamp_are_all_read_each_with_its_ground_truth(tmp_path):
    images, truths = small_images(2, height=8, width=8), street_truth(2, height=8, width=8)
    with bags.BagWriter(tmp_path / "bag") as writer:
        for i in range(2):  # a camera driver that stamped two frames alike
            writer.add(bags.DEFAULT_IMAGE_TOPIC, bags.IMAGE_TYPE, T0 + i,
                       bags.rgb_to_image_message(images[i], "rgb8", bags.header_message(T0, "camera")))
        for i in range(2):  # their ground truth, recorded after both
            writer.add(bags.PANOPTIC_GT_TOPIC, bags.IMAGE_TYPE, T0 + 2 + i,
                       bags.panoptic_image_message(truths[i], bags.header_message(T0, "camera"),
                                                   encoding=bags.PANOPTIC_ENCODING))
    frames = list(bags.read_frames(tmp_path / "bag"))
    assert [f.index for f in frames] == [0, 1] and [f.stamp_ns for f in frames] == [T0, T0]
    for frame, image, truth in zip(frames, images, truths):
        np.testing.assert_array_equal(frame.image_rgb, image)
        np.testing.assert_array_equal(frame.panoptic_gt, truth)


def test_ground_truth_recorded_long_after_its_image_is_still_paired(tmp_path):
    """20 frames, all their ground truth recorded after the last image (e.g. labelled offline and appended)."""
    count = 20
    images, truths = small_images(count, height=8, width=8), street_truth(count, height=8, width=8)
    stamps = [T0 + i * PERIOD for i in range(count)]
    with bags.BagWriter(tmp_path / "bag") as writer:
        for stamp, image in zip(stamps, images):
            writer.add_image(bags.DEFAULT_IMAGE_TOPIC, stamp, image)
        for stamp, truth in zip(stamps, truths):
            writer.add(bags.PANOPTIC_GT_TOPIC, bags.IMAGE_TYPE, stamps[-1] + 10**9 + stamp - T0,
                       bags.panoptic_image_message(truth, bags.header_message(stamp, "camera"),
                                                   encoding=bags.PANOPTIC_ENCODING))
    frames = list(bags.read_frames(tmp_path / "bag"))
    assert len(frames) == count
    assert all(f.panoptic_gt is not None for f in frames), [f.gt_error for f in frames]
    for frame, truth in zip(frames, truths):
        np.testing.assert_array_equal(frame.panoptic_gt, truth)


def test_replay_reports_frames_without_ground_truth_and_why(tmp_path, tiny_checkpoint, capsys):
    images, truths = small_images(4), street_truth(4)
    stamps = [T0 + i * PERIOD for i in range(4)]
    with bags.BagWriter(tmp_path / "bag") as writer:
        for i, (stamp, image) in enumerate(zip(stamps, images)):
            writer.add_image(bags.DEFAULT_IMAGE_TOPIC, stamp, image)
            if i == 1:
                continue  # never labelled
            truth = truths[i] if i != 3 else truths[i][:32]  # frame 3: ground truth of another size
            writer.add_panoptic(bags.PANOPTIC_GT_TOPIC, stamp, truth)
    out = tmp_path / "out"
    assert main(["replay", "--bag", str(tmp_path / "bag"), "--out", str(out), "--checkpoint", str(tiny_checkpoint),
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"]["evaluated"] == 2
    assert metrics["ground_truth"] == {
        "topic": bags.PANOPTIC_GT_TOPIC, "frames_with": 2, "frames_without": 2,
        "why": {bags.NO_GT_WITH_STAMP: 1, "ground truth does not fit the image": 1}}
    assert "frames without usable ground truth: 2 of 4" in printed and bags.NO_GT_WITH_STAMP in printed


# ------------------------------------------------------------------------------ 9. what happened, said plainly
def test_thresholds_out_of_range_are_refused_before_anything_starts(tmp_path, tiny_checkpoint, capsys):
    write_bag(tmp_path / "bag", small_images(1))
    for option, value in (("--max-instances", "0"), ("--box-threshold", "1.5"), ("--nms-iou", "nan"),
                          ("--min-area", "-1")):
        status = main(["replay", "--bag", str(tmp_path / "bag"), "--out", str(tmp_path / "out"),
                       "--checkpoint", str(tiny_checkpoint), option, value])
        assert status == 2 and option in one_error_line(capsys, "replay")
    assert not (tmp_path / "out").exists()


def test_a_replay_in_which_every_frame_fails_says_so(tmp_path, tiny_checkpoint, capsys):
    images, truths = small_images(3), street_truth(3)
    with bags.BagWriter(tmp_path / "bag") as writer:
        for i, (image, truth) in enumerate(zip(images, truths)):
            message = bags.rgb_to_image_message(image, "rgb8", bags.header_message(T0 + i, "camera"))
            message.step += 4  # more bytes per row than the frame holds: not decodable
            writer.add(bags.DEFAULT_IMAGE_TOPIC, bags.IMAGE_TYPE, T0 + i, message)
            writer.add_panoptic(bags.PANOPTIC_GT_TOPIC, T0 + i, truth)
    assert main(["replay", "--bag", str(tmp_path / "bag"), "--out", str(tmp_path / "out"),
                 "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "none of the 3 frames was processed (3 failed" in printed
    assert "no ground truth" not in printed.lower()


# ------------------------------------------------------------------------------ 6. the evaluation cache
def test_an_evaluation_cache_shared_by_two_datasets_is_rebuilt_for_each(tmp_path):
    """Two datasets whose files have the same names: the full oracle scores 100 on each, through one cache."""
    from casnet_core.evaluation import evaluate
    from casnet_core.synth import generate_dataset

    cache = tmp_path / "cache"
    # Both made first: the second dataset's files are older than the cache the first evaluation writes.
    roots = {seed: generate_dataset(tmp_path / f"ds{seed}", num_train=1, num_val=2, height=128, width=256,
                                    seed=seed, progress=False) for seed in (1, 2)}
    for seed, root in roots.items():
        before = tree_digest(root)
        metrics = evaluate(root, "val", tmp_path / f"out{seed}", oracle="full", cache_dir=cache, progress=False)
        assert (metrics["PQ"], metrics["PQ_th"], metrics["AP"], metrics["mIoU"]) == (1.0, 1.0, 1.0, 1.0), seed
        assert tree_digest(root) == before
    fingerprint = json.loads((cache / "cityscapes_panoptic_val.fingerprint.json").read_text())
    assert fingerprint["source"] == str((tmp_path / "ds2" / "gtFine" / "val").resolve())


# ------------------------------------------------------------------------------ 7. resume never ignores a change
TINY_TRAIN = ["model.fusion_channels=16", "model.head_channels=8", "data.short_side=null", "data.crop_size=[64,128]",
              "data.workers=0", "solver.eval_every=0"]


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory):
    """A run of one training step on a tiny generated dataset: (data root, run folder, its command)."""
    from casnet_core.synth import generate_dataset

    base = tmp_path_factory.mktemp("resume")
    root = generate_dataset(base / "data", num_train=2, num_val=1, height=64, width=128, seed=3, progress=False)
    command = ["train", "--config", "config/synthetic_cpu.yaml", "--data", str(root), "--device", "cpu"]
    assert main([*command, "--out", str(base / "run"), "--max-iters", "1", *TINY_TRAIN]) == 0
    return base / "run", command


@pytest.mark.parametrize("change", ["solver.optimizer=adamw", "solver.lr=0.5", "solver.momentum=0.5",
                                    "solver.weight_decay=0.5", "solver.lr_steps=[1]", "solver.warmup_steps=5",
                                    "solver.warmup_factor=0.5"])
def test_resume_refuses_a_changed_solver_setting(one_step_run, tmp_path, change, capsys):
    import shutil

    run, command = one_step_run
    out = shutil.copytree(run, tmp_path / "run")
    capsys.readouterr()
    config_before, last_before = (out / "config.yaml").read_bytes(), tree_digest(out / "last.pt")
    assert main([*command, "--out", str(out), "--max-iters", "2", "--resume", *TINY_TRAIN, change]) == 2
    line = one_error_line(capsys, "train")
    assert change.split("=")[0] in line
    assert (out / "config.yaml").read_bytes() == config_before and tree_digest(out / "last.pt") == last_before


def test_a_run_saved_before_the_warmup_setting_existed_resumes_as_a_run_without_one(one_step_run, tmp_path, capsys):
    # last.pt of an earlier release: its training config has no solver.warmup_steps / warmup_factor (nor
    # optimizer). Such a run had no warm-up (today's default): resuming with the defaults goes on, resuming with a
    # warm-up is refused, as for any changed schedule setting.
    import shutil

    from casnet_core.checkpoint import read_checkpoint

    run, command = one_step_run
    out = shutil.copytree(run, tmp_path / "run")
    state = read_checkpoint(out / "last.pt")
    for key in ("warmup_steps", "warmup_factor", "optimizer"):
        del state["train_config"]["solver"][key]
    torch.save(state, out / "last.pt")
    capsys.readouterr()
    assert main([*command, "--out", str(out), "--max-iters", "2", "--resume", *TINY_TRAIN,
                 "solver.warmup_steps=5"]) == 2
    assert "solver.warmup_steps is 5 here but 0 in the run of" in one_error_line(capsys, "train")
    assert main([*command, "--out", str(out), "--max-iters", "2", "--resume", *TINY_TRAIN]) == 0
    assert read_checkpoint(out / "last.pt")["step"] == 2
