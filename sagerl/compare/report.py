"""Tables, improvement figures, CSV, plots and TensorBoard scalars from comparison records.

Everything here is a pure function of the per-run records (:func:`sagerl.compare.runner.run_job`),
so a saved ``runs.csv`` can be re-plotted without re-simulating.

Outputs under ``<output_dir>/<name>/``:

* ``runs.csv``: one row per (policy, rate, seed);
* ``summary.csv``: one row per (policy, rate): each metric's mean and standard deviation over
  seeds (``<metric>`` and ``<metric>_std``);
* ``improvement.csv``: one row per rate: best vs runner-up, the clairvoyant reference's
  headroom, SageSched against its best rival with paired seed counts (:func:`improvement`);
* ``tables.md``: the printed tables, one per rate;
* ``ttlt_vs_rate.png``, ``ttft_vs_rate.png``: mean TTLT and mean TTFT (s) against the arrival
  rate, one line per policy with the spread over seeds as error bars (the paper's Figure 7);
* ``tb/<policy>/``: TensorBoard scalars ``compare/<metric>`` (the seed mean) with the step the
  load in percent of saturation (rate units ``saturation``) or the rate in centi-requests/s
  (units ``rps``), so each policy is one line over load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TABLE_METRICS: list[tuple[str, str, str]] = [
    ("mean_ttlt", "mean TTLT (s)", "{:.2f}"),
    ("p50_ttlt", "P50 TTLT (s)", "{:.2f}"),
    ("p99_ttlt", "P99 TTLT (s)", "{:.1f}"),
    ("mean_ttft", "mean TTFT (s)", "{:.2f}"),
    ("throughput_rps", "throughput (req/s)", "{:.3f}"),
    ("preemptions", "preemptions", "{:.0f}"),
]
"""(record field, column title, number format) of the printed table."""

NUMERIC = [
    "mean_ttlt",
    "p50_ttlt",
    "p99_ttlt",
    "mean_ttft",
    "p99_ttft",
    "mean_tpot",
    "throughput_rps",
    "throughput_tok_s",
    "preemptions",
    "kv_use_mean",
    "rejected",
    "wall_s",
]


def aggregate(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Mean and sample standard deviation over seeds per (policy, rate)."""
    frame = pd.DataFrame(list(records))
    keys = ["policy", "rate", "rate_rps", "load", "oracle"]
    grouped = frame.groupby(keys, sort=False, dropna=False)
    mean = grouped[NUMERIC].mean()
    std = grouped[NUMERIC].std(ddof=1).fillna(0.0).add_suffix("_std")
    out = pd.concat([mean, std], axis=1).reset_index()
    out["seeds"] = grouped.size().to_numpy()
    return out


def improvement(
    summary: pd.DataFrame,
    records: Sequence[dict[str, Any]] | None = None,
    metric: str = "mean_ttlt",
) -> pd.DataFrame:
    """Per rate: the best and runner-up non-oracle policies on ``metric`` and the gain, percent.

    Where an oracle policy ran (e.g. ``oracle-srpt``), also that clairvoyant reference and the
    *headroom*: how far below the runner-up it lies, percent. It is not a proven bound (under
    a memory limit SRPT on the true remaining cost is not optimal), but it is what knowing
    every length buys, so a gain much beyond the headroom (the paper's 28.7%, say) is not to be
    expected from a policy that only predicts lengths on this workload.

    Where a policy named ``sagesched`` exists: its gain over its best *rival* (the best
    non-oracle policy that is not a variant of it, see :func:`_variants_of`; negative when it
    loses), the headroom below that rival, and, given the per-seed ``records``, in how many seeds it
    scored below and above that policy on the very same requests (a paired count, which tells
    a seed-noise difference from a steady one).
    """
    frame = pd.DataFrame(list(records)) if records else None
    own = _variants_of(frame, "sagesched")
    rows = []
    for (rate, rate_rps), part in summary.groupby(["rate", "rate_rps"], sort=True):
        fair = part[~part["oracle"]].sort_values(metric)
        if fair.empty:
            continue
        best = fair.iloc[0]
        row: dict[str, Any] = {
            "rate": rate,
            "rate_rps": rate_rps,
            "load": best["load"],
            "best": best["policy"],
            "best_" + metric: best[metric],
        }
        if len(fair) > 1:
            runner = fair.iloc[1]
            row["runner_up"] = runner["policy"]
            row["runner_up_" + metric] = runner[metric]
            row["gain_pct"] = 100.0 * (runner[metric] - best[metric]) / runner[metric]
        oracles = part[part["oracle"]].sort_values(metric)
        if not oracles.empty:
            bound = oracles.iloc[0]
            row["oracle"] = bound["policy"]
            row["oracle_" + metric] = bound[metric]
            if len(fair) > 1:
                row["headroom_pct"] = 100.0 * (runner[metric] - bound[metric]) / runner[metric]
        sage = fair[fair["policy"] == "sagesched"]
        others = fair[~fair["policy"].isin(own)]
        if not sage.empty and not others.empty:
            s, o = sage.iloc[0], others.iloc[0]
            row["sagesched_" + metric] = s[metric]
            row["sagesched_vs"] = o["policy"]
            row["sagesched_vs_" + metric] = o[metric]
            row["sagesched_gain_pct"] = 100.0 * (o[metric] - s[metric]) / o[metric]
            if not oracles.empty:
                row["sagesched_headroom_pct"] = 100.0 * (o[metric] - bound[metric]) / o[metric]
            if frame is not None:
                cell = frame[frame["rate"] == rate]
                won, lost, seeds = _paired(cell, "sagesched", o["policy"], metric)
                row["sagesched_seeds_won"], row["sagesched_seeds_lost"] = won, lost
                row["sagesched_seeds"] = seeds
        rows.append(row)
    return pd.DataFrame(rows)


