"""The placement environment: put each arriving request on a GPU replica of a simulated cluster."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.config import NO_PREDICTOR, EnvRunConfig, resolve_config
from envs.critic import CriticFeatures
from envs.data import EnvData, StreamPredictor, load_env_data
from sagerl.errors import ConfigError
from sagerl.features import CLIP, FeatureEncoder, FeatureSpec, RequestStats
from sagerl.policy.placement import PlacementPolicy
from sagerl.sim.cluster import Simulation
from sagerl.sim.events import ClusterEvent, ClusterEvents
from sagerl.sim.replica import Replica
from sagerl.workload.request import Request


class PlacementEnv(gym.Env[np.ndarray, np.int64]):
    """Place LLM requests on the replicas of a simulated serving cluster; minimise mean TTLT.

    ## Description

    A window of a real workload (arrival times, prompts with text, true output lengths) is
    replayed on a cluster of N model replicas, possibly on different GPUs, simulated as vLLM's V1
    engine schedules them (continuous batching, chunked prefill, paged KV cache, preemption;
    :mod:`sagerl.sim`). Inside each replica an ordering policy (SageSched's Gittins ranks by
    default) decides who runs; the agent decides only *where* each request goes. Every request is
    one decision, taken at its arrival time: the agent sees the cluster and the request's
    *predicted* output-length distribution (never its true length) and picks a replica; the
    simulator then runs until the next arrival.

    ## Action Space

    ``Discrete(max_replicas)``: the index of the replica that receives the request.
    :meth:`action_masks` marks the valid ones (present in the cluster, up, and with a KV cache
    large enough for the prompt). A masked action is remapped to the first valid replica and
    flagged in ``info["invalid_action"]`` (or raises, with ``env.invalid_action: error``).

    ## Observation Space

    ``Box(-10, 10, (D + P,), float32)``. The first ``D = 18 * max_replicas + 35`` entries
    (``env.actor_size``) are what a policy may use, built by
    :class:`sagerl.features.FeatureEncoder` (its module docstring gives the transforms); the
    last ``P = 2 * max_replicas + 10`` are privileged, simulator-only features for the critic
    (:mod:`envs.critic`; ``env.critic_features: false`` drops them):

    ===========  =======  ============================================================
    part         entries  meaning
    ===========  =======  ============================================================
    per replica  18 each  present, available (the mask), healthy, running, waiting, KV
                          use, expected remaining cost ranked ahead of / behind the
                          request, requests behind, speed (absolute, relative to the
                          fastest), estimated finish time, the teacher's estimate
                          (absolute, relative to its best, its pick, its KV test), load
                          and KV use relative to the least loaded available replica
    request      9        prompt tokens, has prediction, predicted mean and std of the
                          output length, expected hybrid cost, Gittins rank, share of
                          available replicas, requests in the cluster, has teacher
    histogram    20       predicted probability of output lengths in 100-token bins
                          (the last holds >= 1,900)
    quantiles    6        predicted output length at 0.1, 0.25, 0.5, 0.75, 0.9, 0.99
    critic only  2 each   per replica: true remaining output tokens and hybrid cost held
    critic only  10       progress, decisions left, arrivals in the next 1/2/4/8 s and
                          their true cost (2 and 8 s), the request's true length and cost
    ===========  =======  ============================================================

    Padding slots (``i >= N``) are zero. All entries are finite and clipped to [-10, 10].

    ## Rewards

    Minus the growth of the total time in system since the previous decision, scaled:
    ``r_t = -reward_scale * integral over [t_i, t_{i+1}) of n(s) ds``, where ``n`` counts requests
    that arrived and have not finished, computed exactly from arrival and finish times. The last
    step drains the cluster and adds the rest, so the episode return is
    ``-reward_scale * sum of TTLT`` and maximising it minimises mean TTLT (Park's load-balancing
    environment has the same shape). A request rejected for want of KV space costs
    ``reject_penalty_s`` instead.

    ## Starting State

    ``reset(seed)`` draws a window of ``episode_requests`` consecutive requests from the
    training part of the workload (``options={"split": "eval"}``: the held-out part;
    ``options={"window": i}``: the window starting at request ``i``), empties the cluster, marks
    replicas down with probability ``replica_down_prob``, and rebuilds the predictor with the
    ``history_prefill`` requests before the window in its history. The first observation is the
    first request of the window.

    ## Episode End

    Terminated when every request of the window has been placed (the cluster is then drained).
    Truncated only by a ``TimeLimit`` wrapper (``env.max_episode_steps``). The last step's
    ``info["episode_metrics"]`` holds the window's metrics: mean, p50, p90 and p99 TTLT, mean
    and p99 TTFT, mean TPOT, throughput (requests/s), rejected requests.

    ## Arguments

    ```python
    import envs  # registers the ids
    env = gymnasium.make("sagerl/Placement-v0", config="configs/train-default.yaml",
                         overrides=["env.episode_requests=128"])
    ```

    * ``config``: an :class:`~envs.config.EnvRunConfig`, a dict, a YAML path, or ``None``
      (``configs/train-default.yaml``).
    * ``overrides``: ``key=value`` strings applied to the config.
    * ``split``: default split of :meth:`reset` (``train`` or ``eval``).
    * ``data``: prebuilt :class:`~envs.data.EnvData` (shared between vectorised copies; by
      default memoised per process and config).
    * ``replicas``: hand-built replicas instead of the config's cluster (tests).

    ## Version History

    * v0: first version (feature layout 1).
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012  (Gymnasium's convention)

    def __init__(
        self,
        config: EnvRunConfig | dict[str, Any] | str | Path | None = None,
        overrides: list[str] | None = None,
        *,
        split: str = "train",
        data: EnvData | None = None,
        replicas: list[Replica] | None = None,
    ) -> None:
        from sagerl.policy import make_placement
        from sagerl.sim.build import build_replicas

        self.config = cfg = resolve_config(config, overrides)
        env = cfg.env
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        self.split = split
        self.data = data or load_env_data(cfg)
        self.replicas = replicas if replicas is not None else build_replicas(cfg.cluster)
        for replica in self.replicas:
            replica.track_block_time = False  # no metric here reads the KV memory-time integral
        n = len(self.replicas)
        slots = env.max_replicas or n
        if n > slots:
            raise ConfigError(f"env.max_replicas={slots} is below the cluster's {n} replicas")
        self.num_replicas = n
        self.episode_requests = env.episode_requests
        self.data.window_starts(split, env.episode_requests)  # fail early on a short workload
        self.predictor = (
            None if env.predictor.name == NO_PREDICTOR else StreamPredictor(cfg, self.data)
        )
        self.sim = Simulation(self.replicas, None, self.predictor)
        fo = env.features
        self.encoder = FeatureEncoder(
            FeatureSpec(
                max_replicas=slots,
                time_unit=fo.time_unit,
                time_log_ref=fo.time_log_ref,
                cost_unit=fo.cost_unit,
                cost_log_ref=fo.cost_log_ref,
            )
        )
        self.teacher: PlacementPolicy = make_placement(
            env.teacher, seed=cfg.seed, **env.teacher_options
        )
        self.reward_scale = env.reward_scale
        self.actor_size = self.encoder.size
        self.critic = CriticFeatures(self.encoder) if env.critic_features else None
        size = self.actor_size + (self.critic.size if self.critic else 0)
        self.observation_space = spaces.Box(-CLIP, CLIP, (size,), np.float32)
        self.action_space = spaces.Discrete(slots)
        self.num_actions = slots
        self._window: list[Request] = []
        self._i = -1
        self._obs = np.zeros(size, dtype=np.float32)
        self._actor_obs = self._obs[: self.actor_size]
        self._critic_obs = self._obs[self.actor_size :]
        self._mask = np.zeros(slots, dtype=bool)
        self._request: Request | None = None
        self._prediction: Any = None
        self._views: Any = None
        self._teacher_action: int | None = None
        self.last_finished: list[Any] = []
        """Sequences that finished during the last :meth:`step` (online learners read them)."""
        self.events: ClusterEvents | None = None

    # ------------------------------------------------------------------ Gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        split, window = self._parse_options(options)
        split = split or self.split
        lo, hi = self.data.window_starts(split, self.episode_requests)
        if window is None:
            start = int(self.np_random.integers(lo, hi + 1))
        elif not lo <= window <= hi:
            raise ValueError(f"options['window']={window} outside {lo}..{hi} for split {split!r}")
        else:
            start = window
        requests = self.data.requests
        self._window = requests[start : start + self.episode_requests]
        self._start = start
        self._split = split
        if self.events is not None:
            self.events.restore()
        self.sim.reset()
        self.teacher.reset()
        p_down = self.config.env.replica_down_prob
        if p_down > 0:
            down = self.np_random.random(self.num_replicas) < p_down
            if down.all():
                down[int(self.np_random.integers(self.num_replicas))] = False
            for replica, d in zip(self.replicas, down, strict=True):
                replica.healthy = not bool(d)
        if self.predictor is not None:
            prefill = self.config.env.history_prefill
            self.predictor.reset(requests[max(0, start - prefill) : start])
        if self.critic is not None:
            self.critic.start(self._window)
        self._i = 0
        self._in_system = 0
        self._clock = self._window[0].arrival
        self._rejected = 0
        self.sim.advance_to(self._clock)
        self._observe()
        return self._obs.copy(), self._info()

    def step(
        self, action: int | np.integer
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        request = self._request
        if request is None:
            raise gym.error.ResetNeeded("call reset() before step() (or after the episode ended)")
        a = int(action)
        if not 0 <= a < self.num_actions:
            raise ValueError(f"action {a} outside 0..{self.num_actions - 1}")
        invalid = not self._mask[a]
        if invalid:
            if self.config.env.invalid_action == "error":
                raise ValueError(f"action {a} is masked (replica absent, down or too small)")
            a = int(np.flatnonzero(self._mask)[0])
        sim = self.sim
        rejected = len(sim.rejected)
        sim.place(request, a, self._prediction)
        penalty = 0.0
        if len(sim.rejected) > rejected:
            self._rejected += 1
            penalty = self.config.env.reject_penalty_s
        else:
            self._in_system += 1
        self._i += 1
        t = self._clock
        terminated = self._i >= len(self._window)
        if terminated:
            finished = sim.drain()
            growth = 0.0
            for seq in finished:
                growth += seq.finish_time - t
            self._in_system -= len(finished)
        else:
            t_next = self._window[self._i].arrival
            finished = sim.advance_to(t_next)
            growth = self._in_system * (t_next - t)
            for seq in finished:
                growth -= t_next - seq.finish_time
            self._in_system -= len(finished)
            self._clock = t_next
        self.last_finished = finished
        reward = -self.reward_scale * (growth + penalty)
        info: dict[str, Any]
        if terminated:
            self._request = None
            info = {"episode_metrics": self.episode_metrics(), "window": self._start}
        else:
            self._observe()
            info = self._info()
        if invalid:
            info["invalid_action"] = True
        return self._obs.copy(), float(reward), terminated, False, info

    def action_masks(self) -> np.ndarray:
        """Valid actions for the current request (sb3-contrib's ``MaskablePPO`` reads this)."""
        return self._mask.copy()

    # ------------------------------------------------------------------ for teachers and baselines
    def decision(self) -> tuple[Request, Any, float, Any]:
        """``(request, views, now, prediction)`` of the pending decision, for analytic policies
        evaluated through the same environment (and for labelling by the teacher)."""
        if self._request is None:
            raise gym.error.ResetNeeded("no pending decision: call reset()")
        return self._request, self._views, self._clock, self._prediction

    def teacher_action(self) -> int:
        """The teacher placement policy's choice for the pending request (cached per step)."""
        if self._teacher_action is None:
            request, views, now, prediction = self.decision()
            self._teacher_action = int(self.teacher.choose(request, views, now, prediction))
        return self._teacher_action

    def policy_action(self, policy: PlacementPolicy) -> int:
        """What an analytic placement policy chooses for the pending request."""
        request, views, now, prediction = self.decision()
        return int(policy.choose(request, views, now, prediction))

    def set_events(self, events: list[ClusterEvent] | None) -> None:
        """Replay these cluster events (slowdowns, removals) in every episode from now on, each
        applied before the first decision at or after its time (shift scenarios)."""
        self.events = ClusterEvents(self.replicas, events) if events else None

    def episode_metrics(self) -> dict[str, float]:
        """Metrics of the window's requests so far (all of them once the episode ended)."""
        return window_metrics(self.sim.sequences, self.sim.rejected)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _parse_options(options: dict[str, Any] | None) -> tuple[str | None, int | None]:
        if not options:
            return None, None
        unknown = set(options) - {"split", "window"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; valid: split, window")
        split = options.get("split")
        if split is not None and split not in ("train", "eval"):
            raise ValueError(f"options['split'] must be 'train' or 'eval', got {split!r}")
        window = options.get("window")
        if window is not None and (not isinstance(window, int | np.integer) or window < 0):
            raise ValueError(f"options['window'] must be a request index >= 0, got {window!r}")
        return split, None if window is None else int(window)

    def _observe(self) -> None:
        """Predict the pending request, snapshot the cluster, fill the observation and mask."""
        request = self._window[self._i]
        self._request = request
        if self.events is not None:
            self.events.due(request.arrival)
        self._teacher_action = None
        prediction = self.sim.predict(request)
        self._prediction = prediction
        # Every replica's view is read (mask, encoder, teacher): build them all at once, into
        # a list (what Simulation.views' LazyViews would build on access, without its lookup).
        now = request.arrival
        views = [replica.view(now) for replica in self.replicas]
        self._views = views
        stats = RequestStats.of(request, prediction)
        scores, ok = (None, None)
        if self.config.env.teacher_features:
            scores, ok = self._teacher_estimates(request, views, prediction)
        mask = self.encoder.action_mask(request, views, out=self._mask)
        self.encoder.encode(
            request, views, prediction, scores, ok, stats=stats, mask=mask, out=self._actor_obs
        )
        if self.critic is not None:
            self.critic.fill(self._critic_obs, self._i, self.replicas, request)

    def _teacher_estimates(self, request: Request, views: Any, prediction: Any) -> tuple[Any, Any]:
        """The teacher's per-replica estimates (lower is better) and safety flags.

        Policies expose them through ``scores(request, views, now, prediction)`` or SageSched's
        ``marginal_costs(request, views, prediction)``; any other policy gets a one-hot of its
        choice (0 for its pick, 1 elsewhere), so the observation keeps its meaning.
        """
        teacher = self.teacher
        scores_fn = getattr(teacher, "scores", None)
        if scores_fn is not None:
            return scores_fn(request, views, self._clock, prediction), None
        marginal = getattr(teacher, "marginal_costs", None)
        if marginal is not None:
            return marginal(request, views, prediction)
        pick = self.teacher_action()
        return [0.0 if i == pick else 1.0 for i in range(len(views))], None

    def _info(self) -> dict[str, Any]:
        request_id = self._request.id if self._request else -1
        return {"request_id": request_id, "in_system": self._in_system}


def window_metrics(sequences: list[Any], rejected: list[Any]) -> dict[str, float]:
    """TTLT, TTFT, TPOT and throughput of finished sequences (all times in s)."""
    rejected_ids = {id(s) for s in rejected}
    done = [s for s in sequences if id(s) not in rejected_ids and s.finish_time >= 0]
    out: dict[str, float] = {"requests": float(len(sequences)), "rejected": float(len(rejected))}
    if not done:
        return out
    arrival = np.fromiter((s.arrival for s in done), np.float64, len(done))
    finish = np.fromiter((s.finish_time for s in done), np.float64, len(done))
    first = np.fromiter((s.first_token_time for s in done), np.float64, len(done))
    outputs = np.fromiter((s.output_tokens for s in done), np.float64, len(done))
    ttlt = finish - arrival
    ttft = first - arrival
    multi = outputs > 1
    tpot = (finish[multi] - first[multi]) / (outputs[multi] - 1)
    makespan = float(finish.max() - arrival.min())
    out.update(
        mean_ttlt=float(ttlt.mean()),
        p50_ttlt=float(np.percentile(ttlt, 50)),
        p90_ttlt=float(np.percentile(ttlt, 90)),
        p99_ttlt=float(np.percentile(ttlt, 99)),
        sum_ttlt=float(ttlt.sum()),
        mean_ttft=float(ttft.mean()),
        p99_ttft=float(np.percentile(ttft, 99)),
        mean_tpot=float(tpot.mean()) if tpot.size else math.nan,
        throughput=len(done) / makespan if makespan > 0 else 0.0,
    )
    return out
