"""Data parallelism and gradient accumulation really compute the gradient of the whole batch, and a
non-finite loss on one process stops every process with the same message.

The comparisons are exact up to float rounding because the two training images share one label
map (every loss averages over the same number of pixels in each image, so the mean over a batch is
the mean of the per-image means) and BatchNorm is frozen (its statistics would otherwise depend on
how the batch is split). The images differ, so a process that trained on its half alone would end
elsewhere.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from casnet_core.checkpoint import read_checkpoint
from casnet_core.config import load_config
from casnet_core.train import train

STEPS = 3
TINY = [
    "model.fusion_channels=16", "model.head_channels=8", "data.short_side=null", "data.crop_size=[64,128]",
    "data.flip=false", "data.workers=0", "solver.freeze_bn=true", "solver.log_every=1", "solver.lr=0.02",
]
ROAD, SKY, PERSON, CAR = 7, 23, 24, 26


def _write_dataset(root: Path, label_maps: list[tuple[np.ndarray, np.ndarray]], seed: int = 0) -> Path:
    """A Cityscapes-layout train split: one random RGB image per (labelIds, instanceIds) pair."""
    rng = np.random.default_rng(seed)
    for sub in ("leftImg8bit", "gtFine"):
        (root / sub / "train" / "tiny").mkdir(parents=True)
    for i, (label_ids, instance_ids) in enumerate(label_maps):
        name = f"tiny_{i:06d}_000019"
        image = rng.integers(0, 256, size=(*label_ids.shape, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "leftImg8bit" / "train" / "tiny" / f"{name}_leftImg8bit.png"), image)
        cv2.imwrite(str(root / "gtFine" / "train" / "tiny" / f"{name}_gtFine_labelIds.png"), label_ids.astype(np.uint8))
        cv2.imwrite(str(root / "gtFine" / "train" / "tiny" / f"{name}_gtFine_instanceIds.png"),
                    instance_ids.astype(np.uint16))
    return root


def _street(height: int = 64, width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Sky, road, two cars and a pedestrian."""
    labels = np.full((height, width), SKY, dtype=np.int32)
    labels[height // 2 :] = ROAD
    instances = labels.copy()
    for k, (label, (y0, y1, x0, x1)) in enumerate([(CAR, (28, 50, 8, 48)), (CAR, (30, 46, 60, 90)),
                                                    (PERSON, (20, 56, 100, 110))]):
        labels[y0:y1, x0:x1] = label
        instances[y0:y1, x0:x1] = label * 1000 + k
    return labels, instances


@pytest.fixture(scope="module")
def same_labels_root(tmp_path_factory):
    street = _street()
    return _write_dataset(tmp_path_factory.mktemp("same_labels"), [street, street])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


def _train(root, out, *overrides: str) -> dict[str, torch.Tensor]:
    config = load_config("config/synthetic_cpu.yaml", [*TINY, *overrides])
    return _weights(train(config, root, out, device="cpu", max_iters=STEPS, progress=False))


def test_accumulation_equals_the_whole_batch(same_labels_root, tmp_path):
    whole = _train(same_labels_root, tmp_path / "whole", "solver.batch_size=2")
    accumulated = _train(same_labels_root, tmp_path / "accumulated", "solver.batch_size=1", "solver.accumulation=2")
    one_image_steps = _train(same_labels_root, tmp_path / "one", "solver.batch_size=1")
    difference, scale = _max_difference(accumulated, whole), _max_difference(one_image_steps, whole)
    print(f"accumulation 2 x batch 1 vs. batch 2: max abs weight difference {difference:.3g} "
          f"(one image per step instead: {scale:.3g})")
    assert difference < 1e-6 and scale > 1e-3


def test_two_processes_with_half_a_batch_each_equal_one_process_with_the_whole_batch(same_labels_root, tmp_path):
    """Real torch.distributed (gloo on the CPU), launched as the README says, with torchrun."""
    whole = _train(same_labels_root, tmp_path / "whole", "solver.batch_size=2")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={_free_port()}", "-m", "casnet_core.cli", "train", "--config", "config/synthetic_cpu.yaml",
         "--data", str(same_labels_root), "--out", str(tmp_path / "ddp"), "--device", "cpu",
         "--max-iters", str(STEPS), *TINY, "solver.batch_size=1"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = read_checkpoint(tmp_path / "ddp" / "last.pt")
    assert state["step"] == STEPS
    assert state["schedule"]["world_size"] == 2 and state["schedule"]["images_per_step"] == 2
    difference = _max_difference(state["model"], whole)
    print(f"2 processes x batch 1 (gloo) vs. 1 process x batch 2: max abs weight difference {difference:.3g}")
    assert difference < 1e-6
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # only rank 0 logs


def test_a_non_finite_loss_on_one_process_stops_every_process_with_one_message(tmp_path):
    """Launched without torchrun (as a cluster scheduler starts ranks), so no agent kills the others:
    before the losses were agreed on, the process with a finite loss waited forever."""
    height, width = 64, 128
    everything_car = (np.full((height, width), CAR), np.full((height, width), CAR * 1000))
    only_road = (np.full((height, width), ROAD), np.full((height, width), ROAD))
    root = _write_dataset(tmp_path / "data", [everything_car, only_road])
    # The attribute loss is 0 on the road image and > 1 stride on the car image: 3e38 x it overflows
    # float32 there only, so exactly one process sees an infinite loss at step 1.
    port = _free_port()
    processes = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank)}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "casnet_core.cli", "train", "--config", "config/synthetic_cpu.yaml", "--data",
             str(root), "--out", str(tmp_path / "out"), "--device", "cpu", "--max-iters", "2", *TINY,
             "solver.batch_size=1", "loss.beta=3e38"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    errors = []
    try:
        for process in processes:
            errors.append(process.communicate(timeout=240)[1])
    except subprocess.TimeoutExpired:
        pytest.fail("a process hung after a non-finite loss on another one")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    messages = [[line for line in text.splitlines() if line.startswith("casnet train:")] for text in errors]
    assert [p.returncode for p in processes] == [2, 2], errors
    assert len(messages[0]) == 1 and messages[0] == messages[1], messages
    assert "the loss is not finite at step 1" in messages[0][0]
