"""What the README, docstrings and parameter descriptions say agrees with the code (issue 31, item 6 and the
cuda_graph text of item 4), and the modules named there keep to 120 characters a line."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_readme_says_what_the_node_does_with_bad_frames_and_devices():
    readme = (REPO_ROOT / "README.md").read_text()
    # A malformed frame is counted as rejected (frames_rejected), not failed.
    assert "malformed frame (unknown encoding, short buffer, odd size)\nis counted as rejected" in readme
    assert "CPU fallback" not in readme
    assert "only `auto` falls back to the CPU: `cuda` without CUDA fails configure" in readme


def test_a_cuda_device_without_cuda_is_an_error_not_a_fallback():
    import torch

    from casnet_core.predictor import resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


def test_the_export_contract_and_the_replay_help_name_what_the_code_does():
    from casnet_core import export, replay
    from casnet_core.child_processes import STOP_SIGNALS

    assert "The Predictor feeds N = 1." not in export.__doc__
    assert "``Predictor.predict_batch`` N > 1" in export.__doc__
    # `casnet replay --help` prints this docstring: every stop signal handled is named.
    assert all(signum.name in replay.__doc__ for signum in STOP_SIGNALS)


def test_the_cuda_graph_parameter_says_what_is_captured():
    from casnet_ros.parameters import PARAMETERS

    description = PARAMETERS["cuda_graph"][1].description
    assert "once per image size" not in description
    assert "power of two" in description and "most recently used" in description


@pytest.mark.parametrize("path", ["casnet_ros/node.py", "casnet_ros/parameters.py", "casnet_ros/live_replay.py",
                                  "casnet_ros/statistics.py", "casnet_ros/worker.py", "casnet_ros/transitions.py",
                                  "casnet_core/predictor.py", "casnet_core/replay.py", "casnet_core/export.py",
                                  "casnet_core/cuda_graphs.py", "scripts/demo.sh"])
def test_lines_fit_120_characters_and_comments_stand_apart(path):
    text = (REPO_ROOT / path).read_text()
    long = [number for number, line in enumerate(text.splitlines(), 1) if len(line) > 120]
    assert long == [], f"{path}: lines over 120 characters: {long}"
    if path.endswith(".py"):
        # A comment after code is separated from it (PEP 8: two spaces), never glued to it.
        glued = [token.start[0] for token in tokenize.generate_tokens(io.StringIO(text).readline)
                 if token.type == tokenize.COMMENT and token.start[1] > 0
                 and not re.match(r"\s", token.line[token.start[1] - 1])]
        assert glued == [], f"{path}: comments glued to code on lines {glued}"
