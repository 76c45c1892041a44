"""Frame counters and timings of casnet_node, and the /diagnostics status built from them.

One ``Statistics`` per camera, each adding to the node's totals (its ``parent``), shared by the
subscription callbacks, the worker and the diagnostics timer.

/diagnostics values: state (active | idle | inactive), device, mode, input_rate_hz, output_rate_hz,
frames_received / processed / idle (nothing subscribed) / dropped (replaced in the mailbox) / rejected
(undecodable) / failed, frames_with_nonfinite_outputs and nonfinite_values_last (NaN / inf in the
network's outputs, which the post-processing treats as no evidence), latency_ms_mean / max / last (stamp
-> published), and time_<stage>_ms per frame for receive (stamp -> callback), wait, decode, preprocess,
forward, postprocess, predict, build, publish and total (decode -> published), seconds_since_input (while
active; since the activation when nothing came yet); with several cameras also batch_size_mean (the mean
size of the network batches run since the last message: frames of different sizes are batches of their own,
a frame retried alone is a batch of one).

The level says what holds now, not since configure (as diagnostic_updater's FrequencyStatus judges a
sliding window): WARN while a frame was rejected or failed, or had NaN / inf outputs, within the last
``window_s`` seconds (diagnostics_window), or while an active camera got no input for longer than
``input_timeout_s`` (input_timeout); else OK. An inactive node is WARN ("not active").
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

STATUS_SUFFIX = ": CASNet segmentation"
#: Defaults of the diagnostics_window and input_timeout parameters, in seconds.
DEFAULT_WINDOW_S = 5.0
DEFAULT_INPUT_TIMEOUT_S = 2.0


@dataclass
class _Window:
    """What happened since the last diagnostics message."""

    received: int = 0
    processed: int = 0
    latencies: list[float] = field(default_factory=list)
    stage_sums: dict[str, float] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)  # of the network batches run


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

    def __init__(self, parent: "Statistics | None" = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.parent = parent
        self.clock = clock
        self.lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.idle = 0
        self.rejected = 0
        self.failed = 0
        self.nonfinite_frames = 0
        self.last_nonfinite = 0
        self.last_latency: float | None = None
        self.last_input: float | None = None  # clock() of the last frame received
        self.problems: collections.deque[float] = collections.deque()  # clock() of each rejected/failed/nonfinite
        self.window = _Window()
        self.window_start = clock()

    def on_received(self) -> None:
        with self.lock:
            self.received += 1
            self.window.received += 1
            self.last_input = self.clock()
        if self.parent is not None:
            self.parent.on_received()

    def count(self, name: str) -> None:
        """name: idle, rejected or failed."""
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)
            if name != "idle":
                self.problems.append(self.clock())
        if self.parent is not None:
            self.parent.count(name)

    def on_network_batch(self, size: int) -> None:
        """One forward pass of the network over ``size`` frames (counted by the node's totals only)."""
        if self.parent is not None:
            self.parent.on_network_batch(size)
            return
        with self.lock:
            self.window.batch_sizes.append(size)

    def recent_problems(self, window_s: float) -> int:
        """Frames rejected, failed or with NaN / inf outputs within the last ``window_s`` seconds."""
        with self.lock:
            horizon = self.clock() - window_s
            while self.problems and self.problems[0] < horizon:
                self.problems.popleft()
            return len(self.problems)

    def on_processed(self, latency: float, stages: dict[str, float], nonfinite: int) -> None:
        with self.lock:
            self.processed += 1
            self.window.processed += 1
            self.last_latency = latency
            self.last_nonfinite = nonfinite
            self.nonfinite_frames += nonfinite > 0
            if nonfinite > 0:
                self.problems.append(self.clock())
            self.window.latencies.append(latency)
            for stage, seconds in stages.items():
                self.window.stage_sums[stage] = self.window.stage_sums.get(stage, 0.0) + seconds
        if self.parent is not None:
            self.parent.on_processed(latency, stages, nonfinite)

    def take_window(self) -> tuple[_Window, float]:
        with self.lock:
            now = self.clock()
            window, elapsed = self.window, max(now - self.window_start, 1e-9)
            self.window, self.window_start = _Window(), now
            return window, elapsed

    def totals(self) -> Totals:
        with self.lock:
            return Totals(self.received, self.processed, self.idle, self.rejected, self.failed,
                          self.nonfinite_frames, self.last_nonfinite, self.last_latency)


def diagnostic_status(name: str, statistics: Statistics, *, state: str, device: str, mode: str, dropped: int,
                      batched: bool = False, window_s: float = DEFAULT_WINDOW_S,
                      input_timeout_s: float = DEFAULT_INPUT_TIMEOUT_S, active_since: float | None = None
                      ) -> DiagnosticStatus:
    """The status ``name + STATUS_SUFFIX`` of one camera (or the node's totals) since the last call.

    ``active_since``: ``statistics.clock()`` when the activation began (None: inactive); silence counts from it
    while nothing came; ``input_timeout_s`` 0 never reports silence."""
    window, elapsed = statistics.take_window()
    totals = statistics.totals()
    recent = statistics.recent_problems(window_s)
    silence = None
    if active_since is not None:
        last_input = statistics.last_input
        silence = statistics.clock() - max(active_since, last_input if last_input is not None else active_since)
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
    if silence is not None:
        values["seconds_since_input"] = f"{silence:.1f}"
    if batched and window.batch_sizes:  # kept last: readers find it there
        values["batch_size_mean"] = f"{sum(window.batch_sizes) / len(window.batch_sizes):.2f}"

    status = DiagnosticStatus()
    status.name = name + STATUS_SUFFIX
    status.hardware_id = device
    if state == "inactive":
        status.level, status.message = DiagnosticStatus.WARN, "not active"
    elif recent:
        status.level = DiagnosticStatus.WARN
        status.message = (f"{recent} frame(s) rejected or failed, or with NaN / inf outputs, in the last "
                          f"{window_s:g} s (see log)")
    elif silence is not None and input_timeout_s > 0 and silence > input_timeout_s:
        status.level = DiagnosticStatus.WARN
        status.message = f"no input for {silence:.1f} s (input_timeout {input_timeout_s:g} s)"
    elif state == "idle":
        status.level, status.message = DiagnosticStatus.OK, "idle: no subscriber to any output"
    else:
        status.level, status.message = DiagnosticStatus.OK, "ok"
    status.values = [KeyValue(key=key, value=value) for key, value in values.items()]
    return status
