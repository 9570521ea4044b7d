"""The training config (``ppo:`` and ``rllib:`` sections) as an RLlib ``PPOConfig``.

=========================  ===============================================================
sagerl                     RLlib (new API stack)
=========================  ===============================================================
ppo.n_envs * ppo.n_steps   ``train_batch_size_per_learner`` (env steps per update)
ppo.batch_size             ``minibatch_size``
ppo.n_epochs               ``num_epochs``
ppo.learning_rate          ``lr``
ppo.gamma, ppo.gae_lambda  ``gamma``, ``lambda_``
ppo.clip_range             ``clip_param``
ppo.ent_coef, ppo.vf_coef  ``entropy_coeff``, ``vf_loss_coeff``
ppo.max_grad_norm          ``grad_clip`` (global norm)
ppo.target_kl              ``kl_target`` of the KL penalty, whose weight starts at
                           ``rllib.kl_coeff`` (0: off, the KL is only measured)
ppo.net_arch, activation   the RLModule's layer widths (:mod:`agents.rllib.module`)
rllib.num_env_runners      ``num_env_runners`` (Ray actors stepping environments)
rllib.num_envs_per_...     ``num_envs_per_env_runner`` (default: ``n_envs`` spread over them)
rllib.num_learners, ...    ``num_learners``, ``num_gpus_per_learner``
seed                       ``debugging(seed=...)``
=========================  ===============================================================

Two deliberate departures from RLlib's defaults, to train what stable-baselines3 trains: the
value loss is not clipped (``vf_clip_param`` would zero the critic's gradient on exactly the
large errors of early training), and advantages are standardised (over the whole batch in
RLlib, per minibatch in SB3).
"""

from __future__ import annotations

import math
from typing import Any

from ray.rllib.algorithms.ppo import PPOConfig as RLlibPPOConfig
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from agents.common.config import TrainConfig
from agents.rllib.env import register
from agents.rllib.learner import ClipFractionPPOLearner
from agents.rllib.module import MaskedActorCritic

EPISODE_KEYS = ("mean_ttlt", "p99_ttlt", "mean_ttft", "throughput")
"""Window metrics of finished training episodes logged as ``rollout/ep_<key>`` (as in SB3)."""


class EpisodeMetrics(RLlibCallback):
    """Log each finished training episode's window metrics (mean TTLT, ...) on the env runner;
    RLlib averages them over the last 100 episodes, like SB3's episode buffer."""

    def on_episode_end(self, *, episode: Any, metrics_logger: Any = None, **kwargs: Any) -> None:
        if metrics_logger is None:
            return
        info = episode.get_infos(-1) or {}
        metrics = info.get("episode_metrics") or {}
        for key in EPISODE_KEYS:
            value = metrics.get(key)
            if value is not None and math.isfinite(float(value)):
                metrics_logger.log_value(f"ep_{key}", float(value), reduce="mean", window=100)


def envs_per_runner(cfg: TrainConfig) -> int:
    """Environments per env runner: ``rllib.num_envs_per_env_runner``, else ``ppo.n_envs``
    spread over the runners (all in the driver's runner when there are none)."""
    r = cfg.rllib
    if r.num_envs_per_env_runner is not None:
        return r.num_envs_per_env_runner
    return max(1, math.ceil(cfg.ppo.n_envs / max(r.num_env_runners, 1)))


def model_config(cfg: TrainConfig, actor_size: int | None) -> dict[str, Any]:
    """The RLModule's ``model_config``."""
    return {
        "hidden": list(cfg.ppo.net_arch),
        "activation": cfg.ppo.activation,
        "actor_size": actor_size,
    }


def env_config(cfg: TrainConfig) -> dict[str, Any]:
    """What every env runner builds its environments from (a plain, picklable dict)."""
    return {"config": cfg.model_dump(), "split": "train", "torch_threads": cfg.ppo.torch_threads}


def algorithm_config(cfg: TrainConfig, actor_size: int | None) -> RLlibPPOConfig:
    """RLlib's PPO configured from ``cfg`` (see the module docstring for the mapping).

    Args:
        cfg: The training config.
        actor_size: Observation entries the actor may read (the encoder's vector).
    """
    p, r = cfg.ppo, cfg.rllib
    runners = r.num_env_runners
    per_runner = envs_per_runner(cfg)
    batch = p.n_envs * p.n_steps
    return (
        RLlibPPOConfig()
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .framework("torch")
        .environment(register(), env_config=env_config(cfg), disable_env_checking=True)
        .env_runners(
            num_env_runners=runners,
            num_envs_per_env_runner=per_runner,
            num_cpus_per_env_runner=r.num_cpus_per_env_runner,
            rollout_fragment_length="auto",
            batch_mode="truncate_episodes",
            sample_timeout_s=r.sample_timeout_s,
        )
        .learners(
            num_learners=r.num_learners,
            num_gpus_per_learner=r.num_gpus_per_learner,
            learner_class=ClipFractionPPOLearner,
        )
        .training(
            lr=p.learning_rate,
            gamma=p.gamma,
            lambda_=p.gae_lambda,
            clip_param=p.clip_range,
            entropy_coeff=p.ent_coef,
            vf_loss_coeff=p.vf_coef,
            grad_clip=p.max_grad_norm,
            grad_clip_by="global_norm",
            train_batch_size_per_learner=batch // max(r.num_learners, 1),
            minibatch_size=p.batch_size,
            num_epochs=p.n_epochs,
            use_kl_loss=True,
            kl_coeff=r.kl_coeff,
            kl_target=p.target_kl if p.target_kl is not None else 0.01,
            vf_clip_param=r.vf_clip_param if r.vf_clip_param is not None else float("inf"),
        )
        .rl_module(
            rl_module_spec=RLModuleSpec(
                module_class=MaskedActorCritic, model_config=model_config(cfg, actor_size)
            )
        )
        .callbacks(EpisodeMetrics)
        .debugging(seed=cfg.seed, log_level="ERROR")
        .reporting(metrics_num_episodes_for_smoothing=100)
    )
