"""The `casnet` command. Each subcommand lives beside the code it drives and registers itself
through a ``register(subparsers)`` function; this file only lists them.

Errors: a command given bad input prints ONE line on stderr, ``casnet COMMAND: error: ...``, and exits non-zero
(2 for bad arguments or inputs), never a traceback. Argument errors are printed without the usage block (``--help``
shows it); errors a command does not report itself (``ValueError`` and ``OSError``, which the code raises for bad
inputs, ``SystemExit`` with a message) are printed here as one line; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import NoReturn

from casnet_core.errors import one_line

SUBCOMMAND_MODULES = (
    "casnet_core.synth",
    "casnet_core.train",
    "casnet_core.predict_command",
    "casnet_core.evaluation",
    "casnet_core.replay",
    "casnet_core.export",
)


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, whose errors are one line on stderr (the usage block only with --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="casnet", description="CASNet instance and panoptic segmentation")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def _check_device(args: argparse.Namespace) -> None:
    """A --device that is not one, or CUDA where there is none: ValueError before the command starts."""
    device = getattr(args, "device", None)
    if device is None:
        return
    from casnet_core.predictor import resolve_device

    try:
        resolved = resolve_device(device)
        if resolved.type == "cuda" and resolved.index is not None:
            import torch

            if resolved.index >= torch.cuda.device_count():
                raise ValueError(f"there are only {torch.cuda.device_count()} CUDA devices")
    except RuntimeError:  # torch.device's error for a name that is not a device
        raise ValueError(f"--device {device!r} is not a device: auto, cpu, cuda or cuda:N") from None
    except ValueError as error:
        raise ValueError(f"--device {device}: {error}") from None


def main(argv: list[str] | None = None) -> int:
    """Runs ``casnet ARGV``; returns the exit status (argparse's own exits, --help included, become statuses)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    prefix = f"casnet {args.command}: error:"
    # A warning is one line too (Python's default adds the source line that raised it).
    default_format = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *_, **__: f"casnet {args.command}: warning: {message}\n"
    try:
        _check_device(args)
        return int(args.func(args) or 0)
    except SystemExit as exit_:  # raise SystemExit("casnet X: message") in a command
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        message = one_line(exit_.code)
        print(message if message.startswith("casnet ") else f"{prefix} {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except (ValueError, OSError) as error:  # bad input the command did not report itself
        print(f"{prefix} {one_line(error)}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = default_format


if __name__ == "__main__":
    sys.exit(main())
