"""PPO that keeps learning on the stream it places: a rollout of the last K decisions, one update.

This is MaskablePPO's update (sb3-contrib's ``train``, unchanged) fed by our own collection loop
instead of ``learn``: on a stream there are no episodes to reset, and the guardrail may place a
request with SageSched instead of the agent. Collection reads top to bottom::

    action = learner.act(obs, mask)              # sample from the current policy
    (or: learner.take(obs, mask, fallback))      # the guardrail's action, scored by the policy
    obs, reward, done = env.step(action)
    learner.reward(reward, obs, done)            # store; after K decisions: GAE + PPO update
                                                 # (kept only if the optional gate accepts it)

A fallback decision is stored with the policy's own log-probability of that action, so PPO's
clipped importance ratio treats it like a (possibly unlikely) sample of the agent's: it bounds
how hard one good or bad fallback outcome can pull the policy.

The agent samples its actions, as PPO trained it to; the frozen copy it is compared with samples
from the same random stream, so until the first update both make the same choices.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sb3_contrib.common.maskable.buffers import MaskableRolloutBuffer

from agents.common.actors import masked_probabilities
from agents.online.config import OnlinePPOConfig

_MIN_LOG_PROB = -20.0
"""Floor of a stored log-probability (a fallback action the policy almost never takes)."""


class OnlineLearner:
    """Acts with a MaskablePPO model's policy and updates it every ``update_every`` decisions.

    Args:
        model: A loaded ``MaskablePPO`` (its policy is updated in place; set its logger first
            to record the updates).
        cfg: Online hyperparameters (they replace the model's training ones).
        seed: Seed of the action sampling.
        learn: ``False`` keeps the policy frozen (the comparison run): it acts and samples
            exactly as the learning copy does, and never updates.
    """

    def __init__(
        self,
        model: Any,
        cfg: OnlinePPOConfig,
        seed: int,
        *,
        learn: bool = True,
        gate: Callable[[OnlineLearner, dict[str, Any]], bool] | None = None,
    ) -> None:
        self.model = model
        self.learn = learn
        self.gate = gate
        if getattr(model, "_logger", None) is None:  # updates log train/*: keep them somewhere
            from stable_baselines3.common.logger import Logger

            model.set_logger(Logger(None, []))
        self.rejected = 0
        self.policy = model.policy
        self.cfg = cfg
        model.n_epochs = cfg.n_epochs
        model.batch_size = min(cfg.batch_size, cfg.update_every)
        model.learning_rate = cfg.learning_rate
        model.lr_schedule = lambda _: cfg.learning_rate
        model.clip_range = lambda _: cfg.clip_range
        model.target_kl = cfg.target_kl
        model.ent_coef = cfg.ent_coef
        model.gamma, model.gae_lambda = cfg.gamma, cfg.gae_lambda
        self.buffer = MaskableRolloutBuffer(
            cfg.update_every if learn else 1,
            model.observation_space,
            model.action_space,
            device=model.device,
            gamma=cfg.gamma,
            gae_lambda=cfg.gae_lambda,
            n_envs=1,
        )
        model.rollout_buffer = self.buffer
        self.rng = np.random.default_rng(seed)
        self.updates = 0
        self.decisions = 0
        self.initial = self.parameters()
        self._pending: tuple[np.ndarray, np.ndarray, int, torch.Tensor, torch.Tensor] | None = None
        self._episode_start = True
        self.policy.set_training_mode(False)

    # ------------------------------------------------------------------ acting
    def act(self, obs: np.ndarray, mask: np.ndarray) -> int:
        """Sample the agent's action for ``obs`` (and remember it for :meth:`reward`)."""
        probs, value = self._evaluate(obs, mask)
        p = probs / probs.sum()
        action = int(self.rng.choice(p.size, p=p))
        self._remember(obs, mask, action, probs, value)
        return action

    def take(self, obs: np.ndarray, mask: np.ndarray, action: int) -> int:
        """Record that ``action`` (the fallback's) was taken for ``obs``.

        The sampling stream advances as in :meth:`act`, so the agent's later draws do not depend
        on how many decisions the fallback took.
        """
        probs, value = self._evaluate(obs, mask)
        self.rng.random()
        self._remember(obs, mask, action, probs, value, store=self.cfg.learn_from_fallback)
        return action

    def reward(self, reward: float, next_obs: np.ndarray, done: bool) -> dict[str, float] | None:
        """Store the pending decision's reward; update after ``update_every`` of them.

        Returns:
            The update's figures (``train/*`` as SB3 logs them, plus the weight change) when
            this decision completed a rollout, else ``None``.
        """
        if self._pending is None:
            raise RuntimeError("reward() without a preceding act() or take()")
        obs, mask, action, value, log_prob = self._pending
        self._pending = None
        self.decisions += 1
        if not self.learn:
            return None
        if log_prob is not None:
            self.buffer.add(
                obs[None, :],
                np.array([[action]]),
                np.array([reward], dtype=np.float32),
                np.array([self._episode_start]),
                value,
                log_prob,
                action_masks=mask[None, :],
            )
            self._episode_start = False
        if done:
            self._episode_start = True
        if not self.buffer.full:
            return None
        return self._update(next_obs, done)

    # ------------------------------------------------------------------ learning
    def _update(self, next_obs: np.ndarray, done: bool) -> dict[str, float]:
        model = self.model
        with torch.no_grad():
            last = self.policy.predict_values(torch.as_tensor(next_obs[None, :]).float())
        self.buffer.compute_returns_and_advantage(last_values=last, dones=np.array([done]))
        self._fit_values(self.cfg.value_epochs)
        before = copy.deepcopy(self.policy.state_dict()) if self.gate is not None else None
        model.train()
        self.policy.set_training_mode(False)
        self.buffer.reset()
        self.updates += 1
        figures = {
            key: float(value)
            for key, value in model.logger.name_to_value.items()
            if key.startswith("train/")
        }
        if self.gate is not None and before is not None:
            accepted = self.gate(self, before)
            if not accepted:
                self.policy.load_state_dict(before)
                self.rejected += 1
            figures["online/accepted"] = float(accepted)
        figures["online/weight_change"] = self.weight_change()
        return figures

    def _fit_values(self, epochs: int) -> None:
        """Value-only passes over the rollout (the critic's own network and head only)."""
        if epochs <= 0:
            return
        policy = self.policy
        params = [*policy.mlp_extractor.value_net.parameters(), *policy.value_net.parameters()]
        optimizer = torch.optim.Adam(params, lr=self.cfg.learning_rate)
        policy.set_training_mode(True)
        for _ in range(epochs):
            for batch in self.buffer.get(self.model.batch_size):
                values = policy.predict_values(batch.observations).flatten()
                loss = torch.nn.functional.mse_loss(batch.returns, values)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, self.model.max_grad_norm)
                optimizer.step()
        policy.set_training_mode(False)

    def parameters(self) -> np.ndarray:
        """The policy's actor weights as one vector (what the updates move)."""
        actor = [*self.policy.mlp_extractor.policy_net.parameters()]
        actor += [*self.policy.action_net.parameters()]
        return torch.cat([p.detach().flatten() for p in actor]).cpu().numpy().copy()

    def weight_change(self) -> float:
        """L2 distance of the actor weights from where the stream started."""
        return float(np.linalg.norm(self.parameters() - self.initial))

    # ------------------------------------------------------------------ internals
    def _evaluate(self, obs: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        probs = masked_probabilities(self.policy, obs[None, :], mask[None, :])[0]
        with torch.no_grad():
            value = self.policy.predict_values(torch.as_tensor(obs[None, :]).float())
        return probs.astype(np.float64), value

    def _remember(
        self,
        obs: np.ndarray,
        mask: np.ndarray,
        action: int,
        probs: np.ndarray,
        value: torch.Tensor,
        store: bool = True,
    ) -> None:
        log_prob = None
        if store and self.learn:
            lp = max(float(np.log(max(probs[action], 0.0) + 1e-30)), _MIN_LOG_PROB)
            log_prob = torch.tensor([lp])
        self._pending = (obs.copy(), mask.copy(), action, value, log_prob)  # type: ignore[assignment]
