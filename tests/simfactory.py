"""Factories for simulator tests: a tiny affine step timer and hand-built clusters."""

from __future__ import annotations

from collections.abc import Sequence as Seq

import numpy as np

from sagerl.policy import make_ordering, make_placement
from sagerl.sim import Replica, SchedulerConfig, Simulation
from sagerl.workload.request import Request


class AffineTimer:
    """Step time = overhead + per_token * tokens + per_pair * pairs + per_kv * kv tokens."""

    def __init__(
        self,
        overhead: float = 5e-3,
        per_token: float = 2e-5,
        per_pair: float = 1e-8,
        per_kv: float = 1e-7,
    ) -> None:
        self.overhead, self.per_token, self.per_pair, self.per_kv = (
            overhead,
            per_token,
            per_pair,
            per_kv,
        )

    def step_time(
        self, num_tokens: int, num_seqs: int, prefill_attn_pairs: float, decode_kv_tokens: int
    ) -> float:
        return (
            self.overhead
            + self.per_token * num_tokens
            + self.per_pair * prefill_attn_pairs
            + self.per_kv * decode_kv_tokens
        )

    def decode_coefficients(self, num_seqs: int) -> tuple[float, float]:
        return self.overhead + self.per_token * num_seqs, self.per_kv


def create_cluster(
    num_replicas: int = 2,
    kv_blocks: int | Seq[int] = 400,
    placement: str = "round-robin",
    ordering: str = "fcfs",
    seed: int = 0,
    timers: Seq[AffineTimer] | None = None,
    **scheduler: object,
) -> Simulation:
    cfg = SchedulerConfig(**scheduler)
    blocks = [kv_blocks] * num_replicas if isinstance(kv_blocks, int) else list(kv_blocks)
    replicas = [
        Replica(
            i,
            (timers[i] if timers else AffineTimer()),
            blocks[i],
            cfg,
            make_ordering(ordering),
            gpu="test",
            model="test",
            kv_bytes_per_block=1e6,
        )
        for i in range(num_replicas)
    ]
    return Simulation(replicas, make_placement(placement, seed=seed))


def create_requests(
    n: int = 50, rate: float = 20.0, seed: int = 0, max_prompt: int = 600, max_output: int = 300
) -> list[Request]:
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1.0 / rate, n))
    return [
        Request(
            id=i,
            arrival=float(times[i]),
            prompt_tokens=int(rng.integers(1, max_prompt)),
            output_tokens=int(rng.integers(1, max_output)),
            source="synthetic",
        )
        for i in range(n)
    ]
