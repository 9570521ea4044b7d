"""Arrival processes: rates, CVs and schedules checked statistically on large n, fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest

from sagerl.workload import arrivals

N = 200_000


def gap_stats(times: np.ndarray) -> tuple[float, float]:
    """(mean rate in requests/s, CV of gaps) of sorted arrival times starting after 0."""
    gaps = np.diff(np.concatenate([[0.0], times]))
    return 1.0 / gaps.mean(), gaps.std() / gaps.mean()


def test_poisson_rate_and_cv() -> None:
    times = arrivals.poisson(5.0, N, np.random.default_rng(0))
    rate, cv = gap_stats(times)
    assert len(times) == N and np.all(np.diff(times) >= 0) and times[0] > 0
    assert rate == pytest.approx(5.0, rel=0.01)
    assert cv == pytest.approx(1.0, rel=0.02)


@pytest.mark.parametrize("cv", [0.5, 2.0, 3.0])
def test_gamma_rate_and_cv(cv: float) -> None:
    times = arrivals.gamma(4.0, cv, N, np.random.default_rng(1))
    rate, got_cv = gap_stats(times)
    # Standard error of the mean gap is cv/sqrt(N); allow about 4 of them.
    assert rate == pytest.approx(4.0, rel=4 * cv / np.sqrt(N))
    assert got_cv == pytest.approx(cv, rel=0.05)


def test_gamma_cv_zero_is_evenly_spaced() -> None:
    times = arrivals.gamma(2.0, 0.0, 5, np.random.default_rng(0))
    np.testing.assert_allclose(times, [0.5, 1.0, 1.5, 2.0, 2.5])


def test_same_seed_same_times() -> None:
    a = arrivals.gamma(3.0, 2.0, 1000, np.random.default_rng(7))
    b = arrivals.gamma(3.0, 2.0, 1000, np.random.default_rng(7))
    c = arrivals.gamma(3.0, 2.0, 1000, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_piecewise_counts_follow_the_schedule() -> None:
    schedule = [(0.0, 2.0), (1000.0, 0.0), (2000.0, 10.0)]
    times = arrivals.piecewise(schedule, None, np.random.default_rng(2), duration=3000.0)
    first = np.sum(times < 1000)
    paused = np.sum((times >= 1000) & (times < 2000))
    last = np.sum(times >= 2000)
    assert paused == 0
    assert first == pytest.approx(2000, abs=4 * np.sqrt(2000))
    assert last == pytest.approx(10_000, abs=4 * np.sqrt(10_000))
    assert times.max() < 3000.0 and np.all(np.diff(times) >= 0)


def test_piecewise_by_count_and_per_segment_cv() -> None:
    rng = np.random.default_rng(3)
    times = arrivals.piecewise([(0.0, 1.0, 0.0), (10.0, 5.0, 2.0)], 50_000, rng)
    assert len(times) == 50_000
    # Segment 1 is regular (CV 0): arrivals at 1, 2, ..., 9 s (the 10th gap crosses into seg 2).
    np.testing.assert_allclose(times[:9], np.arange(1.0, 10.0))
    rate, cv = gap_stats(times[times > 20] - 20)
    assert rate == pytest.approx(5.0, rel=0.05)
    assert cv == pytest.approx(2.0, rel=0.08)


def test_piecewise_with_cv_matches_gamma_statistics() -> None:
    times = arrivals.piecewise([(0.0, 3.0)], N, np.random.default_rng(4), cv=2.5)
    rate, cv = gap_stats(times)
    assert rate == pytest.approx(3.0, rel=0.05)
    assert cv == pytest.approx(2.5, rel=0.05)


def test_piecewise_rejects_bad_schedules() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="start at 0"):
        arrivals.piecewise([(5.0, 1.0)], 10, rng)
    with pytest.raises(ValueError, match="increase"):
        arrivals.piecewise([(0.0, 1.0), (0.0, 2.0)], 10, rng)
    with pytest.raises(ValueError, match="rate 0"):
        arrivals.piecewise([(0.0, 1.0), (5.0, 0.0)], 10, rng)
    with pytest.raises(ValueError, match="n or duration"):
        arrivals.piecewise([(0.0, 1.0)], None, rng)


def test_from_trace_sorts_and_starts_at_zero() -> None:
    np.testing.assert_allclose(arrivals.from_trace([12.0, 10.0, 11.5]), [0.0, 1.5, 2.0])
    stamps = np.array(["2023-11-16T18:15:46.5", "2023-11-16T18:15:48"], dtype="datetime64[ns]")
    np.testing.assert_allclose(arrivals.from_trace(stamps), [0.0, 1.5])


def test_rescale_hits_the_target_rate_and_keeps_the_shape() -> None:
    times = arrivals.gamma(2.0, 3.0, 10_000, np.random.default_rng(5))
    scaled = arrivals.rescale(times, 8.0)
    assert arrivals.mean_rate(scaled) == pytest.approx(8.0)
    before, after = np.diff(times), np.diff(scaled)
    assert after.std() / after.mean() == pytest.approx(before.std() / before.mean())
    with pytest.raises(ValueError):
        arrivals.rescale(times, 0.0)


@pytest.mark.parametrize(("rate", "cv"), [(0.0, 1.0), (-1.0, 1.0), (1.0, -0.5)])
def test_bad_rate_or_cv_is_a_value_error(rate: float, cv: float) -> None:
    with pytest.raises(ValueError):
        arrivals.gamma(rate, cv, 10, np.random.default_rng(0))
