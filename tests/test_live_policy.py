"""The router decides as the simulator does: same views, same policy object, same answer.

Also: the views the router fills from its ledger and scrapes equal the views a simulated replica
of the same GPU, model and load gives, and an exported ONNX policy runs through the
FeatureEncoder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from sagerl.features import FeatureEncoder, FeatureSpec, RequestStats
from sagerl.live.backends import BackendRegistry
from sagerl.live.config import BackendSpec, PolicySpec
from sagerl.live.ledger import Flight, Ledger
from sagerl.live.policy_runtime import OnnxPolicyRuntime, PlacementRuntime, make_runtime
from sagerl.live.scrape import EngineStats, ScrapeState
from sagerl.live.sidecar import make_sidecar
from sagerl.live.views import build_views
from sagerl.policy import PLACEMENT, make_placement
from sagerl.predict.distribution import LengthDistribution
from sagerl.sim import Replica
from sagerl.sim.build import build_replicas
from sagerl.sim.config import ClusterConfig
from sagerl.sim.sequence import Sequence
from sagerl.workload.request import Request

from simfactory import create_cluster, create_requests

POLICIES = [n for n in PLACEMENT.names() if n != "learned"]


def prediction(r: Request) -> LengthDistribution:
    return LengthDistribution([max(1, r.output_tokens // 2), r.output_tokens, r.output_tokens * 2])


@pytest.mark.parametrize("name", POLICIES)
def test_same_views_same_decision_in_simulator_and_router(name: str) -> None:
    """Replay a simulation; at every arrival the router's runtime picks what the policy picks."""
    sim = create_cluster(num_replicas=3, placement=name, ordering="sagesched", kv_blocks=300)
    sim_policy = make_placement(name, seed=7)
    router_policy = PlacementRuntime(name, seed=7)
    decisions = []
    for req in create_requests(60, rate=40.0, max_output=200):
        sim.advance_to(req.arrival)
        pred = prediction(req)
        views = [sim.views(req.arrival)[i] for i in range(3)]
        a = sim_policy.choose(req, views, req.arrival, pred)
        b = router_policy.choose(req, views, req.arrival, pred)
        assert a == b
        decisions.append(a)
        sim.place(req, a, pred)
    assert len(set(decisions)) > 1  # the views changed enough to move decisions around


def _sim_replicas(loads: list[tuple[int, int]]) -> list[Replica]:
    """A100 replicas (real step-time model) with ``(running, waiting)`` requests queued."""
    cfg = ClusterConfig.model_validate(
        {"replicas": [{"gpu": "A100", "model": "llama-3.1-8b", "count": len(loads)}],
         "ordering": "sagesched"}
    )  # fmt: skip
    replicas = build_replicas(cfg)
    rid = 0
    for rep, (running, waiting) in zip(replicas, loads, strict=True):
        for k in range(running + waiting):
            req = Request(rid, 0.0, 300 + 50 * k, 100 + 30 * k)
            rid += 1
            seq = Sequence(req)
            seq.prediction = prediction(req)
            rep.add(seq, 0.0)
        if running:  # admit the first `running` (prefill) so they hold KV and run
            rep.config = rep.config.model_copy(update={"max_num_seqs": running})
            end = rep.schedule(0.0)
            assert end is not None
            rep.complete(end)
    return replicas


def test_router_views_equal_simulated_views_and_decisions() -> None:
    """Ledger + scrape give the views a simulated replica with the same load gives."""
    loads = [(4, 2), (1, 0), (6, 5)]
    replicas = _sim_replicas(loads)
    now = 1.0
    sim_views = [r.view(now) for r in replicas]
    registry = BackendRegistry(
        [BackendSpec(url=f"http://127.0.0.1:{9000 + i}", gpu="A100", model="llama-3.1-8b")
         for i in range(len(loads))]
    )  # fmt: skip
    ledger = Ledger(len(loads))
    t = time.monotonic()
    scrapes = []
    for rep, v in zip(replicas, sim_views, strict=True):
        # What vLLM would export for this replica, and what the router sent it.
        stats = EngineStats(
            running=v.num_running,
            waiting=v.num_waiting,
            kv_usage=v.kv_blocks_used / v.kv_blocks_total,
            kv_blocks_total=v.kv_blocks_total,
            block_size=v.block_size,
        )
        seqs = list(rep.running) + [s for _, _, s in rep.waiting]
        for seq in seqs:
            f = Flight(seq.request, f"r{seq.request.id}", True, prediction=seq.prediction)
            st = RequestStats.of(seq.request, seq.prediction)
            f.rank, f.work = st.rank, st.mean_cost
            ledger.accept(f)
            ledger.assign(f, rep.index)
        sent = (ledger.in_flight(rep.index), ledger.kv_tokens[rep.index])
        scrapes.append(ScrapeState(stats, t, t, sent=sent))
    router_views = build_views(registry, ledger, scrapes, 2.0, t)
    fields = (
        "index", "gpu", "model", "num_running", "num_waiting", "kv_blocks_used",
        "kv_blocks_total", "block_size", "decode_tokens_per_s", "healthy", "cost_rate",
    )  # fmt: skip
    for sv, rv in zip(sim_views, router_views, strict=True):
        for f in fields:
            assert getattr(sv, f) == pytest.approx(getattr(rv, f)), f
        sp, rp = sv.queue_profile(), rv.queue_profile()
        assert sp.ranks == pytest.approx(rp.ranks, rel=1e-9)
        assert sp.prefix_work == pytest.approx(rp.prefix_work, rel=1e-9)
    new = Request(999, now, 700, 0)
    pred = LengthDistribution([50, 400, 900])
    for name in POLICIES:
        a = make_placement(name, seed=3).choose(new, sim_views, now, pred)
        b = PlacementRuntime(name, seed=3).choose(new, router_views, now, pred)
        assert a == b, name


