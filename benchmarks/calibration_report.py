"""How well the step-time model's stored calibration matches Vidur's measured operator times.

For every profiled (GPU, model, tensor-parallel degree) in ``vidur_profiling/compute``, compare
the model's per-layer linear + elementwise time with the measured sum over 1-4096 (or 32768)
tokens, print MAPE and worst error, and optionally write the rows as JSON. The target is
MAPE <= 15%; the exit status is 1 when a table misses it. Attention is not in the data and is
not checked here.

Usage::

    python benchmarks/calibration_report.py [--json PATH] [--data-dir D] [--plain]
    python benchmarks/calibration_report.py --refit   # refit; print new constants and their MAPE

``--refit`` reruns :func:`sagerl.calibration.fit_calibration` and prints the source of
``KERNEL_CALIBRATION`` and ``ALLREDUCE_FITS`` to paste into ``sagerl/hardware.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# NOTE: run from a checkout without `pip install -e .`: put the repository root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sagerl.calibration import (
    calibration_report,
    fit_calibration,
    format_constants,
    format_report,
    run_calibrate_cli,
)
from sagerl.errors import SagerlError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="write the report rows to this JSON file")
    parser.add_argument(
        "--data-dir", help="data directory (default: $SAGERL_DATA or ../shared/data)"
    )
    parser.add_argument("--plain", action="store_true", help="plain-text table instead of rich")
    parser.add_argument(
        "--refit", action="store_true", help="refit the constants and print them as Python source"
    )
    args = parser.parse_args(argv)

    try:
        if args.refit:
            fits = fit_calibration(args.data_dir)
            print(format_constants(fits))
            print()
            print(format_report(calibration_report(args.data_dir, kernels=fits["kernels"])))
            return 0
        return run_calibrate_cli(args.data_dir, args.json, plain=args.plain)
    except SagerlError as err:  # a missing or malformed data directory: one line, status 2
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
