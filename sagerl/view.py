"""What a placement decision may see: a read-only snapshot of each replica.

The simulator and the live router both fill these views, so a placement policy (analytic or
learned) runs unchanged in both. Policies must not keep references to views across decisions.
"""

from __future__ import annotations

from dataclasses import dataclass


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

    @property
    def outstanding(self) -> int:
        """Requests accepted and not finished (running + waiting)."""
        return self.num_running + self.num_waiting

    @property
    def kv_usage(self) -> float:
        """Fraction of KV blocks allocated, in [0, 1]."""
        return self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total else 1.0
