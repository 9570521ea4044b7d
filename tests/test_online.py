"""Online adaptation: shift streams, cluster events, the guardrail, and the learning loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from agents.common.checkpoints import Checkpointer, RunState
from agents.common.config import TrainConfig, load_train_config
from agents.online.config import OnlineConfig
from agents.online.guardrail import Guardrail
from agents.online.learner import OnlineLearner
from agents.online.runner import FROZEN, ONLINE, make_stream_env, play, run_seed
from sagerl.cli import main
from sagerl.errors import ConfigError
from sagerl.sim.events import ClusterEvent, ClusterEvents
from sagerl.workload.request import Request
from sagerl.workload.shift import Phase, ShiftScenario, ShiftStream, build_shift_stream

from simfactory import create_cluster, create_requests

TINY_TRAIN = [
    "workload.num_requests=600",
    "env.episode_requests=64",
    "env.predictor.name=oracle",
    "env.warmup=null",
    "env.history_prefill=0",
    "ppo.n_envs=1",
    "ppo.net_arch=[32, 32]",
]


def phase(name: str, n: int, rate: float, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "workload": {
            "num_requests": n,
            "max_output_tokens": 4096,
            "datasets": [{"name": "sample_castillo"}],
            "arrival": {"kind": "poisson", "rate": rate},
        },
        **extra,
    }


SCENARIO = {
    "phases": [
        phase("calm", 160, 12.0),
        phase("slow", 160, 12.0, events=[{"replica": 2, "slowdown": 3.0}]),
    ]
}


# ---------------------------------------------------------------------------- shift streams
def test_shift_stream_is_deterministic_contiguous_and_phases_are_independent() -> None:
    scenario = ShiftScenario.model_validate(SCENARIO)
    a = build_shift_stream(scenario, None, seed=3)
    b = build_shift_stream(scenario, None, seed=3)
    assert [(r.arrival, r.prompt_id, r.output_tokens) for r in a.requests] == [
        (r.arrival, r.prompt_id, r.output_tokens) for r in b.requests
    ]
    assert [r.id for r in a.requests] == list(range(320))
    arrivals = np.array([r.arrival for r in a.requests])
    assert np.all(np.diff(arrivals) >= 0)
    calm, slow = a.phases
    assert (calm.first, calm.end, slow.first, slow.end) == (0, 160, 160, 320)
    assert slow.start_s == pytest.approx(arrivals[159]) and calm.end_s == slow.start_s
    assert a.events == [ClusterEvent(slow.start_s, 2, 3.0, None, label="slow")]
    # Doubling phase 2's rate leaves phase 1 as it was and compresses phase 2's arrivals.
    faster = json.loads(json.dumps(SCENARIO))
    faster["phases"][1]["workload"]["arrival"]["rate"] = 24.0
    c = build_shift_stream(ShiftScenario.model_validate(faster), None, seed=3)
    assert [r.arrival for r in c.requests[:160]] == list(arrivals[:160])
    span = lambda s: s.requests[-1].arrival - s.phases[1].start_s  # noqa: E731
    assert span(c) < 0.7 * span(a)
    assert build_shift_stream(scenario, None, seed=4).requests[5] != a.requests[5]


def test_shift_scenario_rejects_bad_phases() -> None:
    with pytest.raises(ValueError, match="unique"):
        ShiftScenario.model_validate({"phases": [phase("a", 10, 1.0), phase("a", 10, 1.0)]})
    with pytest.raises(ValueError, match="slowdown and/or healthy"):
        ShiftScenario.model_validate({"phases": [phase("a", 10, 1.0, events=[{"replica": 0}])]})


# ---------------------------------------------------------------------------- cluster events
def _mean_ttlt(sim, requests: list[Request]) -> float:
    for r in requests:
        sim.advance_to(r.arrival)
        sim.place(r, 0)
    sim.drain()
    return float(np.mean([s.finish_time - s.arrival for s in sim.sequences]))


def test_slowdown_stretches_steps_and_restore_brings_the_nominal_cluster_back() -> None:
    requests = create_requests(40, rate=5.0, max_output=120)
    sim = create_cluster(num_replicas=2, ordering="fcfs")
    nominal = _mean_ttlt(sim, requests)
    events = ClusterEvents(sim.replicas, [ClusterEvent(0.0, 0, slowdown=2.0)])
    rate = sim.replicas[0].cost_rate
    sim.reset()
    assert events.due(0.0)
    assert sim.replicas[0].cost_rate == pytest.approx(rate / 2)
    slowed = _mean_ttlt(sim, requests)
    assert slowed == pytest.approx(2 * nominal, rel=0.05)
    events.restore()
    sim.reset()
    assert _mean_ttlt(sim, requests) == pytest.approx(nominal)
    with pytest.raises(ConfigError, match="replica 5"):
        ClusterEvents(sim.replicas, [ClusterEvent(0.0, 5, healthy=False)])


# ---------------------------------------------------------------------------- guardrail
def test_guardrail_trips_on_a_worse_window_and_releases_after_recovery() -> None:
    g = Guardrail(margin=0.10, release=0.02, window=20, min_requests=10)
    for _ in range(30):  # as good as the reference: never trips
        assert g.observe(1.0, 1.0) is None
    switches = [(i, g.observe(1.5, 1.0)) for i in range(20)]
    tripped = [(i, s) for i, s in switches if s is not None]
    # ratio after k worse requests in a window of 20: (20 - k + 1.5k) / 20 > 1.1 from k = 5
    assert [i for i, _ in tripped] == [4] and tripped[0][1].active and g.active
    assert tripped[0][1].excess == pytest.approx(0.125)
    back = [(i, g.observe(1.0, 1.0)) for i in range(30)]
    released = [(i, s) for i, s in back if s is not None]
    # released once at most 0.4 of the window is still worse: 20 - 0.5k <= ... k <= 0.8 -> k=0
    assert len(released) == 1 and not released[0][1].active and not g.active
    assert released[0][0] == 19
    assert [s.active for s in g.switches] == [True, False]


# ---------------------------------------------------------------------------- the loop
@pytest.fixture(scope="module")
def agent_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainConfig]:
    """A run directory with an (untrained) agent checkpoint and its config, as `train` leaves."""
    from agents.common.envs import make_env, make_vec_env
    from agents.ppo import build_model

    run = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = load_train_config(None, TINY_TRAIN)
    env = make_env(cfg)
    model = build_model(cfg.ppo, make_vec_env(cfg), seed=0, actor_size=env.actor_size)
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    Checkpointer(run).save(model, RunState(phase="done"), "ppo_0", "built")
    return run, cfg


def online_config(run: Path, tmp: Path, **extra: object) -> OnlineConfig:
    data = {
        "name": "o",
        "output_dir": str(tmp),
        "seeds": 1,
        "agent": {"run": str(run), "train_if_missing": False},
        "scenario": SCENARIO,
        "online": {"update_every": 32, "batch_size": 16, "n_epochs": 2},
        "guardrail": {"window": 40, "min_requests": 20},
        "report": {"rolling_requests": 40, "adapt_requests": 32},
        **extra,
    }
    return OnlineConfig.model_validate(data)


def test_online_updates_change_the_weights_and_runs_are_reproducible(
    agent_run: tuple[Path, TrainConfig], tmp_path: Path
) -> None:
    run, cfg = agent_run
    online = {"update_every": 32, "batch_size": 16, "n_epochs": 2, "learning_rate": 0.01}
    ocfg = online_config(run, tmp_path, guardrail={"enabled": False}, online=online)
    ckpt = run / "checkpoints" / "ppo_0.zip"
    a = run_seed(ocfg, cfg, ckpt, 0, tmp_path / "a", log=lambda _: None)
    np.random.seed(12345)  # whatever ran before must not matter
    torch.manual_seed(12345)
    b = run_seed(ocfg, cfg, ckpt, 0, tmp_path / "b", log=lambda _: None)
    online = a.runs[ONLINE]
    assert len(online.updates) == 320 // 32
    changes = [f["online/weight_change"] for _, f in online.updates]
    assert changes[0] > 0 and changes[-1] > changes[0]
    assert np.array_equal(online.ttlt, b.runs[ONLINE].ttlt)  # same seed, same numbers
    assert np.array_equal(a.runs[FROZEN].ttlt, b.runs[FROZEN].ttlt)
    assert not np.array_equal(online.ttlt, a.runs[FROZEN].ttlt)  # the updates changed choices
    assert set(a.runs) == {"sagesched", "least-outstanding", FROZEN, ONLINE}
    # The slowdown in phase 2 is felt by every policy.
    ref = a.runs["sagesched"].ttlt
    assert ref[160:].mean() > ref[:160].mean()
    # The online agent's updates are in TensorBoard.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "a" / "seed_0" / ONLINE))
    acc.Reload()
    tags = {t: acc.Scalars(t) for t in acc.Tags()["scalars"]}
    assert "train/approx_kl" in tags and len(tags["online/weight_change"]) == 10


def _hand_built_stream(n: int = 360) -> ShiftStream:
    """Steady arrivals, mid-size prompts and outputs; no data set involved."""
    rng = np.random.default_rng(1)
    requests = [
        Request(
            i,
            i * 0.06,
            int(rng.integers(100, 600)),
            int(rng.integers(100, 500)),
            prompt_text=f"prompt {i}",
            source="hand",
            prompt_id=f"h{i}",
        )
        for i in range(n)
    ]
    return ShiftStream(requests, [Phase("all", 0, n, 0.0, requests[-1].arrival)], [])


def test_guardrail_hands_a_bad_agent_over_to_sagesched_and_back(
    agent_run: tuple[Path, TrainConfig], tmp_path: Path
) -> None:
    from agents.ppo import load_model

    run, cfg = agent_run
    ocfg = online_config(run, tmp_path, online={"update_every": 10_000})
    stream = _hand_built_stream()
    env = make_stream_env(ocfg, cfg, stream)
    reference = play(env, "sagesched", analytic="sagesched")
    model = load_model(run / "checkpoints" / "ppo_0.zip", cfg.ppo)
    with torch.no_grad():  # an agent that sends everything to replica 0
        model.policy.action_net.bias.fill_(-20.0)
        model.policy.action_net.bias[0] = 20.0
    learner = OnlineLearner(model, ocfg.online, seed=0)
    guard = Guardrail(0.10, 0.02, window=40, min_requests=20)
    messages: list[str] = []
    result = play(
        env,
        ONLINE,
        learner=learner,
        guardrail=guard,
        fallback="sagesched",
        reference_ttlt=reference.ttlt,
        log=messages.append,
    )
    actives = [s.active for _, s in result.switches]
    assert actives[:2] == [True, False], actives  # over to SageSched, then back
    assert any("placing with the fallback" in m for m in messages)
    assert any("the agent places again" in m for m in messages)
    first_on, first_off = result.switches[0][0], result.switches[1][0]
    assert result.fallback is not None
    assert result.fallback[first_on:first_off].all() and not result.fallback[:first_on].any()
    pinned = play(env, "pinned", learner=OnlineLearner(model, ocfg.online, 0, learn=False))
    assert result.ttlt.mean() < pinned.ttlt.mean()  # the fallback spared requests the pile-up


def test_online_command_end_to_end_writes_report_png_and_json(
    agent_run: tuple[Path, TrainConfig], tmp_path: Path
) -> None:
    run, _ = agent_run
    cfg = online_config(run, tmp_path).model_dump()
    path = tmp_path / "shift.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "online.json"
    assert main(["online", "--config", str(path), "--no-progress", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["phases"] == ["calm", "slow"]
    assert set(report["final_regret_s"]) == {"sagesched", "least-outstanding", FROZEN, ONLINE}
    assert report["final_regret_s"]["sagesched"] == [0.0]
    rows = {(r["phase"], r["policy"]) for r in report["phase_table"]}
    assert ("slow", ONLINE) in rows and ("calm", FROZEN) in rows
    assert (tmp_path / "o" / "online.png").stat().st_size > 10_000
    assert (tmp_path / "o" / "report.json").is_file()


def test_online_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    agent = {"run": str(tmp_path / "none"), "train_if_missing": False}
    cfg = {"scenario": SCENARIO, "agent": agent}
    path = tmp_path / "shift.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["online", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "python -m sagerl train" in err[0]
    assert main(["online", "--config", str(path), "guardrail.margn=0.2"]) == 2
    assert "margn" in capsys.readouterr().err


def test_a_removed_replica_takes_no_new_requests_and_drains(
    agent_run: tuple[Path, TrainConfig], tmp_path: Path
) -> None:
    run, cfg = agent_run
    stream = _hand_built_stream(200)
    cut = stream.requests[100].arrival
    stream.events.append(ClusterEvent(cut, 1, healthy=False))
    env = make_stream_env(online_config(run, tmp_path), cfg, stream)
    result = play(env, "least-outstanding", analytic="least-outstanding")
    placed = {s.id: s.replica for s in env.sim.sequences}
    assert any(placed[i] == 1 for i in range(100))
    assert all(placed[i] != 1 for i in range(100, 200))
    assert np.isfinite(result.ttlt).all()  # what replica 1 held before still finished
    play(env, "again", analytic="least-outstanding")  # a new pass starts from the nominal cluster
    assert any(s.replica == 1 for s in env.sim.sequences[:100])


def test_rejected_updates_leave_the_weights_as_they_were(
    agent_run: tuple[Path, TrainConfig], tmp_path: Path
) -> None:
    from agents.ppo import load_model

    run, cfg = agent_run
    ocfg = online_config(run, tmp_path, online={"update_every": 32, "learning_rate": 0.01})
    env = make_stream_env(ocfg, cfg, _hand_built_stream(200))
    seen: list[int] = []

    def reject(learner: OnlineLearner, before: dict) -> bool:
        seen.append(learner.decisions)
        return False

    model = load_model(run / "checkpoints" / "ppo_0.zip", cfg.ppo)
    learner = OnlineLearner(model, ocfg.online, seed=0, gate=reject)
    result = play(env, ONLINE, learner=learner)
    assert seen == list(range(32, 201, 32)) and learner.rejected == len(seen)
    assert learner.weight_change() == 0.0
    assert all(f["online/accepted"] == 0.0 for _, f in result.updates)


def test_replay_gate_keeps_a_better_policy_and_rejects_a_worse_one(
    agent_run: tuple[Path, TrainConfig], tmp_path: Path
) -> None:
    from agents.online.gate import ReplayGate
    from agents.ppo import load_model
    from envs.placement import PlacementEnv

    run, cfg = agent_run
    ocfg = online_config(run, tmp_path)
    env = make_stream_env(ocfg, cfg, _hand_built_stream(360))
    replay_env = PlacementEnv(env.config, ["env.episode_requests=120"], data=env.data)
    gate = ReplayGate(replay_env, requests=120, lag=40, margin=0.0, seed=0)
    model = load_model(run / "checkpoints" / "ppo_0.zip", cfg.ppo)
    learner = OnlineLearner(model, ocfg.online, seed=0)
    learner.decisions = 300
    uniform = {k: v.clone() for k, v in model.policy.state_dict().items()}
    with torch.no_grad():  # pin every request on replica 0
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.copy_(torch.tensor([20.0, -20.0, -20.0]))
    pinned = {k: v.clone() for k, v in model.policy.state_dict().items()}
    assert gate.replay(model.policy, 140) == gate.replay(model.policy, 140)  # deterministic
    assert not gate(learner, uniform)  # "update" from uniform to pinned: rejected
    assert torch.equal(model.policy.action_net.bias, pinned["action_net.bias"])
    model.policy.load_state_dict(uniform)
    assert gate(learner, pinned)  # from pinned to uniform: kept
    (_, old, new), (_, old2, new2) = gate.checks
    assert new > old and new2 < old2 and (old, new) == (new2, old2)
