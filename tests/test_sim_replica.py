"""Replica scheduling rules, driven by hand on tiny cases."""

from __future__ import annotations

from sagerl.policy import make_ordering
from sagerl.sim import Replica, SchedulerConfig, SeqStatus, Sequence
from sagerl.workload.request import Request

from simfactory import AffineTimer, create_cluster


def make_replica(blocks: int = 100, **cfg: object) -> Replica:
    return Replica(0, AffineTimer(), blocks, SchedulerConfig(**cfg), make_ordering("fcfs"))


def req(i: int, prompt: int, output: int, arrival: float = 0.0) -> Request:
    return Request(id=i, arrival=arrival, prompt_tokens=prompt, output_tokens=output)


def test_chunked_prefill_splits_prompt_over_budget() -> None:
    r = make_replica(max_num_batched_tokens=64, fast_path=False)
    s = Sequence(req(0, 150, 3))
    r.add(s, 0.0)
    t = r.schedule(0.0)
    assert r.plan.scheduled == [(s, 64)]
    r.complete(t)
    assert s.num_computed == 64 and s.num_generated == 0
    t = r.schedule(t)
    r.complete(t)
    t = r.schedule(t)
    assert r.plan.scheduled == [(s, 22)]
    r.complete(t)
    assert s.num_generated == 1 and s.first_token_time == t


def test_running_served_before_waiting_and_budget_respected() -> None:
    r = make_replica(max_num_batched_tokens=100, fast_path=False)
    a, b = Sequence(req(0, 90, 5)), Sequence(req(1, 90, 5))
    r.add(a, 0.0)
    t = r.schedule(0.0)
    r.complete(t)
    r.add(b, t)
    t2 = r.schedule(t)
    # a decodes (1 token) first; b's whole 90-token prefill fits in the 99 tokens left.
    assert r.plan.scheduled == [(a, 1), (b, 90)]
    assert sum(n for _, n in r.plan.scheduled) <= 100
    r.complete(t2)


def test_no_chunking_waits_for_full_budget() -> None:
    r = make_replica(max_num_batched_tokens=100, enable_chunked_prefill=False, fast_path=False)
    a, b = Sequence(req(0, 50, 5)), Sequence(req(1, 99, 5))
    r.add(a, 0.0)
    r.add(b, 0.0)
    r.schedule(0.0)
    assert [s for s, _ in r.plan.scheduled] == [a]  # b's 99 tokens do not fit beside a's 50


def test_running_cap() -> None:
    r = make_replica(max_num_seqs=2, fast_path=False)
    seqs = [Sequence(req(i, 10, 5)) for i in range(3)]
    for s in seqs:
        r.add(s, 0.0)
    r.schedule(0.0)
    assert len(r.running) == 2 and len(r.waiting) == 1


def test_preemption_picks_latest_arrival_and_recomputes() -> None:
    # 4 blocks of 16 tokens. Two sequences of 32 prompt tokens take 2 blocks each; the first
    # decode that needs a third block forces a preemption of the later arrival.
    r = make_replica(blocks=4, fast_path=False)
    a, b = Sequence(req(0, 32, 20, 0.0)), Sequence(req(1, 32, 20, 0.1))
    r.add(a, 0.0)
    r.add(b, 0.1)
    t = r.schedule(0.1)
    r.complete(t)
    assert a.num_generated == b.num_generated == 1 and r.free_blocks == 0
    t = r.schedule(t)  # a needs block 3 for its 33rd token -> preempt b
    assert b.status is SeqStatus.PREEMPTED and b.num_computed == 0 and b.num_preemptions == 1
    assert [s for s, _ in r.plan.scheduled] == [a]
    assert a.blocks == 3
    r.complete(t)


def test_swap_keeps_computed_tokens_and_costs_time() -> None:
    r = Replica(
        0,
        AffineTimer(),
        4,
        SchedulerConfig(preemption_mode="swap", fast_path=False),
        make_ordering("fcfs"),
        kv_bytes_per_block=1e9,
    )
    a, b = Sequence(req(0, 32, 20, 0.0)), Sequence(req(1, 32, 20, 0.1))
    r.add(a, 0.0)
    r.add(b, 0.1)
    r.complete(r.schedule(0.1))
    t0 = r.plan.start if r.plan else 0.0
    end = r.schedule(t0 + 1)
    assert b.swapped and b.num_computed == 32
    assert end - (t0 + 1) > 1e9 * 2 / 25e9 * 0.99  # two blocks out over 25 GB/s


