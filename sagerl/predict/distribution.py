"""A discrete distribution of output lengths: what every predictor returns.

SageSched's predictor does not return a number but the output lengths of similar past requests;
the hybrid cost, the Gittins rank and the RL observation all consume that distribution. It is
stored as sorted, distinct support points (lengths in tokens) with probabilities, so every query
is a ``searchsorted`` or a cumulative sum over at most a few thousand points.

Conventions (all lengths in output tokens, float64 so shifted or scaled supports stay exact):

* ``cdf(x) = P(X <= x)``;
* ``quantile(q)`` is the lower inverse CDF, the smallest support point with ``cdf >= q``;
* ``remaining(g)`` is the law of ``X - g`` given ``X > g`` (tokens still to come once ``g`` were
  generated). When no support point lies above ``g`` the request has outlived every sample; the
  result is then a point mass at ``min_remaining`` (default one token), i.e. "about to finish",
  the rule of the authors' earlier system (Hermes), which gives such requests top priority.
  Callers wanting another rule test :meth:`LengthDistribution.outlived` first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

#: Default histogram edges for features: 20 buckets of 100 tokens, the paper's bucketing, with
#: everything at or above 2,000 tokens folded into the last bucket.
DEFAULT_BIN_EDGES: np.ndarray = np.arange(0.0, 2001.0, 100.0)


class LengthDistribution:
    """Weighted support points of output lengths (tokens).

    Args:
        support: Lengths in tokens; need not be sorted or distinct (duplicates are merged).
        probs: Non-negative weights, one per support point; normalised to sum to one. ``None``
            gives equal weights.

    Raises:
        ValueError: empty support, mismatched shapes, negative or all-zero weights, or a
            non-finite value.
    """

    __slots__ = ("_cdf", "_cum_x", "probs", "support")

    support: np.ndarray
    probs: np.ndarray

    def __init__(self, support: ArrayLike, probs: ArrayLike | None = None) -> None:
        x = np.asarray(support, dtype=np.float64).ravel()
        if x.size == 0:
            raise ValueError("a LengthDistribution needs at least one support point")
        w = np.ones_like(x) if probs is None else np.asarray(probs, dtype=np.float64).ravel()
        if w.shape != x.shape:
            raise ValueError(f"support has {x.size} points but probs has {w.size}")
        if not (np.isfinite(x).all() and np.isfinite(w).all()):
            raise ValueError("support and probs must be finite")
        if (w < 0).any():
            raise ValueError("probs must be non-negative")
        keep = w > 0
        x, w = x[keep], w[keep]
        if x.size == 0:
            raise ValueError("probs sum to zero")
        # Sort and merge duplicates: unique() sorts, bincount sums the weights per value.
        ux, inverse = np.unique(x, return_inverse=True)
        if ux.size != x.size:
            w = np.bincount(inverse, weights=w, minlength=ux.size).astype(np.float64)
        else:
            w = w[np.argsort(x, kind="stable")]
        self.support = ux
        self.probs = w / w.sum()
        self._cdf: np.ndarray | None = None
        self._cum_x: np.ndarray | None = None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def point(cls, length: float) -> LengthDistribution:
        """A one-point distribution (a point predictor's answer, or a known true length)."""
        return cls(np.array([float(length)]))

    @classmethod
    def from_samples(
        cls, samples: ArrayLike, weights: ArrayLike | None = None
    ) -> LengthDistribution:
        """The empirical distribution of ``samples`` (optionally weighted)."""
        return cls(samples, weights)

    @classmethod
    def mixture(
        cls, parts: Sequence[LengthDistribution], weights: ArrayLike | None = None
    ) -> LengthDistribution:
        """A mixture of distributions, e.g. a prediction blended with a uniform one."""
        if not parts:
            raise ValueError("a mixture needs at least one part")
        w = np.ones(len(parts)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (len(parts),):
            raise ValueError(f"{len(parts)} parts but {w.size} weights")
        support = np.concatenate([p.support for p in parts])
        probs = np.concatenate([p.probs * wi for p, wi in zip(parts, w, strict=True)])
        return cls(support, probs)

    # ------------------------------------------------------------------ cached cumulatives
    @property
    def cdf_at_support(self) -> np.ndarray:
        """``P(X <= support[i])`` for each support point (cumulative sum, cached)."""
        if self._cdf is None:
            c = np.cumsum(self.probs)
            c[-1] = 1.0  # exact, whatever the rounding
            self._cdf = c
        return self._cdf

    @property
    def _partial_mean(self) -> np.ndarray:
        """``sum_{j <= i} p_j x_j`` for each i (cached; used by CRPS and remaining means)."""
        if self._cum_x is None:
            self._cum_x = np.cumsum(self.probs * self.support)
        return self._cum_x

    # ------------------------------------------------------------------ summaries
    def __len__(self) -> int:
        return int(self.support.size)

    def __repr__(self) -> str:
        return (
            f"LengthDistribution(n={len(self)}, mean={self.mean():.1f}, "
            f"min={self.support[0]:g}, max={self.support[-1]:g})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LengthDistribution):
            return NotImplemented
        return np.array_equal(self.support, other.support) and np.allclose(
            self.probs, other.probs, rtol=0, atol=1e-12
        )

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside

    def mean(self) -> float:
        """Expected length in tokens."""
        return float(self.probs @ self.support)

    def var(self) -> float:
        """Variance in tokens squared."""
        m = self.mean()
        return float(self.probs @ (self.support - m) ** 2)

    def std(self) -> float:
        """Standard deviation in tokens."""
        return float(np.sqrt(self.var()))

    def cdf(self, x: ArrayLike) -> np.ndarray | float:
        """``P(X <= x)``, vectorised over ``x`` (a scalar gives a float)."""
        xa = np.asarray(x, dtype=np.float64)
        idx = np.searchsorted(self.support, xa, side="right")
        out = np.concatenate(([0.0], self.cdf_at_support))[idx]
        return float(out) if out.ndim == 0 else out

    def quantile(self, q: ArrayLike) -> np.ndarray | float:
        """Lower quantile: the smallest support point whose CDF is at least ``q`` (0..1).

        Vectorised over ``q``; a scalar gives a float. A tiny tolerance absorbs rounding in the
        cumulative sum, so ``quantile(cdf(x)) == x`` at every support point.
        """
        qa = np.asarray(q, dtype=np.float64)
        if ((qa < 0) | (qa > 1)).any():
            raise ValueError("quantile levels must lie in [0, 1]")
        idx = np.searchsorted(self.cdf_at_support, qa - 1e-12, side="left")
        out = self.support[np.minimum(idx, self.support.size - 1)]
        return float(out) if out.ndim == 0 else out

    def median(self) -> float:
        """The lower median in tokens."""
        return float(self.quantile(0.5))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` independent draws (float64 tokens) using the caller's generator."""
        u = rng.random(n)
        idx = np.searchsorted(self.cdf_at_support, u, side="right")
        return self.support[np.minimum(idx, self.support.size - 1)]

    def histogram(self, edges: ArrayLike = DEFAULT_BIN_EDGES) -> np.ndarray:
        """Probability mass per fixed bin, a feature vector of ``len(edges) - 1`` entries.

        Bin i holds ``[edges[i], edges[i + 1])``; mass below ``edges[0]`` goes to the first bin
        and mass at or above ``edges[-1]`` to the last, so the vector always sums to one.
        """
        e = np.asarray(edges, dtype=np.float64)
        if e.ndim != 1 or e.size < 2 or (np.diff(e) <= 0).any():
            raise ValueError("edges must be a strictly increasing 1-d array of >= 2 values")
        nbins = e.size - 1
        b = np.clip(np.searchsorted(e, self.support, side="right") - 1, 0, nbins - 1)
        return np.bincount(b, weights=self.probs, minlength=nbins)

    # ------------------------------------------------------------------ conditioning
    def survival(self, generated: ArrayLike) -> np.ndarray | float:
        """``P(X > generated)``, vectorised."""
        c = self.cdf(generated)
        return 1.0 - c

    def outlived(self, generated: float) -> bool:
        """True when ``generated`` tokens are at or beyond every support point."""
        return bool(generated >= self.support[-1])

    def conditional(self, generated: float) -> LengthDistribution | None:
        """The law of the total length ``X`` given ``X > generated``; ``None`` if outlived."""
        start = int(np.searchsorted(self.support, generated, side="right"))
        if start >= self.support.size:
            return None
        return _from_sorted(self.support[start:], self.probs[start:])

    def remaining(self, generated: float, min_remaining: float = 1.0) -> LengthDistribution:
        """Tokens still to come, ``X - generated`` given ``X > generated``.

        Args:
            generated: Output tokens produced so far.
            min_remaining: The point mass returned when the request has outlived every support
                point (see the module docstring).
        """
        cond = self.conditional(generated)
        if cond is None:
            return LengthDistribution.point(min_remaining)
        return _from_sorted(cond.support - generated, cond.probs)

    def remaining_mean(self, generated: ArrayLike, min_remaining: float = 1.0) -> np.ndarray:
        """``E[X - g | X > g]`` for many ``g`` at once (one searchsorted, no new objects).

        Outlived entries get ``min_remaining``, matching :meth:`remaining`.
        """
        g = np.atleast_1d(np.asarray(generated, dtype=np.float64))
        idx = np.searchsorted(self.support, g, side="right")
        cum_p = np.concatenate(([0.0], self.cdf_at_support))
        cum_x = np.concatenate(([0.0], self._partial_mean))
        tail_p = 1.0 - cum_p[idx]
        tail_x = cum_x[-1] - cum_x[idx]
        alive = idx < self.support.size
        out = np.full(g.shape, float(min_remaining))
        out[alive] = tail_x[alive] / tail_p[alive] - g[alive]
        return out

    # ------------------------------------------------------------------ transforms
    def map(self, fn: Callable[[np.ndarray], np.ndarray]) -> LengthDistribution:
        """Push the support through ``fn`` (e.g. a cost function), keeping the probabilities."""
        return LengthDistribution(fn(self.support), self.probs)

    def expected_abs_diff(self, y: ArrayLike) -> np.ndarray:
        """``E|X - y|`` for each ``y`` (vectorised; the building block of CRPS).

        With F and S(y) = sum of p_i x_i over x_i <= y:
        ``E|X - y| = y (2 F(y) - 1) - 2 S(y) + E[X]``.
        """
        ya = np.atleast_1d(np.asarray(y, dtype=np.float64))
        idx = np.searchsorted(self.support, ya, side="right")
        f = np.concatenate(([0.0], self.cdf_at_support))[idx]
        s = np.concatenate(([0.0], self._partial_mean))[idx]
        return ya * (2.0 * f - 1.0) - 2.0 * s + self._partial_mean[-1]


def _from_weighted(values: np.ndarray, weights: np.ndarray) -> LengthDistribution:
    """``LengthDistribution(values, weights)`` for trusted inputs, without the checks (hot path).

    The caller guarantees what the constructor would otherwise verify: ``values`` and
    ``weights`` are 1-d float64 arrays of the same non-zero size, every value finite and never
    ``-0.0`` (a predictor's lengths in tokens), every weight finite and positive. The result is
    then the same, bit for bit: the same sorted distinct support and, for merged duplicates, the
    same weight sums (``bincount`` over the same inverse index adds in input order) normalised
    by the same sum. Only the constructor's checks and ``np.unique``'s generality are skipped.
    """
    order = np.argsort(values, kind="stable")
    xs = values[order]
    new = xs[1:] != xs[:-1]
    if new.all():  # distinct: the constructor's stable argsort order
        support, w = xs, weights[order]
    else:
        first = np.empty(xs.size, dtype=bool)
        first[0] = True
        first[1:] = new
        support = xs[first]
        inverse = np.empty(xs.size, dtype=np.intp)
        inverse[order] = np.cumsum(first) - 1
        w = np.bincount(inverse, weights=weights, minlength=support.size)
    return _from_sorted(support, w)


def _from_sorted(support: np.ndarray, probs: np.ndarray) -> LengthDistribution:
    """Build from an already sorted, distinct support without re-sorting (hot path)."""
    d = LengthDistribution.__new__(LengthDistribution)
    d.support = support
    d.probs = probs / probs.sum()
    d._cdf = None
    d._cum_x = None
    return d
