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
  (vision_msgs/Detection2DArray), and Autoware's ``/casnet/rois``, ``/casnet/mask`` and ``/casnet/instance_mask``
  (casnet_core.autoware), each with the header of its input frame and written at the input's
  receive time. Live: the messages as the node published them; in-process: built from the Prediction
  the way the node builds them.
* ``metrics.json``: frames received / processed / dropped / failed, latency percentiles (p50, p90, p99,
  max; in-process the decode + ``Predictor.predict`` time, live the time from publishing a frame to
  receiving all its outputs), throughput; with ground truth, ``accuracy``: PQ SQ RQ PQ_th PQ_st AP AP50
  mIoU (and the per-class tables) of the processed frames that have ground truth.
  With ground truth also ``tracking_quality``: STQ, AQ and SQ (``casnet_core.evaluation.stq``; Weber et al.
  2021, as KITTI-STEP scores video panoptic segmentation) of those frames, with the instances tracked across
  frames as the node tracks them (``--tracking on``, the default) or numbered per frame (``--tracking off``).
* ``mosaic.png``: a few frames across the drive, each a row: input | panoptic colouring | overlay.
* with ground truth, ``frames/``: those frames and their ground truth in the Cityscapes layout (split
  ``replay``, ``leftImg8bit`` + ``gtFine`` labelIds and instanceIds), and ``evaluation/``: the predictions
  in the official formats and the logs of the official evaluators. The accuracy is that of
  ``casnet eval --data DIR/frames --split replay``: the same official evaluators on the same files.

Several cameras: ``--image-topic`` repeated (``TOPIC`` or ``NAME=TOPIC``, the camera named by the topic's first
segment by default) replays each camera topic, in recorded order; live, to one batched ``casnet_node`` serving
all of them (``cameras: [NAME, ...]``, ``NAME.image_topic``), in-process through the one Predictor. Each camera's
outputs are recorded under the batched node's topics, ``/NAME/casnet/<output>`` (the outputs above),
``--frames`` counts per camera, and ``metrics.json`` has ``cameras``: per camera its topic, frames, latency and
throughput, beside the totals. Such a replay is not evaluated (a ground-truth stamp names one frame of one camera).

``--oracle NAME`` (in-process): the heads ``casnet eval --oracle NAME`` replaces come from the bag's ground
truth (``full``: every head, at the network's stride), so the grouping and the tracking are measured without the
network (``casnet_core.evaluation.oracles.oracle_prediction``).

Ground truth is a ``sensor_msgs/Image`` topic (32SC1 Cityscapes panoptic ids, ``PANOPTIC_GT_TOPIC`` by
default) whose header stamps equal the camera's. A frame that cannot be decoded is counted as failed,
reported and skipped. ``metrics.json`` (``ground_truth``) and the summary say how many frames had no usable
ground truth, and why.

The inputs are never written: an ``--out`` whose outputs would be, contain or lie inside the bag or the
checkpoint is refused, and an ``--out`` that already holds a replay's outputs is refused unless ``--overwrite``
is given (then those outputs, and only those, are replaced). Both checks come before anything is written or
started. A replay stopped by SIGINT, SIGTERM or SIGHUP closes the output bag with every frame processed so far.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from casnet_core import bags, default_model_path
from casnet_core.checkpoint import CheckpointError
from casnet_core.child_processes import interrupts_raise, run_child
from casnet_core.errors import one_line
from casnet_core.evaluation.oracles import ORACLES, oracle_prediction
from casnet_core.export import model_mode
from casnet_core.formats import check_outputs_spare_inputs
from casnet_core.predict_command import add_precision_argument, add_threshold_arguments, thresholds_from_args
from casnet_core.predictor import Predictor, resolve_device
from casnet_core.tracking import Tracker
# The recording side, shared with the live replay; its names are part of this module's interface.
from casnet_core.replay_recorder import (ACCURACY_KEYS, OUTPUT_TOPICS, FrameResult, ReplayRecorder,  # noqa: F401
                                         format_summary, output_topics)

# A camera name becomes a namespace token and a node parameter prefix (casnet_ros.parameters checks the same).
CAMERA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


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
    tracking: bool = False,
    oracle: str | None = None,
) -> dict[str, Any]:
    """Replays ``bag`` through ``predictor`` (a ``casnet_core.predictor.Predictor``) in this process and
    writes ``out_dir`` (see the module docstring; ``cameras``: {name: topic} of several camera topics, their
    outputs recorded under ``output_topics(name)``, ``max_frames`` then per camera; ``overwrite``: replace an
    earlier replay there; ``checkpoint``: the predictor's file, protected like the bag); returns the metrics.
    Raises bags.BagError for a bag that cannot be used, ValueError for an ``out_dir`` that cannot be written
    (``check_output``). ``tracking``: each camera's instances tracked as the node tracks them (one
    ``casnet_core.tracking.Tracker`` per camera; ``casnet replay``'s default), else numbered per frame by the
    Predictor; ``oracle``: an entry of
    ``casnet_core.evaluation.oracles.ORACLES`` replacing heads of the network by the bag's ground truth
    (``oracle_prediction``; ValueError without a ground-truth topic)."""
    inputs = replay_inputs(bag, image_topic=image_topic, gt_topic=gt_topic, cameras=cameras, max_frames=max_frames)
    check_oracle(oracle, inputs)
    prepare_output(out_dir, [("--bag", bag), ("--checkpoint", checkpoint)], overwrite=overwrite)
    recorder = ReplayRecorder(out_dir, storage=storage or bags.bag_storage(bag), mode=predictor.mode,
                              total_frames=inputs.total_frames, gt_topic=inputs.gt_topic, progress=progress,
                              cameras=inputs.cameras)
    trackers: dict[str, Tracker] = {}
    start = time.perf_counter()
    try:
        for camera, frame in inputs.frames(bag, max_frames):
            result = predict_frame(predictor, frame, oracle=oracle)
            result.camera = camera
            if tracking and result.prediction is not None:
                tracker = trackers.setdefault(camera, Tracker())
                result.prediction = tracker.track(result.prediction, stamp_ns=frame.stamp_ns, image=frame.image_rgb)
            recorder.add(result)
    except BaseException:
        recorder.abort()
        raise
    return recorder.close(time.perf_counter() - start, {"replay": "in-process", "bag": str(bag), **inputs.info(),
                                                        "tracking": "on" if tracking else "off",
                                                        **({"oracle": oracle} if oracle else {}), **(info or {})})


