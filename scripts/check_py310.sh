#!/usr/bin/env bash
# Fails when the Python code uses anything newer than Python 3.10, the Python of ROS 2 Humble
# (e.g. contextlib.chdir, typing.Self, except*, tomllib, datetime.UTC, 3.11-only keyword arguments).
# The ROS 2 wheels installed here are cp311, so the test suite runs on 3.11; this static check (vermin)
# keeps every shipped and test file runnable on 3.10.
#   bash scripts/check_py310.sh [VENV]
set -euo pipefail
VENV=${1:-.venv}
# --exclude long: torch's Tensor.long() is not Python 2's long.
"$VENV/bin/vermin" --target=3.10- --violations --no-tips --exclude long \
  casnet_core casnet_ros launch bench test setup.py
