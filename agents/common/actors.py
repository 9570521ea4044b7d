"""Anything that places requests, behind one interface, so every policy is evaluated the same way.

An :class:`Actor` sees what the agent sees (observation and mask) and the environment itself, from
which analytic placement policies read the same replica views the simulator would hand them
(:meth:`envs.placement.PlacementEnv.decision`). SB3's ``evaluate_policy`` takes "anything with
``predict()``"; ours takes "anything with ``act()``".
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from envs.placement import PlacementEnv


def masked_probabilities(policy: Any, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked action probabilities ``(n, A)`` of an SB3 maskable policy for observations ``(n, D)``.

    The one place that turns an SB3 policy's logits into the probabilities every SB3-based
    decision (evaluation, online learning, the replay gate) samples from, so they cannot drift.
    Calls the torch module directly (no ``model.predict`` preprocessing), which roughly halves
    the per-decision cost at batch size one.
    """
    import torch

    with torch.no_grad():
        t = torch.as_tensor(obs, dtype=torch.float32)
        dist = policy.get_distribution(t, action_masks=mask)
        return dist.distribution.probs.cpu().numpy()


class Actor(Protocol):
    """A placement decision maker evaluated through :class:`PlacementEnv`."""

    name: str

    def reset(self, seed: int) -> None:
        """Start an episode (re-seed any randomness)."""

    def act(self, obs: np.ndarray, mask: np.ndarray, env: PlacementEnv) -> int:
        """The replica for the pending request."""
        ...


class PolicyActor:
    """An analytic placement policy from the registry (SageSched, least outstanding, ...)."""

    def __init__(self, name: str, seed: int = 0, label: str | None = None) -> None:
        from sagerl.policy import make_placement

        self.name = label or name
        self.policy = make_placement(name, seed=seed)

    def reset(self, seed: int) -> None:
        self.policy.reset(seed)

    def act(self, obs: np.ndarray, mask: np.ndarray, env: PlacementEnv) -> int:
        return env.policy_action(self.policy)


class SamplingActor:
    """A learned policy deciding from masked action probabilities: the argmax, or a draw from a
    generator seeded by :meth:`reset` (so an episode is reproducible). Subclasses give
    :meth:`probabilities`; every backend's agent then decides, and is evaluated, the same way.
    """

    name: str
    deterministic: bool
    _gen: np.random.Generator | None = None

    def reset(self, seed: int) -> None:
        self._gen = np.random.default_rng(seed)

    def probabilities(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Masked action probabilities for a batch of observations ``(n, D)``."""
        raise NotImplementedError

    def act(self, obs: np.ndarray, mask: np.ndarray, env: PlacementEnv) -> int:
        p = self.probabilities(obs[None, :], mask[None, :])[0]
        if self.deterministic:
            return int(np.argmax(p))
        gen = self._gen or np.random.default_rng(0)
        return int(gen.choice(p.size, p=p / p.sum()))


class TorchPolicyActor(SamplingActor):
    """A trained SB3 (maskable) actor-critic policy.

    Args:
        policy: The SB3 policy module.
        name: Label in tables and TensorBoard.
        deterministic: Take the most likely valid action; else sample from the policy (seeded
            by :meth:`reset`, so an episode is reproducible). PPO trains a stochastic policy; in
            load balancing its randomness is part of what it learned (it spreads bursts), so the
            sampled policy is the one PPO optimised.

    Probabilities come from :func:`masked_probabilities`.
    """

    def __init__(self, policy: Any, name: str = "agent", deterministic: bool = True) -> None:
        self.name = name
        self.policy = policy
        self.deterministic = deterministic

    def probabilities(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Action probabilities (masked) for a batch of observations ``(n, D)``."""
        return masked_probabilities(self.policy, obs, mask)
