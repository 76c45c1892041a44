"""The `casnet` command. Each subcommand lives beside the code it drives and registers itself
through a ``register(subparsers)`` function; this file only lists them."""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMAND_MODULES = (
    "casnet_core.synth",
    "casnet_core.train",
    "casnet_core.predictor",
    "casnet_core.evaluation",
    "casnet_core.replay",
    "casnet_core.export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="casnet", description="CASNet instance and panoptic segmentation")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
