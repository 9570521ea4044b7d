"""One serving replica, scheduled as vLLM's V1 engine does it.

The algorithm of one iteration (``_plan_step``), in one paragraph: there is no separate prefill or
decode phase. Every sequence has ``num_tokens`` known tokens of which ``num_computed`` have KV
entries; an iteration hands out a token budget so ``num_computed`` catches up, and a sequence that
catches up emits one new token. Running sequences are served first, in admission order; each takes
``min(uncomputed, budget left)`` tokens (chunked prefill). When the KV cache has too few free
blocks for a running sequence, the ordering's ``memory_victim`` (by default the running sequence
with the worst ordering key, as vLLM does) is preempted
(recompute: its blocks are freed and ``num_computed`` reset; swap: its blocks move to host memory)
and the allocation retried. Waiting sequences are admitted in ordering-key order, only if nothing
was preempted in this iteration, while the budget, the running cap and the free blocks allow;
admission stops at the first sequence that does not fit (no head-of-line skipping).

Admission by reservation (``SchedulerConfig.reserve_quantile``, off by default; S3-style): a
waiting sequence is admitted only if the blocks for its prompt plus that quantile of its predicted
output length, added to what the running sequences reserved, fit the cache (a sequence is always
admitted into an empty batch). Reservations are released when a sequence finishes or is
preempted, so a gated head stays gated until then, which keeps the fast path's invariant.

Fast path (``SchedulerConfig.fast_path``): when an iteration is pure decode for every running
sequence, nothing was preempted and no waiting sequence can be admitted, the following iterations
are identical in shape until (a) a sequence finishes, (b) the KV cache runs out, or (c) a new
request arrives here. The replica then plans a *segment* of ``k`` iterations at once: step times
are affine in the KV tokens read (``StepTimer`` contract), the context grows by one token per
sequence per step, so the segment's duration, the KV block-time integral, and the block count at
any instant are closed forms. An arrival truncates the segment to the iterations that started
before it (``truncate``). Results equal step-by-step mode up to float rounding (tested).
Block accounting stays O(log B) per plan, view and truncation: the replica's free blocks count
the whole segment from its start, the blocks reached by any iteration follow from the sorted
``(-computed) % block_size`` offsets (:func:`batch_blocks_delta`), and each sequence's own
``blocks`` is brought up to date when the segment completes.

Cost per segment is O(B log B) for B running sequences; per single step O(B + admitted).

Keys that change (see :mod:`sagerl.policy.ordering`): a ``progress_keys`` policy names, per
sequence, the generated-token count at which its key changes (``Sequence.rekey_at``); segments
end at the earliest one over the running batch and ``schedule`` re-keys exactly those sequences.
A ``rekey_period_s`` policy re-keys everything at the first iteration boundary at least that long
after the previous re-key; segments end there too. Both keep fast and step mode identical.

Preemption for rank (``OrderingPolicy.preempt_for_rank``): when the best waiting sequence cannot
be admitted for lack of KV blocks or a running slot, the policy may name a worse running sequence
to preempt (vLLM's priority-scheduling preemption); it goes back to waiting (recompute or swap).
A sequence preempted for rank is not re-admitted in the same iteration.

Placement support: :meth:`Replica.queue_profile` returns the queue's ranks, sorted, with prefix
sums of expected remaining work. It is rebuilt lazily, only when a placement policy asks and a
sequence was queued, finished or re-keyed since; the hot path pays one integer increment.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from sagerl.cost import cost_rate
from sagerl.errors import SagerlError
from sagerl.sim.config import SchedulerConfig
from sagerl.sim.sequence import NEVER, SeqStatus, Sequence
from sagerl.view import QueueProfile, ReplicaView

if TYPE_CHECKING:
    from sagerl.policy.ordering import OrderingPolicy


class StepTimer(Protocol):
    """What the replica needs from a step-time model (see :mod:`sagerl.hardware`)."""

    def step_time(
        self, num_tokens: int, num_seqs: int, prefill_attn_pairs: float, decode_kv_tokens: int
    ) -> float: ...

    def decode_coefficients(self, num_seqs: int) -> tuple[float, float]: ...


@dataclass(slots=True)
class StepPlan:
    """The iteration (or fast-path segment of ``k`` identical-shape decode iterations) in flight.

    Attributes:
        start: Start time of the first iteration, s.
        k: Iterations in the plan (1 unless it is a fast-path segment).
        a: Duration of the first iteration, s.
        b: Growth of the duration per further iteration, s (0 for single steps).
        scheduled: ``(sequence, tokens)`` per scheduled sequence in the first iteration.
        computed0: ``num_computed`` of each scheduled sequence at the plan's start (segments).
        blocks_during: Blocks allocated during the (single) iteration.
        segment: True for a fast-path segment (even one truncated to a single iteration).
        offsets: Segments: ``(-c) % block_size`` for each ``computed0`` entry, sorted; the
            block count of the whole batch after any number of iterations follows from it in
            O(log B) (:func:`batch_blocks_delta`), so views need no pass over the batch.
        rekey_gap: Segments: the fewest generated tokens any sequence had left before its key
            changes (``rekey_at - num_generated``; ``NEVER`` without progress keys). A segment
            that ends short of it re-keys nobody, so the next ``schedule`` skips that pass.
        rekey_next: Segments: the sequences at that fewest count, in batch order: the only ones
            a segment that runs its full length (``k == rekey_gap``) brings to their key change.
        kv0: Segments: KV tokens read by iteration 0 (``sum(computed0) + len(computed0)``).
    """

    start: float
    k: int
    a: float
    b: float
    scheduled: list[tuple[Sequence, int]]
    computed0: list[int] = field(default_factory=list)
    blocks_during: int = 0
    segment: bool = False
    offsets: list[int] = field(default_factory=list)
    rekey_gap: int = NEVER
    rekey_next: list[Sequence] = field(default_factory=list)
    kv0: int = 0

    def elapsed(self, steps: int) -> float:
        """Duration of the first ``steps`` iterations, s (closed form of the arithmetic series)."""
        return self.a * steps + self.b * (steps * (steps - 1) / 2)

    @property
    def end(self) -> float:
        return self.start + self.elapsed(self.k)

    def starts_before(self, t: float) -> int:
        """How many of the plan's iterations start strictly before time ``t``."""
        delta = t - self.start
        if delta <= 0:
            return 0
        a, b = self.a, self.b
        if b <= 0:
            j = int(delta / a) if a > 0 else self.k
        else:
            # Largest real j with a*j + b*j*(j-1)/2 = delta, then fixed up exactly below.
            half_b = b / 2
            lin = a - half_b
            j = int((-lin + math.sqrt(lin * lin + 4 * half_b * delta)) / (2 * half_b))
        last = self.k - 1
        j = max(0, min(j, last))
        while j > 0 and self.elapsed(j) >= delta:
            j -= 1
        while j < last and self.elapsed(j + 1) < delta:
            j += 1
        return j + 1