def _variants_of(frame: pd.DataFrame | None, policy: str) -> set[str]:
    """``policy`` and the policies that differ from it only in options (same ordering and
    placement, e.g. ``sagesched-10buckets``): another reading of the same scheduler, not a
    rival. Without records to tell, only ``policy`` itself."""
    if frame is None or not {"ordering", "placement"} <= set(frame.columns):
        return {policy}
    mine = frame[frame["policy"] == policy]
    if mine.empty:
        return {policy}
    same = (frame["ordering"] == mine["ordering"].iloc[0]) & (
        frame["placement"] == mine["placement"].iloc[0]
    )
    return {policy, *frame.loc[same, "policy"]}


def _paired(cell: pd.DataFrame, policy: str, rival: str, metric: str) -> tuple[int, int, int]:
    """Seeds in which ``policy`` scored below and above ``rival``, and the seeds both ran."""
    a = cell[cell["policy"] == policy].set_index("seed")[metric]
    b = cell[cell["policy"] == rival].set_index("seed")[metric]
    both = a.index.intersection(b.index)
    return int((a[both] < b[both]).sum()), int((a[both] > b[both]).sum()), int(both.size)


def _cell(mean: float, std: float, fmt: str) -> str:
    if math.isnan(mean):
        return "nan"
    return f"{fmt.format(mean)} ± {fmt.format(std)}"


def table_rows(summary: pd.DataFrame, rate: float) -> list[dict[str, str]]:
    """Rows (policy, metric ± spread over seeds) for one rate, best mean TTLT first."""
    part = summary[summary["rate"] == rate].sort_values("mean_ttlt")
    rows = []
    for _, r in part.iterrows():
        row = {"policy": r["policy"] + (" (oracle)" if r["oracle"] else "")}
        for field, title, fmt in TABLE_METRICS:
            row[title] = _cell(r[field], r[field + "_std"], fmt)
        rows.append(row)
    return rows


def rate_label(row: pd.Series | dict[str, Any], unit: str) -> str:
    """``'0.80 x sat (3.05 req/s)'`` or ``'3.05 req/s'``."""
    if unit == "saturation":
        return f"{row['rate']:.2f} x saturation ({row['rate_rps']:.3f} req/s)"
    return f"{row['rate_rps']:.3f} req/s"


def markdown_tables(summary: pd.DataFrame, unit: str) -> str:
    """Every rate's table as Markdown (for notes and READMEs)."""
    lines: list[str] = []
    for rate in sorted(summary["rate"].unique()):
        first = summary[summary["rate"] == rate].iloc[0]
        lines.append(f"\n**{rate_label(first, unit)}**\n")
        rows = table_rows(summary, rate)
        header = list(rows[0])
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for row in rows:
            lines.append("| " + " | ".join(row.values()) + " |")
    return "\n".join(lines) + "\n"


def write_csv(out_dir: Path, records: Sequence[dict[str, Any]], summary: pd.DataFrame) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(list(records)).to_csv(out_dir / "runs.csv", index=False)
    summary.to_csv(out_dir / "summary.csv", index=False)


def plot(summary: pd.DataFrame, out_dir: Path, unit: str, title: str) -> list[Path]:
    """Mean TTLT and mean TTFT against the rate, one line per policy (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    x_field = "rate" if unit == "saturation" else "rate_rps"
    x_title = (
        "arrival rate (fraction of saturation)" if unit == "saturation" else "arrival rate (req/s)"
    )
    for metric, ylabel, fname in (
        ("mean_ttlt", "mean TTLT (s)", "ttlt_vs_rate.png"),
        ("mean_ttft", "mean TTFT (s)", "ttft_vs_rate.png"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for policy, part in summary.groupby("policy", sort=False):
            part = part.sort_values(x_field)
            style = "--" if bool(part["oracle"].iloc[0]) else "-"
            ax.errorbar(
                part[x_field],
                part[metric],
                yerr=part[metric + "_std"],
                label=policy,
                linestyle=style,
                marker="o",
                markersize=3,
                capsize=2,
            )
        ax.set_xlabel(x_title)
        ax.set_ylabel(ylabel)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = out_dir / fname
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def write_tensorboard(summary: pd.DataFrame, out_dir: Path, unit: str) -> Path:
    """Scalars ``compare/<metric>`` per policy under ``tb/<policy>/`` (see module docstring)."""
    from torch.utils.tensorboard import SummaryWriter

    root = out_dir / "tb"
    for policy, part in summary.groupby("policy", sort=False):
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(policy))
        writer = SummaryWriter(log_dir=str(root / safe))
        for _, row in part.iterrows():
            step = round(100 * float(row["rate"] if unit == "saturation" else row["rate_rps"]))
            for metric in (
                "mean_ttlt",
                "p50_ttlt",
                "p99_ttlt",
                "mean_ttft",
                "throughput_rps",
                "preemptions",
            ):
                value = float(row[metric])
                if np.isfinite(value):
                    writer.add_scalar(f"compare/{metric}", value, step)
        writer.close()
    return root
