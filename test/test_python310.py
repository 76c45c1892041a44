"""The Python 3.10 check of `make test` (scripts/check_py310.sh) passes on the project and fails on
constructs that need Python 3.11 (ROS 2 Humble runs 3.10)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)


def _check(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "check_py310.sh"), str(VENV)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_the_project_passes():
    result = _check(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("construct, finding", [
    ("import contextlib\nwith contextlib.chdir('/'):\n    pass\n", "contextlib.chdir"),
    ("from typing import Self\n", "typing.Self"),
    ("try:\n    pass\nexcept* ValueError:\n    pass\n", "except*"),
    ("import tomllib\n", "tomllib"),
    ("import datetime\nNOW = datetime.UTC\n", "datetime.UTC"),
])
def test_a_python_311_construct_fails(tmp_path, construct, finding):
    for folder in ("casnet_core", "casnet_ros", "launch", "bench", "test"):
        (tmp_path / folder).mkdir()
    (tmp_path / "setup.py").write_text("")
    (tmp_path / "casnet_core" / "uses_311.py").write_text(construct)
    result = _check(tmp_path)
    assert result.returncode != 0 and finding in result.stdout, result.stdout
