"""The ``online`` config: a shift scenario, the agent to start from, how it keeps learning, and
the guardrail that holds it against SageSched placement.

``configs/shift-*.yaml`` validate into :class:`OnlineConfig`; ``key=value`` overrides reach every
field (e.g. ``online.update_every=128 guardrail.margin=0.2``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from agents.common.config import known_placements
from sagerl.schema import StrictModel, apply_overrides, read_yaml, validate
from sagerl.workload.shift import ShiftScenario

DEFAULT_ONLINE_CONFIG = Path("configs/shift-default.yaml")


class AgentSource(StrictModel):
    """The trained agent the online run starts from."""

    run: str = Field(
        "runs/train-default",
        description="Run directory of `python -m sagerl train` (its latest checkpoint and its "
        "config.yaml: cluster, features, predictor and teacher of the environment).",
    )
    checkpoint: str | None = Field(
        None, description="A specific SB3 archive inside or outside the run (None: the latest)."
    )
    train_config: str = Field(
        "configs/train-default.yaml",
        description="Training config used to create the run when it does not exist yet.",
    )
    train_if_missing: bool = Field(
        True,
        description="Train the agent first (a few minutes) when the run has no checkpoint; "
        "false makes a missing run an error.",
    )


class OnlinePPOConfig(StrictModel):
    """How the online agent keeps learning: PPO updates on its most recent decisions."""

    update_every: int = Field(
        256, ge=8, description="Decisions between PPO updates (the rollout length K)."
    )
    n_epochs: int = Field(4, ge=1, description="Passes over each rollout.")
    batch_size: int = Field(64, ge=2, description="Minibatch size.")
    learning_rate: float = Field(1e-4, gt=0, description="Adam learning rate.")
    clip_range: float = Field(0.1, gt=0, description="PPO clipping of the probability ratio.")
    target_kl: float | None = Field(
        0.02, gt=0, description="Stop an update's epochs early past this KL (None: never)."
    )
    gamma: float = Field(0.99, gt=0, le=1, description="Discount per decision.")
    gae_lambda: float = Field(1.0, ge=0, le=1, description="GAE lambda.")
    ent_coef: float = Field(0.0, ge=0, description="Entropy bonus coefficient.")
    value_epochs: int = Field(
        0,
        ge=0,
        description="Passes of value-only fitting over each rollout before the PPO update: on a "
        "shifted stream the critic is the first thing to go wrong, and PPO's advantages are only "
        "as good as it is.",
    )
    replay_gate: bool = Field(
        False,
        description="Keep an update only if, replayed in the simulator on the last "
        "replay_requests finished arrivals, it beats the policy before it by replay_margin "
        "(agents/online/gate.py).",
    )
    replay_requests: int = Field(512, ge=16, description="Requests replayed per gate check.")
    replay_lag: int = Field(
        128, ge=0, description="Decisions between the newest replayed request and now."
    )
    replay_margin: float = Field(
        0.0, ge=0, lt=1, description="Relative mean-TTLT gain an update must show in replay."
    )
    learn_from_fallback: bool = Field(
        True,
        description="Also learn from decisions the guardrail took with SageSched (stored with "
        "the agent's own probability of that action, so PPO's clipped ratio bounds their pull).",
    )


class GuardrailConfig(StrictModel):
    """Falls back to the reference placement while the online agent does worse than it."""

    enabled: bool = Field(True, description="Use the guardrail.")
    margin: float = Field(
        0.10,
        ge=0,
        description="Fall back when the agent's recent mean TTLT exceeds the reference's on the "
        "same requests by more than this fraction.",
    )
    release: float = Field(
        0.02,
        ge=0,
        description="Hand control back once the recent mean TTLT is within this fraction of "
        "the reference's (below margin: hysteresis, so it does not flap).",
    )
    window: int = Field(200, ge=1, description="Recent finished requests compared.")
    min_requests: int = Field(
        100, ge=1, description="Finished requests needed before the guardrail judges."
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> GuardrailConfig:
        if self.release > self.margin:
            raise ValueError(f"guardrail.release ({self.release}) must be <= margin")
        if self.min_requests > self.window:
            raise ValueError("guardrail.min_requests must be <= guardrail.window")
        return self


class ReportConfig(StrictModel):
    """How the report measures adaptation."""

    rolling_requests: int = Field(
        200, ge=1, description="Requests in the rolling mean TTLT of the curves."
    )
    adapt_requests: int = Field(
        256,
        ge=0,
        description="Requests at the start of each phase left out of its 'after adaptation' "
        "mean (the agent's first update after the shift comes after update_every decisions).",
    )
    recovery_tolerance: float = Field(
        0.05,
        ge=0,
        description="A policy has recovered from a shift once its rolling mean TTLT is within "
        "this fraction of the reference's on the same requests.",
    )


class OnlineConfig(StrictModel):
    """Everything ``python -m sagerl online`` needs."""

    name: str = Field("shift-default", description="Run name: outputs go to output_dir/name/.")
    seed: int = Field(0, ge=0, description="First seed; seeds are seed, seed + 1, ...")
    seeds: int = Field(3, ge=1, description="Streams (one per seed) every policy plays.")
    output_dir: str = Field("runs", description="Parent directory of the run.")
    data_dir: str | None = Field(
        None, description="Full-data directory (None: SAGERL_DATA or ../shared/data)."
    )
    agent: AgentSource = Field(default_factory=AgentSource)
    scenario: ShiftScenario
    online: OnlinePPOConfig = Field(default_factory=OnlinePPOConfig)
    guardrail: GuardrailConfig = Field(default_factory=GuardrailConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    reference: str = Field(
        "sagesched", description="The placement the agent is held against (and falls back to)."
    )
    baselines: list[str] = Field(
        default_factory=lambda: ["least-outstanding"],
        description="Other placement policies played on the same streams.",
    )
    env_overrides: list[str] = Field(
        default_factory=list,
        description="key=value overrides of the agent's environment config (e.g. "
        "env.history_prefill=0).",
    )

    @field_validator("baselines")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        return known_placements(names)

    @field_validator("reference")
    @classmethod
    def _known_reference(cls, name: str) -> str:
        return known_placements([name])[0]


def load_online_config(path: str | Path | None, overrides: list[str] | None = None) -> OnlineConfig:
    """Load ``path`` (default ``configs/shift-default.yaml``) with ``key=value`` overrides."""
    p = Path(path) if path is not None else DEFAULT_ONLINE_CONFIG
    data: dict[str, Any] = read_yaml(p)
    data = apply_overrides(data, list(overrides or []))
    return validate(OnlineConfig, data, str(p))
