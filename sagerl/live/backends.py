"""The backend registry: configured servers, their static speed hints, and their health.

The router connects only to the URLs listed here (there is no other upstream). Speed hints
(``decode_tokens_per_s``, ``cost_rate``, default KV capacity) come from the same
:class:`~sagerl.hardware.StepTimeModel` and :class:`~sagerl.sim.replica.Replica` formulas the
simulator uses, so a view the router fills for an A100 matches the simulator's A100 replica.

Health is a small state machine per backend: a connection failure on a forward, or
``unhealthy_after`` failed scrapes in a row, marks it down (placement skips it); the next
successful scrape marks it up again. Every transition is logged and counted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from sagerl.live.config import BackendSpec

log = logging.getLogger("sagerl.live.backends")


@dataclass(frozen=True, slots=True)
class SpeedHints:
    """Static figures of a backend, from the step-time model (see module docstring).

    Attributes:
        decode_tokens_per_s: A lone sequence's decode speed at ~1k tokens of context, tokens/s.
        cost_rate: Hybrid cost processed per second with a nearly full KV cache, token²/s.
        kv_blocks_total: KV-cache blocks as vLLM would size them (0 when the model does not fit).
        gpu: Canonical GPU name (as a simulated replica reports it).
        model: Canonical model name.
    """

    decode_tokens_per_s: float
    cost_rate: float
    kv_blocks_total: int
    gpu: str
    model: str


def speed_hints(spec: BackendSpec) -> SpeedHints:
    """Speed hints of a backend, computed exactly as the simulator's ``Replica`` does."""
    from sagerl.errors import SagerlError
    from sagerl.hardware import StepTimeModel
    from sagerl.policy.ordering import FCFS
    from sagerl.sim.config import SchedulerConfig
    from sagerl.sim.replica import Replica

    timer = StepTimeModel(spec.model, spec.gpu, tp=spec.tp)
    sched = SchedulerConfig(block_size=spec.block_size)
    try:
        blocks = timer.kv_cache_blocks(sched.block_size, sched.gpu_memory_utilization)
    except SagerlError:
        blocks = 0
    # NOTE: a throwaway Replica computes the hints so the two code paths cannot drift apart.
    replica = Replica(0, timer, spec.kv_blocks_total or max(blocks, 1), sched, FCFS())
    return SpeedHints(
        replica.decode_tokens_per_s, replica.cost_rate, blocks, timer.gpu.name, timer.model.name
    )


@dataclass(slots=True)
class Backend:
    """One configured server and its current health.

    Attributes:
        index: Position in the config (the placement action).
        spec: Its config entry.
        hints: Static speed hints.
        healthy: Whether placement may choose it.
        reason: Why it is down ("" while healthy).
        changed_at: ``time.monotonic()`` of the last health change.
        transitions: Health changes so far.
    """

    index: int
    spec: BackendSpec
    hints: SpeedHints
    healthy: bool = True
    reason: str = ""
    changed_at: float = field(default_factory=time.monotonic)
    transitions: int = 0

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def url(self) -> str:
        return self.spec.url


class BackendRegistry:
    """The configured backends, in index order, with health transitions."""

    def __init__(self, specs: list[BackendSpec]) -> None:
        self.backends = [Backend(i, s, speed_hints(s)) for i, s in enumerate(specs)]
        self.allowed_urls = frozenset(b.url for b in self.backends)

    def __len__(self) -> int:
        return len(self.backends)

    def __getitem__(self, i: int) -> Backend:
        return self.backends[i]

    def mark_down(self, i: int, reason: str) -> None:
        """Mark backend ``i`` unhealthy (logged once per transition)."""
        b = self.backends[i]
        if b.healthy:
            b.healthy = False
            b.reason = reason
            b.changed_at = time.monotonic()
            b.transitions += 1
            log.warning("backend %s marked unhealthy: %s", b.label, reason)

    def mark_up(self, i: int) -> None:
        """Mark backend ``i`` healthy again."""
        b = self.backends[i]
        if not b.healthy:
            b.healthy = True
            b.reason = ""
            b.changed_at = time.monotonic()
            b.transitions += 1
            log.info("backend %s healthy again", b.label)

    def healthy_count(self) -> int:
        return sum(1 for b in self.backends if b.healthy)
