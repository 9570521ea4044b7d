"""The ``workload:`` section of a run config: which data, how many requests, when they arrive.

Example (YAML)::

    workload:
      num_requests: 2000
      datasets:
        - {name: sample_castillo, weight: 3, options: {datasets: [Apps, Mbpp]}}
        - {name: sample_azure_conv, weight: 1}
      arrival: {kind: gamma, rate: 4.0, cv: 2.0}
      pair_text: true
      pair_source: {name: sample_castillo}
      max_output_tokens: 8192

    # replay a real trace instead, squeezed to 10 req/s:
    workload:
      num_requests: null
      duration_s: 600
      start_offset_s: 1200
      datasets: [{name: azure_conv}]
      arrival: {kind: trace, rescale_to_rate: 10.0}
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from sagerl.errors import unknown_name
from sagerl.schema import StrictModel
from sagerl.workload.datasets import get_dataset, list_datasets, options_problem


def _invalid(message: str) -> PydanticCustomError:
    """A validation error whose message is shown as is (no pydantic "Value error, " prefix)."""
    return PydanticCustomError("value_error", message.replace("{", "{{").replace("}", "}}"))


class DatasetSpec(StrictModel):
    """One data set in the mix."""

    name: str = Field(
        description="Registered data set name, e.g. 'castillo', 'azure_conv', 'sample_castillo' "
        "(see `sagerl.workload.list_datasets()`)."
    )
    weight: float = Field(
        1.0,
        gt=0,
        description="Relative share of the requests drawn from this data set (unitless; "
        "weights are normalised over the list).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Loader options, checked against the loader (e.g. castillo: model, "
        "datasets, splits; sharegpt: tokenizer; servegen: category, client, window, "
        "duration_s, seed).",
    )

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        if name not in list_datasets():
            raise _invalid(str(unknown_name("data set", name, list_datasets())))
        return name

    @model_validator(mode="after")
    def _valid_options(self) -> DatasetSpec:
        problem = options_problem(self.name, self.options)
        if problem is not None:
            raise _invalid(f"options.{problem}")
        return self

    @property
    def is_sample(self) -> bool:
        """Whether this data set reads the bundled sample (needs no data directory)."""
        return get_dataset(self.name).sample


class ArrivalSpec(StrictModel):
    """When requests arrive."""

    kind: Literal["poisson", "gamma", "schedule", "trace"] = Field(
        "poisson",
        description="'poisson' (rate), 'gamma' (rate and cv), 'schedule' (piecewise-constant "
        "rates), or 'trace' (replay the single data set's own timestamps).",
    )
    rate: float = Field(
        1.0, gt=0, description="Mean arrival rate in requests/s (poisson and gamma)."
    )
    cv: float = Field(
        1.0,
        ge=0,
        description="Coefficient of variation of inter-arrival times (unitless; 1 = Poisson, "
        ">1 bursty); used by gamma and schedule.",
    )
    schedule: list[tuple[float, float]] | None = Field(
        None,
        description="For kind 'schedule': [[start_s, rate], ...], rate in requests/s from "
        "start_s seconds on; must start at 0 s.",
    )
    rescale_to_rate: float | None = Field(
        None,
        gt=0,
        description="For kind 'trace': stretch or squeeze the trace's time axis so its mean "
        "rate is this many requests/s (burst shape kept); None replays it as recorded.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ArrivalSpec:
        if self.kind == "schedule":
            if not self.schedule:
                raise _invalid("kind 'schedule' needs a schedule")
            starts = [s for s, _ in self.schedule]
            if starts[0] != 0 or any(b <= a for a, b in itertools.pairwise(starts)):
                raise _invalid("schedule start times must begin at 0 s and increase")
            if any(r < 0 for _, r in self.schedule):
                raise _invalid("schedule rates must be >= 0 requests/s")
        elif self.schedule is not None:
            raise _invalid(f"schedule is only used with kind 'schedule', not {self.kind!r}")
        if self.rescale_to_rate is not None and self.kind != "trace":
            raise _invalid("rescale_to_rate only applies to kind 'trace'")
        return self


class WorkloadConfig(StrictModel):
    """A workload: a weighted mix of data sets, an arrival process, and request filters."""

    num_requests: int | None = Field(
        1000,
        ge=1,
        description="Number of requests. None: as many as arrive within duration_s (or, for a "
        "trace, the whole trace window).",
    )
    duration_s: float | None = Field(
        None,
        gt=0,
        description="Length of the workload in seconds: arrivals at or after it are dropped. "
        "For kind 'trace' it is the window length after start_offset_s.",
    )
    start_offset_s: float = Field(
        0.0,
        ge=0,
        description="For kind 'trace': skip this many seconds of the trace; the window starts "
        "there and its arrivals are shifted so the window starts at 0 s.",
    )
    datasets: list[DatasetSpec] = Field(
        default_factory=lambda: [DatasetSpec.model_validate({"name": "sample_castillo"})],
        min_length=1,
        description="Data sets mixed by weight (kind 'trace' takes exactly one).",
    )
    arrival: ArrivalSpec = Field(
        default_factory=lambda: ArrivalSpec.model_validate({}), description="The arrival process."
    )
    pair_text: bool = Field(
        False,
        description="Give requests from length-only data sets (Azure, Vidur, ServeGen) the "
        "prompt text of a pair_source request with a close prompt length (tokens).",
    )
    pair_source: DatasetSpec = Field(
        default_factory=lambda: DatasetSpec.model_validate({"name": "sharegpt"}),
        description="The text data set used by pair_text (its weight is ignored).",
    )
    pair_candidates: int = Field(
        8,
        ge=1,
        description="pair_text picks uniformly among this many texts with the closest prompt "
        "lengths, so equal lengths do not all get the same text.",
    )
    min_prompt_tokens: int = Field(
        1, ge=0, description="Drop requests with fewer prompt tokens (0 keeps empty prompts)."
    )
    max_prompt_tokens: int | None = Field(
        None, ge=1, description="Drop requests with more prompt tokens; None keeps all."
    )
    min_output_tokens: int = Field(
        1, ge=0, description="Drop requests whose output length (tokens) is below this."
    )
    max_output_tokens: int | None = Field(
        None,
        ge=1,
        description="Drop requests with a longer output (tokens); for data sets with several "
        "sampled lengths (CASTILLO), every sample must fit. None keeps all.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> WorkloadConfig:
        trace = self.arrival.kind == "trace"
        if trace and len(self.datasets) != 1:
            raise _invalid("arrival.kind 'trace' replays exactly one data set")
        if not trace and self.start_offset_s:
            raise _invalid("start_offset_s only applies to arrival.kind 'trace'")
        if not trace and self.num_requests is None and self.duration_s is None:
            raise _invalid("set num_requests or duration_s (both null: endless workload)")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < self.min_prompt_tokens:
            raise _invalid("max_prompt_tokens is below min_prompt_tokens")
        if self.max_output_tokens is not None and self.max_output_tokens < self.min_output_tokens:
            raise _invalid("max_output_tokens is below min_output_tokens")
        return self

    def needs_data_dir(self) -> bool:
        """Whether building this workload reads the full data directory."""
        specs = [*self.datasets, *([self.pair_source] if self.pair_text else [])]
        return any(not s.is_sample for s in specs)
