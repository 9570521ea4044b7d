"""``python -m sagerl online``: every policy plays the same shift stream, side by side.

Per seed, one stream (:mod:`sagerl.workload.shift`) is replayed through one placement
environment (the trained agent's: same cluster, features, predictor and teacher), once per
policy, each from the same starting state:

1. the reference (SageSched placement): its per-request TTLT is what the guardrail and the
   regret compare with;
2. the baselines (least outstanding requests, ...);
3. the agent frozen at its checkpoint;
4. the agent learning online (:class:`~agents.online.learner.OnlineLearner`), PPO updates
   every ``online.update_every`` decisions, held by the guardrail
   (:class:`~agents.online.guardrail.Guardrail`).

The predictor's history keeps growing through the stream in every run (the environment's
predictor observes each request as it finishes). Results go to ``runs/<name>/`` (see
:mod:`agents.online.report`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.common.config import TrainConfig, load_train_config
from agents.online.config import AgentSource, OnlineConfig
from agents.online.guardrail import Guardrail, Switch
from agents.online.learner import OnlineLearner
from envs.placement import PlacementEnv
from sagerl.errors import SagerlError
from sagerl.workload.shift import ShiftStream, build_shift_stream

Log = Callable[[str], None]

ONLINE = "agent-online"
"""The agent that keeps learning on the stream (guarded)."""
FROZEN = "agent-frozen"
"""The same agent, never updated."""


@dataclass
class PolicyRun:
    """One policy's pass over one stream.

    Attributes:
        name: Policy label.
        ttlt: TTLT of every request in arrival order, s (a rejected request counts
            ``env.reject_penalty_s``).
        metrics: The stream's overall metrics (:func:`envs.placement.window_metrics`).
        decision_us: Mean time per decision, µs.
        fallback: Per decision, whether the guardrail's fallback placed it (online agent).
        switches: The guardrail's switches, with the decision index where each happened.
        updates: Per PPO update: the decision index and the update's figures.
    """

    name: str
    ttlt: np.ndarray
    metrics: dict[str, float]
    decision_us: float
    fallback: np.ndarray | None = None
    switches: list[tuple[int, Switch]] = field(default_factory=list)
    updates: list[tuple[int, dict[str, float]]] = field(default_factory=list)


@dataclass
class SeedResult:
    """Every policy's run on one seed's stream."""

    seed: int
    stream: ShiftStream
    runs: dict[str, PolicyRun]


def resolve_agent(source: AgentSource, log: Log) -> tuple[TrainConfig, Path]:
    """The agent's training config and checkpoint; trains it first when allowed and missing.

    Raises:
        SagerlError: No checkpoint and ``train_if_missing`` is off, or the checkpoint named
            does not exist.
    """
    from agents.common.checkpoints import saved_checkpoint

    run_dir = Path(source.run)
    if source.checkpoint is not None:
        ckpt = Path(source.checkpoint)
        if not ckpt.is_file():
            raise SagerlError(f"agent.checkpoint {ckpt} does not exist")
    else:
        found = saved_checkpoint(run_dir)
        if found is None:
            if not source.train_if_missing:
                raise SagerlError(
                    f"no trained agent in {run_dir}/; run `python -m sagerl train` first "
                    "(or set agent.train_if_missing=true)"
                )
            _train(source, run_dir, log)
            found = saved_checkpoint(run_dir)
            if found is None:
                raise SagerlError(f"training {run_dir} left no checkpoint")
        ckpt = found
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise SagerlError(f"{run_dir}/config.yaml is missing: cannot rebuild the agent's env")
    return load_train_config(config), ckpt


def _train(source: AgentSource, run_dir: Path, log: Log) -> None:
    from agents.pipeline import train

    log(
        f"no trained agent in {run_dir}/: training one with {source.train_config} first "
        "(a few minutes; later runs reuse it)"
    )
    overrides = [f"name={run_dir.name}", f"output_dir={run_dir.parent}"]
    train(load_train_config(source.train_config, overrides), log=log, progress=True)


def make_stream_env(cfg: OnlineConfig, train_cfg: TrainConfig, stream: ShiftStream) -> PlacementEnv:
    """The agent's environment over the whole stream (one episode), with its cluster events."""
    from envs.data import env_data_for
    from sagerl.schema import apply_overrides, validate

    n = len(stream.requests)
    overrides = [
        f"env.episode_requests={n}",
        "env.replica_down_prob=0",
        "env.max_episode_steps=null",
        *cfg.env_overrides,
    ]
    if cfg.data_dir is not None:
        overrides.append(f"data_dir={cfg.data_dir}")
    env_cfg = validate(
        type(train_cfg), apply_overrides(train_cfg.model_dump(), overrides), "online env"
    )
    label = "shift:" + "+".join(
        sorted({d.name for p in cfg.scenario.phases for d in p.workload.datasets})
    )
    data = env_data_for(env_cfg, stream.requests, n, label, progress=True)
    env = PlacementEnv(env_cfg, data=data)
    env.set_events(stream.events)
    return env


