"""PPO training throughput on the placement env against a trivial env of the same shapes.

Trains MaskablePPO (sb3-contrib) with the default training config's settings (``ppo:`` section:
environments, rollout length, minibatch, epochs, networks) for the same number of steps on

* the placement environment (``configs/train-default.yaml``), and
* a trivial environment with the same observation and action spaces whose step costs nothing
  (a fixed observation, zero reward, every action valid, the same episode length),

side by side in one run, and reports steps/s of each and their ratio: how much of MaskablePPO's
own speed the environment leaves. Two settings, each on both environments:

* ``train config``: the ``ppo:`` section of the config (4 environments, 512-step rollouts,
  minibatches of 256, 4 epochs): cheap updates, so MaskablePPO alone runs at thousands of steps
  per second and the environment dominates;
* ``SB3 defaults``: MaskablePPO's own defaults (1 environment, 2048-step rollouts, minibatches
  of 64, 10 epochs, 64x64 networks), where MaskablePPO alone runs at about 500-650 steps/s on
  this machine.

    python benchmarks/ppo_throughput.py [--steps N] [--json PATH] [key=value ...]

Target (the training issue): the ratio is at least 0.7.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import gymnasium as gym
import numpy as np

from sagerl.commands.common import print_table, write_json


class TrivialEnv(gym.Env[np.ndarray, np.int64]):
    """Same spaces and episode length as the placement env, no work per step."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(self, obs_size: int, actions: int, episode: int) -> None:
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (obs_size,), np.float32)
        self.action_space = gym.spaces.Discrete(actions)
        self._obs = np.zeros(obs_size, dtype=np.float32)
        self._mask = np.ones(actions, dtype=bool)
        self._episode = episode
        self._t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        return self._obs.copy(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._t += 1
        return self._obs.copy(), 0.0, self._t >= self._episode, False, {}

    def action_masks(self) -> np.ndarray:
        return self._mask.copy()


def timed_learn(model: Any, steps: int) -> float:
    model.learn(200)  # warm-up: first rollout, first update
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16_384, help="timed steps per environment")
    parser.add_argument("--config", default="configs/train-default.yaml")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()

    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents.common.config import load_train_config
    from agents.common.envs import make_vec_env
    from agents.ppo import build_model
    from envs.placement import PlacementEnv

    cfg = load_train_config(args.config, args.overrides)
    probe = PlacementEnv(cfg)
    actor = probe.actor_size if probe.critic is not None else None
    shape = int(probe.observation_space.shape[0])
    actions = int(probe.action_space.n)
    sb3 = cfg.ppo.model_copy(
        update={
            "n_envs": 1,
            "n_steps": 2048,
            "batch_size": 64,
            "n_epochs": 10,
            "net_arch": [64, 64],
        }
    )

    rows: list[dict[str, Any]] = []
    ratios: dict[str, float] = {}
    for setting, ppo in (("train config", cfg.ppo), ("SB3 defaults", sb3)):
        run_cfg = cfg.model_copy(update={"ppo": ppo})
        trivial = DummyVecEnv(
            [lambda: TrivialEnv(shape, actions, cfg.env.episode_requests)] * ppo.n_envs
        )
        pair = []
        for label, venv in (("trivial", trivial), ("placement", make_vec_env(run_cfg))):
            model = build_model(ppo, venv, seed=0, actor_size=actor)
            wall = timed_learn(model, args.steps)
            pair.append(args.steps / wall)
            print(f"{setting}, {label} env: {args.steps / wall:,.0f} steps/s", flush=True)
            venv.close()
        ratios[setting] = pair[1] / pair[0]
        rows.append(
            {
                "settings": setting,
                "envs x n_steps": f"{ppo.n_envs} x {ppo.n_steps} ({ppo.vec_env})",
                "batch x epochs": f"{ppo.batch_size} x {ppo.n_epochs}",
                "net": str(ppo.net_arch),
                "trivial steps/s": pair[0],
                "placement steps/s": pair[1],
                "ratio": ratios[setting],
            }
        )
    print_table(
        f"MaskablePPO throughput, {args.steps} steps (obs {shape}, actions {actions})", rows
    )
    for setting, ratio in ratios.items():
        verdict = "met" if ratio >= 0.7 else "NOT met"
        print(f"{setting}: ratio placement / trivial = {ratio:.2f} (target >= 0.70: {verdict})")
    write_json(args.json, {"config": args.config, "rows": rows, "ratios": ratios})


if __name__ == "__main__":
    main()
