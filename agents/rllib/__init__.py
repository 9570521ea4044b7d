"""The RLlib backend of ``python -m sagerl train --backend rllib`` (Ray's RLlib, new API stack).

The same registered environment (``sagerl/Placement-v0``) and the same training config as the
stable-baselines3 path, trained by RLlib's PPO so sampling spreads over Ray env runners:

* :mod:`~agents.rllib.env`: the environment with its action mask in a ``Dict`` observation (how
  the new API stack passes a mask to an RLModule);
* :mod:`~agents.rllib.module`: the RLModule (actor on the encoder's features only, critic on all
  of them, invalid actions' logits masked) and an evaluation actor around it;
* :mod:`~agents.rllib.config`: the ``ppo:`` and ``rllib:`` config sections as an RLlib
  ``PPOConfig``;
* :mod:`~agents.rllib.train`: imitation warm start, PPO iterations, checkpoints, TensorBoard,
  evaluation on the held-out windows against the same baselines;
* :mod:`~agents.rllib.export`: the trained actor as a plain torch module for ``export``.

Ray is an optional extra: nothing here imports it at module level, and :func:`require_rllib`
turns its absence into a one-line :class:`~sagerl.errors.SagerlError`.
"""

from __future__ import annotations

from sagerl.compare.ray_backend import INSTALL_HINT


def require_rllib(what: str = "--backend rllib") -> None:
    """Raise a one-line :class:`SagerlError` unless Ray with RLlib can be imported.

    Args:
        what: The option that needs it, named in the message.
    """
    from sagerl.compare.ray_backend import require_ray

    require_ray(what, module="ray.rllib")


__all__ = ["INSTALL_HINT", "require_rllib"]