def play(
    env: PlacementEnv,
    name: str,
    *,
    analytic: str | None = None,
    learner: OnlineLearner | None = None,
    guardrail: Guardrail | None = None,
    fallback: str | None = None,
    reference_ttlt: np.ndarray | None = None,
    on_update: Callable[[int, dict[str, float]], None] | None = None,
    log: Log = print,
    progress: bool = False,
) -> PolicyRun:
    """Play the whole stream with one policy: an analytic placement or an agent (learning or
    frozen), optionally guarded (needs ``fallback`` and ``reference_ttlt``)."""
    import time

    from tqdm import tqdm

    from sagerl.policy import make_placement

    policy = make_placement(analytic) if analytic is not None else None
    backup = make_placement(fallback) if fallback is not None else None
    if guardrail is not None and (backup is None or reference_ttlt is None or learner is None):
        raise ValueError("a guardrail needs a learner, a fallback and the reference's TTLTs")
    obs, _ = env.reset(options={"split": "train", "window": 0})
    n = env.episode_requests
    used_fallback = np.zeros(n, dtype=bool)
    switches: list[tuple[int, Switch]] = []
    updates: list[tuple[int, dict[str, float]]] = []
    think = 0.0
    bar = tqdm(total=n, desc=name, unit="req", disable=not progress, leave=False)
    for i in range(n):
        mask = env.action_masks()
        t0 = time.perf_counter()
        if policy is not None:
            action = env.policy_action(policy)
        elif guardrail is not None and guardrail.active:
            assert learner is not None and backup is not None
            action = learner.take(obs, mask, env.policy_action(backup))
            used_fallback[i] = True
        else:
            assert learner is not None
            action = learner.act(obs, mask)
        think += time.perf_counter() - t0
        obs, reward, terminated, _, _ = env.step(action)
        if learner is not None:
            figures = learner.reward(reward, obs, terminated)
            if figures is not None:
                updates.append((i + 1, figures))
                if on_update is not None:
                    on_update(i + 1, figures)
        if guardrail is not None and reference_ttlt is not None:
            for seq in env.last_finished:
                switch = guardrail.observe(seq.finish_time - seq.arrival, reference_ttlt[seq.id])
                if switch is not None:
                    switches.append((i + 1, switch))
                    say = bar.write if progress else log
                    say(f"{name} @ request {i + 1}: {switch.describe()}")
        bar.update(1)
        if terminated:
            break
    bar.close()
    return PolicyRun(
        name,
        request_ttlt(env),
        env.episode_metrics(),
        think / max(n, 1) * 1e6,
        used_fallback if learner is not None else None,
        switches,
        updates,
    )


def request_ttlt(env: PlacementEnv) -> np.ndarray:
    """TTLT per request of the finished episode, in request-id order (rejected: the penalty)."""
    out = np.full(env.episode_requests, np.nan)
    rejected = {id(s) for s in env.sim.rejected}
    penalty = env.config.env.reject_penalty_s
    for seq in env.sim.sequences:
        out[seq.id] = penalty if id(seq) in rejected else seq.finish_time - seq.arrival
    if np.isnan(out).any():
        raise AssertionError("some requests of the stream were never placed or never finished")
    return out


