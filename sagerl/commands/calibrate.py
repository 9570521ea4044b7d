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
    import json
    from pathlib import Path

    from sagerl.calibration import run_calibrate_cli
    from sagerl.commands.common import print_table
    from sagerl.gpu_check import check_measured

    status = run_calibrate_cli(args.data_dir, args.json)
    rows = check_measured()
    print_table(
        "Step-time model vs a real H200 (benchmarks/gpu_profile.py; layer_* = whole decoder "
        "layers, decode from CUDA graphs; op_* = eager single kernels, launch-bound)",
        [
            {**r, "mape": f"{100 * r['mape']:.1f}%", "max_ape": f"{100 * r['max_ape']:.1f}%"}
            for r in rows
        ],
    )
    if args.json:  # add the measured-GPU rows next to the Vidur rows
        path = Path(args.json)
        payload = {"vidur": json.loads(path.read_text()), "measured_gpu": rows}
        path.write_text(json.dumps(payload, indent=2) + "\n")
    return status
