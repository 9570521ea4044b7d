"""The run config: one YAML file in ``configs/`` validated into :class:`RunConfig`.

Sections live next to the code they configure (``sagerl.workload.config``,
``sagerl.sim.config``); this module only composes them. Load with :func:`load_run_config`, which
applies ``key=value`` overrides and turns any problem into a one-line
:class:`~sagerl.errors.ConfigError` naming the key.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from sagerl.schema import StrictModel, load_config
from sagerl.sim.config import ClusterConfig
from sagerl.workload.config import WorkloadConfig


class RunConfig(StrictModel):
    """Everything a simulation run needs."""

    name: str = Field("default", description="Run name; outputs go to <output_dir>/<name>/.")
    seed: int = Field(0, description="Seed for workload sampling and randomised policies.")
    data_dir: str | None = Field(
        None, description="Full data directory (default: $SAGERL_DATA, then ../shared/data)."
    )
    output_dir: str = Field("runs", description="Parent directory of run outputs.")
    workload: WorkloadConfig = Field(default_factory=WorkloadConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)


DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


def load_run_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load ``path`` (default: ``configs/default.yaml`` if present) with overrides applied."""
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    return load_config(RunConfig, path, overrides)
