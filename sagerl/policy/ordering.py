"""Ordering policies: which sequences inside one replica run first.

An ordering policy gives every sequence a sort key; smaller runs first. The replica keeps its
waiting queue in key order, admits from the front, and, when KV blocks run out, preempts the
running sequence with the largest key (for FCFS: the latest arrival, as vLLM does).

Keys are computed when a sequence is queued (on arrival and after a preemption). Policies whose
keys change while a sequence waits (ageing, re-ranking on progress) set ``dynamic = True``; the
replica then re-keys its queues before each scheduling decision and skips the multi-step fast path
while anything waits.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sagerl.registry import Registry
from sagerl.sim.sequence import Sequence

ORDERING: Registry[type[OrderingPolicy]] = Registry("ordering policy")


class OrderingPolicy:
    """Base class: one sort key per sequence (smaller first)."""

    name: ClassVar[str] = ""
    dynamic: ClassVar[bool] = False

    def key(self, seq: Sequence, now: float) -> Any:
        """Sort key of ``seq`` at time ``now`` (s); smaller is served first."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget per-run state (called when a simulation starts)."""


@ORDERING.register("fcfs")
class FCFS(OrderingPolicy):
    """First come, first served: vLLM's default. Ties break by request id."""

    name = "fcfs"

    def key(self, seq: Sequence, now: float) -> tuple[float, int]:
        return (seq.arrival, seq.request.id)


def make_ordering(name: str, **kwargs: Any) -> OrderingPolicy:
    """Instantiate the ordering policy registered as ``name``."""
    return ORDERING.get(name)(**kwargs)
