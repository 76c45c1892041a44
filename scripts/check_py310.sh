#!/usr/bin/env bash
# Fails when the Python code uses anything newer than Python 3.10, the Python of ROS 2 Humble
# (e.g. contextlib.chdir, typing.Self, except*, tomllib, datetime.UTC, 3.11-only keyword arguments).
# CI runs the whole suite on 3.12 (Jazzy, Kilted) and on 3.10 (.ci/run); this static check (vermin) runs in
# every `make test` too, so a 3.11+ construct fails at once, also in a 3.12-only run.
#   bash scripts/check_py310.sh [VENV]
set -euo pipefail
VENV=${1:-.venv}
# --exclude long: torch's Tensor.long() is not Python 2's long.
# A file the running interpreter cannot parse (except* under Python 3.10) is only an "error:" line for vermin,
# with exit status 0: it fails the check too.
output="$("$VENV/bin/vermin" --target=3.10- --violations --no-tips --exclude long \
  casnet_core casnet_ros launch bench test setup.py)" || { echo "$output"; exit 1; }
echo "$output"
if grep -q "error: " <<<"$output"; then
    echo "error: vermin could not analyse every file (see above)" >&2
    exit 1
fi
