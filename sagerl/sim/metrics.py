"""Per-request records and the run summary (TTFT, TPOT, TTLT, throughput, KV use, preemptions).

Definitions (all times in seconds):
    TTFT: first token time - arrival. TTLT: finish - arrival. TPOT: (finish - first token) /
    (output tokens - 1), for requests with more than one output token. Throughput: finished
    requests (and tokens) per second of makespan (first arrival to last finish). KV use: per
    replica, the time-weighted fraction of KV blocks allocated over the makespan, averaged over
    replicas; peak: the largest fraction any replica reached.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from sagerl.sim.cluster import Simulation

RECORD_COLUMNS = [
    "id",
    "source",
    "arrival",
    "prompt_tokens",
    "output_tokens",
    "replica",
    "first_scheduled",
    "first_token",
    "finish",
    "preemptions",
    "rejected",
]


@dataclass
class SimResult:
    """Everything a run produced: one row per request and one per replica."""

    records: pd.DataFrame
    replicas: pd.DataFrame

    @classmethod
    def from_simulation(cls, sim: Simulation) -> SimResult:
        rejected = {id(s) for s in sim.rejected}
        seqs = sim.sequences
        records = pd.DataFrame(
            {
                "id": [s.request.id for s in seqs],
                "source": [s.request.source for s in seqs],
                "arrival": [s.arrival for s in seqs],
                "prompt_tokens": [s.prompt_tokens for s in seqs],
                "output_tokens": [s.output_tokens for s in seqs],
                "replica": [s.replica for s in seqs],
                "first_scheduled": [s.first_scheduled for s in seqs],
                "first_token": [s.first_token_time for s in seqs],
                "finish": [s.finish_time for s in seqs],
                "preemptions": [s.num_preemptions for s in seqs],
                "rejected": [id(s) in rejected for s in seqs],
                "generated": [s.num_generated for s in seqs],
            }
        )
        records = records.sort_values("id", kind="stable").reset_index(drop=True)
        replicas = pd.DataFrame(
            {
                "replica": [r.index for r in sim.replicas],
                "gpu": [r.gpu for r in sim.replicas],
                "model": [r.model for r in sim.replicas],
                "kv_blocks_total": [r.kv_blocks_total for r in sim.replicas],
                "busy_time": [r.busy_time for r in sim.replicas],
                "block_time": [r.block_time for r in sim.replicas],
                "peak_blocks": [r.peak_blocks for r in sim.replicas],
                "iterations": [r.num_steps for r in sim.replicas],
                "segments": [r.num_segments for r in sim.replicas],
                "plans": [r.num_plans for r in sim.replicas],
                "preemptions": [r.num_preemptions for r in sim.replicas],
            }
        )
        return cls(records=records, replicas=replicas)

    def summary(self) -> dict[str, Any]:
        """Headline metrics as a flat dict of floats/ints."""
        rec = self.records
        done = rec[~rec["rejected"]]
        ttft = (done["first_token"] - done["arrival"]).to_numpy()
        ttlt = (done["finish"] - done["arrival"]).to_numpy()
        multi = done[done["output_tokens"] > 1]
        tpot = ((multi["finish"] - multi["first_token"]) / (multi["output_tokens"] - 1)).to_numpy()
        makespan = float(done["finish"].max() - rec["arrival"].min()) if len(done) else 0.0
        out: dict[str, Any] = {"requests": len(rec), "rejected": int(rec["rejected"].sum())}
        for name, values in (("ttft", ttft), ("tpot", tpot), ("ttlt", ttlt)):
            out.update(_stats(name, values))
        tokens = float(done["prompt_tokens"].sum() + done["output_tokens"].sum())
        out["makespan_s"] = makespan
        out["throughput_rps"] = len(done) / makespan if makespan > 0 else 0.0
        out["throughput_tok_s"] = tokens / makespan if makespan > 0 else 0.0
        out["output_tok_s"] = float(done["output_tokens"].sum()) / makespan if makespan else 0.0
        rep = self.replicas
        if makespan > 0:
            kv = rep["block_time"] / (rep["kv_blocks_total"] * makespan)
            out["kv_use_mean"] = float(kv.mean())
        else:
            out["kv_use_mean"] = 0.0
        out["kv_use_peak"] = float((rep["peak_blocks"] / rep["kv_blocks_total"]).max())
        out["preemptions"] = int(rep["preemptions"].sum())
        out["iterations"] = int(rep["iterations"].sum())
        return out

    def write(self, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``requests.csv``, ``replicas.csv`` and ``summary.json`` under ``out_dir``."""
        path = Path(out_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.records.to_csv(path / "requests.csv", index=False)
        self.replicas.to_csv(path / "replicas.csv", index=False)
        payload = {"summary": self.summary(), **(extra or {})}
        (path / "summary.json").write_text(json.dumps(payload, indent=2, default=str))
        return path


def _stats(name: str, values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {f"{name}_{s}": float("nan") for s in ("mean", "p50", "p90", "p99")}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        f"{name}_mean": float(values.mean()),
        f"{name}_p50": float(p50),
        f"{name}_p90": float(p90),
        f"{name}_p99": float(p99),
    }
