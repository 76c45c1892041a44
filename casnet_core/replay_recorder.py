"""What a replay writes, whichever way the frames were predicted: ``ReplayRecorder`` (the output bag, metrics.json,
mosaic.png, the frames and evaluation folders; see ``casnet_core.replay``), the node's output topics and
messages, and the printed summary. Used by the in-process replay (``casnet_core.replay``) and the live one
(``casnet_ros.live_replay``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import cv2
import numpy as np
from tqdm import tqdm

from casnet_core import autoware, bags, messages
from casnet_core.errors import one_line
from casnet_core.evaluation import (CityscapesResultWriter, EvalPrediction, run_official_evaluators,
                                    segment_label_ids, write_metrics)
from casnet_core.evaluation.classes import EVAL_LABEL_IDS, THING_LABEL_IDS
from casnet_core.evaluation.stq import STQ_KEYS, SegmentationTrackingQuality
from casnet_core.predictor import Instance, Prediction
from casnet_core.visualize import colorize

OUTPUT_NAMESPACE = "/casnet"
# name -> message type of the node outputs a replay records.
OUTPUT_TYPES: dict[str, str] = {"panoptic": bags.IMAGE_TYPE, "semantic": bags.IMAGE_TYPE,
                                "instances": bags.PANOPTIC_FRAME_TYPE, "detections": bags.DETECTIONS_TYPE,
                                "rois": autoware.ROIS_TYPE, "mask": autoware.IMAGE_TYPE,
                                "instance_mask": autoware.INSTANCE_MASK_TYPE}


def output_topics(camera: str = "") -> dict[str, tuple[str, str]]:
    """name -> (topic, message type) of the node outputs recorded for ``camera``: ``/casnet/<name>`` for the
    single camera (""), ``/<camera>/casnet/<name>`` for a camera of the batched node (its topics)."""
    namespace = f"/{camera}{OUTPUT_NAMESPACE}" if camera else OUTPUT_NAMESPACE
    return {name: (f"{namespace}/{name}", msgtype) for name, msgtype in OUTPUT_TYPES.items()}


OUTPUT_TOPICS = output_topics()

EVAL_SPLIT = "replay"
EVAL_CITY = "drive"
ACCURACY_KEYS = ("PQ", "SQ", "RQ", "PQ_th", "PQ_st", "AP", "AP50", "mIoU")
MOSAIC_FRAMES = 4
MOSAIC_TILE_WIDTH = 512
# Failures listed one by one in metrics.json (all are counted).
_LISTED_FAILURES = 50


def frame_name(index: int) -> str:
    """The Cityscapes-style name ``{city}_{sequence}_{frame}`` of frame ``index`` of the replayed topic."""
    return f"{EVAL_CITY}_000000_{index:06d}"


def output_messages(prediction: Prediction, mode: str, header: Any) -> dict[str, Any]:
    """The node's outputs for one Prediction as rosbags messages, built as ``casnet_ros.conversions`` builds
    them for the node, field for field: name -> message (see OUTPUT_TOPICS)."""
    panoptic = bags.panoptic_image_message(prediction.panoptic, header)
    return {
        "panoptic": panoptic,
        "semantic": bags.array_to_image_message(np.asarray(prediction.semantic, dtype=np.uint8), "mono8", header),
        "instances": messages.panoptic_frame_message(bags.message_type, panoptic, prediction.instances, mode, header),
        "detections": messages.detections_message(bags.message_type, prediction.instances, header),
        "rois": autoware.rois_message(bags.message_type, prediction.instances, header, *prediction.panoptic.shape),
        "mask": autoware.mask_message(bags.message_type, prediction.panoptic, header),
        "instance_mask": autoware.instance_mask_message(bags.message_type, prediction.panoptic, prediction.instances,
                                                        header),
    }


@dataclass
class FrameResult:
    """What became of one frame: status "processed" (prediction and latency set), "failed" (cannot be
    decoded or predicted; ``error``) or "dropped" (sent to the node, never answered). ``serialized``: the
    node's outputs as published (name -> CDR bytes), recorded as they are; None: built from ``prediction``."""

    frame: bags.BagFrame
    status: str
    prediction: Prediction | None = None
    latency_s: float | None = None
    error: str | None = None
    serialized: Mapping[str, bytes] | None = None
    camera: str = ""  # "" for the single camera


