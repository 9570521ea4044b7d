"""What an online run reports: mean TTLT per phase and policy, regret against the reference over
time, recovery after each shift, the guardrail's switches; as a table, JSON, TensorBoard curves
and a PNG.

Definitions (per seed, requests in arrival order; means over seeds in the table):

* *phase mean*: mean TTLT of the requests that arrived in the phase; *after adaptation*: the same
  without the phase's first ``report.adapt_requests`` requests (the agent's first update after a
  shift comes only after ``online.update_every`` decisions);
* *cumulative regret* of a policy at request ``j``: sum over requests ``<= j`` of its TTLT minus
  the reference's TTLT for the same request, s (negative: better than the reference);
* *recovery* after the shift into phase ``k``: seconds from the phase's start until the policy's
  mean TTLT over its last ``report.rolling_requests`` requests of the phase is within
  ``report.recovery_tolerance`` of the reference's on the same requests (judged from a quarter
  window in; ``nan``: not within the phase).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.online.config import OnlineConfig
from agents.online.runner import FROZEN, SeedResult


def policies_of(results: Sequence[SeedResult]) -> list[str]:
    return list(results[0].runs)


def phase_rows(results: Sequence[SeedResult], cfg: OnlineConfig) -> list[dict[str, Any]]:
    """One row per (phase, policy): mean TTLT whole and after adaptation, change vs reference."""
    ref = cfg.reference
    skip = cfg.report.adapt_requests
    rows = []
    for k, phase in enumerate(results[0].stream.phases):
        whole: dict[str, list[float]] = {}
        after: dict[str, list[float]] = {}
        for res in results:
            p = res.stream.phases[k]
            for name, run in res.runs.items():
                whole.setdefault(name, []).append(float(run.ttlt[p.first : p.end].mean()))
                tail = run.ttlt[min(p.first + skip, p.end - 1) : p.end]
                after.setdefault(name, []).append(float(tail.mean()))
        for name in whole:
            w, a = float(np.mean(whole[name])), float(np.mean(after[name]))
            rows.append(
                {
                    "phase": phase.name,
                    "policy": name,
                    "mean TTLT (s)": w,
                    "after adaptation (s)": a,
                    f"vs {ref}": f"{(w / np.mean(whole[ref]) - 1) * 100:+.1f}%",
                    "after, vs frozen": (
                        f"{(a / np.mean(after[FROZEN]) - 1) * 100:+.1f}%" if FROZEN in after else ""
                    ),
                }
            )
    return rows


def regret_curve(result: SeedResult, name: str, reference: str) -> np.ndarray:
    """Cumulative regret of ``name`` against ``reference`` after each request, s."""
    return np.cumsum(result.runs[name].ttlt - result.runs[reference].ttlt)


def recovery_seconds(result: SeedResult, name: str, cfg: OnlineConfig) -> list[float]:
    """Per shift (phases 2..), seconds until ``name`` is back within tolerance of the reference."""
    rep = cfg.report
    ours = result.runs[name].ttlt
    ref = result.runs[cfg.reference].ttlt
    arrivals = np.array([r.arrival for r in result.stream.requests])
    out = []
    for p in result.stream.phases[1:]:
        found = math.nan
        start = p.first + max(1, rep.rolling_requests // 4) - 1
        for j in range(start, p.end):
            lo = max(p.first, j - rep.rolling_requests + 1)
            if ours[lo : j + 1].sum() <= (1 + rep.recovery_tolerance) * ref[lo : j + 1].sum():
                found = float(arrivals[j] - p.start_s)
                break
        out.append(found)
    return out


def summary(results: Sequence[SeedResult], cfg: OnlineConfig) -> dict[str, Any]:
    """Everything the command prints and writes to JSON."""
    ref = cfg.reference
    names = policies_of(results)
    per_seed = []
    for res in results:
        entry: dict[str, Any] = {"seed": res.seed, "policies": {}}
        for name, run in res.runs.items():
            regret = regret_curve(res, name, ref)
            phases = {p.name: float(run.ttlt[p.first : p.end].mean()) for p in res.stream.phases}
            item: dict[str, Any] = {
                "mean_ttlt": float(run.ttlt.mean()),
                "phase_mean_ttlt": phases,
                "final_regret_s": float(regret[-1]),
                "regret_per_request_s": float(regret[-1] / len(regret)),
                "recovery_s": recovery_seconds(res, name, cfg),
                "decision_us": run.decision_us,
                "metrics": run.metrics,
            }
            if run.fallback is not None:
                item["fallback_share"] = float(run.fallback.mean())
                item["switches"] = [
                    {"request": i, "active": s.active, "excess": s.excess} for i, s in run.switches
                ]
                item["updates"] = len(run.updates)
                item["updates_kept"] = int(
                    sum(f.get("online/accepted", 1.0) for _, f in run.updates)
                )
                if run.updates:
                    item["weight_change"] = run.updates[-1][1]["online/weight_change"]
            entry["policies"][name] = item
        per_seed.append(entry)
    final = {name: [e["policies"][name]["final_regret_s"] for e in per_seed] for name in names}
    recovery = {
        name: [
            _nanmean(seconds)
            for seconds in zip(*(e["policies"][name]["recovery_s"] for e in per_seed), strict=True)
        ]
        for name in names
    }
    return {
        "name": cfg.name,
        "reference": ref,
        "seeds": [r.seed for r in results],
        "phases": [p.name for p in results[0].stream.phases],
        "phase_table": phase_rows(results, cfg),
        "final_regret_s": final,
        "mean_recovery_s": recovery,
        "per_seed": per_seed,
    }


def overall_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per policy: mean TTLT, final regret, recovery per shift, guardrail use."""
    rows = []
    phases = report["phases"][1:]
    for name, regrets in report["final_regret_s"].items():
        seeds = [e["policies"][name] for e in report["per_seed"]]
        row: dict[str, Any] = {
            "policy": name,
            "mean TTLT (s)": float(np.mean([s["mean_ttlt"] for s in seeds])),
            "final regret (s)": float(np.mean(regrets)),
            "seeds with regret <= 0": f"{sum(r <= 0 for r in regrets)}/{len(regrets)}",
        }
        for phase, sec in zip(phases, report["mean_recovery_s"][name], strict=True):
            row[f"recovery {phase} (s)"] = "" if name == report["reference"] else sec
        row["fallback"] = (
            f"{np.mean([s['fallback_share'] for s in seeds]):.0%}"
            if "fallback_share" in seeds[0]
            else ""
        )
        rows.append(row)
    return rows


