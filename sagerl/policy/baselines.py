"""The schedulers SageSched is compared with, as ordering policies inside one replica.

Each is one small class; the paper's baselines (FCFS lives in :mod:`sagerl.policy.ordering`):

=================  ====================================================================  =========
name               key (smaller runs first)                                              preempts
=================  ====================================================================  =========
``ssjf``           predicted mean output length (SSJF, proxy-model SJF)                  no
``ltr``            predicted median length; requests older than ``starvation_s`` first  no
``trail``          expected remaining length ``E[X - g | X > g]``, refreshed every N     early only
``tie``            ``E[X] + β·CVaR_α[X]``, decaying with waiting time                     no
``fastserve``      skip-join MLFQ level (prompt length picks the first level)            yes
``svf``            expected hybrid cost ``E[C(I, X)]`` (smallest KV volume first)         no
``oracle-srpt``    true remaining hybrid cost (reads ``output_tokens``: a bound)          optional
=================  ====================================================================  =========

Every policy reads only ``Sequence.prediction`` (the predicted length distribution), except
``fastserve`` (prediction-free) and ``oracle-srpt``. Where the original system has its own
predictor (SSJF: BERT regression; LTR: OPT-125M ranking; TRAIL: LLM-embedding classifier), we feed
all policies the same predicted distribution and each uses the summary its paper ranks by, so the
comparison isolates the scheduling rule; a per-policy predictor can be set in ``compare``.
"""

from __future__ import annotations

import math

import numpy as np

from sagerl.cost import CostDistribution, CostVariant, attained_cost, check_variant, cost_scalar
from sagerl.errors import ConfigError
from sagerl.policy.ordering import ORDERING, OrderingPolicy
from sagerl.policy.sagesched import require_prediction
from sagerl.sim.sequence import NEVER, Sequence


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
    return float(value)


@ORDERING.register("ssjf")
class SSJF(OrderingPolicy):
    """Speculative shortest job first (Qiu et al., 2024): SJF on the predicted mean length.

    Non-preemptive; the key is fixed at arrival (and recomputed, the same, after a KV
    preemption).
    """

    name = "ssjf"

    def key(self, seq: Sequence, now: float) -> tuple[float, float, int]:
        return (require_prediction(seq, self.name).mean(), seq.arrival, seq.request.id)


@ORDERING.register("ltr")
class LTR(OrderingPolicy):
    """Learning to rank (Fu et al., arXiv 2408.15792) with its starvation guard.

    LTR orders by a learned *relative* score; the median of the predicted distribution stands in
    for it (only the order matters). Its guard promotes requests that waited too long: here a
    request whose age (now - arrival) reaches ``starvation_s`` moves to a first tier served in
    arrival order. Ages change with time, so keys are refreshed every ``rekey_period_s``.

    Args:
        starvation_s: Age at which a request is promoted, s.
        rekey_period_s: How often promotions are re-evaluated, s.
    """

    name = "ltr"

    def __init__(self, starvation_s: float = 30.0, rekey_period_s: float = 1.0) -> None:
        self.starvation_s = _positive("starvation_s", starvation_s)
        self.rekey_period_s = _positive("rekey_period_s", rekey_period_s)

    def key(self, seq: Sequence, now: float) -> tuple[int, float, float, int]:
        if now - seq.arrival >= self.starvation_s:
            return (0, seq.arrival, seq.arrival, seq.request.id)
        score = require_prediction(seq, self.name).median()
        return (1, score, seq.arrival, seq.request.id)


@ORDERING.register("trail")
class TRAIL(OrderingPolicy):
    """TRAIL (Shahout et al., arXiv 2410.01035): SRPT on the predicted remaining length with
    limited preemption.

    TRAIL re-predicts each running request's remaining length from the LLM's own embeddings as
    it generates; we emulate the refinement by conditioning the predicted distribution on the
    tokens generated so far, ``E[X - g | X > g]``, refreshed every ``refresh_tokens`` tokens (a
    request past all its samples is predicted to finish next). Limited preemption: a blocked
    waiting request with a shorter expected remaining length may preempt a running one only while
    that one has generated less than ``preempt_fraction`` of its predicted length (preemption is
    cheap early, wasteful near completion).

    Args:
        refresh_tokens: Re-prediction interval, output tokens.
        preempt: Enable limited preemption.
        preempt_fraction: A running request is preemptible while ``g < fraction · E[X]``.
    """

    name = "trail"
    progress_keys = True

    def __init__(
        self, refresh_tokens: int = 32, preempt: bool = True, preempt_fraction: float = 0.5
    ) -> None:
        if refresh_tokens < 1:
            raise ConfigError(f"refresh_tokens must be >= 1, got {refresh_tokens}")
        self.refresh_tokens = int(refresh_tokens)
        self.preempt_for_rank = bool(preempt)
        self.preempt_fraction = float(preempt_fraction)

    def key(self, seq: Sequence, now: float) -> tuple[float, float, int]:
        pred = require_prediction(seq, self.name)
        g = seq.num_generated - seq.num_generated % self.refresh_tokens
        remaining = float(pred.remaining_mean(g)[0])
        return (remaining, seq.arrival, seq.request.id)

    def next_rekey(self, seq: Sequence) -> int:
        g = seq.num_generated
        return g - g % self.refresh_tokens + self.refresh_tokens

    def rank_victim(self, challenger: Sequence, running: list[Sequence]) -> Sequence | None:
        frac = self.preempt_fraction
        victim = None
        for s in running:
            if s.num_generated < frac * s.prediction.mean() and (
                victim is None or s.sort_key > victim.sort_key
            ):
                victim = s
        return victim if victim is not None and challenger.sort_key < victim.sort_key else None