def _blocks(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


def batch_blocks_delta(offsets: list[int], x0: int, x1: int, bs: int) -> int:
    """``sum_i ceil((c_i + x1) / bs) - ceil((c_i + x0) / bs)`` for ``x0, x1 >= 0``, given the
    sorted ``offsets`` ``(-c_i) % bs``, in O(log B) instead of a pass over the batch.

    With ``o_i = (-c_i) % bs``, ``c_i + o_i`` is a multiple of ``bs``, and for ``x - 1 = Q*bs + R``
    (``0 <= R < bs``, so ``Q = -1`` for ``x = 0``):
    ``ceil((c_i + x) / bs) = (c_i + o_i) / bs + Q + 1 - [o_i > R]``. Summed, the ``c_i`` part
    cancels in the difference and ``#{o_i <= R}`` is a binary search. Integer arithmetic
    throughout, so it equals the per-sequence sum exactly (tested).
    """
    q1, r1 = divmod(x1 - 1, bs)
    q0, r0 = divmod(x0 - 1, bs)
    return len(offsets) * (q1 - q0) + bisect_right(offsets, r1) - bisect_right(offsets, r0)


def segment_block_time(computed0: list[int], k: int, a: float, b: float, bs: int) -> float:
    """Sum over the segment's iterations j of (blocks allocated during j) × (duration of j).

    During iteration j a decode sequence that started with ``c`` computed tokens holds
    ``ceil((c + j + 1) / bs)`` blocks; iteration j lasts ``a + b*j``. With ``y0 = c + bs`` that is
    ``floor((y0 + j)/bs)``, and the per-sequence sum is
    ``(a - b*y0) * dF + b * dG`` where ``dF``, ``dG`` are differences of the floor sums
    ``F(n) = sum_{y<n} floor(y/m)`` and ``G(n) = sum_{y<n} y*floor(y/m)``. The integer parts are
    accumulated exactly and combined with ``a`` and ``b`` once.
    """
    # NOTE: closed forms, written out inline (this loop is the simulator's hottest): for
    # n = q*m + r, F(n) = m*q*(q-1)/2 + r*q and
    # G(n) = m*m*(q-1)*q*(2q-1)/6 + m*(m-1)/2 * q*(q-1)/2 + q*(r*q*m + r*(r-1)/2).
    m = bs
    mm = m * m
    half = m * (m - 1) // 2
    sum_f = sum_yf = sum_g = 0
    for c in computed0:
        y0 = c + m
        q0, r0 = divmod(y0, m)
        q1, r1 = divmod(y0 + k, m)
        t0 = q0 * (q0 - 1)
        t1 = q1 * (q1 - 1)
        df = (m * t1 // 2 + r1 * q1) - (m * t0 // 2 + r0 * q0)
        g1 = (
            mm * t1 * (2 * q1 - 1) // 6 + half * (t1 // 2) + q1 * (r1 * q1 * m + r1 * (r1 - 1) // 2)
        )
        g0 = (
            mm * t0 * (2 * q0 - 1) // 6 + half * (t0 // 2) + q0 * (r0 * q0 * m + r0 * (r0 - 1) // 2)
        )
        sum_f += df
        sum_yf += y0 * df
        sum_g += g1 - g0
    return a * sum_f + b * (sum_g - sum_yf)


class Replica:
    """A model replica on one or more GPUs with continuous batching and a paged KV cache."""

    def __init__(
        self,
        index: int,
        timer: StepTimer,
        kv_blocks_total: int,
        config: SchedulerConfig,
        ordering: OrderingPolicy,
        *,
        gpu: str = "",
        model: str = "",
        kv_bytes_per_block: float = 0.0,
    ) -> None:
        if kv_blocks_total <= 0:
            raise SagerlError(f"replica {index}: KV cache has no blocks")
        self.index = index
        self.timer = timer
        self.config = config
        self.ordering = ordering
        self.gpu = gpu
        self.model = model
        self.block_size = config.block_size
        self.kv_blocks_total = kv_blocks_total
        self.max_tokens = kv_blocks_total * config.block_size
        self.swap_s_per_block = (
            kv_bytes_per_block / (config.swap_bandwidth_gb_s * 1e9) if kv_bytes_per_block else 0.0
        )
        base, per_kv = timer.decode_coefficients(1)
        self.decode_tokens_per_s = 1.0 / (base + per_kv * 1024)
        # Hybrid cost processed per second with the KV cache 90% full, contexts of ~512 tokens:
        # a static speed hint for placement (see sagerl.cost.cost_rate).
        kv_full = 0.9 * self.max_tokens
        batch = max(1, min(config.max_num_seqs, int(kv_full // 512)))
        self.cost_rate = cost_rate(timer.decode_coefficients(batch), kv_full)
        self.track_block_time = True
        """Accumulate :attr:`block_time` (the KV memory-time integral behind the utilisation
        metric). A caller that never reads it (the RL environment) turns it off: on long decode
        segments its closed form is the largest single cost of a step."""
        self.reset()

    def reset(self) -> None:
        """Empty the replica (a new simulation)."""
        self.free_blocks = self.kv_blocks_total
        self.running: list[Sequence] = []
        self.waiting: list[tuple[object, int, Sequence]] = []  # heap of (key, tiebreak, seq)
        self._tiebreak = 0
        self.plan: StepPlan | None = None
        self.healthy = True
        # Bumped when a sequence is queued, finishes or is re-keyed (invalidates the profile).
        self._version = 0
        self._profile: QueueProfile | None = None
        self._profile_version = -1
        self._next_period_rekey = 0.0  # time of the next rekey_period_s re-key, s
        # False once _rekey_progressed ran and no running sequence can have reached its rekey_at
        # since (a segment that ended short of its plan's rekey_gap generated too few tokens).
        self._rekey_due = True
        # When due after a segment: the only sequences that can have reached it (None: any).
        self._rekey_only: list[Sequence] | None = None
        # decode_coefficients(num) memoised per batch size for the current timer (pure function
        # of both; a cluster event may swap the timer, which empties the memo).
        self._coef_timer: StepTimer | None = None
        self._coef: dict[int, tuple[float, float]] = {}
        # Statistics.
        self.busy_time = 0.0
        self.block_time = 0.0
        self.peak_blocks = 0
        self.num_steps = 0
        self.num_plans = 0
        self.num_segments = 0
        self.num_preemptions = 0
        # Blocks reserved by the running sequences (SchedulerConfig.reserve_quantile).
        self.reserved_blocks = 0
        # Simulator-only knowledge for privileged observations (envs.critic): over the
        # sequences held (running and waiting), the true output tokens still to come,
        # sum(O - g), and twice their hybrid cost still to come,
        # sum((O - g) * (O + g + 2 I)) = 2 * sum((O - g) * ((O - g) / 2 + I + g)). Exact integers,
        # updated in O(1) per plan, so a reader needs no pass over the sequences. A finished
        # sequence (g = O) contributes 0 to both.
        self.true_tokens_left = 0
        self.true_cost2_left = 0

    # ------------------------------------------------------------------ queue
    def add(self, seq: Sequence, now: float) -> None:
        """Queue a newly placed sequence."""
        if seq.prompt_tokens + seq.output_tokens > self.max_tokens:
            raise SagerlError(
                f"request {seq.id} needs {seq.prompt_tokens + seq.output_tokens} tokens of KV "
                f"cache; replica {self.index} holds {self.max_tokens}"
            )
        seq.replica = self.index
        seq.status = SeqStatus.WAITING
        left = seq.output_tokens - seq.num_generated
        self.true_tokens_left += left
        self.true_cost2_left += left * (
            seq.output_tokens + seq.num_generated + 2 * seq.prompt_tokens
        )
        self._enqueue(seq, now)

    def _enqueue(self, seq: Sequence, now: float) -> None:
        ordering = self.ordering
        seq.sort_key = ordering.key(seq, now)
        if ordering.progress_keys:
            seq.rekey_at = ordering.next_rekey(seq)
        self._tiebreak += 1
        self._version += 1
        heapq.heappush(self.waiting, (seq.sort_key, self._tiebreak, seq))

    def _rekey(self, now: float) -> None:
        """Recompute every key (dynamic or periodic orderings) and restore the heap."""
        ordering = self.ordering
        progress = ordering.progress_keys
        for seq in self.running:
            seq.sort_key = ordering.key(seq, now)
            if progress:
                seq.rekey_at = ordering.next_rekey(seq)
        self.waiting = [(ordering.key(s, now), t, s) for _, t, s in self.waiting]
        for key, _, s in self.waiting:
            s.sort_key = key
            if progress:
                s.rekey_at = ordering.next_rekey(s)
        heapq.heapify(self.waiting)
        self._version += 1

    def _rekey_progressed(self, now: float, only: list[Sequence] | None = None) -> None:
        """Re-key the running sequences whose generated count reached their ``rekey_at``.

        Waiting sequences generate nothing, so the keys they got when queued stay valid.
        ``only``: the candidates, a subset of the running ones in their order (the rest are
        known not to have reached it); finished ones among them are skipped.
        """
        ordering = self.ordering
        changed = False
        running_status = SeqStatus.RUNNING
        for seq in self.running if only is None else only:
            if seq.num_generated >= seq.rekey_at and seq.status is running_status:
                seq.sort_key = ordering.key(seq, now)
                seq.rekey_at = ordering.next_rekey(seq)
                changed = True
        if changed:
            self._version += 1

    @property
    def idle(self) -> bool:
        return self.plan is None

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    # -------------------------------------------------------------- schedule
    def schedule(self, now: float) -> float | None:
        """Plan the next iteration (or fast-path segment) starting at ``now``.

        Returns:
            Its end time in seconds, or ``None`` when there is nothing to run.
        """
        if not (self.running or self.waiting):
            self.plan = None
            return None
        ordering = self.ordering
        if ordering.dynamic:
            self._rekey(now)
        elif ordering.rekey_period_s is not None and now >= self._next_period_rekey:
            self._rekey(now)
            self._next_period_rekey = now + ordering.rekey_period_s
        elif ordering.progress_keys and self._rekey_due:
            self._rekey_progressed(now, self._rekey_only)
            self._rekey_due = False
            self._rekey_only = None
        plan = self._plan_step(now)
        if plan is None:
            self.plan = None
            return None
        self.plan = plan
        return plan.end

    def _reservation(self, seq: Sequence, q: float) -> int:
        """KV blocks to reserve for ``seq`` (``SchedulerConfig.reserve_quantile``): its prompt
        plus the ``q`` quantile of its predicted output length, and never less than the tokens
        it already holds (a preempted sequence keeps its generated tokens); without a
        prediction, what it holds now plus one token."""
        known = seq.prompt_tokens + seq.num_generated + 1
        pred = seq.prediction
        if pred is not None:
            known = max(known, seq.prompt_tokens + math.ceil(pred.quantile(q)))
        return -(-known // self.block_size)

    def _preempt(self, victim: Sequence, now: float) -> float:
        """Preempt ``victim``; returns the swap-out time it costs (0 for recompute), s."""
        self.running.remove(victim)
        swap_cost = 0.0
        if self.config.preemption_mode == "swap" and victim.num_computed > 0:
            victim.swapped = True
            swap_cost = victim.blocks * self.swap_s_per_block
        else:
            victim.num_computed = 0
        self.free_blocks += victim.blocks
        victim.blocks = 0
        self.reserved_blocks -= victim.reserved
        victim.reserved = 0
        victim.num_preemptions += 1
        self.num_preemptions += 1
        self._enqueue(victim, now)
        victim.status = SeqStatus.PREEMPTED
        return swap_cost

    def _plan_step(self, now: float) -> StepPlan | None:
        cfg = self.config
        tried = False
        if cfg.fast_path and not self.waiting and self.running:
            # Common case (a segment ended on a completion or a truncation): if everything is
            # decoding, plan the next segment directly, skipping the general iteration.
            segment = self._plan_segment(now, None)
            if segment is not None:
                return segment
            # NOTE: then the general iteration below cannot end in a segment either: with
            # nothing waiting it schedules the same batch (or preempts), every running sequence
            # holds ceil(num_computed / block) blocks at a plan's start, so the retry would see
            # the same tokens left, rekey gaps and free blocks and refuse again.
            tried = True
        bs = self.block_size
        budget = cfg.max_num_batched_tokens
        scheduled: dict[Sequence, int] = {}
        preempted = False
        extra_time = 0.0
        # The batch's shape (tokens, prefill attention pairs, decode KV tokens) is summed while
        # scheduling, in the order of ``scheduled``; if a preemption takes a sequence back out,
        # it is summed again below from what remains (the same order, so the same floats).
        num_tokens = 0
        pairs = 0.0
        kv_tokens = 0
        unscheduled = False

        running_status = SeqStatus.RUNNING
        for seq in list(self.running):
            if seq.status is not running_status:
                continue  # preempted earlier in this iteration
            if budget <= 0:
                break
            c = seq.num_computed
            known = seq.prompt_tokens + seq.num_generated
            n = known - c
            if n > budget:
                n = budget
            need = -(-(c + n) // bs) - seq.blocks
            if need > self.free_blocks:
                while need > self.free_blocks:
                    victim = self.ordering.memory_victim(self.running)
                    if victim in scheduled:
                        budget += scheduled.pop(victim)
                        unscheduled = True
                    extra_time += self._preempt(victim, now)
                    preempted = True
                    if victim is seq:
                        break
                if seq.status is not running_status:
                    continue
            self.free_blocks -= need
            seq.blocks += need
            scheduled[seq] = n
            budget -= n
            num_tokens += n
            if n == 1 and c + 1 == known:
                kv_tokens += c + 1
            else:
                pairs += n * (c + (n + 1) / 2)

        rank_preempted: list[Sequence] = []
        if not preempted:
            waiting = self.waiting
            for_rank = self.ordering.preempt_for_rank
            reserve_q = cfg.reserve_quantile
            while waiting and budget > 0:
                seq = waiting[0][2]
                uncomputed = seq.num_tokens - seq.num_computed
                n = min(uncomputed, budget)
                if n < uncomputed and not cfg.enable_chunked_prefill:
                    break
                reserve = 0
                if reserve_q is not None:
                    reserve = self._reservation(seq, reserve_q)
                    if self.running and self.reserved_blocks + reserve > self.kv_blocks_total:
                        break  # waits for a completion (reservations change only then)
                need = _blocks(seq.num_computed + n, bs)
                if need > self.free_blocks or len(self.running) >= cfg.max_num_seqs:
                    # Blocked. Preemption for rank: displace a worse running sequence, retry.
                    if not for_rank or seq in rank_preempted:
                        break
                    victim = self.ordering.rank_victim(seq, self.running)
                    if victim is None:
                        break
                    if victim in scheduled:
                        budget += scheduled.pop(victim)
                        unscheduled = True
                    extra_time += self._preempt(victim, now)
                    rank_preempted.append(victim)
                    continue
                heapq.heappop(waiting)
                if seq.swapped:
                    extra_time += _blocks(seq.num_computed, bs) * self.swap_s_per_block
                    seq.swapped = False
                self.free_blocks -= need
                seq.blocks = need
                seq.reserved = reserve
                self.reserved_blocks += reserve
                seq.status = SeqStatus.RUNNING
                if seq.first_scheduled < 0:
                    seq.first_scheduled = now
                self.running.append(seq)
                scheduled[seq] = n
                budget -= n
                num_tokens += n
                c = seq.num_computed
                if n == 1 and c + 1 == seq.prompt_tokens + seq.num_generated:
                    kv_tokens += c + 1
                else:
                    pairs += n * (c + (n + 1) / 2)

        if not scheduled:
            return None

        if unscheduled:
            num_tokens = 0
            pairs = 0.0
            kv_tokens = 0
            for seq, n in scheduled.items():
                num_tokens += n
                c = seq.num_computed
                if n == 1 and c + 1 == seq.prompt_tokens + seq.num_generated:
                    kv_tokens += c + 1
                else:
                    pairs += n * (c + (n + 1) / 2)
        used = self.kv_blocks_total - self.free_blocks

        if (
            cfg.fast_path
            and not tried
            and pairs == 0
            and extra_time == 0.0
            and not preempted
            and not rank_preempted
            and len(scheduled) == len(self.running)
            and not (self.waiting and self.ordering.dynamic)
        ):
            segment = self._plan_segment(now, scheduled)
            if segment is not None:
                return segment

        duration = self.timer.step_time(num_tokens, len(scheduled), pairs, kv_tokens) + extra_time
        return StepPlan(
            start=now,
            k=1,
            a=duration,
            b=0.0,
            scheduled=list(scheduled.items()),
            blocks_during=used,
        )

    def _plan_segment(self, now: float, scheduled: dict[Sequence, int] | None) -> StepPlan | None:
        """Plan k > 1 identical-shape decode iterations, or ``None`` if only one is safe.

        Args:
            now: Start time, s.
            scheduled: Iteration 0 as the general planner scheduled it (its blocks already
                allocated), or ``None`` when called before any planning; then every running
                sequence must be decoding, else ``None`` is returned.

        The waiting queue cannot be admitted in any of the k iterations: free blocks only shrink
        and the budget left for waiting sequences stays the same, so a blocked head stays blocked.
        """
        running = self.running
        num = len(running)
        if not num:
            return None
        check = scheduled is None
        if check and num > self.config.max_num_batched_tokens:
            return None
        bs = self.block_size
        # One pass (the fast path's hottest loop): whether all decode, the fewest tokens any
        # sequence has left, and with progress keys the fewest before any key changes
        # (OrderingPolicy.next_rekey). NOTE: written out for speed; every quantity is an int.
        k = NEVER
        gap = NEVER
        at_gap: list[Sequence] = []  # the sequences whose key changes first
        progress = self.ordering.progress_keys
        computed0: list[int] = []
        append = computed0.append
        for s in running:
            c = s.num_computed
            g = s.num_generated
            if check and c + 1 != s.prompt_tokens + g:
                return None
            left = s.output_tokens - g
            if left < k:
                k = left
            if progress:
                d = s.rekey_at - g
                if d <= gap:
                    if d < gap:
                        gap = d
                        at_gap = [s]
                    else:
                        at_gap.append(s)
            append(c)
        if gap < k:
            k = gap
        if k <= 1:
            return None
        # Exact memory bound. Free blocks before iteration 0 allocated: free0. Sequence i needs
        # a new block at iteration j iff j == (-c_i) mod bs (mod bs). The (free0+1)-th
        # allocation happens at iteration (free0 // num) * bs + sorted_offsets[free0 % num].
        allocated0 = 0  # blocks the general planner already gave iteration 0
        if not check:
            for s, c in zip(running, computed0, strict=True):
                allocated0 += s.blocks + (c // -bs)  # s.blocks - ceil(c / bs)
        free0 = self.free_blocks + allocated0
        offsets = [-c % bs for c in computed0]
        offsets.sort()
        k_mem = (free0 // num) * bs + offsets[free0 % num]
        if k_mem < k:
            k = k_mem
        if k <= 1:
            return None
        base, per_kv = self._decode_coefficients(num)
        kv0 = sum(computed0) + num
        a, b = base + per_kv * kv0, per_kv * num
        if self.ordering.rekey_period_s is not None:
            # End the segment at the first iteration that starts at or after the next re-key.
            probe = StepPlan(start=now, k=k, a=a, b=b, scheduled=[])
            k = min(k, probe.starts_before(self._next_period_rekey))
            if k <= 1:
                return None
        # Allocate the blocks the whole segment needs now; views subtract what is not yet used.
        # Every running sequence holds ceil(c / bs) blocks at a plan's start (plus iteration 0's
        # when the general planner ran it), and ceil((c + k) / bs) at the segment's end: the
        # difference, summed, comes from the sorted offsets. NOTE: each Sequence.blocks is
        # brought up to date when the segment completes (complete()), not here; nothing reads
        # it in between, and this saves a pass over the batch per segment and per truncation.
        grow = batch_blocks_delta(offsets, 0, k, bs)
        self.free_blocks -= grow - allocated0
        self.num_segments += 1
        return StepPlan(
            start=now,
            k=k,
            a=a,
            b=b,
            scheduled=[(s, 1) for s in running],
            computed0=computed0,
            segment=True,
            offsets=offsets,
            rekey_gap=gap,
            rekey_next=at_gap,
            kv0=kv0,
        )

    def _decode_coefficients(self, num: int) -> tuple[float, float]:
        """``timer.decode_coefficients(num)``, memoised (a segment asks once per plan).

        Step-time models are stateless (the :class:`StepTimer` contract; a slowdown event
        installs a new timer object, which empties the memo, and so does :meth:`reset`).
        """
        timer = self.timer
        if timer is not self._coef_timer:
            self._coef_timer = timer
            self._coef = {}
        coef = self._coef.get(num)
        if coef is None:
            coef = self._coef[num] = timer.decode_coefficients(num)
        return coef

    def truncate(self, t: float) -> float | None:
        """An arrival at ``t`` cuts a fast-path segment to the iterations started before ``t``.

        Returns:
            The new end time if it changed, else ``None``.
        """
        plan = self.plan
        if plan is None or not plan.segment:
            return None
        k_new = max(1, plan.starts_before(t))
        if k_new >= plan.k:
            return None
        # Give back the blocks of the iterations cut (sequence counts follow in complete()).
        self.free_blocks += batch_blocks_delta(plan.offsets, k_new, plan.k, self.block_size)
        plan.k = k_new
        return plan.end

    # ---------------------------------------------------------------- apply
    def complete(self, now: float) -> list[Sequence]:
        """Apply the finished plan at its end time ``now``; returns the sequences that finished."""
        plan = self.plan
        assert plan is not None, "complete() without a plan"
        self.plan = None
        duration = now - plan.start
        self.busy_time += duration
        self.num_plans += 1
        finished: list[Sequence] = []
        if not plan.segment:
            self._rekey_due = True  # a single step may take anyone to its rekey_at
            self._rekey_only = None
            self.num_steps += 1
            if self.track_block_time:
                self.block_time += plan.blocks_during * duration
            self.peak_blocks = max(self.peak_blocks, plan.blocks_during)
            running_status = SeqStatus.RUNNING
            tokens = cost2 = 0  # true remaining output consumed (see reset)
            for seq, n in plan.scheduled:
                if seq.status is not running_status:
                    continue
                c = seq.num_computed + n
                seq.num_computed = c
                g = seq.num_generated
                if c == seq.prompt_tokens + g:
                    g += 1
                    seq.num_generated = g
                    tokens += 1
                    cost2 += 2 * c + 1  # (g+1)² + 2I(g+1) - g² - 2Ig, with c = I + g
                    if g == 1:
                        seq.first_token_time = now
                    if g == seq.output_tokens:
                        finished.append(seq)
            self.true_tokens_left -= tokens
            self.true_cost2_left -= cost2
        else:
            k = plan.k
            # Every sequence decodes k tokens; with c = I + g - 1 at the start and
            # kv0 = sum(c) + num, sum over them of (g+k)² + 2I(g+k) - g² - 2Ig is
            # k * (2 * kv0 + num * k).
            num = len(plan.scheduled)
            self.true_tokens_left -= num * k
            self.true_cost2_left -= k * (2 * plan.kv0 + num * k)
            if k >= plan.rekey_gap:  # then k == rekey_gap: those at the gap reached it
                # (already due for another reason: check everyone, as before this segment)
                self._rekey_only = None if self._rekey_due else plan.rekey_next
                self._rekey_due = True
            self.num_steps += k
            if self.track_block_time:
                self.block_time += segment_block_time(
                    plan.computed0, k, plan.a, plan.b, self.block_size
                )
            # Blocks only grow inside a segment: the peak is at its last iteration.
            self.peak_blocks = max(self.peak_blocks, self.kv_blocks_total - self.free_blocks)
            first_end = plan.start + plan.a
            nbs = -self.block_size
            for seq, _ in plan.scheduled:
                g = seq.num_generated
                if g == 0:  # its last prompt token was computed in iteration 0
                    seq.first_token_time = first_end
                c = seq.num_computed + k
                seq.num_computed = c
                seq.blocks = -(c // nbs)  # ceil(c / bs): the blocks the segment allocated
                g += k
                seq.num_generated = g
                if g == seq.output_tokens:
                    finished.append(seq)
        for seq in finished:
            self.running.remove(seq)
            self.free_blocks += seq.blocks
            seq.blocks = 0
            self.reserved_blocks -= seq.reserved
            seq.reserved = 0
            seq.status = SeqStatus.FINISHED
            seq.finish_time = now
        if finished:
            self._version += 1
        if not 0 <= self.free_blocks <= self.kv_blocks_total or len(self.running) > (
            self.config.max_num_seqs
        ):
            self._check_invariants()  # raises with the details
        return finished

    def _check_invariants(self) -> None:
        if not 0 <= self.free_blocks <= self.kv_blocks_total:
            raise AssertionError(
                f"replica {self.index}: free blocks {self.free_blocks} out of range"
            )
        if len(self.running) > self.config.max_num_seqs:
            raise AssertionError(f"replica {self.index}: running over max_num_seqs")

    # ------------------------------------------------------------------ view
    def blocks_used_at(self, t: float) -> int:
        """KV blocks in use at time ``t`` (inside a segment, only those reached by then)."""
        used = self.kv_blocks_total - self.free_blocks
        plan = self.plan
        if plan is None or not plan.segment:
            return used
        j = plan.starts_before(t)  # iterations started by t; iteration j-1 is in flight
        # Each sequence holds ceil((c + k) / bs) blocks for the whole segment; by t it has
        # reached ceil((c + max(j, 1)) / bs) of them.
        return used - batch_blocks_delta(plan.offsets, max(j, 1), plan.k, self.block_size)

    def view(self, now: float) -> ReplicaView:
        """Snapshot for placement decisions at time ``now``."""
        return ReplicaView(
            index=self.index,
            gpu=self.gpu,
            model=self.model,
            num_running=len(self.running),
            num_waiting=len(self.waiting),
            kv_blocks_used=self.blocks_used_at(now),
            kv_blocks_total=self.kv_blocks_total,
            block_size=self.block_size,
            decode_tokens_per_s=self.decode_tokens_per_s,
            healthy=self.healthy,
            cost_rate=self.cost_rate,
            queue_profile=self.queue_profile,
        )

    def queue_profile(self) -> QueueProfile:
        """Ranks of the sequences here (running and waiting), sorted, with work prefix sums.

        Each sequence contributes ``OrderingPolicy.profile(seq)``: its Gittins rank and expected
        remaining hybrid cost. Rebuilt (O(Q log Q)) only if a sequence was queued, finished or
        re-keyed since the last call; else cached. The work of running sequences is as of the
        rebuild (it shrinks as they decode).
        """
        if self._profile is not None and self._profile_version == self._version:
            return self._profile
        seqs = self.running + [s for _, _, s in self.waiting]
        # A policy may answer for all sequences at once (SageSched reads its cached ranks).
        profiles = getattr(self.ordering, "profiles", None)
        if profiles is None:
            profile = self.ordering.profile
            pairs = [profile(s) for s in seqs]
        else:
            pairs = profiles(seqs)
        self._profile = QueueProfile.build(pairs)
        self._profile_version = self._version
        return self._profile
