"""The transition log: every placement decision with its outcome, one JSON object per line.

What the online learner trains from: the state the policy saw (each backend's view, and where
the request's rank would fall in its queue), the request and its prediction, the action, and
what came of it (TTFT, TTLT, output tokens, retries, success). A record is written when the
request leaves the ledger, so it carries the outcome; lines are buffered on the event loop and
written by a thread about once a second (never a disk write on the request path).

Record (keys; times in s, costs in token²)::

    {"ts": unix time of the decision, "rid": "...", "policy": "least-outstanding",
     "backend": 2, "tried": [0, 2], "status": "completed" | "failed" | "aborted",
     "request": {"prompt_tokens": 812, "stream": true, "max_tokens": 256},
     "prediction": {"mean": 211.0, "std": 80.2, "rank": 1.9e5, "work": 2.4e5,
                    "quantiles": {"0.5": 190.0, "0.9": 350.0}} | null,
     "views": [{"running": 12, "waiting": 0, "kv_used": 800, "kv_total": 27000,
                "healthy": true, "ahead": 1.2e6, "behind": 3.0e5, "n_behind": 2}, ...],
     "scores": [...] | null,
     "outcome": {"output_tokens": 230, "ttft_s": 0.08, "ttlt_s": 4.1, "error": ""}}
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sagerl.view import ReplicaView

log = logging.getLogger("sagerl.live.translog")

_ENCODER = json.JSONEncoder(separators=(",", ":"), default=float)
"""One encoder for every record: ``json.dumps`` with ``default=`` builds a new one per call."""

QUANTILES = (0.1, 0.5, 0.9, 0.99)
"""Levels of the predicted output length kept in a record."""


def decision_record(
    views: Sequence[ReplicaView],
    rank: float,
    prediction: Any,
    scores: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The state part of a record, taken at decision time (O(R log Q))."""
    rows = []
    for v in views:
        row: dict[str, Any] = {
            "running": v.num_running,
            "waiting": v.num_waiting,
            "kv_used": v.kv_blocks_used,
            "kv_total": v.kv_blocks_total,
            "healthy": v.healthy,
        }
        if prediction is not None and v.queue_profile is not None:
            profile = v.queue_profile()
            ahead, n_behind = profile.split(rank)
            row.update(ahead=ahead, behind=profile.total_work - ahead, n_behind=n_behind)
        rows.append(row)
    return {
        "ts": time.time(),
        "views": rows,
        "scores": None if scores is None else [float(s) for s in scores],
    }


def prediction_summary(prediction: Any, rank: float, work: float) -> dict[str, Any] | None:
    """Mean, spread, quantiles, rank and expected cost of a predicted length distribution."""
    if prediction is None:
        return None
    support, probs = prediction.support, prediction.probs
    mean = float(probs @ support)
    std = float(probs @ (support - mean) ** 2) ** 0.5
    return {
        "mean": mean,
        "std": std,
        "rank": rank,
        "work": work,
        "quantiles": {str(q): float(prediction.quantile(q)) for q in QUANTILES},
    }


class TransitionLog:
    """Buffered JSONL writer (see module docstring).

    Args:
        path: The file (appended to; parent directories are created).
        flush_s: Seconds between background writes.
    """

    def __init__(self, path: str | Path, flush_s: float = 1.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_s = flush_s
        self._lines: list[str] = []
        self.records = 0
        self._task: asyncio.Task[None] | None = None

    def append(self, record: dict[str, Any]) -> None:
        """Queue one record (serialised now, written at the next flush)."""
        self._lines.append(_ENCODER.encode(record))
        self.records += 1

    def start(self) -> None:
        """Start the periodic flush task."""
        self._task = asyncio.ensure_future(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush()

    async def flush(self) -> None:
        """Write the queued lines (in a thread)."""
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        try:
            await asyncio.to_thread(self._write, lines)
        except OSError as exc:
            log.error("cannot write transition log %s: %s", self.path, exc)

    def _write(self, lines: list[str]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")

    async def close(self) -> None:
        """Stop the flush task and write what is left."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()
