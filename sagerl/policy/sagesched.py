"""SageSched (arXiv 2603.07917): Gittins ranks on the hybrid-cost distribution, in a replica and
across replicas.

Ordering (``sagesched``), the paper's policy. Each request's predicted output lengths become a
cost distribution with its own prompt length (``C = O²/2 + I·O``, :mod:`sagerl.cost`); its key is
the Gittins rank of that distribution conditional on the cost already attained
(:mod:`sagerl.policy.gittins`); smaller ranks run first. Ranks of running requests are refreshed
only at bucket boundaries, so a request's rank is piecewise constant in its progress and the
replica's fast path stays on between boundaries. Both readings of the paper are supported:
``refresh: tokens`` (every ``refresh_tokens`` = 200 generated tokens, the paper's tuned bucket
size and our default) and ``refresh: buckets`` (10 equal buckets over the request's cost range
``[0, max sample cost]``); ``none`` keeps the arrival rank (the "Gittins without refresh"
ablation). On both paper configs, at 1.1-1.5x saturation over 5 seeds, the 200-token refresh
gave a lower mean TTLT than 10 buckets (by 0.5-1.1% on Llama-3.1-8B/A40, 5-7.5% on the
32B/H800 config). Without rank preemption a running request's rank only picks the victim when
the KV cache runs out (vLLM preempts the worst-ranked), and a refresh that worsens the rank of a
request already far along makes it that victim; on the memory-bound 32B config no refresh at all
did better still (-6% against 200 tokens at 1.25-1.5x). A blocked waiting request preempts the
worst-ranked running one when its rank is better by a factor ``1 + hysteresis`` (so equal-ish
ranks do not thrash). A request that outlives all its samples gets the configured rule
(:data:`~sagerl.policy.gittins.OutlivedRule`).

Placement (``sagesched``), our extension and the teacher of the RL agents: see
:class:`SageSchedPlacement`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence as Seq
from typing import Any

import numpy as np

from sagerl.cost import (
    COST_VARIANTS,
    CostDistribution,
    CostVariant,
    attained_cost,
    check_variant,
    hybrid_summary,
    prediction_summary,
    tokens_for_cost,
)
from sagerl.errors import ConfigError, SagerlError
from sagerl.policy.gittins import GittinsMode, OutlivedRule, gittins_rank_from, rank
from sagerl.policy.ordering import ORDERING, OrderingPolicy
from sagerl.policy.placement import PLACEMENT, PlacementPolicy
from sagerl.sim.sequence import NEVER, Sequence
from sagerl.view import ReplicaView
from sagerl.workload.request import Request


def require_prediction(seq: Sequence, policy: str) -> Any:
    """The sequence's predicted length distribution, or a clear error when there is none."""
    pred = seq.prediction
    if pred is None:
        raise SagerlError(
            f"ordering policy '{policy}' needs predicted length distributions; run the "
            "simulation with a predictor (e.g. compare.predictor.name: oracle)"
        )
    return pred


def _choice(kind: str, value: str, valid: Seq[str]) -> str:
    if value not in valid:
        raise ConfigError(f"{kind} must be one of {', '.join(valid)}; got {value!r}")
    return value


class _RankState:
    """Per-sequence cache of a SageSched ordering (kept in ``Sequence.policy_state``).

    Attributes:
        dist: The cost distribution (restarted ones are shifted, see ``outlived: restart``).
        bounds: Increasing generated-token counts at which the rank is refreshed.
        g_ref: The refresh point the cached rank was computed at (-1: none yet).
        rank: Cached rank (token² units); 0 or inf under the outlived rules.
        work: Expected remaining cost at ``g_ref`` (token² units).
        lists: ``dist``'s lengths, CDF, partial expectations and support as Python lists,
            built on the first refresh (``None`` until then, and again when ``dist`` is
            replaced): each refresh then needs a bisection and a few float operations instead
            of numpy calls on scalars.
    """

    __slots__ = ("bounds", "dist", "g_ref", "lists", "rank", "work")

    def __init__(self, dist: CostDistribution, bounds: list[int]) -> None:
        self.dist = dist
        self.lists: tuple[list[float], list[float], list[float], list[float]] | None = None
        self.bounds = bounds
        self.g_ref = -1
        self.rank = 0.0
        self.work = 0.0


