"""What a learned placement policy sees: replica views plus the request, as one float vector.

The simulator's Gymnasium environment and the live router both fill the same inputs (a sequence
of :class:`~sagerl.view.ReplicaView`, the request, its predicted length distribution and,
optionally, the analytic teacher's per-replica estimates), and both turn them into the policy's
input with the same :class:`FeatureEncoder`. Normalisation lives here, as fixed monotone
transforms with named scales, so an exported policy (ONNX plus a JSON sidecar written by
:meth:`FeatureEncoder.to_json`) needs nothing else: no running statistics, no ``VecNormalize``.

Layout (``FEATURE_VERSION`` 1): ``max_replicas`` blocks of :data:`REPLICA_FEATURES` (replicas
beyond the cluster's size are zero with ``present = 0``), then :data:`REQUEST_FEATURES` followed
by the histogram and quantiles of the predicted output length::

    [ replica 0 | replica 1 | ... | replica R-1 | request scalars | histogram | quantiles ]

Transforms (all clipped to ``[-CLIP, CLIP]``): counts ``log1p(n) / log1p(count_ref)`` (which
compresses the small differences placement compares, hence also the relative load and KV use
of each replica against the least loaded available one); tokens
``log1p(t) / log1p(token_ref)``; hybrid costs (token², see :mod:`sagerl.cost`)
``log1p(c / cost_unit) / cost_log_ref``; times ``log1p(t / time_unit) / time_log_ref``.

This module is core: it imports neither ``envs`` nor ``agents`` nor torch, so the live router can
use it without the training stack.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sagerl.cost import prediction_summary
from sagerl.view import ReplicaView
from sagerl.workload.request import Request

FEATURE_VERSION = 1
"""Bumped whenever the layout or a transform changes (an exported policy checks it)."""

CLIP = 10.0
"""Every feature is clipped to ``[-CLIP, CLIP]`` (finite observation bounds)."""

REPLICA_FEATURES: tuple[str, ...] = (
    "present",  # 1 for a replica of the cluster, 0 for padding
    "available",  # the action mask: present, healthy and the prompt fits its KV cache
    "healthy",
    "running",  # sequences in the running batch (count transform)
    "waiting",  # sequences queued (count transform)
    "kv_usage",  # fraction of KV blocks allocated
    "work_ahead",  # expected remaining cost ranked at or before the request (cost transform)
    "work_behind",  # expected remaining cost ranked after it (cost transform)
    "count_behind",  # requests ranked after it: it would delay them (count transform)
    "speed_abs",  # cost rate, hybrid cost per second (cost transform)
    "speed_rel",  # cost rate over the fastest present replica's
    "est_finish",  # (work ahead + own expected cost) / cost rate, s (time transform)
    "teacher",  # the teacher's estimate, s of added total TTLT (time transform)
    "teacher_rel",  # estimate minus the best available estimate, s (time transform)
    "teacher_best",  # 1 for the replica the teacher's estimates rank first
    "teacher_ok",  # 1 where the teacher's own safety test (KV headroom) passes
    "load_rel",  # (outstanding - least outstanding of the available) / (1 + mean outstanding)
    "kv_rel",  # KV use minus the least KV use of the available replicas
)

REQUEST_FEATURES: tuple[str, ...] = (
    "prompt_tokens",  # token transform
    "has_prediction",  # 0 when no predictor runs (the prediction features are then zero)
    "mean_length",  # expected output tokens (token transform)
    "std_length",  # spread of the predicted output length (token transform)
    "mean_cost",  # expected hybrid cost (cost transform)
    "rank",  # Gittins rank of the cost distribution (cost transform)
    "available_share",  # available replicas / max_replicas
    "outstanding",  # requests in the cluster (count transform)
    "has_teacher",  # 0 when no teacher estimates were given
)


@dataclass
class FeatureSpec:
    """Sizes and normalisation constants of the encoding (JSON-serialisable).

    Attributes:
        max_replicas: Replica slots in the observation (the action space size).
        hist_edges: Bin edges of the predicted-length histogram, output tokens.
        quantiles: Levels of the predicted-length quantiles.
        count_ref: Count mapped to 1.0 (e.g. 256 running sequences).
        token_ref: Token count mapped to 1.0.
        cost_unit: Hybrid cost unit, token² (costs are ``log1p(c / cost_unit)``).
        cost_log_ref: Divisor of the cost transform (``log1p(1e7) ~ 16``).
        time_unit: Time unit, s (times are ``log1p(t / time_unit)``).
        time_log_ref: Divisor of the time transform.
        version: :data:`FEATURE_VERSION` when written.
    """

    max_replicas: int = 8
    hist_edges: list[float] = field(default_factory=lambda: [float(x) for x in range(0, 2001, 100)])
    quantiles: list[float] = field(default_factory=lambda: [0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
    count_ref: float = 256.0
    token_ref: float = 16384.0
    cost_unit: float = 1.0
    cost_log_ref: float = 20.0
    time_unit: float = 0.05
    time_log_ref: float = 8.0
    version: int = FEATURE_VERSION


@dataclass(frozen=True, slots=True)
class RequestStats:
    """What the encoder (and a placement policy) derive once from a request's prediction.

    Attributes:
        prompt_tokens: Prompt length I, tokens.
        mean_length: Expected output length, tokens (0 without a prediction).
        std_length: Its standard deviation, tokens.
        mean_cost: Expected hybrid cost ``E[O²/2 + I·O]``, token².
        rank: Gittins rank of the cost distribution, token² (smaller runs first).
    """

    prompt_tokens: int
    mean_length: float
    std_length: float
    mean_cost: float
    rank: float

    @classmethod
    def of(cls, request: Request, prediction: Any) -> RequestStats:
        """Stats of ``request`` under ``prediction`` (a LengthDistribution or ``None``).

        The cost distribution's mean and exact Gittins rank come from
        :func:`sagerl.cost.hybrid_summary` (vector operations on the sorted support), through
        the per-request memo that SageSched placement (the teacher) shares.
        """
        i = request.prompt_tokens
        if prediction is None:
            return cls(i, 0.0, 0.0, 0.0, 0.0)
        mean_cost, rank, mean, std = prediction_summary(request.id, prediction, i)
        return cls(i, mean, std, mean_cost, rank)


def _clip(a: np.ndarray, lo: float, hi: float) -> None:
    """``np.clip(a, lo, hi, out=a)`` without its Python-level argument handling (same values,
    NaN included; it runs twice per decision on small arrays)."""
    np.maximum(a, lo, out=a)
    np.minimum(a, hi, out=a)


def fits(request: Request, view: ReplicaView) -> bool:
    """Whether the replica's whole KV cache can hold the prompt plus one output token."""
    return request.prompt_tokens + 1 <= view.kv_blocks_total * view.block_size