def run_seed(
    cfg: OnlineConfig,
    train_cfg: TrainConfig,
    checkpoint: Path,
    seed: int,
    run_dir: Path,
    log: Log = print,
    progress: bool = False,
) -> SeedResult:
    """Every policy on one seed's stream."""
    from stable_baselines3.common.utils import set_random_seed

    from agents.ppo import load_model
    from sagerl import paths

    data_dir = paths.data_dir(cfg.data_dir or train_cfg.data_dir, must_exist=False)
    stream = build_shift_stream(cfg.scenario, data_dir, seed)
    phases = ", ".join(f"{p.name} ({p.end - p.first})" for p in stream.phases)
    log(f"seed {seed}: {len(stream.requests)} requests in phases {phases}")
    env = make_stream_env(cfg, train_cfg, stream)
    runs: dict[str, PolicyRun] = {}
    ref = cfg.reference
    runs[ref] = play(env, ref, analytic=ref, log=log, progress=progress)
    for name in cfg.baselines:
        if name != ref:
            runs[name] = play(env, name, analytic=name, log=log, progress=progress)

    frozen = OnlineLearner(load_model(checkpoint, train_cfg.ppo), cfg.online, seed, learn=False)
    runs[FROZEN] = play(env, FROZEN, learner=frozen, log=log, progress=progress)

    set_random_seed(seed)  # PPO's minibatch shuffles draw from the global generators
    model = load_model(checkpoint, train_cfg.ppo)
    logger = _logger(run_dir / f"seed_{seed}" / ONLINE)
    model.set_logger(logger)
    gate = None
    if cfg.online.replay_gate:
        from agents.online.gate import ReplayGate

        o = cfg.online
        replay_env = PlacementEnv(
            env.config, [f"env.episode_requests={o.replay_requests}"], data=env.data
        )
        replay_env.set_events(stream.events)
        gate = ReplayGate(replay_env, o.replay_requests, o.replay_lag, o.replay_margin, seed)
    learner = OnlineLearner(model, cfg.online, seed, gate=gate)
    g = cfg.guardrail
    guardrail = Guardrail(g.margin, g.release, g.window, g.min_requests) if g.enabled else None

    def on_update(step: int, figures: dict[str, float]) -> None:
        logger.record("online/guardrail_active", float(guardrail.active if guardrail else 0))
        for key in ("online/weight_change", "online/accepted"):
            if key in figures:
                logger.record(key, figures[key])
        logger.dump(step)

    runs[ONLINE] = play(
        env,
        ONLINE,
        learner=learner,
        guardrail=guardrail,
        fallback=ref if guardrail else None,
        reference_ttlt=runs[ref].ttlt if guardrail else None,
        on_update=on_update,
        log=log,
        progress=progress,
    )
    logger.close()
    return SeedResult(seed, stream, runs)


def _logger(folder: Path) -> Any:
    """SB3 logger writing the online agent's update figures to TensorBoard."""
    from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat

    folder.mkdir(parents=True, exist_ok=True)
    return Logger(str(folder), [TensorBoardOutputFormat(str(folder))])


def run_online(cfg: OnlineConfig, log: Log = print, progress: bool = False) -> list[SeedResult]:
    """Resolve the agent, then play every seed's stream with every policy."""
    import shutil

    train_cfg, checkpoint = resolve_agent(cfg.agent, log)
    log(f"agent: {checkpoint}")
    run_dir = Path(cfg.output_dir) / cfg.name
    for old in run_dir.glob("seed_*"):
        shutil.rmtree(old)
    results = []
    for k in range(cfg.seeds):
        results.append(run_seed(cfg, train_cfg, checkpoint, cfg.seed + k, run_dir, log, progress))
    return results
