"""``python -m sagerl calibrate``: the step-time model's error against measured operator timings."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "calibrate",
        help="report the step-time model's MAPE per GPU and model against Vidur's profiling",
    )
    parser.add_argument(
        "--data-dir", help="data directory (default: $SAGERL_DATA or ../shared/data)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the report to this JSON file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sagerl.calibration import run_calibrate_cli

    return run_calibrate_cli(args.data_dir, args.json)
