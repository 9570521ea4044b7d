"""The guardrail: hand placement to SageSched while the learning agent does worse than it.

An agent that learns online can get worse before it gets better (a shift makes its value
estimates wrong, an update overshoots). The guardrail compares, over the last ``window`` finished
requests, the agent's mean TTLT with the TTLT the reference placement gave *the same requests*
(a shadow run of the same stream; in a live cluster, the simulator replaying the live arrivals).
Pairing by request removes the workload's own swings from the comparison: a burst slows both.

It trips when the agent's mean exceeds the reference's by more than ``margin`` and releases once
it is back within ``release`` (``release <= margin``: hysteresis). While tripped, the requests
that finish are the reference's own placements, so the ratio returns towards 1 and the agent
gets control back after about one window: it is retried, not banned.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Switch:
    """A change of who places requests.

    Attributes:
        finished: Finished requests the guardrail had seen at the switch.
        active: ``True``: the fallback took over; ``False``: the agent got control back.
        agent_mean: The agent's recent mean TTLT, s.
        reference_mean: The reference's mean TTLT on the same requests, s.
    """

    finished: int
    active: bool
    agent_mean: float
    reference_mean: float

    @property
    def excess(self) -> float:
        """Relative excess of the agent's mean TTLT over the reference's."""
        return self.agent_mean / self.reference_mean - 1.0

    def describe(self) -> str:
        if self.active:
            return (
                f"guardrail: the online agent's recent mean TTLT {self.agent_mean:.2f} s is "
                f"{self.excess:+.0%} against SageSched's {self.reference_mean:.2f} s on the same "
                "requests; placing with the fallback"
            )
        return (
            f"guardrail: recent mean TTLT back to {self.agent_mean:.2f} s "
            f"({self.excess:+.0%} against {self.reference_mean:.2f} s); the agent places again"
        )


class Guardrail:
    """Decides, from paired TTLTs of finished requests, whether the fallback should place.

    Args:
        margin: Trip when ``agent_mean > (1 + margin) * reference_mean``.
        release: Release when ``agent_mean <= (1 + release) * reference_mean``.
        window: Finished requests compared.
        min_requests: Finished requests needed before judging.
    """

    def __init__(
        self, margin: float, release: float, window: int, min_requests: int | None = None
    ) -> None:
        if release > margin:
            raise ValueError(f"release ({release}) must be <= margin ({margin})")
        self.margin = margin
        self.release = release
        self.min_requests = window if min_requests is None else min_requests
        self._pairs: deque[tuple[float, float]] = deque(maxlen=window)
        self._agent_sum = 0.0
        self._reference_sum = 0.0
        self.active = False
        self.finished = 0
        self.switches: list[Switch] = []

    def observe(self, agent_ttlt: float, reference_ttlt: float) -> Switch | None:
        """Add one finished request; returns the switch it caused, if any."""
        pairs = self._pairs
        if len(pairs) == pairs.maxlen:
            old_a, old_r = pairs[0]
            self._agent_sum -= old_a
            self._reference_sum -= old_r
        pairs.append((agent_ttlt, reference_ttlt))
        self._agent_sum += agent_ttlt
        self._reference_sum += reference_ttlt
        self.finished += 1
        if len(pairs) < self.min_requests or self._reference_sum <= 0:
            return None
        ratio = self._agent_sum / self._reference_sum
        if not self.active and ratio > 1.0 + self.margin:
            return self._switch(True)
        if self.active and ratio <= 1.0 + self.release:
            return self._switch(False)
        return None

    @property
    def ratio(self) -> float:
        """Agent over reference mean TTLT on the recent window (nan before any request)."""
        return self._agent_sum / self._reference_sum if self._reference_sum > 0 else float("nan")

    def _switch(self, active: bool) -> Switch:
        n = len(self._pairs)
        switch = Switch(self.finished, active, self._agent_sum / n, self._reference_sum / n)
        self.active = active
        self.switches.append(switch)
        return switch
