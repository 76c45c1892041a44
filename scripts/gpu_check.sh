#!/usr/bin/env bash
# The prepared check of the GPU machine (Python 3.12 with torch, no ROS, no network), in ONE call of <= 9 min:
#
#   bash scripts/gpu_check.sh                                  # there: device cuda, 1024x2048, figures to $OUT
#   bash scripts/gpu_check.sh --device cpu --size 128x256 --quick --out DIR    # here (make test runs this)
#
# the device call:  run(command="bash scripts/gpu_check.sh", carry=[".gpu_carry"], timeout_s=600)
# after, here:      bash scripts/gpu_carry.sh   (builds .gpu_carry from the Python 3.12 .venv of `make setup`)
#
# Steps, each with its own time limit inside the total (a step that fails or runs out is recorded, the next
# one runs):
# 1. install: a venv over the interpreter that holds torch (--python, default python3), the carried wheels
#    installed into it with --no-index (.gpu_carry/wheels.tar.xz: ROS 2, rosbags, cityscapesScripts, the interfaces
#    of msg/), the project importable from this checkout; rclpy and the messages must come from the carry.
# 2. cuda_tests: the tests that run on CUDA (pytest -k cuda over the test files that mention it).
# 3. predictor: bench/bench_predictor.py, the default model at --size, fp32, fp16 and bf16, each also with a
#    CUDA graph.
# 4. node: bench/bench_node_rate.py, the real casnet_node on --device with the default model at --size, fed
#    over DDS (shared-memory profile) by another process: latency p50/p90/p99 at 30 Hz, and the highest input
#    rate with < 5 % of the frames dropped.
# 5. multicamera: bench/bench_multicamera.py --device D --json F (1 and 4 cameras at --size), when it exists.
# Writes OUT/gpu_check.json (device, versions, every figure, each step's status and log tail) after every step.
# Exit status 0 when every step ran and passed.
set -uo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEVICE=cuda
SIZE=1024x2048
QUICK=0
BASE_PYTHON=python3
CARRY="$REPO_ROOT/.gpu_carry"
OUT_DIR="${OUT:-$REPO_ROOT/gpu_out}"
TOTAL_S=510  # 8.5 min: the call's 9 min less the start of the interpreter and the copy back
while [[ $# -gt 0 ]]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --size) SIZE="$2"; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --python) BASE_PYTHON="$2"; shift 2 ;;
        --carry) CARRY="$2"; shift 2 ;;
        --out) OUT_DIR="$2"; shift 2 ;;
        --total-seconds) TOTAL_S="$2"; shift 2 ;;
        *) echo "usage: $0 [--device cuda|cpu] [--size HxW] [--quick] [--python PY] [--carry DIR] [--out DIR]" \
                "[--total-seconds S]" >&2; exit 2 ;;
    esac
done
[[ "$SIZE" =~ ^[0-9]+x[0-9]+$ ]] || { echo "error: --size is HxW, e.g. 1024x2048, got $SIZE" >&2; exit 2; }
[[ -f "$CARRY/carry.json" ]] || { echo "error: $CARRY/carry.json missing: run bash scripts/gpu_carry.sh here and carry it" >&2; exit 2; }
command -v "$BASE_PYTHON" >/dev/null || { echo "error: no interpreter $BASE_PYTHON" >&2; exit 2; }
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WORK="$(mktemp -d /tmp/gpu_check.XXXXXX)"
ENV_DIR="$WORK/venv"
START=$SECONDS
FAILED=0
cd "$REPO_ROOT"

# Plain words (the steps run in `bash -c` under `timeout`, which arrays do not reach).
if ((QUICK)); then
    PREDICTOR_ARGS="--frames 1"; NODE_ARGS="--seconds 3 --probe-rates 2 --probe-seconds 2 --warmup-seconds 1"
    MULTICAMERA_ARGS="--height ${SIZE%x*} --width ${SIZE#*x} --cameras 1 --frames 2 --warmup 1"
    LIMITS=(install=300 cuda_tests=300 predictor=240 node=300 multicamera=300)
else
    PREDICTOR_ARGS="--frames 20"; NODE_ARGS="--seconds 20 --probe-rates 30 60 90 120 --probe-seconds 6"
    # The issue's target: 4 cameras at --size; 1 camera for the ratio.
    MULTICAMERA_ARGS="--height ${SIZE%x*} --width ${SIZE#*x} --cameras 1,4 --frames 20"
    LIMITS=(install=60 cuda_tests=90 predictor=80 node=160 multicamera=120)