@ORDERING.register("sagesched")
class SageSched(OrderingPolicy):
    """Gittins rank of the hybrid-cost distribution, refreshed at bucket boundaries.

    Args:
        cost: Cost variant: ``hybrid`` (the paper), ``output`` or ``linear`` (ablations).
        gittins: ``exact`` rank, or ``bucketed`` (Δ only at 10 bucket edges, as Hermes).
        index: ``gittins`` (the paper) or ``mean``: rank by the expected remaining cost instead
            (the "mean" policy ablation).
        refresh: When running ranks are recomputed: ``tokens`` (every ``refresh_tokens``,
            the default), ``buckets`` (``buckets`` equal cost buckets over
            ``[0, max sample cost]``), ``none``.
        buckets: Bucket count for ``refresh: buckets`` and ``gittins: bucketed``.
        refresh_tokens: Refresh interval for ``refresh: tokens``, output tokens.
        outlived: Rule for a request past all its samples: ``top``, ``bottom`` or ``restart``.
        preempt: Let a blocked waiting request preempt a worse-ranked running one (the
            paper's setting). Off by default: in our simulator it loses (see NOTE).
        hysteresis: Preempt only if ``rank_waiting * (1 + hysteresis) < rank_running``.

    NOTE: the paper runs SageSched with preemption. In our vLLM-style replica a full KV cache
    holds ~100-200 running requests, so a blocked short request waits only for the next
    completion (a fraction of a second at saturation), while each preemption discards the
    victim's KV (recompute: its prompt and generated tokens are prefilled again). Measured on
    the paper configs, preemption raised mean TTLT by 15-60% at every hysteresis we tried (0.2 to
    4) and was at best neutral with swap preemption; ``preempt: true`` keeps the paper's
    behaviour for ablations.
    """

    name = "sagesched"
    progress_keys = True

    def __init__(
        self,
        cost: CostVariant = "hybrid",
        gittins: GittinsMode = "exact",
        index: str = "gittins",
        refresh: str = "tokens",
        buckets: int = 10,
        refresh_tokens: int = 200,
        outlived: OutlivedRule = "top",
        preempt: bool = False,
        hysteresis: float = 0.5,
    ) -> None:
        self.cost: CostVariant = check_variant(cost)
        self.gittins: GittinsMode = _choice("gittins", gittins, ("exact", "bucketed"))  # type: ignore[assignment]
        self.index = _choice("index", index, ("gittins", "mean"))
        self.refresh = _choice("refresh", refresh, ("buckets", "tokens", "none"))
        self.outlived: OutlivedRule = _choice("outlived", outlived, ("top", "bottom", "restart"))  # type: ignore[assignment]
        if buckets < 1 or refresh_tokens < 1:
            raise ConfigError("buckets and refresh_tokens must be >= 1")
        if hysteresis < 0:
            raise ConfigError(f"hysteresis must be >= 0, got {hysteresis}")
        self.buckets = int(buckets)
        self.refresh_tokens = int(refresh_tokens)
        self.preempt_for_rank = bool(preempt)
        self.hysteresis = float(hysteresis)

    # ------------------------------------------------------------------ state
    def _bounds(self, dist: CostDistribution, start: int) -> list[int]:
        """Refresh points (token counts > ``start``) up to the outlive point ``max length``."""
        top = math.ceil(dist.lengths[-1])
        if self.refresh == "none":
            return []
        if self.refresh == "tokens":
            step = self.refresh_tokens
            points = list(range(start + step, top, step))
        else:
            # Equal buckets over the cost range still ahead: [attained at start, max cost].
            a0 = dist.attained(start)
            span = float(dist.support[-1]) - a0
            i = dist.prompt_tokens
            points = [
                tokens_for_cost(i, a0 + span * j / self.buckets, dist.variant)
                for j in range(1, self.buckets)
            ]
        points.append(top)
        # A restarted law keeps its restart point as the floor of its refresh points.
        floor = [start] if start > 0 else []
        return floor + sorted({p for p in points if p > start})

    def _state(self, seq: Sequence) -> _RankState:
        st = seq.policy_state
        if st is None:
            pred = require_prediction(seq, self.name)
            dist = CostDistribution.from_lengths(
                pred.support, pred.probs, seq.prompt_tokens, self.cost
            )
            st = seq.policy_state = _RankState(dist, self._bounds(dist, 0))
        return st

    def _refresh_point(self, st: _RankState, generated: int) -> int:
        bounds = st.bounds
        i = bisect.bisect_right(bounds, generated)
        return bounds[i - 1] if i else 0

    def _compute(self, seq: Sequence, st: _RankState, g_ref: int) -> None:
        dist = st.dist
        if self.gittins == "exact" and self.index == "gittins":
            if self._compute_exact(st, dist, g_ref):
                return
            work = None
        else:
            work = dist.remaining_mean(g_ref)
        if work is None:  # outlived every sample
            if self.outlived == "restart":
                # The remaining length is assumed distributed like the original prediction.
                pred = require_prediction(seq, self.name)
                shifted = CostDistribution.from_lengths(
                    pred.support + g_ref, pred.probs, seq.prompt_tokens, self.cost
                )
                st.dist = shifted
                st.lists = None
                st.bounds = self._bounds(shifted, g_ref) if self.refresh != "none" else []
                self._compute(seq, st, g_ref)
                return
            # One more token is the least it can still need (Hermes' "about to finish").
            st.work = attained_cost(seq.prompt_tokens, g_ref + 1, self.cost) - dist.attained(g_ref)
            st.rank = 0.0 if self.outlived == "top" else math.inf
        else:
            st.work = work
            if self.index == "mean":
                st.rank = work
            else:
                r = rank(dist, g_ref, self.gittins, self.buckets)
                st.rank = work if r is None else r
        st.g_ref = g_ref

    def _compute_exact(self, st: _RankState, dist: CostDistribution, g_ref: int) -> bool:
        """The exact-Gittins refresh: :meth:`CostDistribution.remaining_mean` and
        :func:`~sagerl.policy.gittins.gittins_rank` sharing one bisection and one attained cost,
        on the state's Python lists (the same operations on the same values, so the same bits).

        Returns:
            False when ``g_ref`` outlived every sample (nothing is written).
        """
        lists = st.lists
        if lists is None:
            lists = st.lists = (
                dist.lengths.tolist(),
                dist.cdf.tolist(),
                dist.partial.tolist(),
                dist.support.tolist(),
            )
        lengths, cdf, partial, support = lists
        j = bisect.bisect_right(lengths, g_ref)  # CostDistribution.alive_from
        if j >= len(support):
            return False
        below_p = cdf[j - 1] if j else 0.0
        below_x = partial[j - 1] if j else 0.0
        a = dist.attained(g_ref)
        work = (partial[-1] - below_x) / (1.0 - below_p) - a
        st.work = work
        st.rank = gittins_rank_from(dist, j, a, (cdf, partial, support))
        st.g_ref = g_ref
        return True

    # ------------------------------------------------------------------ policy API
    def key(self, seq: Sequence, now: float) -> tuple[float, float, int]:
        st = self._state(seq)
        g_ref = self._refresh_point(st, seq.num_generated)
        if g_ref != st.g_ref:
            self._compute(seq, st, g_ref)
        return (st.rank, seq.arrival, seq.request.id)

    def next_rekey(self, seq: Sequence) -> int:
        st = self._state(seq)
        i = bisect.bisect_right(st.bounds, seq.num_generated)
        return st.bounds[i] if i < len(st.bounds) else NEVER

    def beats(self, challenger: Sequence, incumbent: Sequence) -> bool:
        return challenger.sort_key[0] * (1.0 + self.hysteresis) < incumbent.sort_key[0]

    def profile(self, seq: Sequence) -> tuple[float, float]:
        st = self._state(seq)
        if st.g_ref < 0:
            self.key(seq, 0.0)
        return st.rank, st.work

    def profiles(self, seqs: list[Sequence]) -> list[tuple[float, float]]:
        """:meth:`profile` of each sequence, in order, for a replica's queue profile.

        Queued sequences were keyed when queued, so their cached state is current: it is read
        directly (a rebuild happens per decision and replica whose queue changed).
        """
        out: list[tuple[float, float]] = []
        append = out.append
        for seq in seqs:
            st = seq.policy_state
            if st is None or st.g_ref < 0:
                append(self.profile(seq))
            else:
                append((st.rank, st.work))
        return out


