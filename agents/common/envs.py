"""Building placement environments for agents: single, evaluation, and vectorised.

Factories are picklable objects (not closures) so ``SubprocVecEnv`` can ship them to worker
processes; each process then loads the shared episode data once (memoised per process, the prompt
vectors cached on disk).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecEnv,
    VecEnvWrapper,
    VecMonitor,
)

from agents.common.config import TrainConfig
from envs.config import EnvRunConfig
from envs.placement import PlacementEnv


@dataclass
class EnvFactory:
    """Builds one environment of ``config`` (picklable, for ``SubprocVecEnv``).

    Attributes:
        config: The run config (training configs carry the env section).
        split: Default split of ``reset``.
        overrides: ``key=value`` strings applied on top of ``config``.
    """

    config: EnvRunConfig
    split: str = "train"
    overrides: tuple[str, ...] = ()

    def __call__(self) -> gym.Env:
        env: gym.Env = PlacementEnv(self.config, list(self.overrides), split=self.split)
        steps = self.config.env.max_episode_steps
        if steps is not None:
            env = gym.wrappers.TimeLimit(env, max_episode_steps=steps)
        return env


def make_env(
    cfg: EnvRunConfig, split: str = "train", overrides: list[str] | None = None
) -> PlacementEnv:
    """One unwrapped environment (for imitation rollouts and evaluation)."""
    return PlacementEnv(cfg, overrides, split=split)


def make_eval_env(cfg: TrainConfig) -> PlacementEnv:
    """The evaluation environment: held-out split, ``evaluation.episode_requests`` per window."""
    n = cfg.evaluation.episode_requests
    overrides = [f"env.episode_requests={n}"] if n is not None else []
    return PlacementEnv(cfg, overrides, split="eval")


class EpisodeMetrics(VecEnvWrapper):
    """Keeps the ``episode_metrics`` of recently finished episodes for the training logger.

    A typed alternative to reading the training loop's ``locals()`` from a callback.
    """

    def __init__(self, venv: VecEnv, maxlen: int = 100) -> None:
        super().__init__(venv)
        self.recent: deque[dict[str, float]] = deque(maxlen=maxlen)
        self.fresh = 0

    def reset(self) -> Any:
        return self.venv.reset()

    def step_wait(self) -> Any:
        obs, rewards, dones, infos = self.venv.step_wait()
        for done, info in zip(dones, infos, strict=True):
            if done and "episode_metrics" in info:
                self.recent.append(info["episode_metrics"])
                self.fresh += 1
        return obs, rewards, dones, infos

    def summary(self, key: str) -> float:
        """Mean of ``key`` over the kept episodes (nan when none)."""
        values = [m[key] for m in self.recent if key in m]
        return float(np.mean(values)) if values else float("nan")


def make_vec_env(cfg: TrainConfig, seed: int | None = None) -> EpisodeMetrics:
    """``ppo.n_envs`` training environments (Dummy or Subproc), monitored, seeded."""
    factories: list[Callable[[], gym.Env]] = [EnvFactory(cfg) for _ in range(cfg.ppo.n_envs)]
    venv: VecEnv
    if cfg.ppo.vec_env == "subproc" and cfg.ppo.n_envs > 1:
        venv = SubprocVecEnv(factories, start_method="spawn")
    else:
        venv = DummyVecEnv(factories)
    venv.seed(cfg.seed if seed is None else seed)
    return EpisodeMetrics(VecMonitor(venv))