def test_fast_path_equals_step_mode_on_small_run() -> None:
    import numpy as np

    from simfactory import create_requests

    reqs = create_requests(200, rate=40, seed=3)
    out = []
    for fast in (False, True):
        sim = create_cluster(
            3,
            kv_blocks=[80, 150, 300],
            placement="least-outstanding",
            fast_path=fast,
            max_num_batched_tokens=256,
        )
        out.append(sim.run(reqs))
    a, b = out[0].records, out[1].records
    for col in ("replica", "preemptions", "generated"):
        assert (a[col] == b[col]).all(), col
    for col in ("first_scheduled", "first_token", "finish"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=1e-9)
    sa, sb = out[0].summary(), out[1].summary()
    for key in ("kv_use_mean", "kv_use_peak", "ttlt_mean", "iterations", "preemptions"):
        assert abs(sa[key] - sb[key]) <= 1e-9 * max(1.0, abs(sa[key])), key
    assert out[1].replicas["segments"].sum() > 0  # the fast path was actually taken
    assert sb["preemptions"] > 0  # and the case exercises memory pressure


def test_segment_block_time_matches_brute_force() -> None:
    import math
    import random

    from sagerl.sim.replica import segment_block_time

    rng = random.Random(0)
    for _ in range(500):
        bs = rng.choice([1, 2, 4, 16, 32])
        cs = [rng.randint(0, 300) for _ in range(rng.randint(1, 6))]
        k, a, b = rng.randint(1, 300), rng.random(), rng.random() * 0.1
        brute = sum(sum(math.ceil((c + j + 1) / bs) for c in cs) * (a + b * j) for j in range(k))
        assert math.isclose(segment_block_time(cs, k, a, b, bs), brute, rel_tol=1e-9)


def test_block_time_tracking_off_changes_nothing_but_the_statistic() -> None:
    from simfactory import create_requests

    def run(track: bool) -> tuple[list[float], float]:
        sim = create_cluster(num_replicas=2, ordering="fcfs", kv_blocks=200)
        for r in sim.replicas:
            r.track_block_time = track
        sim.run(create_requests(80, rate=20.0, max_output=300))
        return [s.finish_time for s in sim.sequences], sum(r.block_time for r in sim.replicas)

    on, off = run(True), run(False)
    assert on[0] == off[0]
    assert on[1] > 0 and off[1] == 0.0


def _drain(r: Replica, seqs: list[Sequence], t: float = 0.0) -> int:
    """Queue ``seqs`` at time ``t`` and run the replica until it is idle; the most blocks any
    running set reserved at once."""
    for s in seqs:
        r.add(s, t)
    most = 0
    while r.has_work:
        end = r.schedule(t)
        assert end is not None
        most = max(most, r.reserved_blocks)
        r.complete(end)
        t = end
    assert r.reserved_blocks == 0 and all(s.status is SeqStatus.FINISHED for s in seqs)
    return most


def test_reservation_admission_avoids_memory_preemption() -> None:
    """With ``reserve_quantile`` and exact one-point predictions, the running set never
    reserves more KV than the cache holds, so decoding never runs out and nothing is preempted;
    vLLM's rule (admit whenever the prompt fits) preempts on the same requests."""
    from sagerl.predict import LengthDistribution

    def requests() -> list[Sequence]:
        seqs = [Sequence(req(i, 40 + 7 * i, 60 + 13 * (i % 5), 0.0)) for i in range(12)]
        for s in seqs:
            s.prediction = LengthDistribution([s.output_tokens])
        return seqs

    plain = make_replica(blocks=30)
    _drain(plain, requests())
    assert plain.num_preemptions > 0
    gated = make_replica(blocks=30, reserve_quantile=1.0)
    most = _drain(gated, requests())
    assert gated.num_preemptions == 0
    assert 0 < most <= 30


def test_reservation_larger_than_the_cache_still_runs_alone() -> None:
    """A request whose reservation exceeds the whole cache is admitted when nothing runs
    (else it would wait forever); a second one waits for it."""
    from sagerl.predict import LengthDistribution

    r = make_replica(blocks=12, reserve_quantile=0.9, fast_path=False)
    a, b = Sequence(req(0, 16, 20)), Sequence(req(1, 16, 20))
    a.prediction = b.prediction = LengthDistribution([10, 20, 400])  # q0.9 = 400 tokens
    r.add(a, 0.0)
    r.add(b, 0.0)
    end = r.schedule(0.0)
    assert [s.id for s in r.running] == [0] and r.reserved_blocks == 26  # ceil(416 / 16)
    assert end is not None
    r.complete(end)
    assert _drain(r, [], end) == 26  # b ran only after a finished


def test_reserve_quantile_must_be_a_probability() -> None:
    import pytest
    from pydantic import ValidationError

    for bad in (0.0, 1.5):
        with pytest.raises(ValidationError, match="reserve_quantile"):
            SchedulerConfig(reserve_quantile=bad)
