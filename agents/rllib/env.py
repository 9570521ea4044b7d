"""The placement environment as RLlib's new API stack wants a masked one.

RLlib's RLModules receive only the observation, so the action mask travels inside it: a ``Dict``
observation ``{"observations": <the env's vector>, "action_mask": <1.0 valid, 0.0 not>}`` (the
layout of RLlib's own action-masking example). :class:`MaskedObservation` wraps the registered
``sagerl/Placement-v0`` environment that way; nothing else changes (rewards, episodes, infos,
seeding are the environment's own).

The environment is built on each env runner by :func:`make_masked_env` from a plain dict (the
training config's dump), so it pickles to remote Ray workers.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ENV_NAME = "sagerl-placement-masked"
"""The name the environment is registered under with Ray Tune's env registry."""

OBS = "observations"
MASK = "action_mask"


class MaskedObservation(gym.Wrapper):
    """``obs -> {"observations": obs, "action_mask": env.action_masks() as float32}``.

    The mask returned with the terminal observation is the last decision's (no decision
    follows; RLlib never acts on it).
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        n = int(env.action_space.n)  # type: ignore[attr-defined]
        self.observation_space = spaces.Dict(
            {
                OBS: env.observation_space,
                MASK: spaces.Box(0.0, 1.0, (n,), np.float32),
            }
        )

    def _wrap(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        mask = self.env.unwrapped.action_masks()  # type: ignore[attr-defined]
        return {OBS: obs, MASK: mask.astype(np.float32)}

    def reset(self, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return self._wrap(obs), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._wrap(obs), float(reward), terminated, truncated, info


def make_masked_env(env_config: dict[str, Any]) -> gym.Env:
    """Build the masked environment from RLlib's ``env_config``.

    Keys: ``config`` (a training config as a dict), ``overrides`` (``key=value`` strings),
    ``split`` (``train`` or ``eval``), ``torch_threads`` (torch threads of this process: an env
    runner computes actions with the RLModule at batch size ``num_envs_per_env_runner``, where
    one thread is fastest).
    """
    import logging

    import envs  # registers sagerl/Placement-v0

    # An env runner builds its env before its RLModule, whose construction logs a deprecation
    # notice about RLlib's own internals: keep errors only (as the driver does).
    for name in ("ray.rllib", "ray._common.deprecation"):
        logging.getLogger(name).setLevel(logging.ERROR)
    threads = env_config.get("torch_threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    env = gym.make(
        envs.PLACEMENT_ID,
        config=dict(env_config["config"]),
        overrides=list(env_config.get("overrides", [])),
        split=env_config.get("split", "train"),
        disable_env_checker=True,
    )
    steps = env_config["config"].get("env", {}).get("max_episode_steps")
    if steps is not None:
        env = gym.wrappers.TimeLimit(env, max_episode_steps=int(steps))
    return MaskedObservation(env)


def register() -> str:
    """Register :func:`make_masked_env` with Ray Tune's env registry; returns its name."""
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make_masked_env)
    return ENV_NAME
