"""Placement policies across replicas: the baselines and SageSched's marginal-TTLT placement."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sagerl.errors import ConfigError, UnknownNameError
from sagerl.policy import make_placement
from sagerl.predict.distribution import LengthDistribution
from sagerl.view import QueueProfile, ReplicaView
from sagerl.workload.request import Request

from simfactory import create_cluster, create_requests


def view(
    i: int,
    *,
    running: int = 0,
    waiting: int = 0,
    used: int = 0,
    total: int = 1000,
    speed: float = 50.0,
    rate: float = 1e6,
    profile: QueueProfile | None = None,
    healthy: bool = True,
) -> ReplicaView:
    return ReplicaView(
        index=i,
        gpu="test",
        model="test",
        num_running=running,
        num_waiting=waiting,
        kv_blocks_used=used,
        kv_blocks_total=total,
        block_size=16,
        decode_tokens_per_s=speed,
        healthy=healthy,
        cost_rate=rate,
        queue_profile=(lambda p=profile: p) if profile is not None else None,
    )


REQ = Request(id=0, arrival=0.0, prompt_tokens=100, output_tokens=200)
PRED = LengthDistribution([150, 200, 250])


def test_queue_profile_split_is_a_prefix_sum() -> None:
    prof = QueueProfile.build([(5.0, 10.0), (1.0, 3.0), (9.0, 100.0), (5.0, 7.0)])
    assert prof.ranks == [1.0, 5.0, 5.0, 9.0]
    assert prof.split(0.5) == (0.0, 4)
    assert prof.split(5.0) == (20.0, 1)  # ties go to the requests already queued
    assert prof.split(100.0) == (120.0, 0)
    assert QueueProfile().split(3.0) == (0.0, 0)


def test_least_kv_and_power_of_two() -> None:
    views = [view(0, used=900), view(1, used=100, running=9), view(2, used=500, healthy=False)]
    assert make_placement("least-kv").choose(REQ, views, 0.0) == 1
    # Power of two over two healthy replicas compares both: fewer outstanding wins.
    p2 = make_placement("power-of-two", seed=3)
    picks = {p2.choose(REQ, [view(0, running=5), view(1, running=1)], 0.0) for _ in range(20)}
    assert picks == {1}
    # With many replicas it only ever probes healthy ones.
    many = [view(i, running=i, healthy=i % 2 == 0) for i in range(8)]
    assert all(p2.choose(REQ, many, 0.0) % 2 == 0 for _ in range(50))


def test_sagesched_placement_prefers_less_work_ranked_ahead() -> None:
    # Replica 0 has lots of work ranked ahead of the request; replica 1 only work behind it.
    g_ahead = QueueProfile.build([(1.0, 5e6)] * 4)
    g_behind = QueueProfile.build([(1e12, 5e6)] * 4)
    p = make_placement("sagesched")
    views = [
        view(0, running=4, used=100, profile=g_ahead),
        view(1, running=4, used=100, profile=g_behind),
    ]
    deltas, ok = p.marginal_costs(REQ, views, PRED)
    assert ok == [True, True] and deltas[1] < deltas[0]
    assert p.choose(REQ, views, 0.0, PRED) == 1
    # An idle fast GPU beats an idle slow one (the lone-request floor E[O] / speed).
    idle = [view(0, speed=20.0), view(1, speed=80.0)]
    assert p.choose(REQ, idle, 0.0, PRED) == 1


def test_sagesched_placement_respects_the_kv_threshold() -> None:
    # Replica 0 is empty but its cache is tiny: prompt + P90 output (100 + 250 tokens = 22
    # blocks) would pass 95% of 20 blocks. Replica 1 is busier but has room.
    p = make_placement("sagesched", kv_threshold=0.95, kv_quantile=0.9)
    views = [view(0, total=20), view(1, running=30, used=600, total=1000)]
    deltas, ok = p.marginal_costs(REQ, views, PRED)
    assert ok == [False, True]
    assert deltas[0] < deltas[1]  # it would be faster there, but it is skipped
    assert p.choose(REQ, views, 0.0, PRED) == 1
    # When no replica passes, the smallest estimate wins rather than failing.
    full = [view(0, used=990, running=3), view(1, used=995, running=40)]
    assert p.marginal_costs(REQ, full, PRED)[1] == [False, False]
    assert p.choose(REQ, full, 0.0, PRED) == 0
    # Unhealthy replicas are never chosen.
    assert p.choose(REQ, [view(0, healthy=False), view(1, used=999)], 0.0, PRED) == 1
    assert math.isinf(p.marginal_costs(REQ, [view(0, healthy=False)], PRED)[0][0])


def test_unknown_placement_name_and_option() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown placement policy 'p2c'.*power-of-two"):
        make_placement("p2c")
    with pytest.raises(ConfigError, match=r"unknown option 'kv_treshold'.*kv_threshold"):
        make_placement("sagesched", kv_treshold=0.9)


class Samples:
    def predict(self, request: Request) -> LengthDistribution:
        return LengthDistribution([max(1, request.output_tokens // 2), request.output_tokens * 2])

    def observe(self, request: Request, output_tokens: int) -> None:
        pass


@pytest.mark.parametrize("ordering", ["sagesched", "fcfs"])
def test_sagesched_placement_in_a_simulation(ordering: str) -> None:
    reqs = create_requests(300, rate=60, seed=2)
    results = {}
    for placement in ("sagesched", "round-robin"):
        sim = create_cluster(3, kv_blocks=[80, 200, 400], placement=placement, ordering=ordering)
        sim.predictor = Samples()
        results[placement] = sim.run(reqs)
    rec = results["sagesched"].records
    assert (rec["generated"] == rec["output_tokens"]).all()
    # The larger replicas take more of the load.
    counts = np.bincount(rec["replica"], minlength=3)
    assert counts[2] > counts[0]
    assert (
        results["sagesched"].summary()["ttlt_mean"] < results["round-robin"].summary()["ttlt_mean"]
    )
