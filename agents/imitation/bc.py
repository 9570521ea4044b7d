"""Behaviour cloning into an SB3 actor-critic policy.

Loss per minibatch: masked cross-entropy of the teacher's action (invalid actions' logits set
to a large negative value, the masking PPO uses) against a label-smoothed target,
``(1 - eps) * onehot(a*) + eps * uniform(valid actions)``, plus ``value_coef`` times the squared
error of the critic against the returns observed.

Why both extras matter for what comes next: a clone trained to zero cross-entropy is
deterministic (entropy ~1e-5 nats), so PPO fine-tuning from it never explores and its updates
vanish (clip fraction 0); smoothing keeps the teacher's action the most likely by a wide margin
but leaves ``eps`` of probability to explore. And PPO from a cloned actor with a random critic
would take its first updates from meaningless advantages and unlearn the teacher.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agents.imitation.demos import Demonstrations

EpochHook = Callable[[int, dict[str, float]], None]


def clone(
    policy: Any,
    demos: Demonstrations,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    value_coef: float,
    label_smoothing: float = 0.0,
    seed: int = 0,
    on_epoch: EpochHook | None = None,
) -> dict[str, float]:
    """Fit ``policy`` (a ``MaskableActorCriticPolicy``) to ``demos``; returns the last figures.

    Args:
        policy: The SB3 policy to train in place.
        demos: Labelled states.
        epochs: Passes over the data.
        batch_size: Minibatch size.
        learning_rate: Adam learning rate (a fresh optimizer, so PPO's own state is untouched).
        value_coef: Weight of the critic's loss (0: actor only).
        label_smoothing: Share ``eps`` of the target spread uniformly over valid actions.
        seed: Shuffling seed.
        on_epoch: Called after each epoch with ``(epoch, figures)`` (logging).
    """
    device = policy.device
    obs = torch.as_tensor(demos.obs, device=device)
    masks = torch.as_tensor(demos.masks, device=device)
    actions = torch.as_tensor(demos.actions, device=device)
    returns = torch.as_tensor(demos.returns, device=device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=learning_rate)
    rng = np.random.default_rng(seed)
    n = len(demos)
    figures: dict[str, float] = {}
    policy.set_training_mode(True)
    for epoch in range(epochs):
        order = torch.as_tensor(rng.permutation(n), device=device)
        sums = {"bc_loss": 0.0, "value_loss": 0.0, "entropy": 0.0}
        batches = 0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            logits, values = forward(policy, obs[idx], masks[idx])
            logp = torch.log_softmax(logits, dim=1)
            m = masks[idx].float()
            target = (1.0 - label_smoothing) * F.one_hot(actions[idx], logits.shape[1]).float()
            target = target + label_smoothing * m / m.sum(dim=1, keepdim=True)
            bc_loss = -(target * logp).sum(dim=1).mean()
            entropy = -(logp.exp() * logp * m).sum(dim=1)
            value_loss = F.mse_loss(values.flatten(), returns[idx])
            loss = bc_loss + value_coef * value_loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
            sums["bc_loss"] += bc_loss.item()
            sums["value_loss"] += value_loss.item()
            sums["entropy"] += entropy.mean().item()
            batches += 1
        figures = {k: v / max(batches, 1) for k, v in sums.items()}
        figures["agreement"] = agreement(policy, demos)
        if on_epoch is not None:
            on_epoch(epoch, figures)
    policy.set_training_mode(False)
    return figures


def forward(
    policy: Any, obs: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked action logits and values of an SB3 actor-critic policy in one pass."""
    features = policy.extract_features(obs)
    if isinstance(features, tuple):
        pi_features, vf_features = features
    else:
        pi_features = vf_features = features
    logits = policy.action_net(policy.mlp_extractor.forward_actor(pi_features))
    values = policy.value_net(policy.mlp_extractor.forward_critic(vf_features))
    return logits.masked_fill(~masks, -1e8), values


def agreement(policy: Any, demos: Demonstrations, batch: int = 4096) -> float:
    """Fraction of states where the policy's most likely valid action is the teacher's."""
    device = policy.device
    hits = 0
    with torch.no_grad():
        for start in range(0, len(demos), batch):
            obs = torch.as_tensor(demos.obs[start : start + batch], device=device)
            masks = demos.masks[start : start + batch]
            dist = policy.get_distribution(obs, action_masks=masks)
            pred = dist.distribution.probs.argmax(dim=1).cpu().numpy()
            hits += int((pred == demos.actions[start : start + batch]).sum())
    return hits / max(len(demos), 1)
