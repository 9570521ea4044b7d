"""Each ordering policy orders a hand-built queue as its paper says; replica mechanics of
progress re-keying and preemption for rank; fast path equals step mode for every policy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sagerl.errors import ConfigError, UnknownNameError
from sagerl.policy import ORDERING, make_ordering
from sagerl.predict.distribution import LengthDistribution
from sagerl.sim import Replica, SchedulerConfig, SeqStatus, Sequence
from sagerl.sim.sequence import NEVER
from sagerl.workload.request import Request

from simfactory import AffineTimer, create_cluster, create_requests


def seq(
    i: int,
    lengths: list[float],
    *,
    prompt: int = 10,
    arrival: float = 0.0,
    output: int = 50,
    generated: int = 0,
) -> Sequence:
    s = Sequence(Request(id=i, arrival=arrival, prompt_tokens=prompt, output_tokens=output))
    s.prediction = LengthDistribution(lengths)
    s.num_generated = generated
    return s


def order(policy: str, seqs: list[Sequence], now: float = 0.0, **options: object) -> list[int]:
    p = make_ordering(policy, **options)
    for s in seqs:
        s.policy_state = None  # a fresh policy: no cached state from another one
    return [s.id for s in sorted(seqs, key=lambda s: p.key(s, now))]


def test_fcfs_by_arrival() -> None:
    seqs = [seq(0, [5], arrival=2.0), seq(1, [500], arrival=1.0)]
    assert order("fcfs", seqs) == [1, 0]


def test_ssjf_shortest_predicted_mean_first() -> None:
    seqs = [seq(0, [400, 600], arrival=0.0), seq(1, [40, 60], arrival=1.0), seq(2, [200])]
    assert order("ssjf", seqs) == [1, 2, 0]


def test_ltr_ranks_by_predicted_length_and_promotes_starving_requests() -> None:
    old = seq(0, [900], arrival=0.0)
    new = seq(1, [10], arrival=50.0)
    assert order("ltr", [old, new], now=51.0, starvation_s=100.0) == [1, 0]
    # Once the long request has waited starvation_s it goes first.
    assert order("ltr", [old, new], now=101.0, starvation_s=100.0) == [0, 1]


def test_trail_expected_remaining_length_refines_with_progress() -> None:
    # Bimodal {10, 1000}: before any token the expected remaining length is 505 (> 300);
    # after 32 tokens it is past the short mode and 968 are expected.
    bimodal = seq(0, [10, 1000])
    fixed = seq(1, [300], arrival=1.0)
    assert order("trail", [bimodal, fixed]) == [1, 0]
    short = seq(2, [10, 1000])
    short.num_generated = 5  # still before the first refresh point: key of g = 0
    p = make_ordering("trail", refresh_tokens=32)
    assert p.key(short, 0)[0] == pytest.approx(505)
    assert p.next_rekey(short) == 32
    short.num_generated = 32
    assert p.key(short, 0)[0] == pytest.approx(1000 - 32)


def test_trail_limited_preemption_spares_requests_near_completion() -> None:
    p = make_ordering("trail", preempt_fraction=0.5)
    early = seq(0, [100], generated=10)
    late = seq(1, [100], generated=80)
    for s in (early, late):
        s.sort_key = (500.0, 0.0, s.id)
    challenger = seq(2, [5])
    challenger.sort_key = p.key(challenger, 0)
    assert p.rank_victim(challenger, [early, late]) is early
    assert p.rank_victim(challenger, [late]) is None


def test_tie_penalises_the_tail_and_ages_waiting_requests() -> None:
    # Same mean (300) but one has a heavy tail: the CVaR term ranks it later.
    light = seq(0, [290, 300, 310], arrival=0.0)
    heavy = seq(1, [10, 10, 880], arrival=0.0)
    assert order("tie", [heavy, light]) == [0, 1]
    # Waiting-time decay: a score twice as large is overtaken after tau * ln 2 seconds.
    a = seq(2, [200], arrival=0.0)
    b = seq(3, [100], arrival=0.5 * 60.0 * math.log(2))
    c = seq(4, [100], arrival=2.0 * 60.0 * math.log(2))
    assert order("tie", [a, b], tau_s=60.0) == [3, 2]
    assert order("tie", [a, c], tau_s=60.0) == [2, 4]


def test_fastserve_skip_join_and_demotion() -> None:
    p = make_ordering("fastserve", base_quantum=8, prefill_tokens_per_iteration=512)
    short_prompt = seq(0, [1], prompt=100, arrival=5.0)
    long_prompt = seq(1, [1], prompt=5000, arrival=0.0)  # 10 iterations of prefill > 8
    assert p.key(short_prompt, 0)[0] == 0 and p.key(long_prompt, 0)[0] == 1
    assert order("fastserve", [long_prompt, short_prompt]) == [0, 1]
    # Demotion: after its 8-token quantum at level 0 a request drops to level 1 (16 tokens)...
    assert p.next_rekey(short_prompt) == 8
    short_prompt.num_generated = 8
    assert p.key(short_prompt, 0)[0] == 1 and p.next_rekey(short_prompt) == 24
    # ...and a fresh request at level 0 beats it (preemption for rank between levels).
    fresh = seq(2, [1], prompt=100, arrival=9.0)
    for s in (short_prompt, fresh):
        s.sort_key = p.key(s, 0)
    assert p.beats(fresh, short_prompt) and not p.beats(short_prompt, fresh)


def test_svf_uses_the_hybrid_cost_not_the_output_length() -> None:
    # A 2000-token prompt with a 100-token answer holds more KV memory-time (205,000) than a
    # 10-token prompt with a 400-token answer (84,000): SVF runs the latter first, SSJF not.
    long_prompt = seq(0, [100], prompt=2000)
    long_answer = seq(1, [400], prompt=10, arrival=1.0)
    assert order("svf", [long_prompt, long_answer]) == [1, 0]
    assert order("ssjf", [long_prompt, long_answer]) == [0, 1]
    assert order("svf", [long_prompt, long_answer], cost="output") == [0, 1]


def test_sagesched_gittins_prefers_a_likely_short_request_over_a_sure_medium_one() -> None:
    # {1, 1000} tokens, equally likely, mean 500.5: the Gittins rank is tiny (serve one token,
    # finish with probability 1/2) although the mean is larger than the sure 300.
    bimodal = seq(0, [1, 1000], prompt=0, arrival=1.0)
    sure = seq(1, [300], prompt=0)
    assert order("sagesched", [sure, bimodal]) == [0, 1]
    assert order("sagesched", [sure, bimodal], index="mean") == [1, 0]
    assert order("svf", [sure, bimodal]) == [1, 0]


def test_sagesched_refreshes_only_at_bucket_boundaries() -> None:
    p = make_ordering("sagesched", refresh="tokens", refresh_tokens=200)
    s = seq(0, [100, 1000], prompt=50)
    k0 = p.key(s, 0)
    assert p.next_rekey(s) == 200
    s.num_generated = 150  # past the short mode but before the boundary: same key
    assert p.key(s, 0) == k0
    s.num_generated = 200
    k1 = p.key(s, 0)
    assert k1[0] > k0[0]  # only the long outcome is left: rank rises
    assert p.next_rekey(s) == 400
    # 10 equal cost buckets: boundaries are increasing token counts ending at the max sample.
    q = make_ordering("sagesched", refresh="buckets", buckets=10)
    t = seq(1, [100, 1000], prompt=50)
    q.key(t, 0)
    bounds = t.policy_state.bounds
    assert len(bounds) == 10 and bounds[-1] == 1000 and bounds == sorted(bounds)
    none = make_ordering("sagesched", refresh="none")
    u = seq(2, [100, 1000], prompt=50)
    ku = none.key(u, 0)
    assert none.next_rekey(u) == NEVER
    u.num_generated = 900
    assert none.key(u, 0) == ku


@pytest.mark.parametrize(
    ("rule", "expected"), [("top", 0.0), ("bottom", math.inf), ("restart", None)]
)
def test_sagesched_outlived_rule(rule: str, expected: float | None) -> None:
    p = make_ordering("sagesched", outlived=rule, refresh="tokens", refresh_tokens=50)
    s = seq(0, [100], prompt=0)
    first = p.key(s, 0)[0]
    s.num_generated = 100  # reached the only sample: outlived
    rank = p.key(s, 0)[0]
    if expected is None:  # restart: ranked like a fresh request of the same prediction
        assert rank == pytest.approx(first + 100 * 100, rel=1e-9)  # C(g+x)-C(g), I = 0
        assert p.next_rekey(s) > 100
    else:
        assert rank == expected


def test_oracle_srpt_reads_the_true_remaining_cost() -> None:
    a = seq(0, [1], prompt=0, output=300)  # prediction says 1 token; the oracle ignores it
    b = seq(1, [1000], prompt=0, output=100, arrival=1.0)
    assert order("oracle-srpt", [a, b]) == [1, 0]
    assert ORDERING.get("oracle-srpt").oracle and not ORDERING.get("sagesched").oracle


def test_unknown_policy_and_option_are_clear_errors() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown ordering policy 'sagesced'.*sagesched"):
        make_ordering("sagesced")
    with pytest.raises(ConfigError, match=r"unknown option 'hysterisis'.*hysteresis"):
        make_ordering("sagesched", hysterisis=0.1)
    with pytest.raises(ConfigError, match="refresh must be one of"):
        make_ordering("sagesched", refresh="sometimes")


# ----------------------------------------------------------------- replica mechanics
def make_replica(policy: str, blocks: int, **options: object) -> Replica:
    cfg = SchedulerConfig(fast_path=False, block_size=16)
    return Replica(0, AffineTimer(), blocks, cfg, make_ordering(policy, **options))


def test_better_ranked_arrival_preempts_the_worst_running_request() -> None:
    # 10 blocks of 16 tokens. A long request runs (8 blocks after its 128-token prefill, 9 for
    # its next token); a short one arrives and needs 3 of the 1 left.
    r = make_replica("sagesched", 10, preempt=True, hysteresis=0.5)
    long = seq(0, [16], prompt=128, output=16)
    r.add(long, 0.0)
    t = r.schedule(0.0)
    r.complete(t)
    assert long.status is SeqStatus.RUNNING and r.free_blocks == 2
    short = seq(1, [4], prompt=40, output=4, arrival=t)
    r.add(short, t)
    r.schedule(t)
    assert long.status is SeqStatus.PREEMPTED and long.num_preemptions == 1
    assert [s for s, _ in r.plan.scheduled] == [short]
    assert r.waiting[0][2] is long  # back to waiting, ahead of nothing else


def test_hysteresis_and_preempt_flag_prevent_preemption() -> None:
    for options in ({"preempt": True, "hysteresis": 1e6}, {"preempt": False}):
        r = make_replica("sagesched", 10, **options)
        long = seq(0, [16], prompt=128, output=16)
        r.add(long, 0.0)
        t = r.schedule(0.0)
        r.complete(t)
        short = seq(1, [4], prompt=40, output=4, arrival=t)
        r.add(short, t)
        r.schedule(t)
        assert long.status is SeqStatus.RUNNING and short.status is SeqStatus.WAITING


def test_memory_victim_rules() -> None:
    # Priority (vLLM): the worst key goes, however much work it holds. least-computed: the
    # sequence with the fewest computed tokens (cheapest to recompute) goes.
    big_bad = seq(0, [500], prompt=2000)
    small_good = seq(1, [5], prompt=10)
    big_bad.num_computed, small_good.num_computed = 2000, 10
    for p in (make_ordering("sagesched"), make_ordering("sagesched", victim="least-computed")):
        for s in (big_bad, small_good):
            s.policy_state = None
            s.sort_key = p.key(s, 0.0)
    assert make_ordering("sagesched").memory_victim([big_bad, small_good]) is big_bad
    cheap = make_ordering("sagesched", victim="least-computed")
    assert cheap.memory_victim([big_bad, small_good]) is small_good
    with pytest.raises(ConfigError, match="victim must be one of"):
        make_ordering("fcfs", victim="youngest")


def test_progress_rekey_happens_at_the_boundary() -> None:
    r = make_replica("fastserve", 100, base_quantum=4)
    s = seq(0, [1], prompt=8, output=20)
    r.add(s, 0.0)
    t = 0.0
    levels = []
    while s.status is not SeqStatus.FINISHED:
        t = r.schedule(t)  # re-keys first, then plans
        levels.append((s.num_generated, s.sort_key[0]))
        r.complete(t)
    # Level 0 for 4 tokens, level 1 for 8 more, then level 2; keys refresh on the boundary.
    assert dict(levels)[3] == 0 and dict(levels)[4] == 1 and dict(levels)[12] == 2


class SamplesPredictor:
    """Stand-in predictor: a noisy empirical distribution around the true length."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def predict(self, request: Request) -> LengthDistribution:
        noise = self.rng.lognormal(0.0, 0.5, size=8)
        return LengthDistribution(np.maximum(1.0, np.round(request.output_tokens * noise)))

    def observe(self, request: Request, output_tokens: int) -> None:
        pass


