"""The training config: a run config with the environment section plus the agents' sections.

``configs/train-*.yaml`` validate into :class:`TrainConfig`; every field documents itself (the
CLI's ``key=value`` overrides reach all of them, e.g. ``ppo.total_timesteps=50000``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from envs.config import DEFAULT_ENV_CONFIG, EnvRunConfig
from sagerl.errors import UnknownNameError
from sagerl.schema import StrictModel, apply_overrides, read_yaml, validate


def known_placements(names: list[str]) -> list[str]:
    """``names`` if every one is a registered placement policy (a validator's check)."""
    from sagerl.policy import PLACEMENT

    for name in names:
        try:
            PLACEMENT.get(name)
        except UnknownNameError as exc:
            raise ValueError(str(exc)) from None
    return names


class PPOConfig(StrictModel):
    """MaskablePPO (sb3-contrib) hyperparameters; names as in stable-baselines3."""

    total_timesteps: int = Field(
        100_000, ge=0, description="Environment steps (decisions) of PPO; 0 skips PPO."
    )
    n_envs: int = Field(4, ge=1, description="Environments stepped in lockstep.")
    vec_env: Literal["dummy", "subproc"] = Field(
        "dummy",
        description="'dummy' steps the envs in this process; 'subproc' in one process each "
        "(pays off only when an env step costs more than the inter-process round trip).",
    )
    learning_rate: float = Field(1e-4, gt=0, description="Adam learning rate.")
    n_steps: int = Field(512, ge=1, description="Steps per env per rollout.")
    batch_size: int = Field(256, ge=2, description="Minibatch size of the PPO update.")
    n_epochs: int = Field(4, ge=1, description="Passes over each rollout.")
    gamma: float = Field(0.99, gt=0, le=1, description="Discount per decision.")
    gae_lambda: float = Field(
        1.0,
        ge=0,
        le=1,
        description="GAE lambda. 1 uses the critic as a baseline only (Monte Carlo returns): "
        "bootstrapping from a critic that lags the policy made fine-tuning drift and collapse "
        "on placement (a decision's cost arrives over ~100 later decisions).",
    )
    clip_range: float = Field(0.1, gt=0, description="PPO clipping of the probability ratio.")
    ent_coef: float = Field(0.0, ge=0, description="Entropy bonus coefficient.")
    vf_coef: float = Field(0.5, ge=0, description="Value loss coefficient.")
    max_grad_norm: float = Field(0.5, gt=0, description="Gradient clipping norm.")
    target_kl: float | None = Field(
        0.02, gt=0, description="Stop an update's epochs early past this KL (None: never)."
    )
    net_arch: list[int] = Field(
        default_factory=lambda: [128, 128],
        description="Hidden layer widths of the policy and (separately) the value network.",
    )
    activation: Literal["tanh", "relu"] = Field("tanh", description="Hidden activation.")
    device: str = Field("cpu", description="Torch device ('cpu', 'cuda', 'auto').")
    torch_threads: int = Field(
        1, ge=1, description="Torch intra-op threads (1 is fastest for small MLPs)."
    )


class ImitationConfig(StrictModel):
    """Imitation of the teacher (``env.teacher``) before PPO: behaviour cloning, then DAgger."""

    enabled: bool = Field(True, description="Run imitation first (else PPO starts from scratch).")
    bc_episodes: int = Field(
        32, ge=1, description="Teacher episodes (training windows) recorded for cloning."
    )
    bc_epochs: int = Field(20, ge=1, description="Passes over the demonstrations.")
    batch_size: int = Field(256, ge=1, description="Minibatch size.")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate of cloning.")
    value_coef: float = Field(
        0.5,
        ge=0,
        description="Weight of the value loss (the critic learns the teacher's discounted "
        "returns, so PPO starts with a critic that matches its actor).",
    )
    label_smoothing: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share of the cloning target spread over the valid actions: keeps the clone "
        "stochastic enough for PPO to explore (0: a near-deterministic clone PPO cannot move).",
    )
    dagger_rounds: int = Field(
        2, ge=0, description="DAgger rounds: roll out the learner, label with the teacher."
    )
    dagger_episodes: int = Field(16, ge=1, description="Learner episodes per DAgger round.")
    dagger_epochs: int = Field(10, ge=1, description="Passes over the aggregate per round.")
    dagger_beta: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Probability of acting with the teacher in DAgger round 1; it decays "
        "geometrically (beta**k in round k).",
    )


