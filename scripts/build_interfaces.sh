#!/usr/bin/env bash
# Build the ROS 2 interface packages under msg/ into a Python virtual environment that holds the
# ROS 2 wheels from PyPI (no ROS install needed; see /work/shared/ros2-without-a-ros-install.md).
#
#   bash scripts/build_interfaces.sh VENV
#
# - casnet_msgs is always built.
# - vision_msgs and the Autoware message packages (autoware_perception_msgs, tier4_perception_msgs,
#   autoware_internal_perception_msgs: the subsets the node publishes, as Autoware release 1.8.0 defines them)
#   are each built only when no ROS 2 install already provides it (a system package, e.g. from /opt/ros/<distro>
#   or an Autoware workspace, must win: its type hashes are the reference).
# - Build trees go to VENV/build-interfaces/<package> (one per venv: CMake caches the interpreter and the
#   prefix); installs go into VENV. Works for every Python the ROS 2 wheels exist for (3.10, 3.11, 3.12).
# Idempotent: a second run rebuilds nothing that has not changed.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 VENV" >&2
    exit 2
fi

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(cd "$1" && pwd)"
PY="$VENV/bin/python"
BUILD_ROOT="$VENV/build-interfaces"
JOBS="$(nproc 2>/dev/null || echo 2)"

if [[ ! -x "$PY" ]]; then
    echo "error: $PY not found; create the venv first (make setup)" >&2
    exit 1
fi
command -v cmake >/dev/null || { echo "error: cmake is required" >&2; exit 1; }
# ament_cmake runs Python helpers from these packages; name the wheel when one is missing.
for module_and_wheel in ament_package:ros-ament-package catkin_pkg:catkin_pkg rosidl_adapter:ros-rosidl-adapter; do
    "$PY" -c "import ${module_and_wheel%%:*}" 2>/dev/null || {
        echo "error: Python module ${module_and_wheel%%:*} missing in $VENV: pip install ${module_and_wheel##*:}" >&2
        exit 1
    }
done

# The wheels' exported CMake files name include folders of the machine they were built on, the wheel
# builder's Python of the same version (/opt/python/cp312-cp312/include/python3.12 and
# /opt/python/cp312-cp312/lib/python3.12/site-packages/numpy/_core/include for cp312). Point them at this
# interpreter's folders (only files that still name foreign ones, so a second run touches nothing).
PY_INCLUDE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NUMPY_INCLUDE="$("$PY" -c 'import numpy; print(numpy.get_include())')"
FOREIGN_ROOT='/opt/python/cp3[0-9]+-cp3[0-9]+'
FOREIGN_NUMPY_INCLUDE="$FOREIGN_ROOT/lib/python3\.[0-9]+/site-packages/numpy/(_core|core)/include"
FOREIGN_PY_INCLUDE="$FOREIGN_ROOT/include/python3\.[0-9]+"
if [[ -d "$VENV/share" ]]; then
    grep -rlE --include='*.cmake' -e "$FOREIGN_ROOT/" "$VENV/share" 2>/dev/null \
        | while IFS= read -r cmake_file; do
            sed -i -E -e "s#${FOREIGN_NUMPY_INCLUDE}#${NUMPY_INCLUDE}#g" \
                      -e "s#${FOREIGN_PY_INCLUDE}#${PY_INCLUDE}#g" "$cmake_file"
        done || true  # grep finds nothing once every file has been rewritten
    if leftover="$(grep -rlE --include='*.cmake' -e "$FOREIGN_ROOT/" "$VENV/share" 2>/dev/null | head -n 1)" \
        && [[ -n "$leftover" ]]; then
        echo "error: $leftover still names a folder of the wheel builder:" >&2
        grep -oE "$FOREIGN_ROOT/[^;\" ]*" "$leftover" | sort -u | head -n 3 >&2
        exit 1
    fi
fi

# True when the package can be imported from somewhere other than this venv (a ROS 2 install).
system_provides() {
    local package="$1"
    "$PY" - "$package" "$VENV" <<'PYEOF'
import importlib.util
import os
import sys

package, venv = sys.argv[1], os.path.realpath(sys.argv[2])
spec = importlib.util.find_spec(package)
if spec is None or spec.origin is None:
    sys.exit(1)
origin = os.path.realpath(spec.origin)
sys.exit(1 if origin.startswith(venv + os.sep) else 0)
PYEOF
}

build_package() {
    local package="$1"
    local source_dir="$REPO_ROOT/msg/$package"
    local build_dir="$BUILD_ROOT/$package"
    echo "== building interface package $package into $VENV"
    mkdir -p "$build_dir"
    cmake -S "$source_dir" -B "$build_dir" \
        -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_PREFIX_PATH="$VENV" \
        -DCMAKE_INSTALL_PREFIX="$VENV" \
        -DPython3_EXECUTABLE="$PY" \
        -DBUILD_TESTING=OFF \
        > "$build_dir/configure.log" 2>&1 \
        || { cat "$build_dir/configure.log" >&2; echo "error: cmake configure of $package failed" >&2; exit 1; }
    cmake --build "$build_dir" --target install -- -j"$JOBS" > "$build_dir/build.log" 2>&1 \
        || { tail -n 60 "$build_dir/build.log" >&2; echo "error: build of $package failed" >&2; exit 1; }
}

# In dependency order: the tier4 and internal packages nest autoware_perception_msgs.
for package in vision_msgs autoware_perception_msgs tier4_perception_msgs autoware_internal_perception_msgs; do
    if system_provides "$package"; then
        echo "== $package is provided by a ROS 2 install; not building msg/$package"
    else
        build_package "$package"
    fi
done
build_package casnet_msgs

# Smoke test: the generated Python modules import (inside the venv, through its ROS bootstrap).
"$PY" -c 'from casnet_msgs.msg import PanopticFrame, PanopticInstance
from vision_msgs.msg import Detection2DArray, LabelInfo
from tier4_perception_msgs.msg import DetectedObjectsWithFeature
from autoware_internal_perception_msgs.msg import SegmentationMask'
echo "== interfaces ready"