def hybrid_profile(seq: Sequence) -> tuple[float, float]:
    """``(Gittins rank, expected remaining hybrid cost)`` of ``seq`` from its prediction, uncached.

    Used by placement for replicas whose ordering is not SageSched. Without a prediction, the
    rank and work of a 256-token point prediction stand in.
    """
    pred = seq.prediction
    if pred is None:
        support, probs = np.array([256.0]), np.array([1.0])
    else:
        support, probs = pred.support, pred.probs
    dist = CostDistribution.from_lengths(support, probs, seq.prompt_tokens, "hybrid")
    g = seq.num_generated
    work = dist.remaining_mean(g)
    if work is None:
        return 0.0, seq.prompt_tokens + g + 0.5
    r = rank(dist, g)
    return (work if r is None else r), work


@PLACEMENT.register("sagesched")
class SageSchedPlacement(PlacementPolicy):
    """Join the replica where the request adds the least expected total TTLT (the RL teacher).

    The marginal estimate for replica ``r`` (seconds), with the request's Gittins rank ``g``,
    expected hybrid cost ``c`` and expected output length ``E[O]``::

        own_r     = max( (W_r(g) + c) / mu_r ,  E[O] / v_r )
        delay_r   = p_r * N_r(g) * c / mu_r
        Delta_r   = own_r + delay_r

    * ``W_r(g)``: expected remaining cost of the requests on ``r`` ranked at or before ``g``
      (they are served first under SageSched ordering), ``N_r(g)``: how many rank after it
      (each waits ``c / mu_r`` longer). Both come from the replica's
      :class:`~sagerl.view.QueueProfile` (sorted ranks + prefix sums) in O(log Q).
    * ``mu_r`` (``ReplicaView.cost_rate``): hybrid cost the replica processes per second with a
      full KV cache. One decode iteration adds each request's context length to its attained
      cost, so ``mu_r`` = KV tokens read per second: the work-conserving service rate.
    * ``v_r`` (``ReplicaView.decode_tokens_per_s``): a lone request's decode speed. With
      batching a request never finishes faster than alone; the ``max`` keeps idle replicas honest
      (their queue term is tiny) and makes faster GPUs win ties.
    * ``p_r`` in [0, 1]: pressure. A replica with free KV and an empty queue batches a newcomer
      without slowing others, so the delay term is scaled by its KV use, and is 1 while anything
      waits.

    Safety: a replica is skipped if its KV use after adding the request's prompt plus its
    ``kv_quantile`` predicted output would exceed ``kv_threshold``. If every healthy replica fails
    that test (typical under overload: vLLM fills the cache), the least ``Delta_r`` over all
    healthy replicas wins. Ties go to the lowest index.

    Cost per decision: O(m) for the request's rank (m predicted lengths) plus O(N log Q) over N
    replicas with Q queued requests (profiles are rebuilt by the replicas only when their
    membership or keys changed). ``marginal_costs`` exposes the per-replica estimates (the RL
    observation and the teacher's action both use them).

    Args:
        seed: Unused (deterministic); kept for the common constructor.
        kv_threshold: Largest allowed KV use after admission, fraction of the cache.
        kv_quantile: Quantile of the predicted output length used in the KV test.
        gittins: ``exact`` or ``bucketed`` rank of the new request.
        fallback_length: Output tokens assumed when there is no prediction.
    """

    name = "sagesched"

    def __init__(
        self,
        seed: int = 0,
        kv_threshold: float = 0.95,
        kv_quantile: float = 0.9,
        gittins: GittinsMode = "exact",
        fallback_length: float = 256.0,
    ) -> None:
        super().__init__(seed)
        if not 0 < kv_threshold <= 1 or not 0 < kv_quantile <= 1:
            raise ConfigError("kv_threshold and kv_quantile must lie in (0, 1]")
        self.kv_threshold = float(kv_threshold)
        self.kv_quantile = float(kv_quantile)
        self.gittins: GittinsMode = _choice("gittins", gittins, ("exact", "bucketed"))  # type: ignore[assignment]
        self.fallback_length = float(fallback_length)

    def request_summary(
        self, request: Request, prediction: Any
    ) -> tuple[float, float, float, float]:
        """``(rank, expected cost, expected output tokens, high-quantile output tokens)``."""
        if prediction is None:
            support, probs = np.array([self.fallback_length]), np.array([1.0])
            high = self.fallback_length
        else:
            support, probs = prediction.support, prediction.probs
            cdf = getattr(prediction, "cdf_at_support", None)
            if cdf is None:
                high = float(prediction.quantile(self.kv_quantile))
            else:  # LengthDistribution.quantile, without its per-call array checks
                k = bisect.bisect_left(cdf, self.kv_quantile - 1e-12)
                high = float(support[min(k, support.size - 1)])
        if self.gittins == "exact":
            if prediction is None:
                summary = hybrid_summary(support, probs, request.prompt_tokens)
            else:  # memoised: the RL observation asks for the same summary
                summary = prediction_summary(request.id, prediction, request.prompt_tokens)
            mean_cost, r0, mean_len, _ = summary
            return r0, mean_cost, mean_len, high
        dist = CostDistribution.from_lengths(support, probs, request.prompt_tokens, "hybrid")
        r = rank(dist, 0, self.gittins)
        mean_cost = dist.mean()
        mean_len = float(dist.probs @ dist.lengths)
        return (mean_cost if r is None else r), mean_cost, mean_len, high

    def marginal_costs(
        self, request: Request, views: Seq[ReplicaView], prediction: Any = None
    ) -> tuple[list[float], list[bool]]:
        """Per-replica expected increase of total TTLT (s) and whether the KV test passes.

        Unhealthy replicas get ``inf`` and ``False``.
        """
        g, c, mean_len, high = self.request_summary(request, prediction)
        tokens_high = request.prompt_tokens + high
        deltas: list[float] = []
        feasible: list[bool] = []
        for i in range(len(views)):
            v = views[i]
            if not v.healthy:
                deltas.append(math.inf)
                feasible.append(False)
                continue
            mu = v.cost_rate if v.cost_rate > 0 else 1.0
            if v.queue_profile is not None:
                ahead, behind = v.queue_profile().split(g)
            else:
                ahead, behind = 0.0, v.outstanding
            own = max((ahead + c) / mu, mean_len / v.decode_tokens_per_s)
            pressure = 1.0 if v.num_waiting else v.kv_usage
            deltas.append(own + pressure * behind * c / mu)
            blocks = -(-math.ceil(tokens_high) // v.block_size)
            feasible.append(v.kv_blocks_used + blocks <= self.kv_threshold * v.kv_blocks_total)
        return deltas, feasible

    def choose(
        self, request: Request, views: Seq[ReplicaView], now: float, prediction: Any = None
    ) -> int:
        deltas, feasible = self.marginal_costs(request, views, prediction)
        best, best_any = -1, -1
        for i, d in enumerate(deltas):
            if d == math.inf:
                continue
            if best_any < 0 or d < deltas[best_any]:
                best_any = i
            if feasible[i] and (best < 0 or d < deltas[best]):
                best = i
        if best_any < 0:
            raise SagerlError("no healthy replica to place the request on")
        return best if best >= 0 else best_any


__all__ = ["COST_VARIANTS", "SageSched", "SageSchedPlacement", "hybrid_profile"]
