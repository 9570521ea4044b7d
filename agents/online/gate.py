"""A replay gate: keep a PPO update only if it places a recent stretch of the stream better.

On a shifting stream one PPO update is a noisy step: its advantages come from a few hundred
decisions whose outcomes are mostly the workload's doing. The simulator is a faithful twin of
the cluster, so an update can be checked before it is kept: replay the last ``requests`` arrivals
that have had time to finish (they end ``lag`` decisions before now) through a fresh copy of the
cluster, once with the updated policy and once with the policy before the update, sampling both
from the same random stream, and keep the update only if its mean TTLT is lower by more than
``margin``. In a live deployment the replay reads the router's transition log (arrival times,
prompts, measured output lengths) instead of the stream.

The replayed stretch starts from an empty cluster with the predictor warmed on the requests
before it (``env.history_prefill``), as every training episode does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.common.actors import masked_probabilities
from envs.placement import PlacementEnv


class ReplayGate:
    """Accepts or rejects an online update by paired replay (see the module docstring).

    Args:
        env: A placement env over the stream's requests whose episodes are ``requests`` long.
        requests: Requests replayed per check.
        lag: Decisions between the newest replayed request and now.
        margin: Relative improvement of mean TTLT an update must show.
        seed: Seed of the replays' action sampling (mixed with the window start).
    """

    def __init__(
        self, env: PlacementEnv, requests: int, lag: int, margin: float, seed: int
    ) -> None:
        self.env = env
        self.requests = requests
        self.lag = lag
        self.margin = margin
        self.seed = seed
        self.checks: list[tuple[int, float, float]] = []
        """Per check: decision index, mean TTLT before the update, after it."""

    def __call__(self, learner: Any, before: dict[str, Any]) -> bool:
        end = learner.decisions - self.lag
        if end < self.requests:
            return True  # too early to replay a full stretch: keep the update
        start = end - self.requests
        policy = learner.policy
        after = {k: v.clone() for k, v in policy.state_dict().items()}
        new = self.replay(policy, start)
        policy.load_state_dict(before)
        old = self.replay(policy, start)
        policy.load_state_dict(after)
        self.checks.append((learner.decisions, old, new))
        return new < (1.0 - self.margin) * old

    def replay(self, policy: Any, start: int) -> float:
        """Mean TTLT of ``policy`` (sampling) on requests ``[start, start + requests)``."""
        env = self.env
        obs, _ = env.reset(options={"split": "train", "window": start})
        rng = np.random.default_rng((self.seed, start))
        done = False
        while not done:
            mask = env.action_masks()
            p = masked_probabilities(policy, obs[None, :], mask[None, :])[0].astype(np.float64)
            action = int(rng.choice(p.size, p=p / p.sum()))
            obs, _, done, _, _ = env.step(action)
        return float(env.episode_metrics()["mean_ttlt"])
