"""Per-request simulator state: one mutable record per request while it is served.

Kept apart from :class:`~sagerl.workload.request.Request` (immutable input) so an environment
can reset thousands of times over the same workload without copying it.
"""

from __future__ import annotations

import enum
from typing import Any

from sagerl.workload.request import Request

NEVER = 1 << 62
"""A token count no sequence reaches: "this key never changes with progress"."""


class SeqStatus(enum.IntEnum):
    """Lifecycle; the order means something: everything after ``PREEMPTED`` is finished."""

    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2
    FINISHED = 3


class Sequence:
    """A request inside a replica.

    Tokens follow vLLM V1's accounting: a sequence has ``num_tokens`` known tokens (prompt plus
    generated) of which ``num_computed`` have KV entries. A step hands it up to its token budget so
    ``num_computed`` catches up; when it does, the step emits one new token. There is no separate
    prefill phase: a recompute after preemption simply has many uncomputed tokens again.

    Attributes are public and plain for speed (this is the simulator's hottest object).
    """

    __slots__ = (
        "arrival",
        "blocks",
        "finish_time",
        "first_scheduled",
        "first_token_time",
        "num_computed",
        "num_generated",
        "num_preemptions",
        "output_tokens",
        "policy_state",
        "prediction",
        "prompt_tokens",
        "rekey_at",
        "replica",
        "request",
        "reserved",
        "scheduled_tokens",
        "sort_key",
        "status",
        "swapped",
    )

    def __init__(self, request: Request) -> None:
        self.request = request
        self.arrival = request.arrival
        self.prompt_tokens = request.prompt_tokens
        self.output_tokens = request.output_tokens
        self.num_computed = 0
        self.num_generated = 0
        self.blocks = 0
        self.scheduled_tokens = 0
        self.status = SeqStatus.WAITING
        self.swapped = False
        self.replica = -1
        self.num_preemptions = 0
        self.first_scheduled = -1.0
        self.first_token_time = -1.0
        self.finish_time = -1.0
        self.sort_key: Any = None
        # Predicted output-length distribution (a sagerl.predict LengthDistribution) when the
        # simulation has a predictor; ordering policies read it, never output_tokens.
        self.prediction: Any = None
        # Free slot for an ordering policy's per-sequence cache (e.g. a Gittins rank).
        self.policy_state: Any = None
        # Generated-token count at which the ordering key must be recomputed (policies with
        # ``progress_keys``; see OrderingPolicy.next_rekey). Set by the replica.
        self.rekey_at = NEVER
        # KV blocks reserved for it while running (SchedulerConfig.reserve_quantile; else 0).
        self.reserved = 0

    @property
    def id(self) -> int:
        return self.request.id

    @property
    def num_tokens(self) -> int:
        """Tokens known so far: prompt plus generated."""
        return self.prompt_tokens + self.num_generated

    @property
    def remaining_output(self) -> int:
        """True output tokens still to generate (simulator-only knowledge)."""
        return self.output_tokens - self.num_generated

    def __repr__(self) -> str:
        return (
            f"Sequence(id={self.id}, status={self.status.name}, computed={self.num_computed}, "
            f"generated={self.num_generated}/{self.output_tokens})"
        )
