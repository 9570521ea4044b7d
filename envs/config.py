"""The ``env:`` config section of the placement environment, and the run config that carries it.

Example (YAML, beside the ``workload:`` and ``cluster:`` sections of a run config)::

    env:
      episode_requests: 256
      reward_scale: 0.05
      teacher: sagesched
      predictor: {name: sagesched}
      warmup: {name: sample_castillo, options: {splits: [train]}}
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sagerl.config import RunConfig
from sagerl.errors import UnknownNameError
from sagerl.predict.config import PredictorConfig
from sagerl.schema import StrictModel, load_config
from sagerl.workload.config import DatasetSpec

NO_PREDICTOR = "none"
"""``env.predictor.name`` that runs without a length predictor (prediction features are zero)."""


class FeatureOptions(StrictModel):
    """Normalisation constants of the observation (see :class:`sagerl.features.FeatureSpec`)."""

    time_unit: float = Field(
        0.05, gt=0, description="Time unit of the time transform log1p(t / unit), s."
    )
    time_log_ref: float = Field(8.0, gt=0, description="Divisor of the time transform.")
    cost_unit: float = Field(
        1.0, gt=0, description="Hybrid-cost unit of the cost transform, token²."
    )
    cost_log_ref: float = Field(20.0, gt=0, description="Divisor of the cost transform.")


class EnvConfig(StrictModel):
    """How episodes are cut from the workload, what the agent sees, and how it is rewarded."""

    episode_requests: int = Field(
        256, ge=1, description="Requests per episode: one placement decision each."
    )
    max_replicas: int | None = Field(
        None,
        ge=1,
        description="Replica slots of the observation and action space (padding beyond the "
        "cluster is masked). None: the cluster's size.",
    )
    reward_scale: float = Field(
        0.05,
        gt=0,
        description="Reward = -reward_scale x growth of the total time in system (s) since the "
        "previous decision; the return is -reward_scale x the sum of TTLT.",
    )
    reject_penalty_s: float = Field(
        60.0,
        ge=0,
        description="Seconds charged (times reward_scale) for a request the chosen replica "
        "rejects because its prompt plus output cannot fit the KV cache.",
    )
    eval_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of the workload (its last requests) held out for evaluation windows.",
    )
    history_prefill: int = Field(
        1000,
        ge=0,
        description="Requests before the window fed to the predictor's history at reset (a "
        "running server's history; larger is slower: the search is a flat scan).",
    )
    teacher: str = Field(
        "sagesched", description="Placement policy whose estimates enter the observation."
    )
    teacher_options: dict[str, Any] = Field(
        default_factory=dict, description="Options of the teacher placement policy."
    )
    teacher_features: bool = Field(
        True, description="Put the teacher's per-replica estimates into the observation."
    )
    critic_features: bool = Field(
        True,
        description="Append privileged simulator-only features (episode progress, true remaining "
        "work per replica, upcoming arrivals) for the critic; agents hide them from the actor.",
    )
    replica_down_prob: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Probability that a replica is down for a whole episode (at least one "
        "stays up); down replicas are masked.",
    )
    invalid_action: Literal["remap", "error"] = Field(
        "remap",
        description="A masked action: 'remap' places on the first available replica (and "
        "sets info['invalid_action']), 'error' raises ValueError.",
    )
    max_episode_steps: int | None = Field(
        None,
        ge=1,
        description="Truncate episodes after this many decisions (TimeLimit); None: episodes "
        "end when the window's requests are placed.",
    )
    predictor: PredictorConfig = Field(
        default_factory=lambda: PredictorConfig.model_validate({"name": "sagesched"}),
        description="Output-length predictor; name 'none' runs without one.",
    )
    warmup: DatasetSpec | None = Field(
        None,
        description="Data set searched by the predictor when its history is thin (its prompts "
        "that also occur in the workload are dropped).",
    )
    features: FeatureOptions = Field(default_factory=FeatureOptions)

    @field_validator("teacher")
    @classmethod
    def _known_teacher(cls, name: str) -> str:
        from sagerl.policy import PLACEMENT

        try:
            PLACEMENT.get(name)
        except UnknownNameError as exc:
            raise ValueError(str(exc)) from None
        return name

    @model_validator(mode="after")
    def _known_predictor(self) -> EnvConfig:
        from sagerl.errors import unknown_name
        from sagerl.predict import predictor_names

        names = [*predictor_names(), NO_PREDICTOR]
        if self.predictor.name not in names:
            raise ValueError(str(unknown_name("predictor", self.predictor.name, names)))
        return self


class EnvRunConfig(RunConfig):
    """A run config plus the environment section: everything an environment needs."""

    env: EnvConfig = Field(default_factory=EnvConfig)


REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ENV_CONFIG = REPO_ROOT / "configs" / "train-default.yaml"


def resolve_config(
    config: EnvRunConfig | dict[str, Any] | str | Path | None,
    overrides: list[str] | None = None,
    model: type[EnvRunConfig] = EnvRunConfig,
) -> EnvRunConfig:
    """An :class:`EnvRunConfig` from an object, a dict, a YAML path, or ``None`` (the default).

    A dict or path may hold more sections than the environment reads (a training config); only
    the environment's are validated here when ``model`` is :class:`EnvRunConfig`.
    """
    from sagerl.schema import apply_overrides, read_yaml, validate

    if isinstance(config, EnvRunConfig) and not overrides:
        return config
    if isinstance(config, EnvRunConfig):
        data: dict[str, Any] = config.model_dump()
        where = "<config>"
    elif isinstance(config, dict):
        data, where = copy.deepcopy(config), "<dict>"
    else:
        path = Path(config) if config is not None else DEFAULT_ENV_CONFIG
        if config is None and not path.is_file():
            return load_config(model, None, overrides)
        data, where = read_yaml(path), str(path)
    data = apply_overrides(data, list(overrides or []))
    if model is EnvRunConfig:
        data = {k: v for k, v in data.items() if k in EnvRunConfig.model_fields}
    return validate(model, data, where)
