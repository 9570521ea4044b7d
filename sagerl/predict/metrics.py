"""Scores of predicted length distributions against true ones.

The truth of one request is a set of equally likely lengths: CASTILLO's 10 samples of the same
prompt, or the single observed length elsewhere. Every score is computed per request against
that set, then averaged over requests with equal weight:

* **CRPS**: the expected continuous ranked probability score ``E_Y CRPS(F, Y)``, with
  ``CRPS(F, y) = E|X - y| - E|X - X'| / 2`` for ``X, X' ~ F``. Proper, in tokens, lower is better.
  Against a multi-sample truth even a perfect forecast scores ``E|Y - Y'| / 2`` (the truth's own
  spread), which the oracle predictor shows.
* **pinball loss** at level q of the predicted q-quantile ``Q``:
  ``mean(max(q (y - Q), (q - 1)(y - Q)))``.
* **coverage_80**: the share of true lengths inside the predicted ``[Q(0.1), Q(0.9)]``; 0.8 is
  ideal.
* **Kendall tau** (tau-b) between predicted and true mean lengths across requests: how well the
  predictor orders requests, which is what SJF-like schedulers use.
* **bucket accuracy**: the paper's 20 buckets of 100 tokens (>= 1,900 in the last). The predicted
  bucket is the most probable one under the prediction (for a point predictor, its bucket); the
  score is the probability that a true sample falls in it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sagerl.predict.distribution import LengthDistribution

QUANTILE_LEVELS: tuple[float, ...] = (0.1, 0.5, 0.9)
BUCKET_SIZE = 100
NUM_BUCKETS = 20


def crps(pred: LengthDistribution, truth: np.ndarray) -> float:
    """Expected CRPS of ``pred`` over the equally likely true lengths ``truth`` (tokens)."""
    y = np.asarray(truth, dtype=np.float64).ravel()
    spread = float(pred.probs @ pred.expected_abs_diff(pred.support))
    return float(pred.expected_abs_diff(y).mean() - 0.5 * spread)


def pinball(pred: LengthDistribution, truth: np.ndarray, q: float) -> float:
    """Mean pinball (quantile) loss of the predicted q-quantile over ``truth`` (tokens)."""
    y = np.asarray(truth, dtype=np.float64).ravel()
    diff = y - float(pred.quantile(q))
    return float(np.maximum(q * diff, (q - 1.0) * diff).mean())


def coverage(
    pred: LengthDistribution, truth: np.ndarray, lo: float = 0.1, hi: float = 0.9
) -> float:
    """Share of ``truth`` inside the predicted central interval ``[Q(lo), Q(hi)]``."""
    y = np.asarray(truth, dtype=np.float64).ravel()
    a, b = np.asarray(pred.quantile(np.array([lo, hi])))
    return float(((y >= a) & (y <= b)).mean())


def bucket_of(lengths: np.ndarray) -> np.ndarray:
    """Paper bucket index (0..19) of each length: 100-token buckets, the last open-ended."""
    b = np.floor(np.asarray(lengths, dtype=np.float64) / BUCKET_SIZE).astype(np.int64)
    return np.clip(b, 0, NUM_BUCKETS - 1)


def bucket_hit(pred: LengthDistribution, truth: np.ndarray) -> float:
    """Probability that a true sample lands in the prediction's most probable bucket."""
    mass = np.bincount(bucket_of(pred.support), weights=pred.probs, minlength=NUM_BUCKETS)
    return float((bucket_of(truth) == int(np.argmax(mass))).mean())


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall tau-b between two score vectors (NaN when either is constant)."""
    from scipy.stats import kendalltau  # local: scipy only where scores are computed

    if len(a) < 2:
        return float("nan")
    return float(kendalltau(a, b).statistic)


def score(preds: Sequence[LengthDistribution], truths: Sequence[np.ndarray]) -> dict[str, float]:
    """All accuracy figures of one predictor over a stream of requests.

    Args:
        preds: One predicted distribution per request.
        truths: The true lengths of each request (one or more equally likely values).

    Returns:
        ``crps``, ``pinball_q10``, ``pinball_q50``, ``pinball_q90``, ``coverage_80``,
        ``kendall_tau``, ``bucket_accuracy``, ``mean_abs_error`` (of the predicted mean against
        the true mean, tokens) and ``n``.
    """
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} predictions for {len(truths)} truths")
    if not preds:
        return {"n": 0}
    out: dict[str, float] = {
        "crps": float(np.mean([crps(p, t) for p, t in zip(preds, truths, strict=True)]))
    }
    for q in QUANTILE_LEVELS:
        key = f"pinball_q{round(q * 100):02d}"
        out[key] = float(np.mean([pinball(p, t, q) for p, t in zip(preds, truths, strict=True)]))
    out["coverage_80"] = float(
        np.mean([coverage(p, t) for p, t in zip(preds, truths, strict=True)])
    )
    pred_mean = np.array([p.mean() for p in preds])
    true_mean = np.array([float(np.mean(t)) for t in truths])
    out["kendall_tau"] = kendall_tau(pred_mean, true_mean)
    out["bucket_accuracy"] = float(
        np.mean([bucket_hit(p, t) for p, t in zip(preds, truths, strict=True)])
    )
    out["mean_abs_error"] = float(np.abs(pred_mean - true_mean).mean())
    out["n"] = len(preds)
    return out


def latency_summary(seconds: Sequence[float] | np.ndarray, prefix: str) -> dict[str, float]:
    """``{prefix}_p50_ms`` and ``{prefix}_p99_ms`` of per-request times given in seconds."""
    s = np.asarray(seconds, dtype=np.float64)
    if s.size == 0:
        return {f"{prefix}_p50_ms": float("nan"), f"{prefix}_p99_ms": float("nan")}
    return {
        f"{prefix}_p50_ms": float(np.percentile(s, 50) * 1e3),
        f"{prefix}_p99_ms": float(np.percentile(s, 99) * 1e3),
    }
