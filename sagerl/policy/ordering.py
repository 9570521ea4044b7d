"""Ordering policies: which sequences inside one replica run first.

An ordering policy gives every sequence a sort key; smaller runs first. The replica keeps its
waiting queue in key order, admits from the front, and, when KV blocks run out, preempts the
running sequence with the largest key (for FCFS: the latest arrival, as vLLM does).

When keys are computed (the replica calls :meth:`OrderingPolicy.key`):

* on queueing (arrival, and again after a preemption);
* ``progress_keys``: for a running sequence, when its generated-token count reaches the value
  :meth:`OrderingPolicy.next_rekey` returned for it (Gittins refresh at bucket boundaries,
  MLFQ demotion, TRAIL's re-prediction). The fast path ends its multi-step segments at the
  earliest such count, so keys change at the same iteration in both modes and nothing is
  re-keyed in between;
* ``rekey_period_s``: every sequence, at the first iteration boundary at least this long after
  the previous re-key (keys that change with waiting time, e.g. a starvation guard). Segments
  end there too;
* ``dynamic`` (legacy, the bluntest): everything before every iteration, and no fast path while
  anything waits.

Memory-pressure preemption: when a running sequence needs a KV block and none is free, the replica
preempts :meth:`OrderingPolicy.memory_victim` (vLLM's rule: the worst key; the generic option
``victim: least-computed`` picks the sequence with the fewest computed tokens instead).

Preemption for rank (``preempt_for_rank``): when the best waiting sequence cannot be admitted
(KV blocks or the running cap) and :meth:`OrderingPolicy.rank_victim` names a running sequence
it should displace, that sequence is preempted (recompute or swap, per the replica's config) and
goes back to the waiting queue, as vLLM's priority scheduling does. Policies add hysteresis in
:meth:`OrderingPolicy.beats` so ranks do not thrash.

Policies must never read ``Sequence.output_tokens`` (the true length), except oracles.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from sagerl.errors import ConfigError, did_you_mean
from sagerl.registry import Registry
from sagerl.sim.sequence import NEVER, Sequence

ORDERING: Registry[type[OrderingPolicy]] = Registry("ordering policy")


class OrderingPolicy:
    """Base class: one sort key per sequence (smaller first).

    Class attributes a subclass may set:
        dynamic: Legacy: re-key everything before every iteration, no fast path while waiting.
        progress_keys: Keys change only at generated-token counts given by :meth:`next_rekey`.

    Instance attributes (set in ``__init__`` from options):
        rekey_period_s: Re-key every sequence at most this often, s (``None``: never).
        preempt_for_rank: Let a blocked waiting sequence preempt a worse running one.
        victim: Memory-pressure victim rule, ``priority`` or ``least-computed``.
    """

    name: ClassVar[str] = ""
    dynamic: ClassVar[bool] = False
    progress_keys: ClassVar[bool] = False
    oracle: ClassVar[bool] = False
    """True for bounds that read the true output length (excluded from "best policy")."""

    rekey_period_s: float | None = None
    preempt_for_rank: bool = False
    victim: str = "priority"
    """Memory-pressure victim rule (the generic ``victim`` option of :func:`make_ordering`)."""

    def key(self, seq: Sequence, now: float) -> Any:
        """Sort key of ``seq`` at time ``now`` (s); smaller is served first."""
        raise NotImplementedError

    def next_rekey(self, seq: Sequence) -> int:
        """Generated-token count (> ``seq.num_generated``) at which ``seq``'s key next changes.

        Only called when ``progress_keys`` is set, right after :meth:`key`. Return
        :data:`~sagerl.sim.sequence.NEVER` when it no longer changes.
        """
        return NEVER

    def beats(self, challenger: Sequence, incumbent: Sequence) -> bool:
        """Whether waiting ``challenger`` should displace running ``incumbent`` (keys are fresh)."""
        return bool(challenger.sort_key < incumbent.sort_key)

    def rank_victim(self, challenger: Sequence, running: list[Sequence]) -> Sequence | None:
        """The running sequence a blocked ``challenger`` preempts, or ``None`` (no preemption).

        Default: the worst-keyed running sequence, if ``challenger`` :meth:`beats` it.
        """
        if not running:
            return None
        victim = max(running, key=_sort_key)
        return victim if self.beats(challenger, victim) else None

    def memory_victim(self, running: list[Sequence]) -> Sequence:
        """The running sequence to preempt when the KV cache is full.

        ``priority`` (vLLM's rule, the default): the worst key. ``least-computed``: the one with
        the fewest computed tokens (the least work thrown away and recomputed), worst key among
        ties.
        """
        if self.victim == "least-computed":
            return min(running, key=_least_computed)
        return max(running, key=_sort_key)

    def profile(self, seq: Sequence) -> tuple[float, float]:
        """``(rank, expected remaining work)`` of ``seq`` for placement decisions.

        The rank is a Gittins rank and the work an expected remaining cost, both in hybrid-cost
        units (token²), so a placement policy can compare a new request with the queue of any
        replica. The default computes them from the prediction; SageSched returns its cache.
        """
        from sagerl.policy.sagesched import hybrid_profile

        return hybrid_profile(seq)

    def reset(self) -> None:
        """Forget per-run state (called when a simulation starts)."""


def _sort_key(seq: Sequence) -> Any:
    return seq.sort_key


class _Reversed:
    """Wraps a key so that larger keys sort first (for min() with a descending tie-break)."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __lt__(self, other: _Reversed) -> bool:
        return bool(other.key < self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and bool(self.key == other.key)


def _least_computed(seq: Sequence) -> tuple[int, _Reversed]:
    return (seq.num_computed, _Reversed(seq.sort_key))


@ORDERING.register("fcfs")
class FCFS(OrderingPolicy):
    """First come, first served: vLLM's default. Ties break by request id."""

    name = "fcfs"

    def key(self, seq: Sequence, now: float) -> tuple[float, int]:
        return (seq.arrival, seq.request.id)


def make_ordering(name: str, **kwargs: Any) -> OrderingPolicy:
    """Instantiate the ordering policy registered as ``name`` with its options.

    Besides the policy's own options, every policy takes ``victim`` (``priority`` or
    ``least-computed``): the memory-pressure preemption rule (:meth:`OrderingPolicy.memory_victim`).

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the valid names).
        ConfigError: an option is unknown or invalid for this policy.
    """
    cls = ORDERING.get(name)
    options = dict(kwargs)
    victim = options.pop("victim", "priority")
    if victim not in VICTIM_RULES:
        raise ConfigError(
            f"ordering policy '{name}': victim must be one of {', '.join(VICTIM_RULES)}; "
            f"got {victim!r}"
        )
    check_options("ordering policy", name, cls, options)
    policy = cls(**options)
    policy.victim = victim
    return policy


VICTIM_RULES = ("priority", "least-computed")
"""Values of the generic ``victim`` option every ordering policy takes (see memory_victim)."""


def check_options(kind: str, name: str, cls: type, options: dict[str, Any]) -> None:
    """Raise a :class:`ConfigError` naming the first option ``cls.__init__`` does not take."""
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")]
    for key in options:
        if key not in params:
            valid = ", ".join(params) or "none"
            raise ConfigError(
                f"{kind} '{name}': unknown option '{key}'{did_you_mean(key, params)}; "
                f"valid: {valid}"
            )
