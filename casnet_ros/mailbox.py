"""Newest-frame mailboxes: one slot per camera, shared by the subscription callbacks and the worker.

A camera faster than the model replaces its waiting frame (counted as dropped) instead of queueing it, so
latency stays bounded by about two inference times. The worker takes the newest frame of every camera
that has one, as one batch; the first frame of a batch waits at most ``others_wait`` seconds (from its
arrival) for the cameras that have none yet, so a silent or slow camera never holds the others back.
"""

from __future__ import annotations

import threading
import time
from typing import Any, NamedTuple


class Frame(NamedTuple):
    msg: Any  # sensor_msgs/Image or sensor_msgs/CompressedImage
    compressed: bool
    received_ns: int  # the node's clock when the subscription callback got it


class LatestFrameMailboxes:
    """One newest-item slot per key (camera name); ``put`` replaces what has not been taken yet."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = tuple(keys)
        self._condition = threading.Condition()
        self._items: dict[str, tuple[float, Any]] = {}  # key -> (monotonic arrival, item)
        self._closed = False
        self.dropped = {key: 0 for key in self.keys}

    def put(self, key: str, item: Any) -> None:
        with self._condition:
            if key in self._items:
                self.dropped[key] += 1
            self._items[key] = (time.monotonic(), item)
            self._condition.notify()

    def take(self, timeout: float, others_wait: float = 0.0) -> dict[str, Any]:
        """The newest item of each key that has one, in key order: {} after ``timeout`` seconds without any
        or once closed. Once one item is there, waits until every key has one or ``others_wait`` seconds
        after the oldest waiting item arrived."""
        with self._condition:
            if not self._condition.wait_for(lambda: self._items or self._closed, timeout) or self._closed:
                return {}
            first_arrival = min(arrival for arrival, _ in self._items.values())
            self._condition.wait_for(lambda: len(self._items) == len(self.keys) or self._closed,
                                     max(0.0, first_arrival + others_wait - time.monotonic()))
            items, self._items = self._items, {}
            return {key: items[key][1] for key in self.keys if key in items}

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
