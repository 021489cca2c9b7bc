"""``pybridge <command>``: argparse front end. Errors print one line and exit with code 2."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from pybridge._version import __version__
from pybridge.errors import PybridgeError

COMMANDS = ["train", "decode", "convert", "split", "report", "deconvolve", "minify"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pybridge",
        description="scVI-family models for single-cell counts (plain PyTorch). Progress goes to stderr.",
    )
    parser.add_argument("--version", action="version", version=f"pybridge {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"pybridge.cli.{name}")
        module.add_parser(subparsers).set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (PybridgeError, FileNotFoundError, FileExistsError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"pybridge {args.command}: error: {message}", file=sys.stderr)
        return 2


def console_main() -> int:
    """The ``pybridge`` command and ``python -m pybridge.cli``. The process is the command's own, so it opts in to
    the CPU malloc tuning (:mod:`pybridge.train.malloc`), which the library leaves to the process owner."""
    os.environ.setdefault("PYBRIDGE_MALLOC_TUNING", "1")
    return main()


if __name__ == "__main__":
    sys.exit(console_main())