def write_tensorboard(results: Sequence[SeedResult], run_dir: Path, cfg: OnlineConfig) -> None:
    """Per seed and policy (``run_dir/seed_<s>/<policy>/``): rolling mean TTLT and cumulative
    regret against the reference, by request index (the online agent's ``train/*`` update
    figures share its folder and x axis)."""
    from torch.utils.tensorboard import SummaryWriter

    from agents.common.evaluation import safe_name

    window = cfg.report.rolling_requests
    for res in results:
        for name, run in res.runs.items():
            writer = SummaryWriter(str(run_dir / f"seed_{res.seed}" / safe_name(name)))
            rolling = _rolling_mean(run.ttlt, window)
            regret = regret_curve(res, name, cfg.reference)
            for j in range(window - 1, len(run.ttlt), 25):
                writer.add_scalar("online/rolling_mean_ttlt", float(rolling[j]), j + 1)
                writer.add_scalar("online/cumulative_regret_s", float(regret[j]), j + 1)
            if run.fallback is not None:
                for j in range(0, len(run.fallback), 25):
                    writer.add_scalar("online/fallback", float(run.fallback[j]), j + 1)
            writer.flush()
            writer.close()


def _nanmean(values: Sequence[float]) -> float:
    """Mean of the finite values (nan when none: never recovered in any seed)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    c = np.concatenate([[0.0], np.cumsum(x)])
    n = np.minimum(np.arange(1, len(x) + 1), window)
    return (c[1:] - c[np.arange(1, len(x) + 1) - n]) / n


def plot(results: Sequence[SeedResult], run_dir: Path, cfg: OnlineConfig) -> Path:
    """``online.png``: rolling mean TTLT (first seed) and cumulative regret (every seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = policies_of(results)
    colors = {name: f"C{i}" for i, name in enumerate(names)}
    fig, (ax_ttlt, ax_regret) = plt.subplots(2, 1, figsize=(11, 8), sharex=True)
    first = results[0]
    t0 = np.array([r.arrival for r in first.stream.requests])
    for name, run in first.runs.items():
        ax_ttlt.plot(
            t0,
            _rolling_mean(run.ttlt, cfg.report.rolling_requests),
            label=name,
            color=colors[name],
            lw=1.2,
        )
        if run.fallback is not None and run.fallback.any():
            ax_ttlt.fill_between(
                t0,
                0,
                1,
                where=run.fallback,
                transform=ax_ttlt.get_xaxis_transform(),
                color=colors[name],
                alpha=0.08,
                label=f"{name}: guardrail fallback",
            )
    for res in results:
        t = np.array([r.arrival for r in res.stream.requests])
        for name in names:
            if name == cfg.reference:
                continue
            ax_regret.plot(
                t,
                regret_curve(res, name, cfg.reference),
                color=colors[name],
                lw=1.0,
                alpha=0.9 if res is first else 0.45,
                label=name if res is first else None,
            )
    ax_regret.axhline(0.0, color=colors[cfg.reference], lw=1.0, ls="--", label=cfg.reference)
    for ax in (ax_ttlt, ax_regret):
        for p in first.stream.phases:
            ax.axvline(p.start_s, color="0.5", lw=0.8, ls=":")
            ax.text(
                p.start_s,
                1.0,
                f" {p.name}",
                transform=ax.get_xaxis_transform(),
                va="top",
                fontsize=8,
                color="0.3",
            )
    ax_ttlt.set_ylabel(f"mean TTLT of last {cfg.report.rolling_requests} requests (s)")
    ax_ttlt.set_title(f"{cfg.name}: seed {first.seed}")
    ax_ttlt.legend(fontsize=8, loc="upper left")
    ax_regret.set_ylabel(f"cumulative regret vs {cfg.reference} (s of TTLT)")
    ax_regret.set_xlabel("arrival time (s)")
    ax_regret.set_title(f"every seed ({len(results)}); below 0: better than {cfg.reference}")
    ax_regret.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    path = run_dir / "online.png"
    run_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
