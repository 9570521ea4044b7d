"""RLlib's PPO learner, plus the one update figure SB3 logs and RLlib does not: the clip fraction.

``train/clip_fraction`` (the share of samples whose probability ratio left ``[1 - clip, 1 +
clip]``) is the first thing to read when an update is too large or too timid; with it the RLlib
run's ``train/*`` tags match the SB3 run's, so the two overlay in TensorBoard. The loss itself is
RLlib's, unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns

CLIP_FRACTION_KEY = "clip_fraction"
"""Learner result key of the clip fraction (per module, one value per minibatch update)."""


class ClipFractionPPOLearner(PPOTorchLearner):
    """:class:`PPOTorchLearner` that also logs the minibatch's clip fraction."""

    def compute_loss_for_module(
        self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        loss = super().compute_loss_for_module(
            module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
        )
        with torch.no_grad():
            module = self.module[module_id].unwrapped()
            dist = module.get_train_action_dist_cls().from_logits(
                fwd_out[Columns.ACTION_DIST_INPUTS]
            )
            ratio = torch.exp(dist.logp(batch[Columns.ACTIONS]) - batch[Columns.ACTION_LOGP])
            clipped = ((ratio - 1.0).abs() > config.clip_param).float()
            mask = batch.get(Columns.LOSS_MASK)
            fraction = clipped.mean() if mask is None else clipped[mask].mean()
        self.metrics.log_value((module_id, CLIP_FRACTION_KEY), fraction, window=1)
        return loss
