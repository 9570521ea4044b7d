"""Property tests of the simulator over random workloads and configs (hypothesis)."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sagerl.sim.replica import Replica, batch_blocks_delta
from sagerl.workload.request import Request

from simfactory import AffineTimer, create_cluster


@st.composite
def workloads(draw: st.DrawFn) -> list[Request]:
    n = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.floats(0.0, 0.3), min_size=n, max_size=n))
    prompts = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    outputs = draw(st.lists(st.integers(1, 120), min_size=n, max_size=n))
    times = np.cumsum(gaps)
    return [
        Request(id=i, arrival=float(times[i]), prompt_tokens=prompts[i], output_tokens=outputs[i])
        for i in range(n)
    ]


@st.composite
def clusters(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, 3))
    return {
        "num_replicas": n,
        # At least one full request (300 + 120 tokens = 27 blocks of 16) must fit.
        "kv_blocks": draw(st.lists(st.integers(28, 120), min_size=n, max_size=n)),
        "placement": draw(st.sampled_from(["random", "round-robin", "least-outstanding"])),
        "max_num_batched_tokens": draw(st.integers(16, 512)),
        "max_num_seqs": draw(st.integers(1, 16)),
        "enable_chunked_prefill": draw(st.booleans()),
        "preemption_mode": draw(st.sampled_from(["recompute", "swap"])),
        "block_size": 16,
        "timers": [AffineTimer(overhead=draw(st.floats(1e-3, 2e-2))) for _ in range(n)],
        "seed": draw(st.integers(0, 5)),
    }


def run(reqs: list[Request], cfg: dict, fast: bool):
    cfg = dict(cfg)
    if not cfg["enable_chunked_prefill"]:
        # Without chunking a prompt must fit in one iteration's budget.
        cfg["max_num_batched_tokens"] = max(cfg["max_num_batched_tokens"], 300 + 120)
    sim = create_cluster(fast_path=fast, **cfg)
    result = sim.run(reqs)
    return sim, result


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), clusters(), st.booleans())
def test_every_request_finishes_once_with_its_true_length(reqs, cfg, fast) -> None:
    sim, result = run(reqs, cfg, fast)
    rec = result.records
    assert len(rec) == len(reqs) and rec["id"].is_unique
    assert not rec["rejected"].any()
    assert (rec["generated"] == rec["output_tokens"]).all()
    assert (rec["finish"] >= 0).all()
    # Nothing runs before it arrives; per-request times are ordered.
    assert (rec["first_scheduled"] >= rec["arrival"]).all()
    assert (rec["first_token"] > rec["first_scheduled"]).all()
    assert (rec["finish"] >= rec["first_token"]).all()
    for r in sim.replicas:
        assert r.peak_blocks <= r.kv_blocks_total
        assert r.free_blocks == r.kv_blocks_total and not r.running and not r.waiting


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), clusters())
def test_fast_path_matches_step_mode(reqs, cfg) -> None:
    _, step = run(reqs, cfg, fast=False)
    _, fast = run(reqs, cfg, fast=True)
    a, b = step.records, fast.records
    assert (a["replica"] == b["replica"]).all()
    assert (a["preemptions"] == b["preemptions"]).all()
    np.testing.assert_allclose(a["finish"], b["finish"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a["first_token"], b["first_token"], rtol=1e-9, atol=1e-9)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), clusters())
def test_same_seed_same_results(reqs, cfg) -> None:
    _, one = run(reqs, cfg, fast=True)
    _, two = run(reqs, cfg, fast=True)
    assert one.records.equals(two.records)
    assert json.dumps(one.summary()) == json.dumps(two.summary())  # NaN-safe equality


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 5000), min_size=1, max_size=40),
    st.integers(1, 64),
    st.integers(0, 300),
    st.integers(0, 300),
)
def test_batch_blocks_delta_is_the_per_sequence_sum(computed, bs, x0, x1) -> None:
    offsets = sorted(-c % bs for c in computed)
    brute = sum(-(-(c + x1) // bs) + (c + x0) // -bs for c in computed)
    assert batch_blocks_delta(offsets, x0, x1, bs) == brute


def _check_blocks(r: Replica, t: float) -> None:
    """Free blocks, the view's blocks in use and the true remaining output totals against a
    per-sequence count."""
    bs = r.block_size
    plan = r.plan
    if plan is not None and plan.segment:  # every running sequence is in the segment
        held = sum(-(-(c + plan.k) // bs) for c in plan.computed0)
        reached = sum(-(-(c + max(plan.starts_before(t), 1)) // bs) for c in plan.computed0)
    else:
        held = reached = sum(s.blocks for s in r.running)
    assert held + r.free_blocks == r.kv_blocks_total
    assert r.blocks_used_at(t) == reached
    # The true remaining output totals (for privileged observations), kept in O(1) per plan.
    seqs = [*r.running, *(s for _, _, s in r.waiting)]
    assert r.true_tokens_left == sum(s.output_tokens - s.num_generated for s in seqs)
    assert r.true_cost2_left == sum(
        (s.output_tokens - s.num_generated)
        * (s.output_tokens + s.num_generated + 2 * s.prompt_tokens)
        for s in seqs
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), clusters(), st.sampled_from(["fcfs", "fastserve"]))
def test_block_accounting_matches_a_per_sequence_count(reqs, cfg, ordering) -> None:
    """The fast path keeps batch totals, not per-sequence block counts, while a segment runs
    (views and truncation use them in O(log B)); at every decision they must agree with counting
    sequence by sequence, and each Sequence.blocks must be exact between plans."""
    cfg = dict(cfg)
    if not cfg["enable_chunked_prefill"]:
        cfg["max_num_batched_tokens"] = max(cfg["max_num_batched_tokens"], 300 + 120)
    sim = create_cluster(fast_path=True, ordering=ordering, **cfg)
    assert sim.placement is not None
    sim.placement.reset()
    for req in reqs:
        sim.advance_to(req.arrival)
        for r in sim.replicas:
            _check_blocks(r, req.arrival)
        index = sim.placement.choose(req, sim.views(req.arrival), req.arrival)
        sim.place(req, index)
        for r in sim.replicas:
            _check_blocks(r, req.arrival)
    sim.drain()
    for r in sim.replicas:
        assert r.free_blocks == r.kv_blocks_total
        assert r.true_tokens_left == r.true_cost2_left == 0
