"""DAgger (Ross, Gordon and Bagnell, AISTATS 2011): clone, then repeatedly roll out the learner,
label the states it reaches with the teacher's action, aggregate, and clone again.

Cloning alone trains on the teacher's state distribution; the learner's small mistakes lead it to
states the teacher never visits, where it was never taught. Round ``k`` acts with the teacher
with probability ``beta**k`` per decision and with the learner's greedy action otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from agents.common.actors import TorchPolicyActor
from agents.imitation.bc import clone
from agents.imitation.demos import Demonstrations, record
from envs.placement import PlacementEnv


def dagger_round(
    policy: Any,
    env: PlacementEnv,
    demos: Demonstrations,
    *,
    round_index: int,
    seeds: Iterable[int],
    beta: float,
    gamma: float,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    value_coef: float,
    label_smoothing: float = 0.0,
    on_epoch: Any = None,
) -> tuple[Demonstrations, dict[str, float]]:
    """One DAgger round; returns the aggregated demonstrations and the cloning figures.

    Args:
        policy: The SB3 policy (trained in place).
        env: A training environment (its teacher labels the states).
        demos: Everything labelled so far.
        round_index: 1 for the first round (sets the teacher's share ``beta**round_index``).
        seeds: One episode per seed.
        beta: Teacher mixing base.
        gamma: Discount of the recorded returns.
        epochs, batch_size, learning_rate, value_coef, label_smoothing: As in :func:`clone`.
        on_epoch: Per-epoch logging hook.
    """
    learner = TorchPolicyActor(policy)
    share = beta**round_index
    rng = np.random.default_rng(round_index)

    def behaviour(obs: np.ndarray, mask: np.ndarray, env_: PlacementEnv) -> int:
        if share > 0 and rng.random() < share:
            return env_.teacher_action()
        return learner.act(obs, mask, env_)

    fresh = record(env, behaviour, seeds, gamma)
    on_policy = float((fresh.actions == _greedy(learner, fresh)).mean()) if len(fresh) else 1.0
    demos = demos + fresh
    figures = clone(
        policy,
        demos,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        value_coef=value_coef,
        label_smoothing=label_smoothing,
        seed=round_index,
        on_epoch=on_epoch,
    )
    figures["on_policy_agreement"] = on_policy
    figures["demonstrations"] = float(len(demos))
    return demos, figures


def _greedy(learner: TorchPolicyActor, demos: Demonstrations) -> np.ndarray:
    return learner.probabilities(demos.obs, demos.masks).argmax(axis=1)
