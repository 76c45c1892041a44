"""Frame counters and timings of casnet_node, and the /diagnostics status built from them.

One ``Statistics`` per camera, each adding to the node's totals (its ``parent``), shared by the
subscription callbacks, the worker and the diagnostics timer.

/diagnostics values: state (active | idle | inactive), device, mode, input_rate_hz, output_rate_hz,
frames_received / processed / idle (nothing subscribed) / dropped (replaced in the mailbox) / rejected
(undecodable) / failed, frames_with_nonfinite_outputs and nonfinite_values_last (NaN / inf in the
network's outputs, which the post-processing treats as no evidence), latency_ms_mean / max / last (stamp
-> published), and time_<stage>_ms per frame for receive (stamp -> callback), wait, decode, preprocess,
forward, postprocess, predict, build, publish and total (decode -> published); with several cameras also
batch_size_mean (frames per network batch).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

STATUS_SUFFIX = ": CASNet segmentation"


@dataclass
class _Window:
    """What happened since the last diagnostics message."""

    received: int = 0
    processed: int = 0
    latencies: list[float] = field(default_factory=list)
    stage_sums: dict[str, float] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Totals:
    received: int
    processed: int
    idle: int
    rejected: int
    failed: int
    nonfinite_frames: int
    last_nonfinite: int
    last_latency: float | None


class Statistics:
    """Counters of one camera (or, without a parent, of the whole node); every count also goes to the parent."""

    def __init__(self, parent: "Statistics | None" = None) -> None:
        self.parent = parent
        self.lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.idle = 0
        self.rejected = 0
        self.failed = 0
        self.nonfinite_frames = 0
        self.last_nonfinite = 0
        self.last_latency: float | None = None
        self.window = _Window()
        self.window_start = time.monotonic()

    def on_received(self) -> None:
        with self.lock:
            self.received += 1
            self.window.received += 1
        if self.parent is not None:
            self.parent.on_received()

    def count(self, name: str) -> None:
        """name: idle, rejected or failed."""
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)
        if self.parent is not None:
            self.parent.count(name)

    def on_processed(self, latency: float, stages: dict[str, float], nonfinite: int, batch_size: int = 1) -> None:
        with self.lock:
            self.processed += 1
            self.window.processed += 1
            self.last_latency = latency
            self.last_nonfinite = nonfinite
            self.nonfinite_frames += nonfinite > 0
            self.window.latencies.append(latency)
            self.window.batch_sizes.append(batch_size)
            for stage, seconds in stages.items():
                self.window.stage_sums[stage] = self.window.stage_sums.get(stage, 0.0) + seconds
        if self.parent is not None:
            self.parent.on_processed(latency, stages, nonfinite, batch_size)

    def take_window(self) -> tuple[_Window, float]:
        with self.lock:
            now = time.monotonic()
            window, elapsed = self.window, max(now - self.window_start, 1e-9)
            self.window, self.window_start = _Window(), now
            return window, elapsed

    def totals(self) -> Totals:
        with self.lock:
            return Totals(self.received, self.processed, self.idle, self.rejected, self.failed,
                          self.nonfinite_frames, self.last_nonfinite, self.last_latency)


def diagnostic_status(name: str, statistics: Statistics, *, state: str, device: str, mode: str, dropped: int,
                      batched: bool = False) -> DiagnosticStatus:
    """The status ``name + STATUS_SUFFIX`` of one camera (or the node's totals) since the last call."""
    window, elapsed = statistics.take_window()
    totals = statistics.totals()
    values: dict[str, str] = {
        "state": state,
        "device": device,
        "mode": mode,
        "input_rate_hz": f"{window.received / elapsed:.3f}",
        "output_rate_hz": f"{window.processed / elapsed:.3f}",
        "frames_received": str(totals.received),
        "frames_processed": str(totals.processed),
        "frames_idle": str(totals.idle),
        "frames_dropped": str(dropped),
        "frames_rejected": str(totals.rejected),
        "frames_failed": str(totals.failed),
        "frames_with_nonfinite_outputs": str(totals.nonfinite_frames),
        "nonfinite_values_last": str(totals.last_nonfinite),
    }
    if window.latencies:
        values["latency_ms_mean"] = f"{1e3 * sum(window.latencies) / len(window.latencies):.2f}"
        values["latency_ms_max"] = f"{1e3 * max(window.latencies):.2f}"
    if totals.last_latency is not None:
        values["latency_ms_last"] = f"{1e3 * totals.last_latency:.2f}"
    for stage, seconds in window.stage_sums.items():
        values[f"time_{stage}_ms"] = f"{1e3 * seconds / max(window.processed, 1):.2f}"
    if batched and window.batch_sizes:
        values["batch_size_mean"] = f"{sum(window.batch_sizes) / len(window.batch_sizes):.2f}"

    status = DiagnosticStatus()
    status.name = name + STATUS_SUFFIX
    status.hardware_id = device
    if state == "inactive":
        status.level, status.message = DiagnosticStatus.WARN, "not active"
    elif totals.failed or totals.rejected:
        status.level, status.message = DiagnosticStatus.WARN, "frames rejected or failed (see log)"
    elif totals.nonfinite_frames:
        status.level, status.message = DiagnosticStatus.WARN, "NaN or inf in the network's outputs"
    elif state == "idle":
        status.level, status.message = DiagnosticStatus.OK, "idle: no subscriber to any output"
    else:
        status.level, status.message = DiagnosticStatus.OK, "ok"
    status.values = [KeyValue(key=key, value=value) for key, value in values.items()]
    return status