fi
limit_of() { local entry; for entry in "${LIMITS[@]}"; do [[ "${entry%%=*}" == "$1" ]] && echo "${entry#*=}"; done; }

# Every step's record is WORK/steps/NN-name.json; merge() writes them, with the environment, to OUT.
mkdir -p "$WORK/steps"
merge() {
    "${MERGE_PYTHON:-$BASE_PYTHON}" - "$WORK" "$OUT_DIR/gpu_check.json" "$CARRY/carry.json" "$DEVICE" "$SIZE" <<'PYEOF'
import json, sys
from pathlib import Path
work, out, carry, device, size = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5]
result = {"device_asked": device, "size": size, "carry": json.loads(carry.read_text()).get("source", {})}
env_file = work / "environment.json"
if env_file.is_file():
    result["environment"] = json.loads(env_file.read_text())
result["steps"] = {}
for step in sorted((work / "steps").glob("*.json")):
    record = json.loads(step.read_text())
    result["steps"][record["name"]] = record
out.write_text(json.dumps(result, indent=1))
PYEOF
}

# run_step NAME COMMAND...: runs it within its limit (and what is left of the total), records status, seconds,
# the log's tail and, when the command wrote WORK/NAME.json, its figures.
STEP_INDEX=0
run_step() {
    local name="$1"; shift
    local left=$((TOTAL_S - (SECONDS - START)))
    local limit; limit="$(limit_of "$name")"
    ((limit > left)) && limit=$left
    STEP_INDEX=$((STEP_INDEX + 1))
    local record; record="$WORK/steps/$(printf %02d "$STEP_INDEX")-$name.json"
    local status rc=0 began=$SECONDS
    if ((limit < 10)); then
        status=skipped_no_time; rc=0; FAILED=1
        echo "== $name: skipped, ${left}s left"
    else
        echo "== $name (limit ${limit}s): $*"
        timeout --kill-after=10 "$limit" bash -c "$*" >"$WORK/$name.log" 2>&1
        rc=$?
        case $rc in
            0) status=ok ;;
            124|137) status=timeout; FAILED=1 ;;
            *) status=failed; FAILED=1 ;;
        esac
        echo "   $status after $((SECONDS - began)) s"
        ((rc == 0)) || tail -n 15 "$WORK/$name.log" | sed 's/^/   | /'
    fi
    "${MERGE_PYTHON:-$BASE_PYTHON}" - "$name" "$status" "$rc" "$((SECONDS - began))" "$WORK" "$record" <<'PYEOF'
import json, sys
from pathlib import Path
name, status, rc, seconds, work, record = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]), Path(sys.argv[6])
entry = {"name": name, "status": status, "returncode": rc, "seconds": seconds}
log = work / f"{name}.log"
if log.is_file():
    entry["log_tail"] = log.read_text(errors="replace").splitlines()[-40:]
figures = work / f"{name}.json"
if figures.is_file():
    try:
        entry["figures"] = json.loads(figures.read_text())
    except ValueError as error:
        entry["figures_error"] = str(error)
record.write_text(json.dumps(entry, indent=1))
PYEOF
    merge
}

