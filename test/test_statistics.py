"""casnet_ros.statistics: the /diagnostics status of a camera tells what holds now (issue 31, item 5): the level
judges a sliding window, a camera without input is reported, and batch_size_mean is the mean of the network
batches actually run. A hand-driven clock makes the windows exact; the statuses are real diagnostic_msgs."""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticStatus

from casnet_ros.statistics import Statistics, diagnostic_status


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def status(statistics: Statistics, **options) -> DiagnosticStatus:
    options = {"state": "active", "device": "cpu", "mode": "panoptic", "dropped": 0, "window_s": 5.0,
               "input_timeout_s": 2.0, "active_since": 100.0, **options}
    return diagnostic_status("/casnet", statistics, **options)


def values(message: DiagnosticStatus) -> dict[str, str]:
    return {pair.key: pair.value for pair in message.values}


def test_a_rejected_frame_warns_for_the_window_only():
    clock = Clock()
    statistics = Statistics(clock=clock)
    statistics.on_received()
    statistics.count("rejected")
    first = status(statistics)
    assert first.level == DiagnosticStatus.WARN and "rejected or failed" in first.message
    clock.now += 4.0  # still within the 5 s window (input keeps coming)
    statistics.on_received()
    assert status(statistics).level == DiagnosticStatus.WARN
    clock.now += 1.5  # the rejection is 5.5 s old: good frames since then
    statistics.on_received()
    statistics.on_processed(0.01, {}, 0)
    later = status(statistics)
    assert later.level == DiagnosticStatus.OK, later.message
    assert values(later)["frames_rejected"] == "1"  # the total is still reported


def test_failed_frames_and_nonfinite_outputs_warn_within_the_window():
    clock = Clock()
    statistics = Statistics(clock=clock)
    statistics.on_received()
    statistics.on_processed(0.01, {}, 3)  # NaN / inf in the outputs
    assert status(statistics).level == DiagnosticStatus.WARN
    clock.now += 1.0
    statistics.on_received()
    statistics.count("failed")
    clock.now += 4.5  # the nonfinite frame left the window, the failed one not yet
    statistics.on_received()
    assert status(statistics).message.startswith("1 frame(s)")
    clock.now += 1.0
    statistics.on_received()
    assert status(statistics).level == DiagnosticStatus.OK


def test_a_camera_whose_input_stopped_warns():
    clock = Clock()
    statistics = Statistics(clock=clock)
    clock.now = 101.0  # active since 100, nothing came yet: 1 s of silence is within input_timeout
    assert status(statistics).level == DiagnosticStatus.OK
    clock.now = 103.0
    silent = status(statistics)
    assert silent.level == DiagnosticStatus.WARN and silent.message.startswith("no input for 3.0 s")
    statistics.on_received()
    assert status(statistics).level == DiagnosticStatus.OK
    clock.now += 2.5
    stopped = status(statistics)
    assert stopped.level == DiagnosticStatus.WARN and values(stopped)["seconds_since_input"] == "2.5"
    # input_timeout 0 never reports silence; an inactive node reports "not active".
    assert status(statistics, input_timeout_s=0.0).level == DiagnosticStatus.OK
    inactive = status(statistics, state="inactive", active_since=None)
    assert inactive.message == "not active" and "seconds_since_input" not in values(inactive)


def test_batch_size_mean_is_the_mean_of_the_network_batches():
    # A step of four frames, three of one size and one of another, runs as two network batches (3 and 1); two
    # single-frame steps follow: batches 3, 1, 1, 1, mean 1.5 (not the mean over frames of their step's size).
    clock = Clock()
    totals = Statistics(clock=clock)
    cameras = [Statistics(totals, clock=clock) for _ in range(4)]
    for size in (3, 1, 1, 1):
        cameras[0].on_network_batch(size)  # counted by the node's totals, whichever camera reports it
    for camera in cameras:
        camera.on_received()
        camera.on_processed(0.01, {}, 0)
    found = values(status(totals, batched=True))
    assert found["batch_size_mean"] == "1.50"
    assert list(found)[-1] == "batch_size_mean"  # kept last
    assert "batch_size_mean" not in values(status(cameras[0]))
    assert "batch_size_mean" not in values(status(totals, batched=True))  # a new window: no batch yet