class FeatureEncoder:
    """Turns (replica views, request, prediction, teacher estimates) into a float32 vector.

    Args:
        spec: Sizes and normalisation constants (defaults: :class:`FeatureSpec`).

    The encoder holds preallocated buffers; :meth:`encode` fills them and returns a copy (or
    writes into ``out``), so a step allocates little beyond the histogram. Cost per call:
    O(m) for the request's rank (m predicted lengths) plus O(R log Q) for R replicas with Q
    queued requests (one binary search in each replica's queue profile).
    """

    def __init__(self, spec: FeatureSpec | None = None) -> None:
        self.spec = spec = spec or FeatureSpec()
        if spec.max_replicas < 1:
            raise ValueError(f"max_replicas must be >= 1, got {spec.max_replicas}")
        if spec.version != FEATURE_VERSION:
            raise ValueError(
                f"feature spec version {spec.version}; this encoder implements {FEATURE_VERSION}"
            )
        self.edges = np.asarray(spec.hist_edges, dtype=np.float64)
        if self.edges.ndim != 1 or self.edges.size < 2 or (np.diff(self.edges) <= 0).any():
            raise ValueError("hist_edges must be a strictly increasing list of >= 2 values")
        self._inner_edges = self.edges[1:-1]
        self.levels = np.asarray(spec.quantiles, dtype=np.float64)
        self._levels_lo = self.levels - 1e-12
        self.num_bins = self.edges.size - 1
        self.replica_size = len(REPLICA_FEATURES)
        self.request_offset = spec.max_replicas * self.replica_size
        self.hist_offset = self.request_offset + len(REQUEST_FEATURES)
        self.quant_offset = self.hist_offset + self.num_bins
        self.size = self.quant_offset + self.levels.size
        self._buf = np.zeros(self.size, dtype=np.float32)
        self._rep = self._buf[: self.request_offset].reshape(spec.max_replicas, self.replica_size)
        self._mask = np.zeros(spec.max_replicas, dtype=bool)
        self._count_div = math.log1p(spec.count_ref)
        self._token_div = math.log1p(spec.token_ref)
        self._profile_ok = True

    # ------------------------------------------------------------------ transforms
    # ``min(log1p(max(x, 0.0)) / ref, CLIP)``, written with conditionals: ~50 calls per
    # decision, and ``0.0 if x < 0.0 else x`` / ``CLIP if y > CLIP else y`` return exactly what
    # the builtins return (NaN included) without their call overhead.
    def count(self, n: float) -> float:
        y = math.log1p(0.0 if n < 0.0 else n) / self._count_div
        return CLIP if y > CLIP else y

    def tokens(self, t: float) -> float:
        y = math.log1p(0.0 if t < 0.0 else t) / self._token_div
        return CLIP if y > CLIP else y

    def cost(self, c: float) -> float:
        if c == math.inf:
            return CLIP
        spec = self.spec
        y = math.log1p((0.0 if c < 0.0 else c) / spec.cost_unit) / spec.cost_log_ref
        return CLIP if y > CLIP else y

    def time(self, t: float) -> float:
        if t == math.inf or t != t:  # inf or nan: "far worse than anything"
            return CLIP
        spec = self.spec
        y = math.log1p((0.0 if t < 0.0 else t) / spec.time_unit) / spec.time_log_ref
        return CLIP if y > CLIP else y

    # ------------------------------------------------------------------ encoding
    def feature_names(self) -> list[str]:
        """One name per entry of the vector (for tests, docs and the ONNX sidecar)."""
        names = [f"replica{r}.{f}" for r in range(self.spec.max_replicas) for f in REPLICA_FEATURES]
        names += [f"request.{f}" for f in REQUEST_FEATURES]
        pairs = zip(self.edges[:-1], self.edges[1:], strict=True)
        names += [f"request.hist[{a:g},{b:g})" for a, b in pairs]
        names += [f"request.q{q:g}" for q in self.levels]
        return names

    def action_mask(
        self, request: Request, views: Sequence[ReplicaView], out: np.ndarray | None = None
    ) -> np.ndarray:
        """Boolean mask over the ``max_replicas`` actions: present, healthy, and the prompt fits.

        If no replica qualifies, every present healthy replica is allowed (the request is then
        rejected by whichever replica gets it, as the simulator does), so a mask is never empty
        while a healthy replica exists.
        """
        mask = self._mask if out is None else out
        mask[:] = False
        n = min(len(views), self.spec.max_replicas)
        for i in range(n):
            v = views[i]
            mask[i] = v.healthy and fits(request, v)
        if not mask.any():
            for i in range(n):
                mask[i] = views[i].healthy
        return mask.copy() if out is None else mask

    def encode(
        self,
        request: Request,
        views: Sequence[ReplicaView],
        prediction: Any = None,
        teacher: Sequence[float] | np.ndarray | None = None,
        teacher_ok: Sequence[bool] | None = None,
        *,
        stats: RequestStats | None = None,
        mask: np.ndarray | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """The observation vector for placing ``request`` given ``views``.

        Args:
            request: The request to place (its ``output_tokens`` is never read).
            views: One view per replica, in index order (at most ``max_replicas`` are used).
            prediction: Its predicted output-length distribution (``LengthDistribution``), or
                ``None``.
            teacher: The teacher's per-replica estimates (s of added total TTLT, lower is
                better; ``inf`` for replicas it would never pick), or ``None``.
            teacher_ok: Per replica, whether the teacher's own safety test passes.
            stats: Precomputed :class:`RequestStats` (computed here when ``None``).
            mask: :meth:`action_mask` of the same request and views, when the caller already
                has it (the environment does), so it is not computed twice per decision.
            out: Write into this float32 array of :attr:`size` instead of returning a copy.

        Returns:
            A float32 vector of :attr:`size` entries in ``[-CLIP, CLIP]``.
        """
        spec = self.spec
        buf = self._buf
        buf.fill(0.0)
        rep = self._rep
        st = stats or RequestStats.of(request, prediction)
        n = min(len(views), spec.max_replicas)
        if mask is None:
            mask = self.action_mask(request, views, out=self._mask)
        # NOTE: bound once; the loops below run per replica and decision.
        count, cost, time_ = self.count, self.cost, self.time

        rates = [0.0] * n
        for i in range(n):
            v = views[i]
            rate = getattr(v, "cost_rate", 0.0) or 0.0
            if rate <= 0.0:  # unknown: a decode-speed proxy (contexts of ~1k tokens)
                rate = v.decode_tokens_per_s * 1024.0
            rates[i] = rate
        fastest = max(rates) if n else 1.0

        best = -1
        best_score = math.inf
        if teacher is not None:
            for i in range(n):
                s = float(teacher[i])
                if mask[i] and s < best_score:
                    best, best_score = i, s

        least_n = math.inf
        least_kv = math.inf
        total_outstanding = 0
        available = 0
        for i in range(n):
            v = views[i]
            total_outstanding += v.num_running + v.num_waiting
            if mask[i]:
                available += 1
                least_n = min(least_n, v.num_running + v.num_waiting)
                least_kv = min(least_kv, v.kv_usage)
        mean_n = total_outstanding / n if n else 0.0
        if least_n == math.inf:
            least_n, least_kv = 0.0, 0.0
        for i in range(n):
            v = views[i]
            row = rep[i]
            ahead, behind_work, behind_n = self._split(v, st.rank)
            rate = rates[i]
            row[0] = 1.0
            row[1] = 1.0 if mask[i] else 0.0
            row[2] = 1.0 if v.healthy else 0.0
            row[3] = count(v.num_running)
            row[4] = count(v.num_waiting)
            kv = v.kv_blocks_used / v.kv_blocks_total if v.kv_blocks_total else 1.0
            row[5] = kv
            row[6] = cost(ahead)
            row[7] = cost(behind_work)
            row[8] = count(behind_n)
            row[9] = cost(rate)
            row[10] = rate / fastest if fastest > 0 else 0.0
            row[11] = time_((ahead + st.mean_cost) / rate if rate > 0 else math.inf)
            if teacher is not None:
                s = float(teacher[i])
                row[12] = time_(s)
                row[13] = time_(s - best_score) if best >= 0 else CLIP
                row[14] = 1.0 if i == best else 0.0
                row[15] = 1.0 if teacher_ok is None or teacher_ok[i] else 0.0
            row[16] = (v.num_running + v.num_waiting - least_n) / (1.0 + mean_n)
            row[17] = kv - least_kv

        q = self.request_offset
        buf[q + 0] = self.tokens(st.prompt_tokens)
        if prediction is not None:
            buf[q + 1] = 1.0
            buf[q + 2] = self.tokens(st.mean_length)
            buf[q + 3] = self.tokens(st.std_length)
            buf[q + 4] = self.cost(st.mean_cost)
            buf[q + 5] = self.cost(st.rank)
            self._distribution(prediction)
        buf[q + 6] = float(available) / spec.max_replicas
        buf[q + 7] = count(total_outstanding)
        buf[q + 8] = 0.0 if teacher is None else 1.0
        _clip(buf, -CLIP, CLIP)
        if out is not None:
            out[:] = buf
            return out
        return buf.copy()

    def _split(self, view: ReplicaView, rank: float) -> tuple[float, float, int]:
        """``(work ranked at or before rank, work after, count after)`` on one replica.

        Uses the replica's queue profile when it offers one (SageSched placement's O(log Q)
        split); otherwise, or if building it fails, every queued request counts as ahead with
        unknown work.
        """
        profile_fn = getattr(view, "queue_profile", None)
        if profile_fn is not None and self._profile_ok:
            try:
                profile = profile_fn()
            except Exception:  # NOTE: a view from an older router may not support it
                self._profile_ok = False
            else:
                if profile is not None:
                    ahead, behind_n = profile.split(rank)
                    return ahead, profile.total_work - ahead, behind_n
        return 0.0, 0.0, 0

    def _distribution(self, prediction: Any) -> None:
        """Histogram and quantiles of the predicted length into the buffer."""
        support, probs = prediction.support, prediction.probs
        nb = self.num_bins
        # searchsorted(edges, x, "right") - 1 clipped to [0, nb - 1] is the search among the
        # inner edges: below edges[1] is bin 0, from edges[-2] on the last bin.
        b = np.searchsorted(self._inner_edges, support, side="right")
        h = self.hist_offset
        self._buf[h : h + nb] = np.bincount(b, weights=probs, minlength=nb)
        # A LengthDistribution caches its CDF (SageSched placement's quantile filled it); it is
        # the cumulative sum with the last entry set to exactly 1, which moves no quantile
        # below 1 - 1e-12, so the levels land on the same support points either way.
        cdf = getattr(prediction, "cdf_at_support", None)
        if cdf is None:
            cdf = np.cumsum(probs)
        idx = np.searchsorted(cdf, self._levels_lo, side="left")
        np.minimum(idx, support.size - 1, out=idx)
        qv = support[idx]
        qo = self.quant_offset
        self._buf[qo : qo + self.levels.size] = np.log1p(qv) / self._token_div

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """The spec plus the layout, for an exported policy's JSON sidecar."""
        return {
            "spec": asdict(self.spec),
            "size": self.size,
            "replica_features": list(REPLICA_FEATURES),
            "request_features": list(REQUEST_FEATURES),
            "clip": CLIP,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureEncoder:
        """Rebuild from :meth:`to_dict`; a different layout version is an error."""
        spec = FeatureSpec(**data["spec"])
        enc = cls(spec)
        if "size" in data and int(data["size"]) != enc.size:
            raise ValueError(f"encoded size {data['size']} differs from this layout ({enc.size})")
        return enc

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text of :meth:`to_dict`; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> FeatureEncoder:
        """Rebuild from JSON text or a file written by :meth:`to_json`."""
        p = Path(text_or_path) if not str(text_or_path).lstrip().startswith("{") else None
        text = p.read_text() if p is not None else str(text_or_path)
        return cls.from_dict(json.loads(text))
