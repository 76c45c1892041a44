"""Child processes that never outlive their parent, and the stop signals of a replay: a replay stopped by SIGINT,
SIGTERM or SIGHUP closes its bag; the live replay's processes (its own, the node) stop in order with it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from typing import Any, Sequence

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _prctl() -> Any:
    """libc's prctl (Linux), or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def child_process_options(*, default_sigint: bool = False) -> dict[str, Any]:
    """``subprocess.Popen`` options for a child that must never outlive this process: its own session (a Ctrl-C
    at the terminal reaches this process only, which stops the child in order), and, on Linux, SIGTERM to the
    child when this process dies, even by SIGKILL (``PR_SET_PDEATHSIG``). ``default_sigint``: SIGINT back to its
    default in the child (a background job inherits it ignored)."""
    prctl, parent = _prctl(), os.getpid()

    def in_child() -> None:  # between fork and exec: only async-signal-safe work
        if default_sigint:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl: nobody would signal
                os.kill(os.getpid(), signal.SIGTERM)

    return {"start_new_session": True, "preexec_fn": in_child}


def run_child(command: Sequence[str]) -> int:
    """Runs ``command`` (``child_process_options``) to its end; SIGINT, SIGTERM and SIGHUP received meanwhile
    are passed on to it (it stops in order: for the live replay, its bag closed and its node stopped).
    Returns its exit status (128 + N when signal N ended it)."""
    child = subprocess.Popen(list(command), **child_process_options())

    def forward(signum: int, frame: Any) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {}
    try:
        for signum in STOP_SIGNALS:
            try:
                previous[signum] = signal.signal(signum, forward)
            except ValueError:  # not the main thread: no handlers, the child dies with this process anyway
                break
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if child.poll() is None:  # an error in this process: the child must not go on alone
            child.kill()
            child.wait()
    return 128 - code if code < 0 else code


class interrupts_raise:
    """Within the block, SIGTERM and SIGHUP raise KeyboardInterrupt as SIGINT does, so that ``finally`` blocks run
    and the output bag is closed; the signal's number is appended to ``received``. No-op outside the main thread."""

    def __init__(self, received: list[int]) -> None:
        self.received = received
        self._previous: dict[int, Any] = {}

    def _raise(self, signum: int, frame: Any) -> None:
        self.received.append(signum)
        raise KeyboardInterrupt

    def __enter__(self) -> "interrupts_raise":
        for signum in STOP_SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._raise)
            except ValueError:
                break
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
