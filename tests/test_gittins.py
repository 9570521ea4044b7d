"""The Gittins rank of empirical cost distributions (sagerl.policy.gittins)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagerl.cost import CostDistribution
from sagerl.policy.gittins import (
    gittins_rank,
    gittins_rank_bruteforce,
    gittins_rank_bucketed,
)

lengths = st.lists(st.integers(1, 2000), min_size=1, max_size=40)
weights = st.lists(st.floats(0.01, 10.0), min_size=40, max_size=40)


def make(ls, ws, prompt=0, variant="hybrid") -> CostDistribution:
    return CostDistribution.from_lengths(ls, ws[: len(ls)], prompt, variant)


@settings(max_examples=150, deadline=None)
@given(lengths, weights, st.integers(0, 3000), st.integers(0, 1500))
def test_exact_rank_equals_bruteforce_over_a_fine_grid(ls, ws, prompt, generated) -> None:
    """The property test of the issue: exact O(m) rank vs a brute-force scan over Δ."""
    dist = make(ls, ws, prompt)
    exact = gittins_rank(dist, generated)
    rem = dist.remaining(generated)
    if rem is None:
        assert exact is None
        return
    assert exact is not None
    # A fine grid of Δ over (0, max]: no Δ does better than the exact rank...
    grid = np.linspace(rem.support[-1] / 4000, rem.support[-1], 4000)
    fine = gittins_rank_bruteforce(dist, grid, generated)
    assert fine >= exact * (1 - 1e-9)
    # ...and the grid's minimum converges to it (within the grid's resolution)...
    step = grid[1] - grid[0]
    assert fine <= exact + step / max(rem.probs.min(), 1e-12) + 1e-9 * exact
    # ...and the grid refined to contain every support point attains it exactly.
    full = gittins_rank_bruteforce(dist, np.concatenate([grid, rem.support]), generated)
    assert full == pytest.approx(exact, rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(lengths, weights, st.integers(0, 3000), st.integers(0, 1500))
def test_conditional_rank_is_the_rank_of_the_remaining_distribution(ls, ws, prompt, g) -> None:
    dist = make(ls, ws, prompt)
    rem = dist.remaining(g)
    if rem is None:
        return
    # Rank of the explicitly built remaining law, as a fresh distribution with no attained cost.
    fresh = CostDistribution(
        rem.lengths, rem.support, rem.probs, rem.cdf, rem.partial, 0.0, "output"
    )
    fresh_rank = gittins_rank(fresh, 0)
    assert gittins_rank(dist, g) == pytest.approx(fresh_rank, rel=1e-9)
    # Rank lies between the smallest remaining cost and the remaining mean.
    assert rem.support[0] * (1 - 1e-12) <= fresh_rank <= rem.mean() * (1 + 1e-12)


@settings(max_examples=100, deadline=None)
@given(lengths, weights, st.integers(0, 3000), st.integers(0, 1500))
def test_bucketed_rank_bounds_the_exact_one(ls, ws, prompt, g) -> None:
    dist = make(ls, ws, prompt)
    exact = gittins_rank(dist, g)
    bucketed = gittins_rank_bucketed(dist, g, buckets=10)
    if exact is None:
        assert bucketed is None
        return
    assert bucketed >= exact * (1 - 1e-12)
    assert bucketed <= dist.remaining_mean(g) * (1 + 1e-12)  # the top edge gives the mean


def test_known_values() -> None:
    # A point mass: the rank is its cost.
    assert gittins_rank(make([10], [1.0], variant="output"), 0) == pytest.approx(10)
    # Two equally likely sizes 1 and 100: serving for Δ=1 costs E[min(X,1)] = 1 and finishes
    # with probability 1/2, so G = 2, far below the mean 50.5 (the Gittins advantage).
    two = make([1, 100], [1.0, 1.0], variant="output")
    assert gittins_rank(two, 0) == pytest.approx(2.0)
    # Once past the short mode only the long one is left: 100 - 1 - ... remaining 99.
    assert gittins_rank(two, 1) == pytest.approx(99.0)
    assert gittins_rank(two, 100) is None  # outlived every sample
    # Bucketed tries Δ = 10, 20, ..., 100: at Δ=10 E[min(X,10)] = 5.5 over 1/2 = 11.
    assert gittins_rank_bucketed(two, 0) == pytest.approx(11.0)


def test_large_support_uses_the_vectorised_path() -> None:
    rng = np.random.default_rng(0)
    ls = rng.integers(1, 4000, size=500)
    dist = make(ls.tolist(), [1.0] * 500, prompt=200)
    grid = np.concatenate([dist.support, np.linspace(1, dist.support[-1], 2000)])
    assert gittins_rank(dist, 0) == pytest.approx(gittins_rank_bruteforce(dist, grid), rel=1e-9)
    rem = dist.remaining(1000)
    assert rem is not None
    assert gittins_rank(dist, 1000) == pytest.approx(
        gittins_rank_bruteforce(dist, rem.support, 1000), rel=1e-9
    )
