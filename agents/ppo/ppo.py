"""MaskablePPO (sb3-contrib) configured from :class:`~agents.common.config.PPOConfig`.

The algorithm is sb3-contrib's: PPO's clipped objective with invalid actions' logits set to
-inf before the softmax, in collection and in the update (Huang and Ontañón, "A Closer Look at
Invalid Action Masking in Policy Gradient Algorithms", 2020). What is ours: the settings (one
config section), separate policy and value networks, and the torch thread count, which matters
on small CPUs (one thread is fastest for these MLPs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from sb3_contrib import MaskablePPO
from stable_baselines3.common.vec_env import VecEnv

from agents.common.config import PPOConfig
from agents.ppo.policies import PrivilegedCriticPolicy

ACTIVATIONS: dict[str, type[torch.nn.Module]] = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


def policy_kwargs(cfg: PPOConfig, actor_size: int | None = None) -> dict[str, Any]:
    """Policy network settings: separate actor and critic MLPs of ``net_arch`` widths; the
    actor reads the first ``actor_size`` observation entries only (``None``: all)."""
    return {
        "net_arch": {"pi": list(cfg.net_arch), "vf": list(cfg.net_arch)},
        "activation_fn": ACTIVATIONS[cfg.activation],
        "actor_size": actor_size,
    }


def build_model(
    cfg: PPOConfig, venv: VecEnv, seed: int = 0, actor_size: int | None = None
) -> MaskablePPO:
    """A fresh MaskablePPO on ``venv`` (the logger is set by the caller).

    Args:
        cfg: Hyperparameters.
        venv: The training environments.
        seed: Seed of the networks' initialisation and the sampling.
        actor_size: Observation entries the actor may read (the rest are critic-only).
    """
    torch.set_num_threads(cfg.torch_threads)
    return MaskablePPO(
        PrivilegedCriticPolicy,
        venv,
        learning_rate=cfg.learning_rate,
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        clip_range=cfg.clip_range,
        ent_coef=cfg.ent_coef,
        vf_coef=cfg.vf_coef,
        max_grad_norm=cfg.max_grad_norm,
        target_kl=cfg.target_kl,
        policy_kwargs=policy_kwargs(cfg, actor_size),
        seed=seed,
        device=cfg.device,
        verbose=0,
    )


def load_model(path: str | Path, cfg: PPOConfig, venv: VecEnv | None = None) -> MaskablePPO:
    """A saved MaskablePPO (weights, optimizer state and step count), bound to ``venv``.

    Hyperparameters that the config may have changed since (learning rate, clip range, epochs)
    are taken from ``cfg``, so a resumed run follows its current config.
    """
    torch.set_num_threads(cfg.torch_threads)
    model = MaskablePPO.load(
        str(path),
        env=venv,
        device=cfg.device,
        custom_objects={
            "learning_rate": cfg.learning_rate,
            "lr_schedule": lambda _: cfg.learning_rate,
            "clip_range": lambda _: cfg.clip_range,
            "n_epochs": cfg.n_epochs,
            "batch_size": cfg.batch_size,
            "ent_coef": cfg.ent_coef,
            "target_kl": cfg.target_kl,
        },
    )
    return model
