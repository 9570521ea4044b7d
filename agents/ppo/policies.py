"""The actor-critic policy: the actor reads only the deployable features, the critic all.

The environment appends privileged, simulator-only features for the critic (see
:mod:`envs.critic`). :class:`PrivilegedCriticPolicy` gives the actor its own features extractor
that zeroes them, so the actor's output never depends on them (their first-layer weights get no
gradient and multiply zeros) and an exported actor needs only the
:class:`~sagerl.features.FeatureEncoder` vector, padded with zeros.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor


class HideTail(BaseFeaturesExtractor):
    """Passes the first ``keep`` entries of a flat observation, zeroes the rest."""

    def __init__(self, observation_space: gym.spaces.Box, keep: int) -> None:
        size = int(observation_space.shape[0])
        super().__init__(observation_space, features_dim=size)
        mask = torch.zeros(size)
        mask[:keep] = 1.0
        self.keep: torch.Tensor
        self.register_buffer("keep", mask, persistent=False)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return observations.float() * self.keep


class PrivilegedCriticPolicy(MaskableActorCriticPolicy):
    """A maskable actor-critic whose actor sees ``obs[:, :actor_size]`` only.

    Args:
        actor_size: Leading observation entries the actor may use (``None``: all of them,
            i.e. the plain policy).
        *args, **kwargs: As for ``MaskableActorCriticPolicy``; the features extractors are
            not shared.
    """

    def __init__(self, *args: Any, actor_size: int | None = None, **kwargs: Any) -> None:
        kwargs["share_features_extractor"] = False
        super().__init__(*args, **kwargs)
        self.actor_size = actor_size
        if actor_size is not None:
            hide = HideTail(self.observation_space, actor_size)  # type: ignore[arg-type]
            self.features_extractor = hide
            self.pi_features_extractor = hide

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["actor_size"] = self.actor_size
        return data


class DeployableActor(torch.nn.Module):
    """The actor alone, reading the :class:`~sagerl.features.FeatureEncoder` vector only.

    Input ``[N, actor_size]`` (the encoder's output), output ``[N, actions]`` logits (mask them
    before the argmax or softmax). The first layer's weights for the critic-only entries are
    dropped (those entries are zero for the actor anyway), so an exported model needs nothing
    but the encoder: what ``sagerl.live.policy_runtime`` feeds an ONNX policy.
    """

    def __init__(self, policy: MaskableActorCriticPolicy, actor_size: int) -> None:
        super().__init__()
        layers = list(policy.mlp_extractor.policy_net)
        first = layers[0]
        if not isinstance(first, torch.nn.Linear):
            raise TypeError(f"expected a Linear first actor layer, got {type(first).__name__}")
        sliced = torch.nn.Linear(actor_size, first.out_features)
        with torch.no_grad():
            sliced.weight.copy_(first.weight[:, :actor_size])
            sliced.bias.copy_(first.bias)
        self.net = torch.nn.Sequential(sliced, *layers[1:], policy.action_net)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def deployable_actor(policy: MaskableActorCriticPolicy, actor_size: int) -> DeployableActor:
    """A copy of ``policy``'s actor that takes the encoder vector (``actor_size`` entries)."""
    return DeployableActor(policy, actor_size).eval()
