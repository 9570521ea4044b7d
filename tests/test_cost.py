"""The hybrid cost and its distributions (sagerl.cost)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagerl.cost import (
    CostDistribution,
    attained_cost,
    check_variant,
    cost,
    cost_rate,
    tokens_for_cost,
)
from sagerl.errors import UnknownNameError


def test_hybrid_cost_is_the_kv_memory_time_sum() -> None:
    # Generating O tokens after an I-token prompt holds I + j tokens at step j: the sum over
    # steps is I*O + O(O-1)/2, which C = O²/2 + I*O matches up to the O/2 discretisation.
    prompt, out = 300, 120
    kv_sum = sum(prompt + j for j in range(out))
    assert cost(prompt, out) == pytest.approx(kv_sum + out / 2)
    assert cost(prompt, out, "output") == out
    assert cost(prompt, out, "linear") == prompt + 2 * out


def test_attained_and_its_inverse() -> None:
    for variant in ("hybrid", "output", "linear"):
        assert attained_cost(100, 0, variant) == 0.0
        for a in (0.5, 1.0, 99.0, 5_000.0, 123_456.7):
            g = tokens_for_cost(100, a, variant)
            assert attained_cost(100, g, variant) >= a
            assert g == 0 or attained_cost(100, g - 1, variant) < a


def test_unknown_variant_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="hybrid"):
        check_variant("quadratic")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 3000), min_size=1, max_size=30),
    st.integers(0, 4000),
    st.integers(0, 3000),
    st.sampled_from(["hybrid", "output", "linear"]),
)
def test_remaining_cost_matches_direct_conditioning(lengths, prompt, generated, variant) -> None:
    dist = CostDistribution.from_lengths(lengths, None, prompt, variant)
    x = np.asarray(lengths, dtype=float)
    alive = x[x > generated]
    rem = dist.remaining(generated)
    if alive.size == 0:
        assert rem is None and dist.remaining_mean(generated) is None
        assert dist.outlived(generated)
        return
    direct = cost(prompt, alive, variant) - attained_cost(prompt, generated, variant)
    assert rem is not None
    assert rem.mean() == pytest.approx(direct.mean(), rel=1e-9)
    assert dist.remaining_mean(generated) == pytest.approx(direct.mean(), rel=1e-9)
    assert (rem.support > 0).all()  # the cost still to pay is positive
    assert (np.diff(rem.support) >= 0).all()  # sorted lengths give sorted costs


def test_cost_rate_is_kv_tokens_per_second() -> None:
    # 10 ms + 1e-7 s per KV token: 100k resident tokens take 20 ms per iteration.
    assert cost_rate((0.01, 1e-7), 100_000) == pytest.approx(100_000 / 0.02)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 5000), min_size=1, max_size=60),
    st.integers(1, 8000),
)
def test_hybrid_summary_equals_the_cost_distribution(lengths: list[int], prompt: int) -> None:
    from sagerl.cost import CostDistribution, hybrid_summary
    from sagerl.policy.gittins import gittins_rank
    from sagerl.predict.distribution import LengthDistribution

    pred = LengthDistribution(lengths)
    mean_cost, rank, mean, std = hybrid_summary(pred.support, pred.probs, prompt)
    dist = CostDistribution.from_lengths(pred.support, pred.probs, prompt, "hybrid")
    x = np.maximum(pred.support, 1.0)
    assert mean_cost == pytest.approx(dist.mean(), rel=1e-9)
    assert rank == pytest.approx(gittins_rank(dist, 0), rel=1e-9)
    assert mean == pytest.approx(float(pred.probs @ x), rel=1e-9)
    assert std == pytest.approx(float(np.sqrt(pred.probs @ (x - mean) ** 2)), rel=1e-6, abs=1e-9)