class ReplayRecorder:
    """Writes what a replay produces under ``out_dir`` (see the module docstring); ``close`` returns the
    metrics and writes ``metrics.json``.

    Args:
        out_dir: output folder (created; see ``prepare_output``): its ``bag`` must not exist.
        storage: storage of the output bag, "sqlite3" or "mcap".
        mode: "panoptic" or "instance", the predictor's mode.
        total_frames: frames expected (chooses the mosaic frames and sizes the progress bar).
        gt_topic: the bag's ground-truth topic, None without one.
        evaluate: write frames with ground truth and evaluate them at the end.
        progress: show a tqdm progress bar.
        cameras: {camera name: image topic} of a several-camera replay (metrics per camera too; outputs on
            ``output_topics(camera)``); None: the single camera.
    """

    def __init__(self, out_dir: str | os.PathLike, *, storage: str, mode: str, total_frames: int,
                 gt_topic: str | None = None, evaluate: bool = True, progress: bool = True,
                 cameras: Mapping[str, str] | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.mode = mode
        self.bag_path = self.out_dir / "bag"
        self._bag = bags.BagWriter(self.bag_path, storage).__enter__()  # BagError when it exists: never replaced
        self._evaluate = evaluate
        self.gt_topic = gt_topic
        # Frames without usable ground truth, by reason (with a ground-truth topic).
        self.without_ground_truth: dict[str, int] = {}
        self._frames_root = self.out_dir / "frames"
        self._results_writer = None
        # STQ over the frames with ground truth, one sequence per camera; instance mode scores the thing classes.
        self._stq = SegmentationTrackingQuality(THING_LABEL_IDS if mode == "instance" else EVAL_LABEL_IDS)
        self.counts = {"received": 0, "processed": 0, "dropped": 0, "failed": 0, "evaluated": 0}
        self.latencies_s: list[float] = []
        self.failures: list[dict[str, Any]] = []
        self.cameras = dict(cameras or {})
        self._topics = {camera: output_topics(camera) for camera in self.cameras or [""]}
        self.camera_counts = {camera: {key: 0 for key in ("received", "processed", "dropped", "failed")}
                              for camera in self.cameras}
        self.camera_latencies_s: dict[str, list[float]] = {camera: [] for camera in self.cameras}
        last = max(total_frames - 1, 0)
        self._mosaic_targets = sorted({round(last * k / (MOSAIC_FRAMES - 1)) for k in range(MOSAIC_FRAMES)})
        self._mosaic_rows: list[np.ndarray] = []
        self._progress = tqdm(total=total_frames or None, desc="replay", unit="frame", disable=not progress)

    # ---------------------------------------------------------------- per frame
    def add(self, result: FrameResult) -> None:
        frame = result.frame
        # Position in the replay: a frame's index on its topic when there is one camera.
        position = frame.index if not self.cameras else self.counts["received"]
        self.counts["received"] += 1
        self.counts[result.status] += 1
        if self.cameras:
            self.camera_counts[result.camera]["received"] += 1
            self.camera_counts[result.camera][result.status] += 1
        self._progress.update(1)
        camera = f"camera {result.camera} " if result.camera else ""
        problem = self._ground_truth_problem(frame)
        if problem is not None:
            reason = problem.split(":")[0]  # the kind; the details are per frame
            self.without_ground_truth[reason] = self.without_ground_truth.get(reason, 0) + 1
        if result.status != "processed":
            if result.status == "failed":
                if len(self.failures) < _LISTED_FAILURES:
                    failure = {"index": frame.index, "stamp_ns": frame.stamp_ns, "error": result.error}
                    self.failures.append({"camera": result.camera, **failure} if self.cameras else failure)
                self._progress.write(f"{camera}frame {frame.index} (stamp {frame.stamp_ns}) skipped: {result.error}")
            return
        prediction = result.prediction
        assert prediction is not None and result.latency_s is not None
        self.latencies_s.append(result.latency_s)
        if self.cameras:
            self.camera_latencies_s[result.camera].append(result.latency_s)
        self._write_outputs(result)
        if self._evaluate and problem is None and frame.panoptic_gt is not None:
            self._write_evaluation_frame(frame, prediction)
            self._stq.add(frame.panoptic_gt, prediction.panoptic, result.camera)
        if self._mosaic_targets and position >= self._mosaic_targets[0] and frame.image_rgb is not None:
            while self._mosaic_targets and position >= self._mosaic_targets[0]:
                self._mosaic_targets.pop(0)
            self._mosaic_rows.append(_mosaic_row(frame, prediction, camera=result.camera))

    def _write_outputs(self, result: FrameResult) -> None:
        frame = result.frame
        topics = self._topics[result.camera]
        if result.serialized is not None:
            for name, data in result.serialized.items():
                topic, msgtype = topics[name]
                self._bag.add_serialized(topic, msgtype, frame.time_ns, data)
            return
        header = bags.header_message(frame.stamp_ns, frame.frame_id)
        for name, message in output_messages(result.prediction, self.mode, header).items():
            topic, msgtype = topics[name]
            self._bag.add(topic, msgtype, frame.time_ns, message)

    def _write_evaluation_frame(self, frame: bags.BagFrame, prediction: Prediction) -> None:
        if self._results_writer is None:
            for folder in (self._frames_root / "leftImg8bit" / EVAL_SPLIT, self._frames_root / "gtFine" / EVAL_SPLIT):
                (folder / EVAL_CITY).mkdir(parents=True, exist_ok=True)  # in an --out prepare_output made ready
            self._results_writer = CityscapesResultWriter(self.out_dir / "evaluation", EVAL_SPLIT)
        gt = frame.panoptic_gt
        name = frame_name(frame.index)
        image_dir = self._frames_root / "leftImg8bit" / EVAL_SPLIT / EVAL_CITY
        gt_dir = self._frames_root / "gtFine" / EVAL_SPLIT / EVAL_CITY
        for path, pixels in ((image_dir / f"{name}_leftImg8bit.png", np.ascontiguousarray(frame.image_rgb[..., ::-1])),
                             (gt_dir / f"{name}_gtFine_labelIds.png", segment_label_ids(gt).astype(np.uint8)),
                             (gt_dir / f"{name}_gtFine_instanceIds.png", gt.astype(np.uint16))):
            if not cv2.imwrite(str(path), pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
                raise OSError(f"cannot write {path}")
        scores = {instance.id: instance.score for instance in prediction.instances}
        self._results_writer.add(name, EvalPrediction(prediction.panoptic, prediction.semantic, scores))
        self.counts["evaluated"] += 1

    def _ground_truth_problem(self, frame: bags.BagFrame) -> str | None:
        """Why ``frame`` has no usable ground truth (None: it has; or the bag has no ground-truth topic)."""
        if self.gt_topic is None:
            return None
        gt = frame.panoptic_gt
        if gt is None:
            return frame.gt_error or bags.NO_GT_WITH_STAMP
        if frame.image_rgb is None:
            return None  # a failed frame: counted as failed, its ground truth is not in question
        if gt.shape != frame.image_rgb.shape[:2]:
            return f"ground truth does not fit the image: {gt.shape} vs {frame.image_rgb.shape[:2]}"
        if gt.min(initial=0) < 0 or gt.max(initial=0) > np.iinfo(np.uint16).max:
            return "ground-truth ids outside 0..65535: not Cityscapes ids"
        return None

    def ground_truth_summary(self) -> dict[str, Any] | None:
        """``metrics.json``'s ``ground_truth``: the topic, frames with and without usable ground truth, and why."""
        if self.gt_topic is None:
            return None
        without = sum(self.without_ground_truth.values())
        return {"topic": self.gt_topic, "frames_with": self.counts["received"] - without, "frames_without": without,
                "why": dict(sorted(self.without_ground_truth.items(), key=lambda item: -item[1]))}

    # ---------------------------------------------------------------- the end
    def close(self, wall_s: float, info: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Closes the bag, evaluates, writes the mosaic and ``metrics.json``; returns the metrics."""
        self._progress.close()
        self._bag.close()
        metrics: dict[str, Any] = {**(info or {}), "frames": dict(self.counts)}
        metrics["latency_ms"] = latency_summary(self.latencies_s)
        metrics["throughput_fps"] = self.counts["processed"] / wall_s if wall_s > 0 else None
        metrics["wall_s"] = wall_s
        metrics["accuracy"] = self._accuracy()
        metrics["tracking_quality"] = self._tracking_quality()
        metrics["ground_truth"] = self.ground_truth_summary()
        metrics["failures"] = self.failures
        if self.cameras:
            metrics["cameras"] = {
                camera: {"image_topic": topic, "frames": dict(self.camera_counts[camera]),
                         "latency_ms": latency_summary(self.camera_latencies_s[camera]),
                         "throughput_fps": self.camera_counts[camera]["processed"] / wall_s if wall_s > 0 else None}
                for camera, topic in self.cameras.items()}
        outputs = {"bag": str(self.bag_path)}
        if self._mosaic_rows:
            mosaic_path = self.out_dir / "mosaic.png"
            if not cv2.imwrite(str(mosaic_path), np.vstack(self._mosaic_rows)[..., ::-1]):
                raise OSError(f"cannot write {mosaic_path}")
            outputs["mosaic"] = str(mosaic_path)
        if self._results_writer is not None:
            outputs["frames"] = str(self._frames_root)
            outputs["evaluation"] = str(self.out_dir / "evaluation")
        outputs["metrics"] = str(self.out_dir / "metrics.json")
        metrics["outputs"] = outputs
        write_metrics(metrics, self.out_dir / "metrics.json")
        return metrics

    def abort(self) -> None:
        """Closes the output bag (readable, with what was recorded) without evaluating: after an error or Ctrl-C."""
        self._progress.close()
        self._bag.close()

    def _tracking_quality(self) -> dict[str, Any] | None:
        """``metrics.json``'s ``tracking_quality``: STQ, AQ, SQ (``casnet_core.evaluation.stq``), ground-truth tracks
        and frames over the frames with ground truth, all cameras together, and per camera under ``cameras``."""
        if self._results_writer is None:
            return None
        result = self._stq.result()
        sequences = result.pop("sequences")
        if self.cameras:
            result["cameras"] = sequences
        return result

    def _accuracy(self) -> dict[str, Any] | None:
        if self._results_writer is None:
            return None
        self._results_writer.close()
        try:
            return run_official_evaluators(self._frames_root, EVAL_SPLIT, self._results_writer, mode=self.mode)
        except (RuntimeError, ValueError, FileNotFoundError) as error:
            # e.g. the panoptic evaluator needs a thing and a stuff segment: report, keep the rest
            return {"error": one_line(error)}


def latency_summary(latencies_s: Iterable[float]) -> dict[str, float | None]:
    """p50, p90, p99, max and mean of latencies, in milliseconds (None without any)."""
    values = np.asarray(list(latencies_s), dtype=np.float64) * 1e3
    if values.size == 0:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(values.max()),
            "mean": float(values.mean())}


def _mosaic_row(frame: bags.BagFrame, prediction: Prediction, *, camera: str = "") -> np.ndarray:
    """input | panoptic colouring | overlay of one frame, each tile MOSAIC_TILE_WIDTH wide, captioned."""
    image = np.ascontiguousarray(frame.image_rgb)
    height, width = image.shape[:2]
    tile_height = max(1, round(height * MOSAIC_TILE_WIDTH / width))
    tiles = []
    for picture, interpolation in ((image, cv2.INTER_AREA), (colorize(prediction.panoptic), cv2.INTER_NEAREST),
                                   (colorize(prediction, image), cv2.INTER_AREA)):
        tiles.append(cv2.resize(picture, (MOSAIC_TILE_WIDTH, tile_height), interpolation=interpolation))
    caption = f"{camera + ' ' if camera else ''}frame {frame.index}  {len(prediction.instances)} instances"
    for color, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(tiles[0], caption, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, thickness, cv2.LINE_AA)
    return np.hstack(tiles)


def prediction_from_outputs(panoptic: np.ndarray, semantic: np.ndarray, instances: Iterable[Any]) -> Prediction:
    """A Prediction from the node's outputs: the 32SC1 panoptic and mono8 semantic maps and the
    casnet_msgs/PanopticInstance list (any object with its fields)."""
    return Prediction(
        panoptic=np.asarray(panoptic, dtype=np.int32), semantic=np.asarray(semantic, dtype=np.uint8),
        instances=[Instance(id=int(i.id), label_id=int(i.class_id), class_name=str(i.class_name), score=float(i.score),
                            box=(float(i.x_min), float(i.y_min), float(i.x_max), float(i.y_max)), area=int(i.area),
                            centroid=(float(i.centroid_x), float(i.centroid_y)))
                   for i in instances])


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def format_summary(metrics: Mapping[str, Any]) -> str:
    """The few lines printed at the end of a replay."""

    def ms(value: Any) -> str:
        return "-" if value is None else f"{value:.0f}"

    frames, latency = metrics["frames"], metrics["latency_ms"]
    lines = [f"replay ({metrics.get('replay', '')}): {frames['received']} frames received, "
             f"{frames['processed']} processed, {frames['dropped']} dropped, {frames['failed']} failed",
             f"latency ms: p50 {ms(latency['p50'])}  p90 {ms(latency['p90'])}  p99 {ms(latency['p99'])}  "
             f"max {ms(latency['max'])};  throughput {metrics['throughput_fps'] or 0:.2f} frames/s"]
    accuracy = metrics.get("accuracy")
    ground_truth = metrics.get("ground_truth")
    failures = metrics.get("failures") or []
    if frames["received"] and not frames["processed"]:
        first = f"; the first: {failures[0]['error']}" if failures else ""
        lines.append(f"accuracy: not computed: none of the {frames['received']} frames was processed "
                     f"({frames['failed']} failed, {frames['dropped']} dropped{first})")
    elif accuracy and "error" in accuracy:
        lines.append(f"accuracy: not computed: {accuracy['error']}")
    elif accuracy:
        def pct(key: str) -> str:
            value = accuracy.get(key)
            return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"

        lines.append(f"accuracy on {frames['evaluated']} frames: " + "  ".join(f"{k} {pct(k)}" for k in ACCURACY_KEYS))
    elif not ground_truth:
        lines.append("accuracy: no ground-truth topic in the bag")
    else:
        lines.append("accuracy: not computed: no processed frame has usable ground truth")
    quality = metrics.get("tracking_quality")
    if quality:
        tracking = f" (tracking {metrics['tracking']})" if metrics.get("tracking") else ""
        lines.append(f"tracking quality{tracking} on {quality['frames']} frames, {quality['tracks']} ground-truth "
                     "tracks: " + "  ".join(f"{k} {_percent(quality[k])}" for k in STQ_KEYS))
        for camera, figures in (quality.get("cameras") or {}).items():
            lines.append(f"  camera {camera}: " + "  ".join(f"{k} {_percent(figures[k])}" for k in STQ_KEYS))
    if ground_truth and ground_truth["frames_without"]:
        lines.append(f"frames without usable ground truth: {ground_truth['frames_without']} of {frames['received']} ("
                     + "; ".join(f"{count} {why}" for why, count in ground_truth["why"].items()) + ")")
    for camera, figures in (metrics.get("cameras") or {}).items():
        counts, latency = figures["frames"], figures["latency_ms"]
        lines.append(f"  camera {camera} ({figures['image_topic']}): {counts['received']} received, "
                     f"{counts['processed']} processed, {counts['dropped']} dropped, {counts['failed']} failed; "
                     f"latency ms p50 {ms(latency['p50'])} p99 {ms(latency['p99'])}; "
                     f"{figures['throughput_fps'] or 0:.2f} frames/s")
    lines.append("outputs: " + ", ".join(f"{k} {v}" for k, v in metrics.get("outputs", {}).items()))
    return "\n".join(lines)
