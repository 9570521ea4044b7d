"""Evaluation on held-out windows, identical for every policy, and its reports.

Every actor (the agent, SageSched placement, the heuristics) runs the same episodes: the same
evaluation environment, reset with the same seeds, so each seed is the same held-out window with
the same arrivals, prompts, true lengths and predictor state. One record per (policy, seed) holds
the window's metrics (:func:`envs.placement.window_metrics`), the return, and the decision cost.

Reports:

* TensorBoard: each policy is its own run ``runs/<experiment>/<policy>/`` with the same tags
  (:data:`EVAL_TAGS`), so TensorBoard overlays them;
* a comparison table (mean over seeds, and the change against the reference policy) printed,
  and saved as CSV and PNG;
* the records as JSON (``python -m sagerl eval --json PATH``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.common.actors import Actor
from envs.placement import PlacementEnv

EVAL_TAGS: dict[str, str] = {
    "mean_ttlt": "eval/mean_ttlt",
    "p99_ttlt": "eval/p99_ttlt",
    "mean_ttft": "eval/mean_ttft",
    "p99_ttft": "eval/p99_ttft",
    "mean_tpot": "eval/mean_tpot",
    "throughput": "eval/throughput",
    "return": "eval/return",
}
"""Metric -> TensorBoard tag, shared by every policy's run."""


def run_episode(actor: Actor, env: PlacementEnv, seed: int, split: str = "eval") -> dict[str, Any]:
    """One episode of ``actor`` on the window ``seed`` picks; returns its metrics record."""
    obs, _ = env.reset(seed=seed, options={"split": split})
    actor.reset(seed)
    total = 0.0
    steps = 0
    think = 0.0
    info: dict[str, Any] = {}
    done = False
    while not done:
        t0 = time.perf_counter()
        action = actor.act(obs, env.action_masks(), env)
        think += time.perf_counter() - t0
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        steps += 1
        done = terminated or truncated
    record: dict[str, Any] = {"policy": actor.name, "seed": seed}
    record.update(info.get("episode_metrics") or env.episode_metrics())
    record["return"] = total
    record["decisions"] = steps
    record["decision_us"] = think / max(steps, 1) * 1e6
    return record


def evaluate(
    actors: Sequence[Actor], env: PlacementEnv, seeds: Iterable[int], split: str = "eval"
) -> list[dict[str, Any]]:
    """Run every actor on every seed (same windows for all); one record per (policy, seed)."""
    seed_list = list(seeds)
    return [run_episode(actor, env, s, split) for actor in actors for s in seed_list]


def summarize(records: Sequence[dict[str, Any]], reference: str | None = None) -> pd.DataFrame:
    """Mean (and std of mean TTLT) over seeds per policy, plus the change against ``reference``.

    Columns: ``policy``, ``seeds``, the metrics of :data:`EVAL_TAGS`, ``mean_ttlt_std`` and, with
    a reference, ``vs_<reference>_%`` (negative: lower mean TTLT than the reference).
    """
    frame = pd.DataFrame(list(records))
    metrics = [m for m in EVAL_TAGS if m in frame.columns]
    grouped = frame.groupby("policy", sort=False)
    table = grouped[metrics].mean()
    table.insert(0, "seeds", grouped.size())
    where = list(table.columns).index("mean_ttlt") + 1
    table.insert(where, "mean_ttlt_std", grouped["mean_ttlt"].std())
    if reference is not None and reference in table.index:
        ref = float(table["mean_ttlt"].loc[reference])
        table[f"vs_{reference}_%"] = (table["mean_ttlt"] / ref - 1.0) * 100.0
    return table.reset_index()


def write_tensorboard(
    records: Sequence[dict[str, Any]],
    run_dir: str | Path,
    steps: Sequence[int],
    skip: Iterable[str] = (),
) -> None:
    """Write each policy's seed-averaged metrics to ``run_dir/<policy>/`` at every step in
    ``steps`` (a baseline drawn at the first and last training step spans the agent's curve)."""
    from torch.utils.tensorboard import SummaryWriter

    skipped = set(skip)
    table = summarize(records)
    for _, row in table.iterrows():
        policy = str(row["policy"])
        if policy in skipped:
            continue
        writer = SummaryWriter(str(Path(run_dir) / safe_name(policy)))
        for step in steps:
            for metric, tag in EVAL_TAGS.items():
                value = row.get(metric)
                if value is not None and math.isfinite(float(value)):
                    writer.add_scalar(tag, float(value), int(step))
        writer.flush()
        writer.close()


def safe_name(policy: str) -> str:
    """A directory name for a policy label."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in policy)


TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("mean_ttlt", "mean TTLT (s)", "{:.3f}"),
    ("mean_ttlt_std", "± std", "{:.3f}"),
    ("p99_ttlt", "p99 TTLT (s)", "{:.2f}"),
    ("mean_ttft", "mean TTFT (s)", "{:.3f}"),
    ("throughput", "throughput (req/s)", "{:.2f}"),
)


def table_rows(table: pd.DataFrame, reference: str) -> list[dict[str, Any]]:
    """Rows for :func:`sagerl.commands.common.print_table` (and the PNG)."""
    delta = f"vs_{reference}_%"
    rows = []
    for _, row in table.iterrows():
        out: dict[str, Any] = {"policy": row["policy"], "seeds": int(row["seeds"])}
        for key, title, _ in TABLE_COLUMNS:
            out[title] = float(row[key]) if key in row and pd.notna(row[key]) else float("nan")
        if delta in row:
            out[f"vs {reference}"] = f"{float(row[delta]):+.1f}%"
        rows.append(out)
    return rows


def save_table(table: pd.DataFrame, reference: str, out_dir: str | Path, title: str) -> Path:
    """Write ``comparison.csv`` and ``comparison.png`` (the table rendered, and mean TTLT bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "comparison.csv", index=False)
    rows = table_rows(table, reference)
    headers = list(rows[0].keys())
    cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()] for row in rows]
    fig, (ax_bar, ax_tab) = plt.subplots(
        2, 1, figsize=(11, 2.2 + 0.45 * len(rows) + 3.0), gridspec_kw={"height_ratios": [3, 2]}
    )
    names = [str(p) for p in table["policy"]]
    means = table["mean_ttlt"].to_numpy(dtype=float)
    stds = np.nan_to_num(table["mean_ttlt_std"].to_numpy(dtype=float))
    colors = ["tab:orange" if n == reference else "tab:blue" for n in names]
    ax_bar.bar(names, means, yerr=stds, color=colors, capsize=4)
    ax_bar.set_ylabel("mean TTLT (s)")
    ax_bar.set_title(title)
    ax_bar.tick_params(axis="x", labelrotation=15)
    ax_tab.axis("off")
    tab = ax_tab.table(cellText=cells, colLabels=headers, loc="center", cellLoc="right")
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    tab.auto_set_column_width(col=list(range(len(headers))))
    tab.scale(1.0, 1.3)
    fig.tight_layout()
    path = out / "comparison.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