def check_oracle(oracle: str | None, inputs: ReplayInputs) -> None:
    """ValueError (one line) unless ``oracle`` (None: none) can run on ``inputs``: it needs ground truth."""
    if oracle is None:
        return
    if oracle not in ORACLES:
        raise ValueError(f"--oracle {oracle}: expected one of {', '.join(ORACLES)}")
    if inputs.gt_topic is None:
        raise ValueError(f"--oracle {oracle} needs the bag's panoptic ground truth, and the bag has no "
                         f"ground-truth topic (--gt-topic; default {bags.PANOPTIC_GT_TOPIC})")


def predict_frame(predictor: Any, frame: bags.BagFrame, oracle: str | None = None) -> FrameResult:
    """One frame through the Predictor (or ``oracle`` with the frame's ground truth); latency = decode + predict
    time."""
    if frame.image_rgb is None:
        return FrameResult(frame, "failed", error=frame.error)
    if oracle is not None and frame.panoptic_gt is None:
        return FrameResult(frame, "failed", error=f"--oracle {oracle}: {frame.gt_error or bags.NO_GT_WITH_STAMP}")
    start = time.perf_counter()
    try:
        if oracle is None:
            prediction = predictor.predict(frame.image_rgb)
        else:
            prediction = oracle_prediction(predictor, frame.image_rgb, frame.panoptic_gt, oracle)
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
        inputs = replay_inputs(args.bag, image_topic=single_image_topic(args.image_topic), gt_topic=args.gt_topic,
                               cameras=cameras)
        if args.oracle and args.live:
            raise ValueError("--oracle runs in-process (the node has no oracle): leave out --live")
        check_oracle(args.oracle, inputs)
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
            predictor = Predictor.from_checkpoint(str(checkpoint), device=str(device), precision=args.precision,
                                                  **thresholds_from_args(args))
            metrics = replay(args.bag, args.out, predictor, image_topic=single_image_topic(args.image_topic),
                             gt_topic=args.gt_topic, cameras=cameras, max_frames=args.frames, storage=args.storage,
                             overwrite=args.overwrite, checkpoint=checkpoint, tracking=args.tracking == "on",
                             oracle=args.oracle,
                             info={"checkpoint": str(checkpoint), "device": str(predictor.device), "mode": mode})
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

def live_arguments(args: argparse.Namespace) -> list[str]:
    """The command line of ``python -m casnet_ros.live_replay`` for parsed ``casnet replay --live`` arguments."""
    argv = ["--bag", str(args.bag), "--out", str(args.out), "--device", args.device, "--live",
            "--precision", args.precision]
    argv += ["--overwrite"] if args.overwrite else []
    argv += ["--tracking", args.tracking]
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
    add_precision_argument(parser)
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, help="live: play at RATE times the recorded rate (default 1)")
    pace.add_argument("--max-rate", action="store_true",
                      help="live: send each frame as soon as the node answered the previous one")
    parser.add_argument("--domain-id", type=int, help="live: ROS_DOMAIN_ID (default: from the pid)")
    parser.add_argument("--tracking", choices=("on", "off"), default="on",
                        help="track instances across frames as the node does (default on; off: numbered per frame); "
                             "STQ, AQ and SQ are reported either way")
    parser.add_argument("--oracle", choices=ORACLES,
                        help="in-process: replace heads of the network by the bag's ground truth, as casnet eval "
                             "--oracle does (full: all heads, at the network's stride): grouping and tracking "
                             "measured without the network")
    add_threshold_arguments(parser)
