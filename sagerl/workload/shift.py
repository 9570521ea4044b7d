"""Workload-shift scenarios: one long stream in phases, each its own mix, rate and cluster events.

A phase is an ordinary :class:`~sagerl.workload.config.WorkloadConfig` (data sets by weight,
arrival process, filters) plus cluster events that start with it (a replica slows down or leaves).
Phases are built independently, each from its own child seed of the scenario seed, and laid end to
end on one clock: phase ``k + 1`` starts where phase ``k``'s last request arrived. The stream is
therefore deterministic per seed, and changing one phase leaves the others' requests unchanged.

Example (YAML)::

    scenario:
      phases:
        - name: chat
          workload: {num_requests: 1500, datasets: [{name: sharegpt}],
                     arrival: {kind: poisson, rate: 12}}
        - name: degraded
          workload: {num_requests: 1500, datasets: [{name: sharegpt}],
                     arrival: {kind: poisson, rate: 12}}
          events: [{replica: 2, slowdown: 2.0}]
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator

from sagerl.schema import StrictModel
from sagerl.sim.events import ClusterEvent
from sagerl.workload.build import build_workload
from sagerl.workload.config import WorkloadConfig
from sagerl.workload.request import Request


class EventSpec(StrictModel):
    """A change to one replica during a phase (see :mod:`sagerl.sim.events`)."""

    replica: int = Field(ge=0, description="Index of the replica in the cluster.")
    at_s: float = Field(0.0, ge=0, description="Seconds after the phase starts.")
    slowdown: float | None = Field(
        None, gt=0, description="Step-time multiplier from then on (1 restores nominal speed)."
    )
    healthy: bool | None = Field(
        None, description="false removes the replica from placement (it drains), true restores it."
    )

    @model_validator(mode="after")
    def _does_something(self) -> EventSpec:
        if self.slowdown is None and self.healthy is None:
            raise ValueError("an event needs slowdown and/or healthy")
        return self


class PhaseSpec(StrictModel):
    """One phase of a shift scenario."""

    name: str = Field(description="Label in tables and plots.")
    workload: WorkloadConfig = Field(description="The phase's requests and arrival process.")
    events: list[EventSpec] = Field(
        default_factory=list, description="Cluster events that happen during the phase."
    )


class ShiftScenario(StrictModel):
    """A stream of phases played back to back on one cluster."""

    phases: list[PhaseSpec] = Field(min_length=1, description="The phases, in order.")

    @model_validator(mode="after")
    def _unique_names(self) -> ShiftScenario:
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be unique, got {names}")
        return self


@dataclass(frozen=True)
class Phase:
    """Where a phase sits in the stream.

    Attributes:
        name: Its label.
        first: Index of its first request in the stream.
        end: One past its last request.
        start_s: Its start time on the stream's clock, s.
        end_s: Its last arrival, s.
    """

    name: str
    first: int
    end: int
    start_s: float
    end_s: float


@dataclass
class ShiftStream:
    """A built scenario.

    Attributes:
        requests: Every request in arrival order, ids ``0..n-1``.
        phases: The phases, in order.
        events: The cluster events, with absolute times.
    """

    requests: list[Request]
    phases: list[Phase]
    events: list[ClusterEvent]

    def phase_of(self) -> np.ndarray:
        """Phase index of every request."""
        out = np.zeros(len(self.requests), dtype=np.int64)
        for k, p in enumerate(self.phases):
            out[p.first : p.end] = k
        return out


def build_shift_stream(
    scenario: ShiftScenario, data_dir: str | os.PathLike[str] | None, seed: int
) -> ShiftStream:
    """Build every phase (its own child seed) and lay them end to end.

    Raises:
        ConfigError, DataError: As :func:`~sagerl.workload.build.build_workload`.
    """
    children = np.random.SeedSequence(seed).spawn(len(scenario.phases))
    requests: list[Request] = []
    phases: list[Phase] = []
    events: list[ClusterEvent] = []
    offset = 0.0
    for spec, child in zip(scenario.phases, children, strict=True):
        part = build_workload(spec.workload, data_dir, int(child.generate_state(1)[0] >> 1))
        first = len(requests)
        for r in part:
            requests.append(
                dataclasses.replace(r, id=len(requests), arrival=offset + float(r.arrival))
            )
        end_s = requests[-1].arrival if len(requests) > first else offset
        phases.append(Phase(spec.name, first, len(requests), offset, end_s))
        for e in spec.events:
            events.append(
                ClusterEvent(offset + e.at_s, e.replica, e.slowdown, e.healthy, label=spec.name)
            )
        offset = end_s
    return ShiftStream(requests, phases, events)