def test_stale_scrape_falls_back_to_the_ledger() -> None:
    registry = BackendRegistry([BackendSpec(url="http://127.0.0.1:9100", block_size=16)])
    ledger = Ledger(1)
    for k in range(3):
        f = Flight(Request(k, 0.0, 160, 0), f"r{k}", True)
        ledger.accept(f)
        ledger.assign(f, 0)
    ledger.first_byte(next(iter(ledger)))
    old = ScrapeState(EngineStats(running=50, waiting=9, kv_usage=0.9), 0.0, 0.0)
    v = build_views(registry, ledger, [old], stale_after_s=2.0, now=100.0)[0]
    assert (v.num_running, v.num_waiting) == (1, 2)
    assert v.kv_blocks_used == 3 * 10  # 160 prompt tokens = 10 blocks each
    # Scraped when the router had one request there (160 prompt tokens): the two sent since
    # count as waiting, and their KV (10 blocks each) is added to the scraped use.
    fresh = ScrapeState(EngineStats(running=1, waiting=0, kv_usage=0.5), 99.5, 99.5, sent=(1, 160))
    v = build_views(registry, ledger, [fresh], stale_after_s=2.0, now=100.0)[0]
    assert (v.num_running, v.num_waiting) == (1, 2)
    assert v.kv_blocks_used == int(np.ceil(0.5 * v.kv_blocks_total)) + 20
    v = build_views(registry, ledger, [fresh], 2.0, now=100.0, exclude={0})[0]
    assert not v.healthy


def test_scrape_is_corrected_by_what_the_ledger_saw_since() -> None:
    """Requests finished since the scrape stop counting; other clients' requests still count."""
    registry = BackendRegistry([BackendSpec(url="http://127.0.0.1:9100", block_size=16)])
    ledger = Ledger(1)
    flights = []
    for k in range(5):
        f = Flight(Request(k, 0.0, 160, 0), f"r{k}", True)
        ledger.accept(f)
        ledger.assign(f, 0)
        ledger.first_byte(f)
        flights.append(f)
    sent = (ledger.in_flight(0), ledger.kv_tokens[0])  # 5 requests, 800 tokens
    # Only the router's five requests there, all running, 50 of 1,000 blocks.
    own = ScrapeState(
        EngineStats(running=5, waiting=0, kv_usage=0.05, kv_blocks_total=1000), 10.0, 10.0,
        sent=sent,
    )  # fmt: skip
    # Two more clients' requests running and two waiting besides the router's five.
    shared = ScrapeState(
        EngineStats(running=7, waiting=2, kv_usage=0.08, kv_blocks_total=1000), 10.0, 10.0,
        sent=sent,
    )  # fmt: skip
    for f in flights[:3]:
        ledger.finish(f, "completed")
    v = build_views(registry, ledger, [own], 2.0, now=10.2)[0]
    assert (v.num_running, v.num_waiting) == (2, 0)  # not the scrape's 5
    assert v.kv_blocks_used == 50 - 30  # three requests of 10 blocks each left
    v = build_views(registry, ledger, [shared], 2.0, now=10.2)[0]
    assert v.num_running + v.num_waiting == 2 + 4
    assert (v.num_running, v.num_waiting) == (6, 0)
    assert v.kv_blocks_used == 80 - 30


def test_make_runtime_by_name_and_unknown_names() -> None:
    rt = make_runtime(PolicySpec(name="round-robin"), 2)
    assert rt.name == "round-robin"
    with pytest.raises(ValueError, match="unknown placement policy"):
        PolicySpec(name="nope")
    with pytest.raises(ValueError, match=r"needs policy\.path"):
        PolicySpec(name="onnx")


def test_onnx_policy_runs_through_the_feature_encoder(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    enc = FeatureEncoder(FeatureSpec(max_replicas=4))
    # logits = obs @ W: replica r's logit is minus its "running" feature (fewest running wins).
    w = np.zeros((enc.size, 4), dtype=np.float32)
    for r in range(4):
        w[r * enc.replica_size + 3, r] = -1.0
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "W"], ["logits"])],
        "policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, enc.size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "policy.onnx"
    onnx.save(model, str(path))
    (tmp_path / "policy.json").write_text(json.dumps(make_sidecar(path, enc)))
    rt = OnnxPolicyRuntime(path, num_backends=3)
    replicas = _sim_replicas([(5, 0), (1, 0), (3, 0)])
    views = [r.view(0.0) for r in replicas]
    req = Request(1, 0.0, 100, 0)
    assert rt.choose(req, views, 0.0, None) == 1
    views[1] = type(views[1])(**{**{f: getattr(views[1], f) for f in views[1].__slots__},
                                 "healthy": False})  # fmt: skip
    assert rt.choose(req, views, 0.0, None) == 2  # the masked replica is never chosen
    with pytest.raises(Exception, match="replica slots"):
        OnnxPolicyRuntime(path, num_backends=5)


def test_onnx_policy_missing_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="does not exist"):
        OnnxPolicyRuntime(tmp_path / "none.onnx", 2)
    (tmp_path / "p.onnx").write_bytes(b"")
    with pytest.raises(Exception, match="no sidecar"):
        OnnxPolicyRuntime(tmp_path / "p.onnx", 2)