def cvar(support: np.ndarray, probs: np.ndarray, alpha: float) -> float:
    """Conditional value at risk: the mean of the worst ``1 - alpha`` of the probability mass.

    For a discrete law the boundary atom is split, so the result is exact and continuous in
    ``alpha`` (0 gives the mean, 1 the maximum).
    """
    tail = 1.0 - alpha
    if tail <= 0:
        return float(support[-1])
    taken = 0.0
    total = 0.0
    for x, p in zip(support[::-1], probs[::-1], strict=True):
        w = min(float(p), tail - taken)
        total += w * float(x)
        taken += w
        if taken >= tail - 1e-15:
            break
    return total / taken


@ORDERING.register("tie")
class TIE(OrderingPolicy):
    """TIE (arXiv 2604.00499): SJF on a tail-aware score with a waiting-time decay.

    Score ``s = E[X] + β · CVaR_α[X]`` (output lengths are heavy-tailed; the CVaR term penalises
    requests that might run long). The effective score decays with waiting time,
    ``s · exp(-(now - arrival) / tau_s)``, so old requests rise. All waiting requests decay at the
    same rate, so their order at any instant equals the order of the *static* key
    ``log s + arrival / tau_s``: no re-keying is needed. (TIE adapts β in [0.1, 0.5] with load;
    we keep it fixed, configurable.)

    Args:
        alpha: CVaR level (the worst ``1 - alpha`` of the mass).
        beta: Weight of the CVaR term.
        tau_s: Decay time constant of the waiting-time discount, s.
    """

    name = "tie"

    def __init__(self, alpha: float = 0.9, beta: float = 0.3, tau_s: float = 60.0) -> None:
        if not 0 <= alpha < 1:
            raise ConfigError(f"alpha must lie in [0, 1), got {alpha}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.tau_s = _positive("tau_s", tau_s)

    def score(self, seq: Sequence) -> float:
        """``E[X] + β · CVaR_α[X]`` of the predicted length, tokens."""
        pred = require_prediction(seq, self.name)
        return pred.mean() + self.beta * cvar(pred.support, pred.probs, self.alpha)

    def key(self, seq: Sequence, now: float) -> tuple[float, float, int]:
        s = max(self.score(seq), 1e-9)
        return (math.log(s) + seq.arrival / self.tau_s, seq.arrival, seq.request.id)


@ORDERING.register("fastserve")
class FastServe(OrderingPolicy):
    """FastServe (Wu et al., arXiv 2305.05920): skip-join multi-level feedback queue.

    Level ``i`` has a quantum of ``base_quantum · 2^i`` iterations (one output token each). A
    request skips the levels whose quantum is shorter than its prefill, measured in decode
    iterations as ``prompt_tokens / prefill_tokens_per_iteration``, and joins the first level that
    fits. After using its quantum at a level it is demoted to the next; the last level has no
    limit. Requests are served by level, first come first served within a level, and a blocked
    higher-level request preempts a lower-level running one (FastServe's proactive swapping is
    the replica's ``preemption_mode``). Prediction-free.

    Args:
        base_quantum: Quantum of the top level, iterations (output tokens).
        levels: Number of levels.
        prefill_tokens_per_iteration: Prompt tokens whose prefill takes about one decode
            iteration (sets the skip-join level).
        preempt: Let higher levels preempt lower ones.
    """

    name = "fastserve"
    progress_keys = True

    def __init__(
        self,
        base_quantum: int = 8,
        levels: int = 8,
        prefill_tokens_per_iteration: int = 512,
        preempt: bool = True,
    ) -> None:
        if base_quantum < 1 or levels < 1 or prefill_tokens_per_iteration < 1:
            raise ConfigError("base_quantum, levels and prefill_tokens_per_iteration must be >= 1")
        self.quanta = [int(base_quantum) << i for i in range(levels)]
        self.prefill_tokens_per_iteration = int(prefill_tokens_per_iteration)
        self.preempt_for_rank = bool(preempt)

    def first_level(self, prompt_tokens: int) -> int:
        """The skip-join level: the first whose quantum covers the prefill."""
        iters = -(-prompt_tokens // self.prefill_tokens_per_iteration)
        for i, q in enumerate(self.quanta):
            if iters <= q:
                return i
        return len(self.quanta) - 1

    def _level(self, seq: Sequence) -> tuple[int, int]:
        """``(level, generated count at which it is demoted, or NEVER)``."""
        level = self.first_level(seq.prompt_tokens)
        end = self.quanta[level]
        last = len(self.quanta) - 1
        while level < last and seq.num_generated >= end:
            level += 1
            end += self.quanta[level]
        return level, (end if level < last else NEVER)

    def key(self, seq: Sequence, now: float) -> tuple[int, float, int]:
        return (self._level(seq)[0], seq.arrival, seq.request.id)

    def next_rekey(self, seq: Sequence) -> int:
        return self._level(seq)[1]

    def beats(self, challenger: Sequence, incumbent: Sequence) -> bool:
        return challenger.sort_key[0] < incumbent.sort_key[0]


@ORDERING.register("svf")
class SVF(OrderingPolicy):
    """Smallest volume first (arXiv 2606.22327): SJF on the expected KV memory-time volume.

    The key is the expected hybrid cost ``E[C(I, X)]`` (remaining, for a preempted request):
    SageSched's cost without its uncertainty handling. Non-preemptive.

    Args:
        cost: Cost variant (``hybrid`` by default).
    """

    name = "svf"

    def __init__(self, cost: CostVariant = "hybrid") -> None:
        self.cost: CostVariant = check_variant(cost)

    def key(self, seq: Sequence, now: float) -> tuple[float, float, int]:
        pred = require_prediction(seq, self.name)
        dist = CostDistribution.from_lengths(pred.support, pred.probs, seq.prompt_tokens, self.cost)
        work = dist.remaining_mean(seq.num_generated)
        if work is None:
            work = attained_cost(seq.prompt_tokens, seq.num_generated + 1, self.cost) - (
                dist.attained(seq.num_generated)
            )
        return (work, seq.arrival, seq.request.id)


@ORDERING.register("oracle-srpt")
class OracleSRPT(OrderingPolicy):
    """Shortest remaining processing time on the *true* remaining cost: a bound, not a policy.

    Reads ``output_tokens``. Keys are refreshed every ``refresh_tokens`` generated tokens. With
    ``preempt``, a blocked request preempts a running one whose remaining cost is larger by the
    factor ``1 + hysteresis``; off by default, because in a batch of hundreds of requests the
    recompute it causes costs more than it saves (the non-preemptive bound is the tighter one).

    Args:
        cost: Cost variant whose remaining value is the key.
        refresh_tokens: Key refresh interval, output tokens.
        preempt: Enable preemption for rank.
        hysteresis: Relative margin required to preempt.
    """

    name = "oracle-srpt"
    progress_keys = True
    oracle = True

    def __init__(
        self,
        cost: CostVariant = "hybrid",
        refresh_tokens: int = 32,
        preempt: bool = False,
        hysteresis: float = 0.1,
    ) -> None:
        self.cost: CostVariant = check_variant(cost)
        if refresh_tokens < 1:
            raise ConfigError(f"refresh_tokens must be >= 1, got {refresh_tokens}")
        self.refresh_tokens = int(refresh_tokens)
        self.preempt_for_rank = bool(preempt)
        self.hysteresis = float(hysteresis)

    def key(self, seq: Sequence, now: float) -> tuple[float, float, int]:
        g = seq.num_generated - seq.num_generated % self.refresh_tokens
        total = cost_scalar(seq.prompt_tokens, seq.output_tokens, self.cost)
        remaining = total - attained_cost(seq.prompt_tokens, g, self.cost)
        return (remaining, seq.arrival, seq.request.id)

    def next_rekey(self, seq: Sequence) -> int:
        g = seq.num_generated
        return g - g % self.refresh_tokens + self.refresh_tokens

    def beats(self, challenger: Sequence, incumbent: Sequence) -> bool:
        return challenger.sort_key[0] * (1.0 + self.hysteresis) < incumbent.sort_key[0]
