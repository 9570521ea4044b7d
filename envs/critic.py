"""Privileged observations for the critic only (asymmetric actor-critic).

The reward of a placement decision arrives over the next hundred decisions, mixed with the effect
of every other decision and of arrivals no policy controls. A critic that sees only what the
actor sees cannot tell a bad decision from a burst of arrivals (its explained variance stays
near 0.3 on the default config), so PPO's advantages are mostly noise and fine-tuning drifts.
The simulator knows more, and a critic may use it during training without the deployed actor
ever needing it (Pinto et al., "Asymmetric Actor Critic for Image-Based Robot Learning", 2017;
input-dependent baselines: Mao et al., "Variance Reduction for Reinforcement Learning in
Input-Driven Environments", ICLR 2019):

* the episode's progress (the final step drains the cluster, a large and predictable reward);
* per replica, the true remaining output tokens and hybrid cost of the requests it holds;
* the exogenous input ahead: arrivals in the next 1, 2, 4 and 8 s of the window and their true
  cost, and the pending request's true output length.

They are appended after the actor's features; agents zero them on the actor's side
(:class:`agents.ppo.policies.PrivilegedCriticPolicy`), so a trained actor depends only on the
:class:`~sagerl.features.FeatureEncoder` part.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

import numpy as np

from sagerl.features import CLIP, FeatureEncoder
from sagerl.workload.request import Request

HORIZONS_S: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
"""Look-ahead windows for upcoming arrivals, s."""

PER_REPLICA: tuple[str, ...] = ("true_remaining_tokens", "true_remaining_cost")
GLOBAL: tuple[str, ...] = (
    "progress",
    "decisions_left",
    *(f"arrivals_{h:g}s" for h in HORIZONS_S),
    "arrival_cost_2s",
    "arrival_cost_8s",
    "true_output_tokens",
    "true_cost",
)


def hybrid(prompt: float, output: float) -> float:
    return output * (0.5 * output + prompt)


_EXACT = 1 << 53
"""Integers below this are exact as float64."""


def remaining_truth(rep: Any) -> tuple[float, float]:
    """``(true output tokens left, their hybrid cost left)`` over the sequences a replica holds:
    ``sum(O - g)`` and ``sum((O - g) * ((O - g) / 2 + I + g))``.

    Read in O(1) from the replica's exact integer totals (``true_tokens_left``,
    ``true_cost2_left`` = twice the cost). The per-sequence float sum gives the very same
    numbers: every term is a multiple of 1/2 no larger than the total (each sequence has at
    least one token left), so while twice the total stays below 2**53 no addition rounds.
    Beyond that (never on real workloads), or for a replica without the totals, the terms are
    summed one by one as before.
    """
    tokens_left: int | None = getattr(rep, "true_tokens_left", None)
    cost2_left: int | None = getattr(rep, "true_cost2_left", None)
    if (
        tokens_left is not None
        and cost2_left is not None
        and 0 <= tokens_left < _EXACT
        and 0 <= cost2_left < _EXACT
    ):
        return float(tokens_left), cost2_left / 2
    tokens = 0.0
    cost = 0.0
    for seq in [*rep.running, *(s for _, _, s in rep.waiting)]:
        g = seq.num_generated
        left = seq.output_tokens - g
        tokens += left
        cost += left * (0.5 * left + seq.prompt_tokens + g)
    return tokens, cost


class CriticFeatures:
    """Fills the privileged block; one instance per environment (it holds the window's arrays).

    Args:
        encoder: The actor's encoder (for its transforms and replica slots).
    """

    def __init__(self, encoder: FeatureEncoder) -> None:
        self.encoder = encoder
        self.slots = encoder.spec.max_replicas
        self.size = self.slots * len(PER_REPLICA) + len(GLOBAL)
        self._arrivals = np.zeros(0)
        self._cum_cost = np.zeros(1)
        self._arrival_list: list[float] = []
        self._cum_list: list[float] = [0.0]
        self._length = 0

    def names(self) -> list[str]:
        out = [f"critic.replica{r}.{f}" for r in range(self.slots) for f in PER_REPLICA]
        return out + [f"critic.{f}" for f in GLOBAL]

    def start(self, window: Sequence[Request]) -> None:
        """Precompute the window's arrival times and cumulative true costs."""
        self._length = len(window)
        self._arrivals = np.fromiter((r.arrival for r in window), np.float64, len(window))
        costs = np.fromiter(
            (hybrid(r.prompt_tokens, r.output_tokens) for r in window), np.float64, len(window)
        )
        self._cum_cost = np.concatenate(([0.0], np.cumsum(costs)))
        # Python lists of the same values: fill() reads a few entries per decision, where
        # bisect and float arithmetic beat numpy's per-call overhead (same results).
        self._arrival_list = self._arrivals.tolist()
        self._cum_list = self._cum_cost.tolist()

    def fill(self, out: np.ndarray, i: int, replicas: Sequence[Any], request: Request) -> None:
        """Write the block for decision ``i`` (request ``request``) into ``out``."""
        enc = self.encoder
        out[:] = 0.0
        k = 0
        for r in range(min(len(replicas), self.slots)):
            tokens, cost = remaining_truth(replicas[r])
            out[k] = enc.tokens(tokens)
            out[k + 1] = enc.cost(cost)
            k += len(PER_REPLICA)
        k = self.slots * len(PER_REPLICA)
        n = self._length
        out[k] = i / n if n else 0.0
        out[k + 1] = enc.count(n - i)
        arrivals = self._arrival_list
        t = arrivals[i]
        ends = [bisect_right(arrivals, t + h) for h in HORIZONS_S]  # searchsorted(side="right")
        for j, e in enumerate(ends):
            out[k + 2 + j] = enc.count(float(e - i - 1))
        cum = self._cum_list
        out[k + 6] = enc.cost(cum[ends[1]] - cum[i + 1])
        out[k + 7] = enc.cost(cum[ends[3]] - cum[i + 1])
        out[k + 8] = enc.tokens(request.output_tokens)
        out[k + 9] = enc.cost(hybrid(request.prompt_tokens, request.output_tokens))
        np.maximum(out, -CLIP, out=out)  # np.clip's values without its Python-level overhead
        np.minimum(out, CLIP, out=out)