class EvalConfig(StrictModel):
    """Evaluation on held-out windows, identical for every policy."""

    seeds: int = Field(5, ge=1, description="Evaluation seeds (one held-out window each).")
    seed_offset: int = Field(
        10_000, ge=0, description="Seeds are seed_offset, seed_offset + 1, ..."
    )
    episode_requests: int | None = Field(
        1024, ge=1, description="Requests per evaluation window (None: env.episode_requests)."
    )
    baselines: list[str] = Field(
        default_factory=lambda: [
            "sagesched",
            "least-outstanding",
            "round-robin",
            "power-of-two",
            "random",
        ],
        description="Placement policies evaluated beside the agent (registry names).",
    )
    reference: str = Field(
        "sagesched", description="The policy the agent is compared with (deltas in %)."
    )
    every_steps: int = Field(
        25_000, ge=0, description="Evaluate the agent during PPO every this many steps (0: off)."
    )
    periodic_seeds: int = Field(2, ge=1, description="Seeds of the periodic evaluations.")

    @field_validator("baselines")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        return known_placements(names)


class RLlibConfig(StrictModel):
    """Ray RLlib settings of ``python -m sagerl train --backend rllib``.

    The algorithm's hyperparameters are the ``ppo:`` section's (same names as for
    stable-baselines3: learning rate, ``n_envs * n_steps`` steps per update in minibatches of
    ``batch_size`` over ``n_epochs`` passes, gamma, GAE lambda, clipping, coefficients, network);
    this section only says where and how RLlib runs them.
    """

    num_env_runners: int = Field(
        2,
        ge=0,
        description="Ray actors that step environments (0: sample in the driver process).",
    )
    num_envs_per_env_runner: int | None = Field(
        None,
        ge=1,
        description="Environments per env runner (None: ppo.n_envs spread over the runners).",
    )
    num_cpus_per_env_runner: float = Field(1, gt=0, description="CPUs Ray reserves per runner.")
    num_learners: int = Field(
        0, ge=0, description="Learner actors (0: the update runs in the driver process)."
    )
    num_gpus_per_learner: float = Field(
        0, ge=0, description="GPUs per learner (needs a CUDA build of torch)."
    )
    num_cpus: int | None = Field(
        None,
        ge=1,
        description="CPUs of the local Ray started when no --address is given (None: all).",
    )
    kl_coeff: float = Field(
        0.0,
        ge=0,
        description="Initial weight of RLlib's adaptive KL penalty (target: ppo.target_kl). "
        "0 keeps PPO's clipped objective alone, as stable-baselines3 runs it (where target_kl "
        "stops an update's epochs early instead); the KL is still measured and logged.",
    )
    vf_clip_param: float | None = Field(
        None,
        gt=0,
        description="Clip of the squared value error (None: no clip, as stable-baselines3).",
    )
    sample_timeout_s: float = Field(
        600.0, gt=0, description="Seconds a remote env runner may take for one sample call."
    )


class TrainConfig(EnvRunConfig):
    """Everything ``python -m sagerl train`` needs."""

    ppo: PPOConfig = Field(default_factory=PPOConfig)
    imitation: ImitationConfig = Field(default_factory=ImitationConfig)
    evaluation: EvalConfig = Field(default_factory=EvalConfig)
    rllib: RLlibConfig = Field(default_factory=RLlibConfig)
    checkpoint_every: int = Field(
        10_000, ge=1, description="Save a checkpoint every this many PPO steps."
    )

    @model_validator(mode="after")
    def _reference_evaluated(self) -> TrainConfig:
        ref = self.evaluation.reference
        if ref not in self.evaluation.baselines:
            raise ValueError(f"evaluation.reference '{ref}' is not in evaluation.baselines")
        return self


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Load ``path`` (default ``configs/train-default.yaml``) with ``key=value`` overrides."""
    p = Path(path) if path is not None else DEFAULT_ENV_CONFIG
    data: dict[str, Any] = read_yaml(p) if p.is_file() or path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    return validate(TrainConfig, data, str(p))
