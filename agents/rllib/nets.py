"""The networks of the RLlib agent, free of Ray: layers, masking, the actor alone, and the
evaluation actor around it (what export and evaluation need, on machines without Ray too).

The same networks as the stable-baselines3 policy (:class:`agents.ppo.PrivilegedCriticPolicy`):
separate MLPs of ``ppo.net_arch`` widths for the actor and the critic, orthogonal
initialisation (gain sqrt(2) in hidden layers, 0.01 for the action head, 1 for the value head).
Action masking replaces invalid actions' logits by :data:`MASKED_LOGIT` (as sb3-contrib's
``MaskableCategorical`` does), so an invalid action has probability 0 and adds nothing to the
entropy or the KL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from agents.common.actors import SamplingActor

MASKED_LOGIT = -1e8
"""Logit of an invalid action (finite, so 0 * log p stays 0)."""

ACTIVATIONS: dict[str, type[torch.nn.Module]] = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


def mlp(
    inputs: int, hidden: Sequence[int], outputs: int, activation: str, out_gain: float
) -> torch.nn.Sequential:
    """``Linear, act, ..., Linear`` with SB3's orthogonal initialisation."""
    layers: list[torch.nn.Module] = []
    width = inputs
    for h in hidden:
        linear = torch.nn.Linear(width, h)
        torch.nn.init.orthogonal_(linear.weight, gain=float(np.sqrt(2)))
        torch.nn.init.zeros_(linear.bias)
        layers += [linear, ACTIVATIONS[activation]()]
        width = h
    head = torch.nn.Linear(width, outputs)
    torch.nn.init.orthogonal_(head.weight, gain=out_gain)
    torch.nn.init.zeros_(head.bias)
    layers.append(head)
    return torch.nn.Sequential(*layers)


def masked(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``logits`` with invalid actions (``mask`` <= 0.5) set to :data:`MASKED_LOGIT`."""
    return torch.where(mask > 0.5, logits, torch.full_like(logits, MASKED_LOGIT))


def load_sb3_weights(module: torch.nn.Module, policy: Any) -> None:
    """Copy an SB3 :class:`~agents.ppo.PrivilegedCriticPolicy`'s weights into ``module``.

    The SB3 actor's first layer spans the whole observation (the critic-only tail is zeroed
    before it), so only its first ``actor_size`` columns carry over; everything else maps layer
    for layer. Used to start RLlib's PPO from the imitation of the teacher.
    """
    actor_layers = [m for m in policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
    critic_layers = [m for m in policy.mlp_extractor.value_net if isinstance(m, torch.nn.Linear)]
    actor_layers.append(policy.action_net)
    critic_layers.append(policy.value_net)
    pi = [m for m in module.pi if isinstance(m, torch.nn.Linear)]  # type: ignore[attr-defined]
    vf = [m for m in module.vf if isinstance(m, torch.nn.Linear)]  # type: ignore[attr-defined]
    if len(pi) != len(actor_layers) or len(vf) != len(critic_layers):
        raise ValueError("the SB3 policy and the RLModule have different layer counts")
    with torch.no_grad():
        for dst, src in zip(pi, actor_layers, strict=True):
            dst.weight.copy_(src.weight[:, : dst.in_features])
            dst.bias.copy_(src.bias)
        for dst, src in zip(vf, critic_layers, strict=True):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)


class ActorNet(torch.nn.Module):
    """The actor alone: ``[N, actor_size]`` encoder features to ``[N, actions]`` logits."""

    def __init__(self, pi: torch.nn.Module, actor_size: int) -> None:
        super().__init__()
        self.net = pi
        self.actor_size = actor_size

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def actor_net(module: Any) -> ActorNet:
    """A detached copy of ``module``'s actor (evaluation and export read this, not RLlib)."""
    import copy

    return ActorNet(copy.deepcopy(module.pi).cpu(), int(module.actor_size)).eval()


class ActorNetActor(SamplingActor):
    """An :class:`~agents.common.actors.Actor` around an RLlib-trained actor network.

    Decides as :class:`~agents.common.actors.TorchPolicyActor` does for the SB3 policy (both are
    :class:`~agents.common.actors.SamplingActor`), so both backends' agents are evaluated the
    same way.
    """

    def __init__(self, net: ActorNet, name: str = "agent", deterministic: bool = False) -> None:
        self.name = name
        self.net = net
        self.deterministic = deterministic

    def probabilities(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Masked action probabilities for a batch of observations ``(n, D)``."""
        with torch.no_grad():
            x = torch.as_tensor(obs[:, : self.net.actor_size], dtype=torch.float32)
            logits = masked(self.net(x), torch.as_tensor(mask, dtype=torch.float32))
            return torch.softmax(logits, dim=1).numpy()
