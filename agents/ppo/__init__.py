"""PPO with action masking (sb3-contrib's ``MaskablePPO``), built from the ``ppo:`` config."""

from agents.ppo.policies import DeployableActor, PrivilegedCriticPolicy, deployable_actor
from agents.ppo.ppo import build_model, load_model, policy_kwargs

__all__ = [
    "DeployableActor",
    "PrivilegedCriticPolicy",
    "build_model",
    "deployable_actor",
    "load_model",
    "policy_kwargs",
]
