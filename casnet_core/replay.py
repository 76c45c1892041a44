"""Replay of a recorded drive through CASNet: accuracy, latency and pictures from a rosbag2.

``casnet replay --bag BAG --out DIR [--checkpoint CKPT] [--image-topic [NAME=]T ...] [--gt-topic T]
[--live [--rate R | --max-rate]] [--frames N]``

The model is ``--checkpoint``, else the packaged default model. By default the bag is replayed in this
process through the ``Predictor`` (exactly what the node runs). With ``--live`` it is played over DDS
to a real ``casnet_node`` process (``casnet_ros.live_replay``), at the recorded rate (``--rate R``
scales it as ``ros2 bag play --rate`` does; ``--max-rate`` sends each frame as soon as the node has
answered the previous one), so drops and latency are those a vehicle would see. Both modes record
through ``ReplayRecorder`` and write to DIR:

* ``bag/``: a rosbag2 (the input's storage unless ``--storage``) with the node's outputs
  ``/casnet/panoptic`` (Image 16UC1; 32SC1 for ids above 65535), ``/casnet/semantic`` (Image mono8),
  ``/casnet/instances`` (casnet_msgs/PanopticFrame) and ``/casnet/detections``
  (vision_msgs/Detection2DArray), each with the header of its input frame and written at the input's
  receive time. Live: the messages as the node published them; in-process: built from the Prediction
  the way the node builds them.
* ``metrics.json``: frames received / processed / dropped / failed, latency percentiles (p50, p90, p99,
  max; in-process the decode + ``Predictor.predict`` time, live the time from publishing a frame to
  receiving all four outputs), throughput; with ground truth, ``accuracy``: PQ SQ RQ PQ_th PQ_st AP AP50
  mIoU (and the per-class tables) of the processed frames that have ground truth.
* ``mosaic.png``: a few frames across the drive, each a row: input | panoptic colouring | overlay.
* with ground truth, ``frames/``: those frames and their ground truth in the Cityscapes layout (split
  ``replay``, ``leftImg8bit`` + ``gtFine`` labelIds and instanceIds), and ``evaluation/``: the predictions
  in the official formats and the logs of the official evaluators. The accuracy is that of
  ``casnet eval --data DIR/frames --split replay``: the same official evaluators on the same files.

Several cameras: ``--image-topic`` repeated (``TOPIC`` or ``NAME=TOPIC``, the camera named by the topic's first
segment by default) replays each camera topic, in recorded order; live, to one batched ``casnet_node`` serving
all of them (``cameras: [NAME, ...]``, ``NAME.image_topic``), in-process through the one Predictor. Each camera's
outputs are recorded under the batched node's topics, ``/NAME/casnet/{panoptic,semantic,instances,detections}``,
``--frames`` counts per camera, and ``metrics.json`` has ``cameras``: per camera its topic, frames, latency and
throughput, beside the totals. Such a replay is not evaluated (a ground-truth stamp names one frame of one camera).

Ground truth is a ``sensor_msgs/Image`` topic (32SC1 Cityscapes panoptic ids, ``PANOPTIC_GT_TOPIC`` by
default) whose header stamps equal the camera's. A frame that cannot be decoded is counted as failed,
reported and skipped. ``metrics.json`` (``ground_truth``) and the summary say how many frames had no usable
ground truth, and why.

The inputs are never written: an ``--out`` whose outputs would be, contain or lie inside the bag or the
checkpoint is refused, and an ``--out`` that already holds a replay's outputs is refused unless ``--overwrite``
is given (then those outputs, and only those, are replaced). Both checks come before anything is written or
started. A replay stopped by SIGINT or SIGTERM closes the output bag with every frame processed so far.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from casnet_core import bags, default_model_path, messages
from casnet_core.checkpoint import CheckpointError
from casnet_core.errors import one_line
from casnet_core.evaluation import (CityscapesResultWriter, EvalPrediction, run_official_evaluators,
                                    segment_label_ids, write_metrics)
from casnet_core.export import model_mode
from casnet_core.formats import check_outputs_spare_inputs
from casnet_core.predictor import (Instance, Prediction, Predictor, add_threshold_arguments, resolve_device,
                                   thresholds_from_args)
from casnet_core.visualize import colorize

OUTPUT_NAMESPACE = "/casnet"
# name -> message type of the node outputs a replay records.
OUTPUT_TYPES: dict[str, str] = {"panoptic": bags.IMAGE_TYPE, "semantic": bags.IMAGE_TYPE,
                                "instances": bags.PANOPTIC_FRAME_TYPE, "detections": bags.DETECTIONS_TYPE}
# A camera name becomes a namespace token and a node parameter prefix (casnet_ros.parameters checks the same).
CAMERA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def output_topics(camera: str = "") -> dict[str, tuple[str, str]]:
    """name -> (topic, message type) of the node outputs recorded for ``camera``: ``/casnet/<name>`` for the
    single camera (""), ``/<camera>/casnet/<name>`` for a camera of the batched node (its topics)."""
    namespace = f"/{camera}{OUTPUT_NAMESPACE}" if camera else OUTPUT_NAMESPACE
    return {name: (f"{namespace}/{name}", msgtype) for name, msgtype in OUTPUT_TYPES.items()}


OUTPUT_TOPICS = output_topics()


def camera_topics(values: Sequence[str] | None) -> dict[str, str]:
    """``--image-topic`` values -> {camera name: topic}. {} for none or one plain topic: the single camera
    (today's node on ``~/image``). Else one camera per value, ``NAME=TOPIC``, or ``TOPIC`` named by its first
    segment (``/front/image_raw`` -> ``front``). ValueError (one line) for a bad or repeated name or topic."""
    values = list(values or [])
    if len(values) <= 1 and not any("=" in value for value in values):
        return {}
    cameras: dict[str, str] = {}
    for value in values:
        name, _, topic = value.rpartition("=") if "=" in value else (value.strip("/").split("/")[0], "", value)
        if not CAMERA_NAME.match(name):
            raise ValueError(f"--image-topic {value}: camera name {name!r} must be letters, digits and _, starting "
                             "with a letter (name it: --image-topic NAME=TOPIC)")
        if name in cameras:
            raise ValueError(f"--image-topic {value}: camera {name} given twice (name them: --image-topic NAME=TOPIC)")
        if topic in cameras.values():
            raise ValueError(f"--image-topic {value}: topic {topic} given twice")
        cameras[name] = topic
    return cameras


def single_image_topic(values: Sequence[str] | None) -> str | None:
    """The camera topic of a one-camera replay (``camera_topics`` gave {}): the one value, or None (found)."""
    return values[0] if values else None
EVAL_SPLIT = "replay"
EVAL_CITY = "drive"
ACCURACY_KEYS = ("PQ", "SQ", "RQ", "PQ_th", "PQ_st", "AP", "AP50", "mIoU")
MOSAIC_FRAMES = 4
MOSAIC_TILE_WIDTH = 512
# Failures listed one by one in metrics.json (all are counted).
_LISTED_FAILURES = 50
# What a replay writes under --out: never written over without --overwrite.
REPLAY_OUTPUTS = ("bag", "frames", "evaluation", "metrics.json", "mosaic.png", "casnet_node.log")


def check_output(out_dir: str | os.PathLike, inputs: Sequence[tuple[str, str | os.PathLike | None]], *,
                 overwrite: bool = False) -> list[Path]:
    """Raises ValueError (one line) unless a replay may write ``out_dir``: a folder (or nothing yet) whose outputs
    (REPLAY_OUTPUTS) neither overlap an input (``inputs``: (option, path or None)) nor exist already, unless
    ``overwrite``. Returns the outputs that exist (replaced with ``overwrite``). Touches nothing."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} exists and is not a folder")
    for parent in out_dir.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"--out {out_dir}: {parent} is not a folder")
    check_outputs_spare_inputs([("--out", out_dir / name) for name in REPLAY_OUTPUTS], inputs, command="replay")
    held = [out_dir / name for name in REPLAY_OUTPUTS if (out_dir / name).exists() or (out_dir / name).is_symlink()]
    if held and not overwrite:
        raise ValueError(f"--out {out_dir} already holds a replay ({', '.join(p.name for p in held)}): add "
                         "--overwrite to replace it, or choose another --out")
    return held