install() {
    "$BASE_PYTHON" -m venv "$ENV_DIR" || return 1
    "$ENV_DIR/bin/python" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' \
        "$CARRY/wheels.tar.xz" "$WORK" || return 1
    "$ENV_DIR/bin/python" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
        "$WORK"/wheels/*.whl || return 1
    # Then (pip would take the interpreter's packages for installed ones) the venv sees the interpreter's own
    # packages (torch, ...) after its own, and this checkout (the project runs from the source tree, as
    # `pip install -e .` would make it).
    local site; site="$("$ENV_DIR/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    "$BASE_PYTHON" -c 'import sys; print("\n".join(p for p in sys.path if p.endswith(("site-packages", "dist-packages"))))' \
        > "$site/zz_gpu_check_base.pth" || return 1
    echo "$REPO_ROOT" > "$site/casnet_checkout.pth"
    # The ROS wheels and the interfaces must be the carried ones (their libraries are found through this venv).
    "$ENV_DIR/bin/python" - "$ENV_DIR" "$WORK/environment.json" "$CARRY/carry.json" <<'PYEOF'
import importlib.metadata as md
import json
import platform
import sys
from pathlib import Path

env, out, carry = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text())
import numpy
import onnxruntime
import rclpy
import torch
from casnet_msgs.msg import PanopticFrame  # noqa: F401
from vision_msgs.msg import Detection2DArray  # noqa: F401
from tier4_perception_msgs.msg import DetectedObjectsWithFeature  # noqa: F401

for module in (rclpy, sys.modules["casnet_msgs"]):
    if not Path(module.__file__).resolve().is_relative_to(env):
        sys.exit(f"{module.__name__} comes from {module.__file__}, not from the carried wheels in {env}")
if carry.get("python") != "%d.%d" % sys.version_info[:2]:
    sys.exit(f"the carry is for Python {carry.get('python')}, this interpreter is {platform.python_version()}")
cuda = torch.cuda.is_available()
info = {
    "python": platform.python_version(), "platform": platform.platform(),
    "torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": cuda,
    "gpu": torch.cuda.get_device_name(0) if cuda else None,
    "gpu_count": torch.cuda.device_count() if cuda else 0,
    "cudnn": torch.backends.cudnn.version() if cuda else None,
    "numpy": numpy.__version__, "onnxruntime": onnxruntime.__version__,
    "onnxruntime_providers": onnxruntime.get_available_providers(),
    "ros_rclpy": md.version("ros-rclpy"), "ros_fastdds": md.version("ros-fastdds"),
    "cpu_count": __import__("os").cpu_count(),
}
out.write_text(json.dumps(info, indent=1))
print(json.dumps(info))
PYEOF
}

cuda_tests() {
    local files; files=($(grep -l cuda test/test_*.py))
    "$ENV_DIR/bin/python" -m pytest -q -p no:cacheprovider -k cuda "${files[@]}"
}

predictor() {
    local precisions=(fp32) graphs=(); [[ "$DEVICE" == cuda* ]] && precisions=(fp32 fp16 bf16) graphs=(--cuda-graph)
    "$ENV_DIR/bin/python" bench/bench_predictor.py --models default --size "$SIZE" --device "$DEVICE" \
        --precisions "${precisions[@]}" "${graphs[@]}" $PREDICTOR_ARGS | tee "$WORK/predictor.txt" || return 1
    # The table's rows as figures (columns as printed by bench_predictor.py).
    "$ENV_DIR/bin/python" - "$WORK/predictor.txt" "$WORK/predictor.json" <<'PYEOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
header = next(i for i, line in enumerate(lines) if line.startswith("model"))
rows = []
for line in lines[header + 1:]:
    parts = line.split()
    if len(parts) < 8:
        continue
    *_, preproc, forward, post, total, fps, instances = parts
    rows.append({"model": parts[0], "precision": parts[1], "device": " ".join(parts[2:-6]),
                 "preprocess_ms": float(preproc), "forward_ms": float(forward), "postprocess_ms": float(post),
                 "total_ms": float(total), "fps": float(fps), "instances": int(instances)})
json.dump({"header": lines[:header], "rows": rows}, open(sys.argv[2], "w"), indent=1)
if not rows:
    sys.exit("no rows in bench_predictor.py's output")
PYEOF
}

node() {
    # On CUDA the node runs fp16 (the weights cast): the configuration a vehicle would run.
    local precision=fp32; [[ "$DEVICE" == cuda* ]] && precision=fp16
    "$ENV_DIR/bin/python" bench/bench_node_rate.py --checkpoint default --device "$DEVICE" --size "$SIZE" \
        --precision "$precision" $NODE_ARGS --json "$WORK/node.json"
}

multicamera() {
    "$ENV_DIR/bin/python" bench/bench_multicamera.py --device "$DEVICE" $MULTICAMERA_ARGS --json "$WORK/multicamera.json"
}

export REPO_ROOT DEVICE SIZE BASE_PYTHON CARRY WORK ENV_DIR PREDICTOR_ARGS NODE_ARGS MULTICAMERA_ARGS PYTHONUNBUFFERED=1
export -f install cuda_tests predictor node multicamera
echo "== gpu_check: device $DEVICE, $SIZE, carry $CARRY, results $OUT_DIR/gpu_check.json"
run_step install install
if [[ ! -f "$WORK/environment.json" ]]; then
    echo "error: the carried wheels did not install; nothing else can run" >&2
    FAILED=1
else
    MERGE_PYTHON="$ENV_DIR/bin/python"
    run_step cuda_tests cuda_tests
    run_step predictor predictor
    run_step node node
    if [[ -f bench/bench_multicamera.py ]]; then
        run_step multicamera multicamera
    fi
fi
merge
echo "== gpu_check done in $((SECONDS - START)) s: $OUT_DIR/gpu_check.json"
rm -rf "$WORK"
exit "$FAILED"
