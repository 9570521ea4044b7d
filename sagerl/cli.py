"""Command line: ``python -m sagerl <command> [options] [key=value ...]``.

Each command lives in its own module under ``sagerl/commands/`` (or its package's ``cli.py``) and
exposes ``register(subparsers)``; heavy imports happen inside the command, so ``--help`` is fast.
User errors (:class:`~sagerl.errors.SagerlError`) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sagerl import __version__
from sagerl.errors import SagerlError

# Module paths of the commands, in the order ``--help`` lists them.
COMMANDS = [
    "sagerl.commands.simulate",
    "sagerl.commands.train",
    "sagerl.commands.eval",
    "sagerl.commands.online",
    "sagerl.commands.export",
    "sagerl.commands.calibrate",
    "sagerl.commands.compare",
    "sagerl.commands.serve",
    "sagerl.commands.emulate",
    "sagerl.predict.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sagerl",
        description="sagerl: learned scheduling of LLM inference (SageSched, simulator, RL).",
    )
    parser.add_argument("--version", action="version", version=f"sagerl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for path in COMMANDS:
        try:
            module = importlib.import_module(path)
        except ImportError as exc:  # an optional part missing must not break the others
            print(f"warning: command module {path} unavailable ({exc})", file=sys.stderr)
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except SagerlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
