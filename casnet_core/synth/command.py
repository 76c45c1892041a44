"""``casnet synth``: a generated dataset in the Cityscapes layout (``--out``), or a generated drive recorded
as a rosbag2 (``--bag``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from casnet_core.bags import STORAGES
from casnet_core.synth.dataset import generate_dataset
from casnet_core.synth.drive import IMAGE_FORMATS, write_drive_bag


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic street-scene dataset in the Cityscapes layout, or a generated drive as a rosbag2",
        description="Writes synthetic street scenes with Cityscapes label and instance annotations (--out), or "
                    "consecutive frames of one street as the camera drives down it, with camera info and "
                    "panoptic ground truth, as a rosbag2 (--bag).",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="dataset: output folder (Cityscapes root)")
    target.add_argument("--bag", type=Path, help="drive: output bag folder (must not exist)")
    parser.add_argument("--train", type=int, help="dataset: number of training images")
    parser.add_argument("--val", type=int, help="dataset: number of validation images")
    parser.add_argument("--workers", type=int, default=None, help="dataset: worker processes (default: min(2, CPUs))")
    parser.add_argument("--frames", type=int, help="drive: number of frames")
    parser.add_argument("--rate", type=float, default=10.0, help="drive: frames per second (default: 10)")
    parser.add_argument("--storage", choices=STORAGES, default="sqlite3", help="drive: rosbag2 storage")
    parser.add_argument("--image-format", choices=IMAGE_FORMATS, default="rgb8",
                        help="drive: raw sensor_msgs/Image (rgb8, bgr8) or CompressedImage (jpeg)")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        return _write_bag(args) if args.bag is not None else _write_dataset(args)
    except ValueError as error:  # also casnet_core.bags.BagError
        print(f"casnet synth: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


def _write_dataset(args: argparse.Namespace) -> int:
    if args.train is None or args.val is None:
        raise ValueError("--out needs --train and --val")
    root = generate_dataset(
        args.out, num_train=args.train, num_val=args.val, height=args.height, width=args.width,
        seed=args.seed, workers=args.workers,
    )
    print(f"wrote {args.train} train and {args.val} val images to {root}")
    return 0


def _write_bag(args: argparse.Namespace) -> int:
    if args.frames is None:
        raise ValueError("--bag needs --frames")
    start = time.perf_counter()
    path = write_drive_bag(
        args.bag, args.frames, rate_hz=args.rate, seed=args.seed, height=args.height, width=args.width,
        storage=args.storage, image_format=args.image_format, progress=True,
    )
    print(f"wrote a drive of {args.frames} frames ({args.width}x{args.height}, {args.rate:g} Hz, "
          f"{args.image_format}, {args.storage}) to {path} in {time.perf_counter() - start:.1f} s")
    return 0
