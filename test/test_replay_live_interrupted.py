"""`casnet replay --live` stopped by SIGINT while its node still starts (issue 31, item 8): the output bag it
names exists, opens and holds no frame; the node does not outlive it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
from bag_helpers import T0

from casnet_core import bags
from casnet_core.replay import OUTPUT_TOPICS

# Not the domains of the other live-replay tests (1 + (pid + 37 or 61) % 100).
DOMAIN_ID = 1 + (os.getpid() + 89) % 100


def _node_pids(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read() and int(entry) != os.getpid():
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def test_sigint_before_the_first_answer_leaves_an_empty_readable_bag(tmp_path, tiny_checkpoint):
    checkpoint = tmp_path / "model_interrupted.pt"  # its path marks the node process of this test
    checkpoint.write_bytes(tiny_checkpoint.read_bytes())
    rng = np.random.default_rng(3)
    with bags.BagWriter(tmp_path / "bag") as writer:
        for i in range(3):
            writer.add_image(bags.DEFAULT_IMAGE_TOPIC, T0 + i * 10**8, rng.integers(0, 256, (64, 128, 3), np.uint8))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "casnet_core.cli", "replay", "--bag", str(tmp_path / "bag"), "--out", str(out),
               "--checkpoint", str(checkpoint), "--device", "cpu", "--live", "--domain-id", str(DOMAIN_ID)]
    replay = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # The node process is started (its log exists) but cannot have answered yet: it still imports rclpy/torch.
        deadline = time.monotonic() + 120
        while not (out / "casnet_node.log").exists() and replay.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert replay.poll() is None, replay.stderr.read()
        replay.send_signal(signal.SIGINT)
        _, stderr = replay.communicate(timeout=120)
    finally:
        if replay.poll() is None:
            replay.kill()
    assert replay.returncode == 128 + signal.SIGINT, stderr
    assert f"{out / 'bag'} holds the frames processed so far" in stderr
    assert list(bags.read_messages(out / "bag", [OUTPUT_TOPICS["instances"][0]])) == []
    deadline = time.monotonic() + 60
    while _node_pids(str(checkpoint)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _node_pids(str(checkpoint)), "the node outlived the replay"
