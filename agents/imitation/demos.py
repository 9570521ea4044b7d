"""Demonstrations: states visited by some behaviour, each labelled with the teacher's action."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from envs.placement import PlacementEnv

Behaviour = Callable[[np.ndarray, np.ndarray, PlacementEnv], int]
"""``(obs, mask, env) -> action``: who acts while recording (the teacher, the learner, a mix)."""


@dataclass
class Demonstrations:
    """Column-wise labelled states.

    Attributes:
        obs: ``(n, D)`` observations (float32).
        masks: ``(n, A)`` action masks.
        actions: ``(n,)`` the teacher's action in each state (the label).
        returns: ``(n,)`` discounted return that followed each state under the behaviour that
            recorded it (targets for the critic).
    """

    obs: np.ndarray
    masks: np.ndarray
    actions: np.ndarray
    returns: np.ndarray

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def __add__(self, other: Demonstrations) -> Demonstrations:
        return Demonstrations(
            np.concatenate([self.obs, other.obs]),
            np.concatenate([self.masks, other.masks]),
            np.concatenate([self.actions, other.actions]),
            np.concatenate([self.returns, other.returns]),
        )

    def save(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp.npz")
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh, obs=self.obs, masks=self.masks, actions=self.actions, returns=self.returns
            )
        tmp.replace(p)

    @classmethod
    def load(cls, path: str | Path) -> Demonstrations:
        with np.load(path) as z:
            return cls(z["obs"], z["masks"], z["actions"], z["returns"])


def discounted(rewards: list[float], gamma: float) -> np.ndarray:
    """``G_t = r_t + gamma * G_{t+1}`` for one terminated episode."""
    out = np.empty(len(rewards), dtype=np.float32)
    g = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


def record(
    env: PlacementEnv,
    behaviour: Behaviour | None,
    seeds: Iterable[int],
    gamma: float,
    split: str = "train",
) -> Demonstrations:
    """Run one episode per seed with ``behaviour`` (``None``: the teacher itself), labelling
    every state with :meth:`PlacementEnv.teacher_action`."""
    obs_l: list[np.ndarray] = []
    mask_l: list[np.ndarray] = []
    act_l: list[int] = []
    ret_l: list[np.ndarray] = []
    for seed in seeds:
        obs, _ = env.reset(seed=int(seed), options={"split": split})
        rewards: list[float] = []
        kept: list[bool] = []
        done = False
        while not done:
            mask = env.action_masks()
            label = env.teacher_action()
            action = label if behaviour is None else behaviour(obs, mask, env)
            if mask[label]:  # NOTE: a teacher that ignores the mask teaches nothing here
                obs_l.append(obs)
                mask_l.append(mask)
                act_l.append(label)
            obs, reward, terminated, truncated, _ = env.step(action)
            rewards.append(reward)
            kept.append(bool(mask[label]))
            done = terminated or truncated
        ret_l.append(discounted(rewards, gamma)[np.asarray(kept, dtype=bool)])
    return Demonstrations(
        np.asarray(obs_l, dtype=np.float32),
        np.asarray(mask_l, dtype=bool),
        np.asarray(act_l, dtype=np.int64),
        np.concatenate(ret_l).astype(np.float32),
    )
