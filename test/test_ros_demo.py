"""``python -m casnet_ros.demo`` end to end: the node as its own process, two validation images over DDS,
the saved overlays, instance JSONs and summary checked against the images.

Needs the interface packages built into the venv (scripts/build_interfaces.sh, run by `make test`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("casnet_msgs.msg", reason="casnet_msgs not built: run scripts/build_interfaces.sh")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs not built: run scripts/build_interfaces.sh")

from ros_helpers import REPO_ROOT  # noqa: E402

from casnet_core.labels import THING_LABEL_IDS  # noqa: E402


def test_demo_writes_overlays_instances_and_summary(tiny_checkpoint, synth_root, tmp_path):
    images = sorted((synth_root / "leftImg8bit" / "val").glob("*/*_leftImg8bit.png"))[:2]
    assert len(images) == 2
    out = tmp_path / "ros"
    domain_id = 1 + (os.getpid() + 50) % 100  # not the domain of test_ros_node's node (1 + pid % 100)
    result = subprocess.run(
        [sys.executable, "-m", "casnet_ros.demo", "--checkpoint", str(tiny_checkpoint), "--images",
         *map(str, images), "--out", str(out), "--domain-id", str(domain_id), "--timeout", "30"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=150)
    print(result.stdout)
    log = out / "casnet_node.log"
    assert result.returncode == 0, (f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}\n"
                                    f"node log:\n{log.read_text() if log.exists() else '(none)'}")

    summary = json.loads((out / "summary.json").read_text())
    assert [frame["name"] for frame in summary["frames"]] == [path.stem for path in images]
    for path, frame in zip(images, summary["frames"]):
        height, width = cv2.imread(str(path)).shape[:2]
        overlay = cv2.imread(str(out / f"{path.stem}_overlay.png"))
        assert overlay is not None and overlay.shape == (height, width, 3)

        document = json.loads((out / f"{path.stem}_instances.json").read_text())
        assert (document["height"], document["width"]) == (height, width)
        assert document["frame_id"] == "demo_camera" and document["mode"] == "panoptic"
        instances = document["instances"]
        assert frame["instances"] == len(instances)
        assert 0 < frame["latency_ms"] <= frame["overlay_latency_ms"] < 30_000
        ids = [instance["id"] for instance in instances]
        assert len(set(ids)) == len(ids)
        for instance in instances:
            assert instance["id"] // 1000 == instance["label_id"] in THING_LABEL_IDS
            x0, y0, x1, y1 = instance["box"]
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            assert 0 < instance["area"] <= (x1 - x0) * (y1 - y0)
