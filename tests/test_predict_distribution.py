"""LengthDistribution and the scores, against brute force on small random distributions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagerl.predict.distribution import DEFAULT_BIN_EDGES, LengthDistribution, _from_weighted
from sagerl.predict.metrics import bucket_hit, coverage, crps, pinball, score

lengths = st.lists(st.integers(0, 3000), min_size=1, max_size=25)


def dist_from(values: list[int], seed: int = 0) -> LengthDistribution:
    w = np.random.default_rng(seed).uniform(0.1, 1.0, len(values))
    return LengthDistribution(values, w)


def expanded(d: LengthDistribution) -> tuple[np.ndarray, np.ndarray]:
    return d.support, d.probs


# ---------------------------------------------------------------------- construction
@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 3000), min_size=1, max_size=60),
    st.integers(0, 60),
    st.sampled_from([1, 3, 10]),
    st.booleans(),
)
def test_trusted_constructor_is_bit_identical(
    values: list[int], n_ones: int, k: int, similarity: bool
) -> None:
    """The predictor's unchecked constructor gives the checked one's arrays bit for bit, for
    its inputs: integer lengths, weights 1 (history) then 1 / k (pool samples), or similarity
    weights; duplicates spanning both parts."""
    x = np.asarray(values, dtype=np.float64)
    if similarity:
        rng = np.random.default_rng(len(values))
        w = np.maximum(rng.uniform(0.0, 1.0, x.size).astype(np.float32).astype(np.float64), 1e-3)
    else:
        w = np.full(x.size, 1.0 / k)
        w[: min(n_ones, x.size)] = 1.0
    a, b = LengthDistribution(x, w), _from_weighted(x, w)
    assert a.support.dtype == b.support.dtype and a.probs.dtype == b.probs.dtype
    assert a.support.tobytes() == b.support.tobytes()
    assert a.probs.tobytes() == b.probs.tobytes()


def test_merges_duplicates_and_sorts() -> None:
    d = LengthDistribution([5, 1, 5, 3], [1, 1, 2, 0])
    assert d.support.tolist() == [1.0, 5.0]  # zero weight dropped
    assert d.probs.tolist() == pytest.approx([0.25, 0.75])


@pytest.mark.parametrize(
    ("support", "probs"),
    [([], None), ([1, 2], [1]), ([1, 2], [-1, 2]), ([1, 2], [0, 0]), ([1, np.nan], None)],
)
def test_rejects_bad_input(support: list[float], probs: list[float] | None) -> None:
    with pytest.raises(ValueError):
        LengthDistribution(support, probs)


def test_point_and_mixture() -> None:
    p = LengthDistribution.point(100)
    assert p.mean() == 100 and p.var() == 0 and p.quantile(0.3) == 100
    m = LengthDistribution.mixture([p, LengthDistribution([0, 200])], [1, 3])
    assert m.support.tolist() == [0, 100, 200]
    assert m.probs.tolist() == pytest.approx([0.375, 0.25, 0.375])


# ---------------------------------------------------------------------- queries
@settings(max_examples=60, deadline=None)
@given(lengths, st.integers(0, 10_000))
def test_queries_match_brute_force(values: list[int], seed: int) -> None:
    d = dist_from(values, seed)
    x, p = expanded(d)
    assert d.mean() == pytest.approx(float((x * p).sum()))
    assert d.var() == pytest.approx(float((p * (x - d.mean()) ** 2).sum()), abs=1e-6)
    grid = np.arange(-2, 3005, 7.5)
    brute_cdf = np.array([p[x <= g].sum() for g in grid])
    assert np.allclose(d.cdf(grid), brute_cdf)
    levels = np.linspace(0, 1, 41)
    brute_q = np.array([x[np.flatnonzero(np.cumsum(p) >= q - 1e-12)[0]] for q in levels])
    assert np.array_equal(d.quantile(levels), brute_q)
    # Every support point is its own quantile at its CDF level.
    assert np.array_equal(d.quantile(d.cdf(x)), x)
    ys = np.array([-5.0, 0.0, 17.0, 999.5, 4000.0])
    brute_abs = np.array([(p * np.abs(x - y)).sum() for y in ys])
    assert np.allclose(d.expected_abs_diff(ys), brute_abs)


@settings(max_examples=60, deadline=None)
@given(lengths, st.integers(0, 10_000), st.integers(-5, 3100))
def test_conditioning_matches_brute_force(values: list[int], seed: int, g: int) -> None:
    d = dist_from(values, seed)
    x, p = expanded(d)
    alive = x > g
    rem = d.remaining(g)
    if alive.any():
        assert not d.outlived(g)
        assert np.allclose(rem.support, x[alive] - g)
        assert np.allclose(rem.probs, p[alive] / p[alive].sum())
        cond = d.conditional(g)
        assert cond is not None and np.allclose(cond.support, x[alive])
        expected = (p[alive] * (x[alive] - g)).sum() / p[alive].sum()
    else:
        assert d.outlived(g) and d.conditional(g) is None
        assert rem == LengthDistribution.point(1.0)
        expected = 1.0
    assert d.remaining_mean(g)[0] == pytest.approx(expected)
    assert float(d.survival(g)) == pytest.approx(p[alive].sum())


def test_remaining_mean_is_vectorised() -> None:
    d = LengthDistribution([100, 200, 400], [0.5, 0.25, 0.25])
    g = np.array([0, 100, 150, 399, 400, 1000])
    out = d.remaining_mean(g, min_remaining=2.0)
    each = [d.remaining(v, min_remaining=2.0).mean() for v in g]
    assert np.allclose(out, each)


def test_sample_uses_the_given_generator() -> None:
    d = LengthDistribution([10, 20, 30], [0.2, 0.5, 0.3])
    a = d.sample(50_000, np.random.default_rng(7))
    b = d.sample(50_000, np.random.default_rng(7))
    assert np.array_equal(a, b)
    freq = np.array([(a == v).mean() for v in (10, 20, 30)])
    assert np.allclose(freq, [0.2, 0.5, 0.3], atol=0.01)


def test_histogram_folds_tails_and_sums_to_one() -> None:
    d = LengthDistribution([-5, 0, 99, 100, 1999, 2000, 50_000], [1, 1, 1, 1, 1, 1, 1])
    h = d.histogram()
    assert h.size == DEFAULT_BIN_EDGES.size - 1 == 20
    assert h.sum() == pytest.approx(1.0)
    assert h[0] == pytest.approx(3 / 7)  # -5 (folded), 0, 99
    assert h[1] == pytest.approx(1 / 7)
    assert h[-1] == pytest.approx(3 / 7)  # 1999, 2000 and 50k fold into the last bin
    with pytest.raises(ValueError):
        d.histogram([0, 0, 1])


def test_map_pushes_forward() -> None:
    d = LengthDistribution([1, 2], [0.5, 0.5])
    c = d.map(lambda o: o**2 / 2 + 10 * o)
    assert c.support.tolist() == [10.5, 22.0]


# ---------------------------------------------------------------------- scores
@settings(max_examples=40, deadline=None)
@given(lengths, st.lists(st.integers(0, 3000), min_size=1, max_size=10), st.integers(0, 99))
def test_crps_matches_the_integral(values: list[int], truth: list[int], seed: int) -> None:
    d = dist_from(values, seed)
    y = np.asarray(truth, dtype=float)
    # CRPS(F, y) = integral of (F(t) - 1{t >= y})^2 dt, on a grid fine enough for integers.
    lo, hi = min(d.support[0], y.min()) - 1, max(d.support[-1], y.max()) + 1
    t = np.arange(lo, hi, 0.5) + 0.25
    f = d.cdf(t)
    brute = np.mean([((f - (t >= yi)) ** 2).sum() * 0.5 for yi in y])
    assert crps(d, y) == pytest.approx(brute, rel=1e-9, abs=1e-9)


def test_point_crps_is_absolute_error() -> None:
    assert crps(LengthDistribution.point(100), np.array([130.0])) == pytest.approx(30.0)
    assert crps(LengthDistribution([100, 200]), np.array([100.0, 200.0])) == pytest.approx(25.0)


def test_pinball_coverage_bucket() -> None:
    d = LengthDistribution(np.arange(1, 11) * 100.0)
    y = np.array([50.0, 500.0, 2000.0])
    q = float(d.quantile(0.9))
    assert pinball(d, y, 0.9) == pytest.approx(
        np.mean([max(0.9 * (v - q), -0.1 * (v - q)) for v in y])
    )
    assert coverage(d, y) == pytest.approx(1 / 3)  # [100, 900] holds only 500
    assert bucket_hit(LengthDistribution.point(150), np.array([120.0, 199.0, 250.0])) == 2 / 3
    assert bucket_hit(LengthDistribution.point(5000), np.array([1950.0])) == 1.0


def test_score_keys_and_oracle_ordering() -> None:
    truths = [np.array([10.0, 12.0]), np.array([500.0, 700.0]), np.array([90.0])]
    perfect = score([LengthDistribution(t) for t in truths], truths)
    flat = score([LengthDistribution([10.0, 700.0])] * 3, truths)
    assert set(perfect) >= {"crps", "pinball_q10", "pinball_q50", "pinball_q90", "coverage_80"}
    assert perfect["kendall_tau"] == pytest.approx(1.0)
    assert perfect["crps"] < flat["crps"]
    with pytest.raises(ValueError):
        score([LengthDistribution.point(1)], truths)
