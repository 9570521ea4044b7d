"""The RLModule (new API stack): a masked actor on the deployable features, a critic on all.

The actor reads only the first ``actor_size`` entries of the observation (the
:class:`~sagerl.features.FeatureEncoder` vector), so the trained actor exports as is, needing
nothing but the encoder; the critic also reads the privileged, simulator-only tail. Networks,
initialisation and masking are :mod:`agents.rllib.nets`' (the SB3 policy's shapes), applied in
sampling, inference and the PPO update alike.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

from agents.rllib.env import MASK, OBS
from agents.rllib.nets import masked, mlp


class MaskedActorCritic(TorchRLModule, ValueFunctionAPI):
    """PPO's RLModule for the masked placement environment.

    ``model_config`` keys: ``hidden`` (layer widths), ``activation`` (``tanh`` or ``relu``),
    ``actor_size`` (observation entries the actor reads; ``None``: all).

    Attributes:
        pi: The actor, ``[N, actor_size] -> [N, actions]`` unmasked logits.
        vf: The critic, ``[N, D] -> [N, 1]``.
    """

    def setup(self) -> None:
        cfg = dict(self.model_config or {})
        space = self.observation_space[OBS]  # type: ignore[index]
        size = int(space.shape[0])
        self.actor_size = int(cfg.get("actor_size") or size)
        hidden = list(cfg.get("hidden", [128, 128]))
        activation = str(cfg.get("activation", "tanh"))
        actions = int(self.action_space.n)  # type: ignore[union-attr]
        self.pi = mlp(self.actor_size, hidden, actions, activation, out_gain=0.01)
        self.vf = mlp(size, hidden, 1, activation, out_gain=1.0)

    def _logits(self, batch: dict[str, Any]) -> torch.Tensor:
        obs = batch[Columns.OBS]
        return masked(self.pi(obs[OBS][..., : self.actor_size]), obs[MASK])

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self._logits(batch)}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        return self.vf(batch[Columns.OBS][OBS]).squeeze(-1)
