"""The Gittins rank of an empirical cost distribution, exact and bucketed.

In an M/G/1 queue whose job sizes are random with a known law, the Gittins policy minimises
mean response time (Scully and Harchol-Balter); SageSched (arXiv 2603.07917) uses it with the
request's predicted *cost* distribution (:mod:`sagerl.cost`) as the size law. For a job of
size ``X`` that has already received service ``a``, the rank is ::

    G(a) = inf over Δ > 0 of  E[min(X - a, Δ) | X > a]  /  P(X - a <= Δ | X > a)

"serve for up to Δ more; the expected work spent per unit of completion probability". Smaller
ranks are served first. The ratio is the work "price" of finishing the job.

Exact rank of an empirical law (sorted support ``c_1 < ... < c_m``, probabilities ``p_i``, CDF
``F``). Between two support points the denominator is constant and the numerator grows with Δ,
so the infimum is attained at a support point::

    G = min over k of  [ sum_{i<=k} p_i c_i + (1 - F(c_k)) c_k ]  /  F(c_k)

Conditioning on attained cost ``a`` keeps the support above ``a``, shifted by ``a``. With the
cumulative sums of the *unconditioned* law (computed once per request) the conditional law needs
no renormalisation: both numerator and denominator scale by the surviving mass, which cancels::

    G(a) = min over k >= j of  [ (S_k - S_{j-1}) - a (F_k - F_{j-1}) + (1 - F_k)(c_k - a) ]
                               / (F_k - F_{j-1})

where ``j`` is the first support point above ``a`` and ``S`` the partial expectations. That is
O(m - j) after the one-off sort (the push-forward of sorted lengths is already sorted).

Bucketed rank: the authors' earlier system (Hermes, ``Distribution.get_gittins_rank`` in
github.com/NephrenCake/Hermes) only tries ``Δ`` at the edges of 10 equal-width buckets over
``[0, max remaining]``. It is an upper bound of the exact rank (a restricted minimisation) and
equal to it when every support point is a bucket edge. NOTE: Hermes divides ``E[X | X <= Δ]``
(not ``E[min(X, Δ)]``) by ``P(X <= Δ)``; we keep the Gittins numerator in both variants so the
two differ only in the Δ grid.

A request that has outlived every sample has no conditional law; these functions return
``None`` and the policy applies its configured rule (:class:`OutlivedRule`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from sagerl.cost import CostDistribution

GittinsMode = Literal["exact", "bucketed"]
OutlivedRule = Literal["top", "bottom", "restart"]
"""What to do once a request outlives all its samples: ``top`` gives it rank 0 (served first, as
Hermes does: it is probably about to finish), ``bottom`` rank infinity (served last, protecting the
others from a mispredicted long request), ``restart`` re-ranks it as if its predicted law started
again from the current point (the remaining length is assumed distributed like the original)."""


def gittins_rank(dist: CostDistribution, generated: float = 0.0) -> float | None:
    """Exact Gittins rank of ``dist`` conditional on ``generated`` output tokens served.

    Args:
        dist: The request's cost distribution.
        generated: Output tokens already generated (its attained cost follows from the cost).

    Returns:
        The rank in the cost's units, or ``None`` if ``generated`` outlives every sample.
    """
    j = dist.alive_from(generated)
    if j >= dist.support.size:
        return None
    return gittins_rank_from(dist, j, dist.attained(generated))


def gittins_rank_from(
    dist: CostDistribution,
    j: int,
    a: float,
    lists: tuple[list[float], list[float], list[float]] | None = None,
) -> float:
    """:func:`gittins_rank` once the caller has found ``j`` (the first support point alive,
    ``j < len(dist)``) and ``a`` (the attained cost), e.g. beside the remaining mean.

    Args:
        dist: The request's cost distribution.
        j: Index of the first sampled length above the generated count.
        a: Attained cost.
        lists: ``(cdf, partial, support)`` of ``dist`` as Python lists, if the caller keeps
            them: the short-tail loop then reads plain floats (the same values, so the same
            rank bit for bit).
    """
    m = dist.support.size
    if m - j <= _SMALL:
        if lists is None:
            return _rank_python(dist, j, a)
        return _rank_lists(*lists, j, a)
    if j == 0 and a == 0.0:
        # Before any output (the rank every request is queued with): f0 = s0 = a = 0, and
        # subtracting or adding those zeros changes no bit, so four array operations go.
        cdf = dist.cdf
        return float(((dist.partial + (1.0 - cdf) * dist.support) / cdf).min())
    f0 = dist.cdf[j - 1] if j else 0.0
    s0 = dist.partial[j - 1] if j else 0.0
    cdf = dist.cdf[j:]
    mass = cdf - f0
    num = (dist.partial[j:] - s0) - a * mass + (1.0 - cdf) * (dist.support[j:] - a)
    return float((num / mass).min())


_SMALL = 24
"""Below this many surviving support points a Python loop beats numpy's per-call overhead."""


