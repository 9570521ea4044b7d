"""The cost of serving a request: SageSched's hybrid cost and the ablation variants.

SageSched (arXiv 2603.07917) measures a request by one number that covers both regimes of a
decode step. Memory-bound: the request holds ``I + j`` KV tokens while it generates token ``j``,
so its KV memory-time is ``sum_j (I + j) ~ O²/2 + I·O`` (times the memory-time unit). Compute-
bound: attention reads the same ``I + j`` tokens per step, so its attention time has the same
shape. Hence the cost (in token² units, "KV token-steps")::

    C(I, O) = O²/2 + I·O          (hybrid; prefill and the constant per-step FFN time ignored)

A useful identity: one decode iteration advances every running request by one token, which adds
``I + g`` (its current context) to its attained cost. So the cost a replica processes per
iteration is exactly the KV tokens it reads, and a replica's *cost rate* (units/s) is its KV
tokens read per second (see :func:`cost_rate`).

Variants for the cost ablation (the paper's Figure 10):

* ``hybrid``: ``O²/2 + I·O`` (SageSched);
* ``output``: ``O`` (what SSJF, LTR and TRAIL rank by);
* ``linear``: ``I + 2·O`` (VTC-style token counting, prompt tokens weighted 1, output 2).

A request's *cost distribution* is the push-forward of its predicted length distribution
through ``C(I, ·)`` with its own ``I``. ``C`` is increasing in ``O`` (for ``O >= 0``), so sorted
lengths give sorted costs and no re-sort is needed. The *attained* cost after ``g`` generated
tokens is the part already paid: ``C(I, g)`` for ``hybrid`` and ``output``; for ``linear`` the
prompt term is paid with the first token (prefill), so it is ``0`` at ``g = 0`` and ``I + 2g``
afterwards.
The *remaining* cost given ``g`` tokens is ``C(I, X) - attained`` conditioned on ``X > g``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
from numpy.typing import ArrayLike

from sagerl.errors import unknown_name

if TYPE_CHECKING:
    from sagerl.predict.distribution import LengthDistribution

CostVariant = Literal["hybrid", "output", "linear"]
COST_VARIANTS: tuple[str, ...] = get_args(CostVariant)


def check_variant(variant: str) -> CostVariant:
    """Return ``variant`` if it is a known cost variant, else raise an error listing them."""
    if variant not in COST_VARIANTS:
        raise unknown_name("cost variant", variant, COST_VARIANTS)
    return variant  # type: ignore[return-value]


def cost(
    prompt_tokens: float, output_tokens: ArrayLike, variant: CostVariant = "hybrid"
) -> np.ndarray:
    """``C(I, O)``: token² (``hybrid``) or tokens (``output``, ``linear``); vectorised over O.

    Args:
        prompt_tokens: Prompt length I, tokens.
        output_tokens: Output length(s) O, tokens.
        variant: Which cost (see the module docstring).
    """
    o = np.asarray(output_tokens, dtype=np.float64)
    if variant == "hybrid":
        return o * (0.5 * o + prompt_tokens)
    if variant == "output":
        return o.copy()
    if variant == "linear":
        return prompt_tokens + 2.0 * o
    raise unknown_name("cost variant", variant, COST_VARIANTS)


def cost_scalar(
    prompt_tokens: float, output_tokens: float, variant: CostVariant = "hybrid"
) -> float:
    """:func:`cost` for one output length, without numpy (hot paths)."""
    if variant == "hybrid":
        return output_tokens * (0.5 * output_tokens + prompt_tokens)
    if variant == "output":
        return float(output_tokens)
    return prompt_tokens + 2.0 * output_tokens


def attained_cost(prompt_tokens: float, generated: float, variant: CostVariant = "hybrid") -> float:
    """Cost already paid after ``generated`` output tokens (0 before the first token)."""
    if generated <= 0:
        return 0.0
    return cost_scalar(prompt_tokens, generated, variant)


def tokens_for_cost(prompt_tokens: float, attained: float, variant: CostVariant = "hybrid") -> int:
    """Smallest generated-token count ``g`` whose attained cost reaches ``attained``.

    The inverse of :func:`attained_cost`, used to turn cost-space bucket boundaries into the
    token counts at which a rank must be refreshed.
    """
    if attained <= 0:
        return 0
    if variant == "hybrid":
        # g²/2 + I·g = a  ->  g = -I + sqrt(I² + 2a)
        p = prompt_tokens
        g = -p + math.sqrt(p * p + 2.0 * attained)
        n = max(0, math.ceil(g - 1e-9))
        # The fix-up below with attained_cost written out (SageSched calls this ~10 times per
        # request): n * (0.5 * n + p) is cost_scalar's hybrid cost, 0 for n <= 0.
        while n > 0:
            m = n - 1
            if (m * (0.5 * m + p) if m > 0 else 0.0) < attained:
                break
            n = m
        while (n * (0.5 * n + p) if n > 0 else 0.0) < attained:
            n += 1
        return n
    elif variant == "output":
        g = attained
    else:
        g = max(1.0, (attained - prompt_tokens) / 2.0)
    n = max(0, math.ceil(g - 1e-9))
    # Fix up rounding so the contract holds exactly.
    while n > 0 and attained_cost(prompt_tokens, n - 1, variant) >= attained:
        n -= 1
    while attained_cost(prompt_tokens, n, variant) < attained:
        n += 1
    return n


@dataclass(slots=True)
class CostDistribution:
    """A request's cost distribution: sorted support with cumulative sums for O(1) tail queries.

    Attributes:
        lengths: Output lengths behind each support point, tokens (increasing).
        support: Costs ``C(I, lengths)``, increasing.
        probs: Probabilities (sum to one).
        cdf: ``P(X <= support[i])``.
        partial: ``sum_{j <= i} probs[j] * support[j]`` (partial expectations).
        prompt_tokens: The request's I, tokens.
        variant: Which cost.
    """

    lengths: np.ndarray
    support: np.ndarray
    probs: np.ndarray
    cdf: np.ndarray
    partial: np.ndarray
    prompt_tokens: float
    variant: CostVariant

    @classmethod
    def from_lengths(
        cls,
        lengths: ArrayLike,
        probs: ArrayLike | None,
        prompt_tokens: float,
        variant: CostVariant = "hybrid",
    ) -> CostDistribution:
        """Push sorted or unsorted lengths (tokens) and their weights through ``C(I, ·)``.

        Lengths below one token are clipped to one (a request emits at least one token).
        """
        x = np.maximum(np.asarray(lengths, dtype=np.float64).ravel(), 1.0)
        w = np.ones_like(x) if probs is None else np.asarray(probs, dtype=np.float64).ravel()
        if x.size == 0 or w.shape != x.shape:
            raise ValueError("a cost distribution needs matching, non-empty lengths and probs")
        if x.size > 1 and (x[1:] < x[:-1]).any():  # np.diff(x) < 0, without the temporary
            order = np.argsort(x, kind="stable")
            x, w = x[order], w[order]
        w = w / w.sum()
        c = cost(prompt_tokens, x, variant)
        cdf = np.cumsum(w)
        cdf[-1] = 1.0
        return cls(x, c, w, cdf, np.cumsum(w * c), float(prompt_tokens), variant)

    @classmethod
    def from_length_distribution(
        cls, dist: LengthDistribution, prompt_tokens: float, variant: CostVariant = "hybrid"
    ) -> CostDistribution:
        """The push-forward of a predicted :class:`LengthDistribution` (already sorted)."""
        return cls.from_lengths(dist.support, dist.probs, prompt_tokens, variant)

    def __len__(self) -> int:
        return int(self.support.size)

    def mean(self) -> float:
        """Expected total cost."""
        return float(self.partial[-1])

    def attained(self, generated: float) -> float:
        """Cost paid after ``generated`` tokens (see :func:`attained_cost`)."""
        return attained_cost(self.prompt_tokens, generated, self.variant)

    def alive_from(self, generated: float) -> int:
        """Index of the first support point whose length exceeds ``generated`` (``len`` if none)."""
        return int(np.searchsorted(self.lengths, generated, side="right"))

    def outlived(self, generated: float) -> bool:
        """True when ``generated`` tokens are at or beyond every sampled length."""
        return bool(generated >= self.lengths[-1])

    def remaining_mean(self, generated: float) -> float | None:
        """``E[C(I, X) - attained | X > generated]``; ``None`` if every sample was outlived."""
        j = self.alive_from(generated)
        if j >= self.support.size:
            return None
        below_p = self.cdf[j - 1] if j else 0.0
        below_x = self.partial[j - 1] if j else 0.0
        tail_p = 1.0 - below_p
        return float((self.partial[-1] - below_x) / tail_p - self.attained(generated))

    def remaining(self, generated: float) -> CostDistribution | None:
        """The remaining-cost distribution given ``generated`` tokens; ``None`` if outlived.

        Support: ``C(I, x) - attained`` for the sampled lengths ``x > generated``, renormalised.
        """
        j = self.alive_from(generated)
        if j >= self.support.size:
            return None
        a = self.attained(generated)
        probs = self.probs[j:] / self.probs[j:].sum()
        support = self.support[j:] - a
        cdf = np.cumsum(probs)
        cdf[-1] = 1.0
        return CostDistribution(
            self.lengths[j:],
            support,
            probs,
            cdf,
            np.cumsum(probs * support),
            self.prompt_tokens,
            self.variant,
        )


def cost_rate(decode_coefficients: tuple[float, float], kv_tokens: float) -> float:
    """Hybrid cost a replica processes per second when ``kv_tokens`` of context are resident.

    One decode iteration adds each running request's context length to its attained cost, so the
    iteration processes ``kv_tokens`` cost units in ``base + per_kv * kv_tokens`` seconds.

    Args:
        decode_coefficients: ``(base, per_kv)`` of the step-time model's decode iteration, s and
            s/token (``StepTimer.decode_coefficients``).
        kv_tokens: Resident context tokens summed over the batch.

    Returns:
        Cost units (token²) per second.
    """
    base, per_kv = decode_coefficients
    return kv_tokens / (base + per_kv * kv_tokens)


def hybrid_summary(
    support: np.ndarray, probs: np.ndarray, prompt_tokens: float
) -> tuple[float, float, float, float]:
    """``(expected hybrid cost, exact Gittins rank before any output, mean length, std length)``
    of a predicted length distribution whose ``support`` is sorted ascending.

    The rank is :func:`sagerl.policy.gittins.gittins_rank` at zero generated tokens,
    ``min_k (E[C; C <= c_k] + P(C > c_k) c_k) / P(C <= c_k)``, computed with a handful of vector
    operations instead of building a :class:`CostDistribution` (tested equal): placement asks for
    it once per request and decision, in the simulator and in the router.
    """
    x = np.maximum(support, 1.0)  # a request emits at least one token
    c = x * (0.5 * x + prompt_tokens)
    cdf = np.cumsum(probs)
    cdf[-1] = 1.0
    partial = np.cumsum(probs * c)
    rank = float(np.min((partial + (1.0 - cdf) * c) / cdf))
    mean = float(probs @ x)
    var = float(probs @ (x - mean) ** 2)
    return float(partial[-1]), rank, mean, math.sqrt(max(var, 0.0))


_SUMMARIES: dict[int, tuple[Any, float, tuple[float, float, float, float]]] = {}
_SUMMARIES_MAX = 8
"""Memo of :func:`prediction_summary`: request id -> (prediction, prompt tokens, summary)."""


def prediction_summary(
    request_id: int, prediction: Any, prompt_tokens: float
) -> tuple[float, float, float, float]:
    """:func:`hybrid_summary` of a request's predicted ``LengthDistribution``, memoised.

    One placement decision asks for it twice, from the observation's
    :class:`~sagerl.features.RequestStats` and from SageSched placement's ``request_summary``
    (the RL teacher), each unaware of the other; the memo lets both share one computation
    without either API passing it along. Entries are keyed by request id and valid only for
    the very same prediction object and prompt length, so a request predicted again (a new
    episode, another environment in the process) is recomputed. The memo keeps the last few
    requests only (several environments may interleave in one process); hits return
    the very tuple computed, so results are bit for bit those of :func:`hybrid_summary`.
    """
    hit = _SUMMARIES.get(request_id)
    if hit is not None and hit[0] is prediction and hit[1] == prompt_tokens:
        return hit[2]
    summary = hybrid_summary(prediction.support, prediction.probs, prompt_tokens)
    if len(_SUMMARIES) >= _SUMMARIES_MAX:
        _SUMMARIES.clear()  # atomic, unlike evicting the oldest (threads may share the memo)
    _SUMMARIES[request_id] = (prediction, prompt_tokens, summary)
    return summary
