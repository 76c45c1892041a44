"""What it takes to call cityscapesScripts 2.3.0 (its last release) in-process: NumPy 2 shims, its
printed output kept in a log, its ``sys.exit`` turned into an exception, a working directory that
is restored afterwards (Python 3.10 has no ``contextlib.chdir``), and worker processes that do not fork
the caller."""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def redirect_output(log_file: Path | None) -> Iterator[None]:
    """The official scripts print progress and tables; keep them in a log (or drop them)."""
    sys.stdout.flush()
    stream = open(log_file, "a") if log_file is not None else io.StringIO()
    try:
        with contextlib.redirect_stdout(stream):
            yield
            sys.stdout.flush()
    finally:
        stream.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.__dict__  # what the official writeDict2JSON does for everything it cannot encode


def _write_dict_to_json(data: Any, file_name: str) -> None:
    """``csHelpers.writeDict2JSON`` (same layout) that also encodes NumPy scalars."""
    with open(file_name, "w") as f:
        f.write(json.dumps(data, default=_json_default, sort_keys=True, indent=4))


@contextlib.contextmanager
def numpy2_compat(module: Any) -> Iterator[None]:
    """cityscapesScripts 2.3.0 (its last release) predates NumPy 2; for the duration of one
    evaluator call, two gaps are bridged, nothing else changes:

    * ``np.in1d``, removed in NumPy 2.4: provided as its documented replacement, ``np.isin`` on
      the flattened input (the evaluators reshape the result themselves);
    * ``writeDict2JSON`` (imported into ``module``) fails on the NumPy integers that
      ``np.count_nonzero`` returns under NumPy 2: replaced in ``module`` by the same writer with
      NumPy scalars encoded as numbers.
    """
    added_in1d = not hasattr(np, "in1d")
    if added_in1d:
        def in1d(ar1, ar2, assume_unique=False, invert=False):
            return np.isin(np.ravel(ar1), ar2, assume_unique=assume_unique, invert=invert)

        np.in1d = in1d
    original_writer = getattr(module, "writeDict2JSON", None)
    if original_writer is not None:
        module.writeDict2JSON = _write_dict_to_json
    try:
        yield
    finally:
        if original_writer is not None:
            module.writeDict2JSON = original_writer
        if added_in1d:
            del np.in1d


@contextlib.contextmanager
def forkserver_workers(module: Any) -> Iterator[None]:
    """The panoptic evaluator runs its images in a ``multiprocessing.Pool`` of the default start method: on Linux a
    fork of the calling process, whose PyTorch, onnxruntime or DDS threads may hold locks the children then wait on,
    and whose stop-signal handlers (``casnet replay``) they inherit. Seen: a replay's evaluation waiting forever on
    a pool worker that the pool's SIGTERM did not end. For the duration of one call, ``module``'s
    ``multiprocessing`` is the forkserver context (workers forked from a fresh server process, default signal
    handlers), as ``casnet replay --live`` does for its whole process. Paths given to the evaluator must be
    absolute: the workers do not share the caller's working directory."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        yield
        return
    original = module.multiprocessing
    module.multiprocessing = multiprocessing.get_context("forkserver")
    try:
        yield
    finally:
        module.multiprocessing = original


@contextlib.contextmanager
def official_errors(evaluator: str) -> Iterator[None]:
    """The scripts report errors with ``printError`` -> ``sys.exit(-1)``: turn that into an exception."""
    try:
        yield
    except SystemExit as error:
        raise RuntimeError(f"the official {evaluator} evaluator stopped (exit {error.code}); "
                           "its message is at the end of OUT/evaluators/evaluators.log") from error


@contextlib.contextmanager
def working_directory(path: str | os.PathLike) -> Iterator[None]:
    """``contextlib.chdir`` of Python 3.11: runs the block in ``path``, then returns to where it was."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)
