#!/usr/bin/env bash
# Makes VENV a virtual environment of the interpreter PYTHON_BIN, and VENV/.stamp-python name its version.
#
#   bash scripts/ensure_venv.sh VENV PYTHON_BIN
#
# An existing VENV of the same Python X.Y that runs is kept (its stamp is left untouched, so `make` rebuilds
# nothing); one of another version, or one whose interpreter is gone, is recreated (--clear) and its stamp
# rewritten, so every later set-up step of the Makefile runs again.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 VENV PYTHON_BIN" >&2
    exit 2
fi
venv="$1"
python_bin="$2"
version_of() {
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}
wanted="$(version_of "$python_bin")" || { echo "error: $python_bin does not run" >&2; exit 1; }
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "error: Python $wanted is too old: CASNet needs 3.10 or newer (ROS 2 Humble's)" >&2
    exit 1
fi
stamp="$venv/.stamp-python"
have="$(version_of "$venv/bin/python" || true)"
if [[ "$have" != "$wanted" ]]; then
    if [[ -n "$have" ]]; then
        echo "== $venv holds Python $have, Python $wanted asked: recreating it"
    fi
    "$python_bin" -m venv --clear "$venv"
fi
if [[ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
    echo "$wanted" > "$stamp"
fi
