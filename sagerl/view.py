"""What a placement decision may see: a read-only snapshot of each replica.

The simulator and the live router both fill these views, so a placement policy (analytic or
learned) runs unchanged in both. Policies must not keep references to views across decisions.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import accumulate


@dataclass(frozen=True, slots=True)
class QueueProfile:
    """The requests on one replica ordered by rank, with prefix sums of their remaining work.

    What SageSched placement needs to price a new request on a replica in O(log Q): where its rank
    would fall (binary search), the work ranked ahead of it (a prefix sum) and how many requests
    it would delay (the count behind it). Ranks are Gittins ranks and work expected remaining
    hybrid cost, both in token² units (:mod:`sagerl.cost`); ties go to the requests already there.

    Attributes:
        ranks: Ranks in ascending order.
        prefix_work: ``prefix_work[k]`` = total work of the first ``k`` requests
            (``len(ranks) + 1`` entries, starting at 0).
    """

    ranks: list[float] = field(default_factory=list)
    prefix_work: list[float] = field(default_factory=lambda: [0.0])

    @classmethod
    def build(cls, pairs: Iterable[tuple[float, float]]) -> QueueProfile:
        """From ``(rank, work)`` pairs in any order (O(Q log Q))."""
        ordered = sorted(pairs)
        # accumulate adds left to right from 0.0, exactly as a running total would.
        prefix = list(accumulate([w for _, w in ordered], initial=0.0))
        return cls([r for r, _ in ordered], prefix)

    def __len__(self) -> int:
        return len(self.ranks)

    @property
    def total_work(self) -> float:
        return self.prefix_work[-1]

    def split(self, rank: float) -> tuple[float, int]:
        """``(work ranked at or before rank, number ranked strictly after)`` in O(log Q)."""
        k = bisect.bisect_right(self.ranks, rank)
        return self.prefix_work[k], len(self.ranks) - k


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """Point-in-time state of one replica.

    Attributes:
        index: Position of the replica in the cluster (the placement action).
        gpu: GPU kind name (e.g. ``"A100-80GB"``).
        model: Model name served by the replica.
        num_running: Sequences in the running batch.
        num_waiting: Sequences queued (new or preempted).
        kv_blocks_used: KV-cache blocks allocated.
        kv_blocks_total: KV-cache capacity in blocks.
        block_size: Tokens per KV block.
        decode_tokens_per_s: Nominal decode speed of one sequence (1 / batch-1 decode step
            time), a static speed hint for heterogeneous clusters.
        healthy: False when the replica is down; placement must skip it.
        cost_rate: Hybrid cost (token²) the replica processes per second when its KV cache is
            nearly full: the speed that turns queued work into time (0 when unknown).
        queue_profile: Returns the replica's :class:`QueueProfile` (built lazily on the first
            call, so views stay cheap for policies that never ask), or ``None`` when unknown.
    """

    index: int
    gpu: str
    model: str
    num_running: int
    num_waiting: int
    kv_blocks_used: int
    kv_blocks_total: int
    block_size: int
    decode_tokens_per_s: float
    healthy: bool = True
    cost_rate: float = 0.0
    queue_profile: Callable[[], QueueProfile] | None = None

    @property
    def outstanding(self) -> int:
        """Requests accepted and not finished (running + waiting)."""
        return self.num_running + self.num_waiting

    @property
    def kv_usage(self) -> float:
        """Fraction of KV blocks allocated, in [0, 1]."""
        return self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total else 1.0
