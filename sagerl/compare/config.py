"""The ``compare:`` section of a run config: which policies, rates, seeds and predictor.

Example (YAML)::

    compare:
      rates: [0.5, 0.8, 1.0, 1.2]   # fractions of the measured saturation rate
      rate_unit: saturation
      seeds: [0, 1, 2, 3, 4]
      predictor: {name: oracle}
      policies:
        - {name: fcfs, ordering: fcfs}
        - {name: sagesched, ordering: sagesched, ordering_options: {hysteresis: 0.5}}
        - {name: sagesched+p2c, ordering: sagesched, placement: power-of-two}

Every policy runs on the *same* workloads: one per (rate, seed), built once (same requests,
same sampled true lengths; only the arrival times scale with the rate).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sagerl.config import RunConfig
from sagerl.cost import COST_VARIANTS, CostVariant
from sagerl.errors import unknown_name
from sagerl.schema import StrictModel, load_config
from sagerl.workload.config import DatasetSpec


class PredictorSpec(StrictModel):
    """The length predictor the simulation calls on arrival (and feeds on completion)."""

    name: str = Field(
        "oracle",
        description="Registered predictor: sagesched, length-history, point, tie, global, oracle.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="PredictorConfig fields (e.g. similarity, history_size, min_neighbors).",
    )
    warmup: list[DatasetSpec] = Field(
        default_factory=list,
        description="Data sets forming the warm-up pool (searched while the history is thin, "
        "training data for trained heads). Prompts of the evaluated workloads are removed.",
    )
    uniform_mix: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Robustness ablation: weight of a uniform distribution mixed into every "
        "prediction (0 = none; 0.8 = prediction:uniform = 1:4).",
    )
    uniform_max_tokens: int = Field(
        4096, ge=2, description="The uniform part covers 1..this many output tokens."
    )
    uniform_points: int = Field(
        64, ge=2, description="Support points of the discretised uniform part."
    )


class PolicySpec(StrictModel):
    """One line of the comparison: an ordering inside each replica and a placement across them."""

    name: str = Field(description="Label in tables, plots and JSON records (unique).")
    ordering: str = Field("fcfs", description="Ordering policy (see sagerl.policy.ORDERING).")
    ordering_options: dict[str, Any] = Field(
        default_factory=dict, description="Options of the ordering policy's constructor."
    )
    placement: str | None = Field(
        None, description="Placement policy; None uses cluster.placement."
    )
    placement_options: dict[str, Any] = Field(
        default_factory=dict, description="Options of the placement policy's constructor."
    )
    predictor: PredictorSpec | None = Field(
        None, description="Predictor for this policy only; None uses compare.predictor."
    )

    @model_validator(mode="after")
    def _known(self) -> PolicySpec:
        from sagerl.policy import ORDERING, PLACEMENT, make_ordering, make_placement

        if self.ordering not in ORDERING:
            raise ValueError(str(unknown_name("ordering policy", self.ordering, ORDERING)))
        if self.placement is not None and self.placement not in PLACEMENT:
            raise ValueError(str(unknown_name("placement policy", self.placement, PLACEMENT)))
        # Build once so an unknown or invalid option fails at load time, naming it.
        make_ordering(self.ordering, **self.ordering_options)
        if self.placement is not None:
            make_placement(self.placement, **self.placement_options)
        return self


class CompareSection(StrictModel):
    """The matrix: policies × arrival rates × seeds."""

    policies: list[PolicySpec] = Field(
        default_factory=lambda: [PolicySpec(name="fcfs")],
        min_length=1,
        description="Policies to compare.",
    )
    rates: list[float] = Field(
        default_factory=lambda: [1.0], min_length=1, description="Arrival rates (see rate_unit)."
    )
    rate_unit: Literal["rps", "saturation"] = Field(
        "saturation",
        description="'rps': rates are requests/s; 'saturation': fractions of the saturation "
        "rate (saturation_rps, or measured with FCFS when that is null).",
    )
    saturation_rps: float | None = Field(
        None,
        gt=0,
        description="Saturation rate, requests/s. None: measured (the largest Poisson rate "
        "FCFS sustains, see sagerl.compare.runner.estimate_saturation).",
    )
    saturation_requests: int | None = Field(
        None,
        ge=1,
        description="Requests per saturation probe (None: workload.num_requests). A probe must "
        "span many times the slowest requests' latency, or the warm-up transient reads as "
        "overload: use more requests than the runs for large clusters.",
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2, 3, 4], min_length=1, description="Workload seeds."
    )
    predictor: PredictorSpec = Field(default_factory=PredictorSpec)
    cost: CostVariant = Field(
        "hybrid",
        description="Cost variant given to every ordering that takes a 'cost' option, unless its "
        "ordering_options set one.",
    )
    processes: int = Field(2, ge=1, description="Worker processes (1 runs in-process).")

    @field_validator("cost")
    @classmethod
    def _known_cost(cls, value: str) -> str:
        if value not in COST_VARIANTS:
            raise ValueError(str(unknown_name("cost variant", value, COST_VARIANTS)))
        return value

    @model_validator(mode="after")
    def _unique(self) -> CompareSection:
        names = [p.name for p in self.policies]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"policy names must be unique; repeated: {', '.join(sorted(dup))}")
        if any(r <= 0 for r in self.rates):
            raise ValueError("rates must be > 0")
        return self


class CompareConfig(RunConfig):
    """A run config with a ``compare`` section (see :mod:`sagerl.compare`)."""

    compare: CompareSection = Field(default_factory=CompareSection)


def load_compare_config(
    path: str | Path | None, overrides: list[str] | None = None
) -> CompareConfig:
    """Load a compare config with ``key=value`` overrides; problems are one-line ConfigErrors."""
    return load_config(CompareConfig, path, overrides)