POLICY_CASES = [
    ("ssjf", {}),
    ("ltr", {"starvation_s": 2.0, "rekey_period_s": 0.3}),
    ("trail", {"refresh_tokens": 16}),
    ("tie", {}),
    ("fastserve", {"base_quantum": 4}),
    ("svf", {"victim": "least-computed"}),
    ("sagesched", {}),
    ("sagesched", {"refresh": "tokens", "refresh_tokens": 20, "preempt": True, "hysteresis": 0.0}),
    ("sagesched", {"gittins": "bucketed", "outlived": "restart", "preempt": False}),
    ("oracle-srpt", {"refresh_tokens": 8, "preempt": True}),
]


@pytest.mark.parametrize(("policy", "options"), POLICY_CASES)
def test_fast_path_matches_step_mode(policy: str, options: dict) -> None:
    reqs = create_requests(150, rate=30, seed=5, max_prompt=400, max_output=200)
    out = []
    for fast in (False, True):
        sim = create_cluster(
            2,
            kv_blocks=[60, 120],
            placement="least-outstanding",
            fast_path=fast,
            max_num_batched_tokens=256,
            max_num_seqs=12,
        )
        for rep in sim.replicas:
            rep.ordering = make_ordering(policy, **options)
        sim.predictor = SamplesPredictor(seed=1)
        out.append(sim.run(reqs))
    a, b = out[0].records, out[1].records
    for col in ("replica", "preemptions", "generated"):
        assert (a[col] == b[col]).all(), col
    for col in ("first_scheduled", "first_token", "finish"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=1e-9)
    assert out[1].replicas["segments"].sum() > 0  # the fast path was taken