def prepare_output(out_dir: str | os.PathLike, inputs: Sequence[tuple[str, str | os.PathLike | None]], *,
                   overwrite: bool = False) -> Path:
    """``check_output``, then removes the outputs of an earlier replay (``overwrite``) and creates ``out_dir``."""
    out_dir = Path(out_dir)
    for path in check_output(out_dir, inputs, overwrite=overwrite):
        if path.name == "bag" and path.is_dir() and not path.is_symlink():
            bags.remove_bag(path)  # refuses a folder that is not a bag
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


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


# ----------------------------------------------------------------------------------------------
# In-process replay
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayInputs:
    """What a replay reads from a bag: ``cameras`` {name: topic} for several cameras ({} for the single one,
    ``image_topic``), each camera topic's message type, the ground-truth topic (single camera only) and the
    number of frames to replay (all cameras together)."""

    cameras: dict[str, str]
    image_topic: str | None
    image_types: dict[str, str]
    gt_topic: str | None
    total_frames: int

    def info(self) -> dict[str, Any]:
        """The inputs in ``metrics.json``."""
        if self.cameras:
            return {"image_topics": list(self.cameras.values()), "gt_topic": None}
        return {"image_topic": self.image_topic, "gt_topic": self.gt_topic}

    def frames(self, bag: str | os.PathLike, max_frames: int | None = None) -> Iterator[tuple[str, bags.BagFrame]]:
        """(camera, frame) in recorded order, at most ``max_frames`` per camera; camera "" for the single one."""
        if not self.cameras:
            for frame in islice(bags.read_frames(bag, self.image_topic, self.gt_topic), max_frames):
                yield "", frame
            return
        name_of = {topic: name for name, topic in self.cameras.items()}
        done: set[str] = set()
        for topic, frame in bags.read_camera_frames(bag, list(self.cameras.values())):
            if max_frames is not None and frame.index >= max_frames:
                done.add(topic)
                if len(done) == len(self.cameras):
                    return
                continue
            yield name_of[topic], frame


