"""The threads of one activation of casnet_node: inference over the cameras' newest frames, and the overlay.

``Activation`` owns its stop event, mailboxes and threads; nothing is shared with another activation,
so a worker of an earlier activation still finishing a batch ends after it, whatever later activations
do. A frame walks: ``put`` (subscription callback) -> its camera's mailbox slot -> ``_work`` takes the
newest frame of every camera (the first waits at most ``others_wait`` for the others) -> decode ->
``Predictor.predict_batch`` (frames of one size as one batch) -> ``cameras.build_outputs`` -> the
camera's publishers; the overlay thread draws the newest finished frame of each camera off that path.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, NamedTuple

from casnet_core.predictor import Prediction, Predictor, batch_groups
from casnet_core.tracking import Tracker
from casnet_core.visualize import colorize
from casnet_ros import conversions
from casnet_ros.cameras import Camera, build_outputs
from casnet_ros.mailbox import Frame, LatestFrameMailboxes
from casnet_ros.parameters import LiveSettings

_ERROR_LOG_PERIOD_S = 5.0


class _Decoded(NamedTuple):
    """A frame ready for the network."""

    camera: Camera
    frame: Frame
    rgb: Any
    wanted: list[str]
    start: float  # perf_counter when its processing began
    started_ns: int  # the node's clock then
    decoded: float  # perf_counter after decoding


class Activation:
    """The inference thread ("casnet-worker") and the overlay thread ("casnet-overlay") of one activation.

    Args:
        predictor: the node's Predictor; the inference thread is its only caller.
        cameras: the node's cameras.
        live_settings: returns the live settings the next batch runs with (read once per batch).
        clock_ns: the node's clock, in nanoseconds (stamps and latencies are on the node's clock).
        logger: the node's logger.
        others_wait: seconds the first frame of a batch waits for the other cameras' frames.
        make_tracker: makes a camera's instance tracker (``casnet_ros.tracking_parameters``); None: no tracking.
            One per camera, made at its first frame, so each activation starts its tracks afresh.
    """

    def __init__(self, predictor: Predictor, cameras: tuple[Camera, ...], *, live_settings: Callable[[], LiveSettings],
                 clock_ns: Callable[[], int], logger: Any, others_wait: float = 0.0,
                 make_tracker: Callable[[], Tracker] | None = None) -> None:
        self.predictor = predictor
        self.cameras = {camera.name: camera for camera in cameras}
        self.live_settings, self.clock_ns, self.logger = live_settings, clock_ns, logger
        self.others_wait = others_wait
        self.make_tracker = make_tracker
        self.trackers: dict[str, Tracker] = {}  # per camera name
        self.stop = threading.Event()
        self.frames = LatestFrameMailboxes(tuple(self.cameras))  # Frame per camera
        self.overlays = LatestFrameMailboxes(tuple(self.cameras))  # (rgb, prediction, header) per camera
        self.threads = (threading.Thread(target=self._work, name="casnet-worker", daemon=True),
                        threading.Thread(target=self._draw_overlays, name="casnet-overlay", daemon=True))
        self.started_at: float | None = None  # time.monotonic() at start (the statistics' clock)

    def start(self) -> None:
        self.started_at = time.monotonic()
        for thread in self.threads:
            thread.start()

    def put(self, camera: Camera, msg: Any, compressed: bool) -> None:
        self.frames.put(camera.name, Frame(msg, compressed, self.clock_ns()))

    def close(self, join_timeout: float) -> None:
        """Stops both threads; a batch still running after ``join_timeout`` seconds finishes on its own."""
        self.stop.set()
        self.frames.close()
        self.overlays.close()
        for thread in self.threads:
            if thread.ident is not None:  # started (a failed activate may close it before)
                thread.join(timeout=join_timeout)

    # ---------------------------------------------------------------- inference
    def _work(self) -> None:
        while not self.stop.is_set():
            taken = self.frames.take(timeout=0.5, others_wait=self.others_wait)
            if not taken:
                continue
            batch = [(self.cameras[name], frame) for name, frame in taken.items()]
            try:
                self._process(batch)
            except Exception as error:  # the node stays alive; the error is reported and counted
                for camera, _ in batch:
                    self._failed(camera, "batch", error)

    def _failed(self, camera: Camera, what: str, error: Exception) -> None:
        camera.statistics.count("failed")
        self.logger.error(f"{what} failed: {type(error).__name__}: {error}", throttle_duration_sec=_ERROR_LOG_PERIOD_S)

    def _process(self, batch: list[tuple[Camera, Frame]]) -> None:
        settings = self.live_settings()  # one snapshot of the live settings for the whole batch
        ready: list[_Decoded] = []
        for camera, frame in batch:
            wanted = camera.wanted(settings.enabled_outputs)
            if not wanted:
                camera.statistics.count("idle")
                continue
            start, started_ns = time.perf_counter(), self.clock_ns()
            try:
                rgb = (conversions.compressed_to_rgb(frame.msg) if frame.compressed
                       else conversions.image_to_rgb(frame.msg))
            except conversions.ImageConversionError as error:
                camera.statistics.count("rejected")
                self.logger.error(f"frame skipped: {error}", throttle_duration_sec=_ERROR_LOG_PERIOD_S)
                continue
            ready.append(_Decoded(camera, frame, rgb, wanted, start, started_ns, time.perf_counter()))
        if not ready:
            return
        settings.thresholds.apply_to(self.predictor)  # this thread is the only caller of the predictor
        predict_start = time.perf_counter()
        predictions = self._predict(ready)
        predict_seconds = time.perf_counter() - predict_start
        for item, prediction in zip(ready, predictions):
            if prediction is None:
                continue
            try:
                self._publish(item, prediction, predict_seconds)
            except Exception as error:
                self._failed(item.camera, "frame", error)

    def _predict(self, ready: list[_Decoded]) -> list[Prediction | None]:
        """The predictions of a batch; when the batch fails, each frame alone (None where that fails too), so
        that one bad frame fails only itself."""
        statistics = ready[0].camera.statistics  # network batches are counted by the node's totals
        try:
            predictions = self.predictor.predict_batch([item.rgb for item in ready])
        except Exception as error:
            if len(ready) == 1:
                self._failed(ready[0].camera, "frame", error)
                return [None]
        else:
            for group in batch_groups([item.rgb.shape[:2] for item in ready]):  # each size is a batch of its own
                statistics.on_network_batch(len(group))
            return list(predictions)
        alone: list[Prediction | None] = []
        for item in ready:
            try:
                alone.append(self.predictor.predict(item.rgb))
                statistics.on_network_batch(1)
            except Exception as error:
                self._failed(item.camera, "frame", error)
                alone.append(None)
        return alone

    def _publish(self, item: _Decoded, prediction: Prediction, predict_seconds: float) -> None:
        header = item.frame.msg.header
        stamp_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        if self.make_tracker is not None:
            tracker = self.trackers.get(item.camera.name)
            if tracker is None:
                tracker = self.trackers[item.camera.name] = self.make_tracker()
            prediction = tracker.track(prediction, stamp_ns=stamp_ns, image=item.rgb)
        build_start = time.perf_counter()
        messages = build_outputs(prediction, header, item.wanted, self.predictor.mode)
        built = time.perf_counter()
        item.camera.publish(messages)
        published = time.perf_counter()
        if "overlay" in item.wanted:
            self.overlays.put(item.camera.name, (item.rgb, prediction, header))

        latency = (self.clock_ns() - stamp_ns) * 1e-9
        stages = {"receive": (item.frame.received_ns - stamp_ns) * 1e-9,
                  "wait": (item.started_ns - item.frame.received_ns) * 1e-9, "decode": item.decoded - item.start,
                  **dict(prediction.timings), "predict": predict_seconds, "build": built - build_start,
                  "publish": published - built, "total": published - item.start}
        item.camera.statistics.on_processed(latency, stages, int(prediction.nonfinite))

    # ---------------------------------------------------------------- overlay
    def _draw_overlays(self) -> None:
        while not self.stop.is_set():
            for name, (rgb, prediction, header) in self.overlays.take(timeout=0.5).items():
                camera = self.cameras[name]
                publisher = camera.publishers.get("overlay")
                if publisher is None:
                    continue
                try:
                    publisher.publish(conversions.array_to_image(colorize(prediction, rgb), "rgb8", header))
                except Exception as error:
                    self._failed(camera, "overlay", error)
