"""``python -m sagerl compare``: policies × arrival rates × seeds on identical workloads."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from sagerl.commands.common import add_run_arguments, print_table, write_json


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "compare",
        help="compare scheduling policies over arrival rates and seeds",
        description="Run the config's compare matrix (policies x rates x seeds, identical "
        "workloads per rate and seed) in parallel; print a table per rate (mean/P50/P99 TTLT, "
        "mean TTFT, throughput, preemptions; mean ± std over seeds) and the best policy's gain "
        "over the runner-up; write runs.csv, summary.csv, tables.md, TTLT/TTFT plots and "
        "TensorBoard scalars under runs/<name>/.",
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--processes",
        type=int,
        help="worker processes (overrides the config); with --backend ray, the local Ray's CPUs",
    )
    parser.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: this machine's processes; ray: one Ray task per (policy, rate, seed), "
        "spread over a Ray cluster (same records; needs the ray extra)",
    )
    parser.add_argument(
        "--address",
        metavar="ADDR",
        help="with --backend ray: an existing Ray cluster (auto, HOST:6379, ray://HOST:10001); "
        "default: start a local Ray",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sagerl.compare.config import load_compare_config
    from sagerl.compare.report import (
        aggregate,
        improvement,
        markdown_tables,
        plot,
        rate_label,
        table_rows,
        write_csv,
        write_tensorboard,
    )
    from sagerl.compare.runner import run_matrix

    console = Console()
    if args.address and args.backend != "ray":
        from sagerl.errors import SagerlError

        raise SagerlError("--address needs --backend ray")
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"compare.seeds=[{args.seed}]")
    cfg = load_compare_config(args.config, overrides)  # config errors first
    if args.backend == "ray":
        from sagerl.compare.ray_backend import require_ray

        require_ray("--backend ray")
    start = time.perf_counter()
    records, saturation = run_matrix(
        cfg,
        progress=not args.no_progress,
        processes=args.processes,
        log=lambda msg: console.print(f"[dim]{msg}[/dim]"),
        backend=args.backend,
        address=args.address,
    )
    wall = time.perf_counter() - start
    unit = cfg.compare.rate_unit
    summary = aggregate(records)
    for rate in cfg.compare.rates:
        first = summary[summary["rate"] == rate].iloc[0]
        print_table(
            f"{cfg.name}: {rate_label(first, unit)}, {len(cfg.compare.seeds)} seed(s)",
            table_rows(summary, rate),
            console,
        )
    gains = improvement(summary, records)
    print_table(
        f"{cfg.name}: best non-oracle policy vs runner-up (mean TTLT; headroom: how far below "
        "the runner-up the clairvoyant reference lies)",
        gain_rows(gains, unit),
        console,
    )
    if "sagesched_vs" in gains:
        print_table(
            f"{cfg.name}: SageSched vs its best rival (same requests per seed; headroom: how "
            "far below the rival the clairvoyant reference lies)",
            sagesched_rows(gains, unit),
            console,
        )
    out_dir = Path(cfg.output_dir) / cfg.name
    write_csv(out_dir, records, summary)
    gains.to_csv(out_dir / "improvement.csv", index=False)
    (out_dir / "tables.md").write_text(markdown_tables(summary, unit))
    plots = plot(summary, out_dir, unit, cfg.name)
    tb = write_tensorboard(summary, out_dir, unit)
    meta = {
        "name": cfg.name,
        "saturation_rps": saturation,
        "wall_s": wall,
        "runs": len(records),
        "backend": args.backend,
        "config": cfg.model_dump(mode="json"),
    }
    (out_dir / "compare.json").write_text(json.dumps(meta, indent=2, default=str))
    sat = f"saturation {saturation:.3f} req/s; " if saturation else ""
    console.print(
        f"{len(records)} runs in {wall:.1f} s; {sat}outputs in {out_dir}/ "
        f"({', '.join(p.name for p in plots)}, {tb.name}/)"
    )
    write_json(args.json, records)
    return 0


def gain_rows(gains: Any, unit: str) -> list[dict[str, str]]:
    """Printed rows of :func:`~sagerl.compare.report.improvement`: best vs runner-up.

    Which columns appear is decided once from ``gains`` (``print_table`` needs equal keys in
    every row); a cell with no value prints as ``-``.
    """
    from sagerl.compare.report import rate_label

    rows = []
    for _, g in gains.iterrows():
        row = {
            "rate": rate_label(g, unit),
            "best": g["best"],
            "mean TTLT (s)": f"{g['best_mean_ttlt']:.2f}",
        }
        if "runner_up" in gains:
            row["runner-up"] = _name(g["runner_up"])
            row["runner-up TTLT (s)"] = _secs(g["runner_up_mean_ttlt"])
            row["gain"] = _pct(g["gain_pct"])
        if "oracle" in gains:
            row["oracle (s)"] = _secs(g["oracle_mean_ttlt"])
            row["headroom"] = _pct(g.get("headroom_pct", math.nan))
        rows.append(row)
    return rows


def sagesched_rows(gains: Any, unit: str) -> list[dict[str, str]]:
    """Printed rows of SageSched against its best rival, rate by rate (columns as in
    :func:`gain_rows`)."""
    from sagerl.compare.report import rate_label

    rows = []
    for _, g in gains.iterrows():
        if not isinstance(g.get("sagesched_vs"), str):
            continue
        row = {
            "rate": rate_label(g, unit),
            "SageSched TTLT (s)": _secs(g["sagesched_mean_ttlt"]),
            "best rival": g["sagesched_vs"],
            "rival TTLT (s)": _secs(g["sagesched_vs_mean_ttlt"]),
            "gain": _pct(g["sagesched_gain_pct"], sign=True),
        }
        if "sagesched_seeds" in gains:
            row["seeds won / lost"] = (
                f"{g['sagesched_seeds_won']:.0f} / {g['sagesched_seeds_lost']:.0f} "
                f"of {g['sagesched_seeds']:.0f}"
            )
        if "sagesched_headroom_pct" in gains:
            row["headroom"] = _pct(g["sagesched_headroom_pct"])
        rows.append(row)
    return rows


def _name(value: Any) -> str:
    return value if isinstance(value, str) else "-"


def _secs(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _pct(value: float, sign: bool = False) -> str:
    return "-" if math.isnan(value) else f"{value:+.1f}%" if sign else f"{value:.1f}%"
