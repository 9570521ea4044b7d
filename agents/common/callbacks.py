"""Callbacks for PPO training: checkpoints, periodic evaluation, episode metrics, hyperparameters.

SB3's pattern: ``on_step`` and friends update counters and call the ``_on_*`` hooks; returning
False stops training; compose with ``CallbackList``. Ours act at rollout boundaries
(``_on_rollout_start``: the weights then are those after the previous update, so a checkpoint's
step count and weights agree) and read typed objects instead of the loop's ``locals()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HParam

from agents.common.checkpoints import Checkpointer, RunState
from agents.common.envs import EpisodeMetrics


class CheckpointEvery(BaseCallback):
    """Save a checkpoint (``ppo_<steps>.zip`` + run state) every ``every`` environment steps.

    :meth:`save_interrupted` saves mid-rollout (Ctrl-C): the steps of the unfinished rollout
    never reached an update, so the checkpoint counts only the steps up to the last rollout
    boundary, where the weights are; a resumed run collects that rollout again.
    """

    def __init__(self, checkpointer: Checkpointer, state: RunState, every: int) -> None:
        super().__init__()
        self.checkpointer = checkpointer
        self.state = state
        self.every = every
        self._next = 0
        self._boundary = 0

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every
        self._boundary = self.num_timesteps

    def _on_rollout_start(self) -> None:
        self._boundary = self.num_timesteps
        if self.num_timesteps >= self._next:
            self.save()
            self._next = (self.num_timesteps // self.every + 1) * self.every

    def save(self, event: str | None = None) -> None:
        self.checkpointer.save(self.model, self.state, f"ppo_{self.model.num_timesteps}", event)

    def save_interrupted(self) -> None:
        """Save after an interruption, rolled back to the last rollout boundary."""
        self.model.num_timesteps = self._boundary
        self.save("interrupted")

    def _on_step(self) -> bool:
        return True


class PeriodicEval(BaseCallback):
    """Evaluate the agent every ``every`` steps; ``evaluate(model, step)`` returns metrics that
    are logged under ``eval/`` on the agent's TensorBoard run."""

    def __init__(self, evaluate: Callable[[Any, int], dict[str, float]], every: int) -> None:
        super().__init__()
        self.evaluate = evaluate
        self.every = every
        self._next = 0

    def _on_training_start(self) -> None:
        if self.every:
            self._next = (self.num_timesteps // self.every + 1) * self.every

    def _on_rollout_start(self) -> None:
        if self.every and self.num_timesteps >= self._next:
            for tag, value in self.evaluate(self.model, self.num_timesteps).items():
                self.logger.record(tag, value)
            self._next = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        return True


class EpisodeMetricsLogger(BaseCallback):
    """Log the training episodes' mean TTLT (and friends) beside SB3's ``rollout/`` figures."""

    KEYS = ("mean_ttlt", "p99_ttlt", "mean_ttft", "throughput")

    def __init__(self, metrics: EpisodeMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def _on_rollout_end(self) -> None:
        if self.metrics.recent:
            for key in self.KEYS:
                self.logger.record(f"rollout/ep_{key}", self.metrics.summary(key))

    def _on_step(self) -> bool:
        return True


class HParams(BaseCallback):
    """Write the hyperparameters to TensorBoard's HPARAMS tab once, at the start of training."""

    def __init__(self, hparams: dict[str, Any]) -> None:
        super().__init__()
        self.hparams = {
            k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in hparams.items()
        }

    def _on_training_start(self) -> None:
        self.logger.record(
            "hparams",
            HParam(self.hparams, {"rollout/ep_rew_mean": 0.0, "eval/mean_ttlt": 0.0}),
            exclude=("stdout", "log", "json", "csv"),
        )

    def _on_step(self) -> bool:
        return True
