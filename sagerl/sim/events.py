"""Cluster events during a run: a replica slows down (or recovers), leaves or comes back.

Production clusters drift: a GPU throttles, a node is drained for maintenance. A
:class:`ClusterEvent` changes one replica at a given time; :class:`ClusterEvents` applies a
schedule of them as a run's clock passes their times and restores the nominal cluster on
:meth:`ClusterEvents.restore`, so the same replicas can replay the same stream again.

Semantics, chosen to match what a serving cluster does:

* ``slowdown = f``: every engine iteration from now on takes ``f`` times its nominal time
  (``f = 1`` restores it). The replica's speed hints (``cost_rate``, ``decode_tokens_per_s``)
  are divided by ``f`` too, as a router that re-measures throughput would see. An iteration
  already in flight finishes at its old time.
* ``healthy = False``: the replica takes no new requests (it is masked for every placement
  policy); what it already holds runs to completion, as when a node is drained.
  ``healthy = True`` brings it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sagerl.errors import ConfigError
from sagerl.sim.replica import Replica, StepTimer


@dataclass(frozen=True)
class ClusterEvent:
    """One change to one replica at time ``time`` (s of the run's clock).

    Attributes:
        time: When it takes effect, s.
        replica: Index of the replica.
        slowdown: Step-time multiplier from then on (1 = nominal), or ``None`` to keep it.
        healthy: ``False`` removes the replica from placement, ``True`` restores it, ``None``
            keeps it.
        label: Shown in logs and plots.
    """

    time: float
    replica: int
    slowdown: float | None = None
    healthy: bool | None = None
    label: str = ""

    def describe(self) -> str:
        parts = []
        if self.slowdown is not None:
            parts.append(f"{self.slowdown:g}x step time")
        if self.healthy is not None:
            parts.append("back in service" if self.healthy else "removed")
        return f"replica {self.replica}: " + ", ".join(parts)


class ScaledTimer:
    """A step-time model whose every iteration takes ``factor`` times as long."""

    def __init__(self, base: StepTimer, factor: float) -> None:
        self.base = base
        self.factor = factor

    def step_time(
        self, num_tokens: int, num_seqs: int, prefill_attn_pairs: float, decode_kv_tokens: int
    ) -> float:
        return self.factor * self.base.step_time(
            num_tokens, num_seqs, prefill_attn_pairs, decode_kv_tokens
        )

    def decode_coefficients(self, num_seqs: int) -> tuple[float, float]:
        base, per_kv = self.base.decode_coefficients(num_seqs)
        return self.factor * base, self.factor * per_kv


class ClusterEvents:
    """Applies a schedule of :class:`ClusterEvent` to ``replicas`` as time passes.

    Args:
        replicas: The cluster's replicas (their nominal state is remembered here).
        events: The schedule (any order; applied in time order).

    Raises:
        ConfigError: An event names a replica the cluster does not have, or a slowdown <= 0.
    """

    def __init__(self, replicas: Sequence[Replica], events: Sequence[ClusterEvent]) -> None:
        for e in events:
            if not 0 <= e.replica < len(replicas):
                raise ConfigError(
                    f"cluster event '{e.label or e.describe()}' names replica {e.replica}; "
                    f"the cluster has {len(replicas)} (0..{len(replicas) - 1})"
                )
            if e.slowdown is not None and e.slowdown <= 0:
                raise ConfigError(f"cluster event slowdown must be > 0, got {e.slowdown}")
        self.replicas = list(replicas)
        self.events = sorted(events, key=lambda e: e.time)
        self._nominal = [(r.timer, r.cost_rate, r.decode_tokens_per_s) for r in self.replicas]
        self._next = 0

    def restore(self) -> None:
        """Put every replica back to its nominal speed and health; replay from the start."""
        for r, (timer, rate, speed) in zip(self.replicas, self._nominal, strict=True):
            r.timer, r.cost_rate, r.decode_tokens_per_s = timer, rate, speed
            r.healthy = True
        self._next = 0

    def due(self, now: float) -> list[ClusterEvent]:
        """Apply the events whose time is at or before ``now``; return them."""
        applied = []
        while self._next < len(self.events) and self.events[self._next].time <= now:
            event = self.events[self._next]
            self._apply(event)
            applied.append(event)
            self._next += 1
        return applied

    def _apply(self, event: ClusterEvent) -> None:
        replica = self.replicas[event.replica]
        if event.slowdown is not None:
            timer, rate, speed = self._nominal[event.replica]
            f = event.slowdown
            replica.timer = timer if f == 1.0 else ScaledTimer(timer, f)
            replica.cost_rate = rate / f
            replica.decode_tokens_per_s = speed / f
        if event.healthy is not None:
            replica.healthy = event.healthy