def replay_inputs(bag: str | os.PathLike, *, image_topic: str | None = None, gt_topic: str | None = None,
                  cameras: Mapping[str, str] | None = None, max_frames: int | None = None) -> ReplayInputs:
    """The topics a replay of ``bag`` reads (``cameras``: several, see ``camera_topics``; else ``image_topic``,
    found when the bag has one camera). BagError for a bag or topic that cannot be used, ValueError for a
    ground-truth topic with several cameras."""
    if cameras:
        if gt_topic is not None:
            raise ValueError("--gt-topic: a replay of several cameras is not evaluated (give one --image-topic)")
        found = {topic: bags.find_topics(bag, topic) for topic in cameras.values()}
        total = sum(t.frames if max_frames is None else min(t.frames, max_frames) for t in found.values())
        return ReplayInputs(dict(cameras), None, {topic: t.image_type for topic, t in found.items()}, None, total)
    topics = bags.find_topics(bag, image_topic, gt_topic)
    total = topics.frames if max_frames is None else min(topics.frames, max_frames)
    return ReplayInputs({}, topics.image_topic, {topics.image_topic: topics.image_type}, topics.gt_topic, total)


def replay(
    bag: str | os.PathLike,
    out_dir: str | os.PathLike,
    predictor: Any,
    *,
    image_topic: str | None = None,
    gt_topic: str | None = None,
    cameras: Mapping[str, str] | None = None,
    max_frames: int | None = None,
    storage: str | None = None,
    progress: bool = True,
    info: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    checkpoint: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Replays ``bag`` through ``predictor`` (a ``casnet_core.predictor.Predictor``) in this process and
    writes ``out_dir`` (see the module docstring; ``cameras``: {name: topic} of several camera topics, their
    outputs recorded under ``output_topics(name)``, ``max_frames`` then per camera; ``overwrite``: replace an
    earlier replay there; ``checkpoint``: the predictor's file, protected like the bag); returns the metrics.
    Raises bags.BagError for a bag that cannot be used, ValueError for an ``out_dir`` that cannot be written
    (``check_output``)."""
    inputs = replay_inputs(bag, image_topic=image_topic, gt_topic=gt_topic, cameras=cameras, max_frames=max_frames)
    prepare_output(out_dir, [("--bag", bag), ("--checkpoint", checkpoint)], overwrite=overwrite)
    recorder = ReplayRecorder(out_dir, storage=storage or bags.bag_storage(bag), mode=predictor.mode,
                              total_frames=inputs.total_frames, gt_topic=inputs.gt_topic, progress=progress,
                              cameras=inputs.cameras)
    start = time.perf_counter()
    try:
        for camera, frame in inputs.frames(bag, max_frames):
            result = predict_frame(predictor, frame)
            result.camera = camera
            recorder.add(result)
    except BaseException:
        recorder.abort()
        raise
    return recorder.close(time.perf_counter() - start, {"replay": "in-process", "bag": str(bag), **inputs.info(),
                                                        **(info or {})})


def predict_frame(predictor: Any, frame: bags.BagFrame) -> FrameResult:
    """One frame through the Predictor; latency = decode + predict time."""
    if frame.image_rgb is None:
        return FrameResult(frame, "failed", error=frame.error)
    start = time.perf_counter()
    try:
        prediction = predictor.predict(frame.image_rgb)
    except (ValueError, RuntimeError) as error:  # e.g. an image too small for the network
        return FrameResult(frame, "failed", error=f"{type(error).__name__}: {one_line(error)}")
    latency_s = frame.decode_s + time.perf_counter() - start
    return FrameResult(frame, "processed", prediction=prediction, latency_s=latency_s)


# ----------------------------------------------------------------------------------------------
# CLI: casnet replay
# ----------------------------------------------------------------------------------------------


def checkpoint_from_args(args: argparse.Namespace) -> Path:
    """--checkpoint, or the packaged default model."""
    if args.checkpoint:
        return Path(args.checkpoint)
    return default_model_path()


def _main(args: argparse.Namespace) -> int:
    if not args.live and (args.rate is not None or args.max_rate):
        print("casnet replay: error: --rate and --max-rate pace the live replay: add --live", file=sys.stderr)
        return 2
    if args.frames is not None and args.frames < 1:
        print("casnet replay: error: --frames must be at least 1", file=sys.stderr)
        return 2
    if args.rate is not None and not (args.rate > 0 and math.isfinite(args.rate)):
        print("casnet replay: error: --rate must be a positive number", file=sys.stderr)
        return 2
    if args.domain_id is not None and not 0 <= args.domain_id <= 232:
        print("casnet replay: error: --domain-id must be from 0 to 232 (ROS_DOMAIN_ID)", file=sys.stderr)
        return 2
    try:
        # Everything that can be checked is, before anything is written or started.
        device = resolve_device(args.device)
        cameras = camera_topics(args.image_topic)
        replay_inputs(args.bag, image_topic=single_image_topic(args.image_topic), gt_topic=args.gt_topic,
                      cameras=cameras)
        checkpoint = checkpoint_from_args(args)
        mode = model_mode(checkpoint)
        check_output(args.out, [("--bag", args.bag), ("--checkpoint", checkpoint)], overwrite=args.overwrite)
    except (bags.BagError, CheckpointError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"casnet replay: error: {one_line(error)}", file=sys.stderr)
        return 2
    if args.live:
        # The live replay drives a ROS node through rclpy: it runs in casnet_ros, in a process of its own,
        # so that casnet_core never imports ROS.
        return run_child([sys.executable, "-m", "casnet_ros.live_replay", *live_arguments(args)])
    interrupted = []
    try:
        with interrupts_raise(interrupted):
            predictor = Predictor.from_checkpoint(str(checkpoint), device=str(device), **thresholds_from_args(args))
            metrics = replay(args.bag, args.out, predictor, image_topic=single_image_topic(args.image_topic),
                             gt_topic=args.gt_topic, cameras=cameras, max_frames=args.frames, storage=args.storage, overwrite=args.overwrite,
                             checkpoint=checkpoint, info={"checkpoint": str(checkpoint), "device": str(predictor.device),
                                                          "mode": mode})
    except (bags.BagError, CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"casnet replay: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        signum = interrupted[0] if interrupted else signal.SIGINT
        print(f"casnet replay: interrupted by {signal.Signals(signum).name}: {Path(args.out) / 'bag'} holds the "
              "frames processed so far (no metrics)", file=sys.stderr)
        return 128 + signum
    print(format_summary(metrics))
    return 0


# ----------------------------------------------------------------------------------------------
# Signals: a replay stopped by SIGINT or SIGTERM closes its bag; its child processes never outlive it
# ----------------------------------------------------------------------------------------------

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


def live_arguments(args: argparse.Namespace) -> list[str]:
    """The command line of ``python -m casnet_ros.live_replay`` for parsed ``casnet replay --live`` arguments."""
    argv = ["--bag", str(args.bag), "--out", str(args.out), "--device", args.device, "--live"]
    argv += ["--overwrite"] if args.overwrite else []
    for topic in args.image_topic or []:
        argv += ["--image-topic", topic]
    options = {"--checkpoint": args.checkpoint, "--gt-topic": args.gt_topic,
               "--frames": args.frames, "--storage": args.storage, "--rate": args.rate, "--domain-id": args.domain_id}
    options.update({"--" + name.replace("_", "-"): value for name, value in thresholds_from_args(args).items()})
    for flag, value in options.items():
        if value is not None:
            argv += [flag, str(value)]
    return argv + (["--max-rate"] if args.max_rate else [])


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay", help="replay a rosbag2 through CASNet (in-process or the live node): metrics, mosaic, output bag",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=_main)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``casnet replay``, shared with ``python -m casnet_ros.live_replay``."""
    parser.add_argument("--bag", required=True, help="rosbag2 folder, or its .db3 / .mcap file")
    parser.add_argument("--out", required=True, help="output folder (never one that overlaps --bag or --checkpoint)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the outputs of an earlier replay in --out (refused without it)")
    parser.add_argument("--checkpoint", help="CASNet checkpoint (default: the packaged default model)")
    parser.add_argument("--image-topic", action="append",
                        help="camera topic (default: the bag's only camera topic); repeat it for several cameras, "
                             "each TOPIC or NAME=TOPIC (the batched node's camera NAME, default the topic's first "
                             "segment), --frames then per camera")
    parser.add_argument("--gt-topic",
                        help=f"panoptic ground-truth topic (default: {bags.PANOPTIC_GT_TOPIC} if present)")
    parser.add_argument("--frames", type=int, help="replay only the first N frames")
    parser.add_argument("--storage", choices=bags.STORAGES, help="storage of the output bag (default: the input's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--live", action="store_true", help="play the bag over DDS to a casnet_node process")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, help="live: play at RATE times the recorded rate (default 1)")
    pace.add_argument("--max-rate", action="store_true",
                      help="live: send each frame as soon as the node answered the previous one")
    parser.add_argument("--domain-id", type=int, help="live: ROS_DOMAIN_ID (default: from the pid)")
    add_threshold_arguments(parser)