def _rank_lists(
    cdf: list[float], partial: list[float], support: list[float], j: int, a: float
) -> float:
    """The short-tail Gittins loop on Python lists (plain floats beat numpy scalars here)."""
    f0 = cdf[j - 1] if j else 0.0
    s0 = partial[j - 1] if j else 0.0
    best = float("inf")
    for k in range(j, len(support)):
        fk = cdf[k]
        mass = fk - f0
        value = (partial[k] - s0 - a * mass + (1.0 - fk) * (support[k] - a)) / mass
        if value < best:
            best = value
    return best


def _rank_python(dist: CostDistribution, j: int, a: float) -> float:
    """:func:`_rank_lists` on the arrays' tails from ``j - 1`` (same floats as ``tolist``)."""
    start = j - 1 if j else 0
    return _rank_lists(
        dist.cdf[start:].tolist(),
        dist.partial[start:].tolist(),
        dist.support[start:].tolist(),
        j - start,
        a,
    )


def gittins_rank_bucketed(
    dist: CostDistribution, generated: float = 0.0, buckets: int = 10
) -> float | None:
    """Gittins rank with Δ restricted to ``buckets`` equal-width edges over the remaining range.

    Args:
        dist: The request's cost distribution.
        generated: Output tokens already generated.
        buckets: Number of buckets over ``[0, max remaining cost]`` (Hermes uses 10).

    Returns:
        The rank (at least the exact rank), or ``None`` if every sample was outlived.
    """
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    j = dist.alive_from(generated)
    if j >= dist.support.size:
        return None
    a = dist.attained(generated)
    rem = dist.support[j:] - a
    f0 = dist.cdf[j - 1] if j else 0.0
    s0 = dist.partial[j - 1] if j else 0.0
    edges = rem[-1] * np.arange(1, buckets + 1) / buckets
    edges[-1] = rem[-1]  # exact top edge: the last bucket holds the maximum
    idx = np.searchsorted(rem, edges, side="right") - 1  # last support point <= edge
    ok = idx >= 0
    idx, edges = idx[ok], edges[ok]
    mass = dist.cdf[j + idx] - f0
    below = (dist.partial[j + idx] - s0) - a * mass
    num = below + (1.0 - dist.cdf[j + idx]) * edges
    return float(np.min(num / mass))


def gittins_rank_bruteforce(
    dist: CostDistribution, deltas: np.ndarray, generated: float = 0.0
) -> float:
    """The rank by direct evaluation of ``E[min(X - a, Δ)] / P(X - a <= Δ)`` over given Δ values.

    Reference implementation for tests (O(m · len(deltas))); returns ``inf`` when no Δ in the
    grid reaches the smallest remaining cost.
    """
    rem = dist.remaining(generated)
    if rem is None:
        raise ValueError("the request outlived every sample")
    x, p = rem.support, rem.probs
    best = float("inf")
    for d in np.asarray(deltas, dtype=np.float64):
        prob = float(p[x <= d].sum())
        if prob <= 0:
            continue
        best = min(best, float(p @ np.minimum(x, d)) / prob)
    return best


def rank(
    dist: CostDistribution, generated: float = 0.0, mode: GittinsMode = "exact", buckets: int = 10
) -> float | None:
    """Dispatch to the exact or bucketed rank."""
    if mode == "exact":
        return gittins_rank(dist, generated)
    if mode == "bucketed":
        return gittins_rank_bucketed(dist, generated, buckets)
    raise ValueError(f"unknown Gittins mode {mode!r}; valid: exact, bucketed")
