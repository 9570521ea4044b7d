"""Placement policies: which replica a new request joins.

A placement policy is one decision over read-only :class:`~sagerl.view.ReplicaView` snapshots,
so it runs unchanged in the simulator and in the live router. Unhealthy replicas are never chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from sagerl.errors import SagerlError
from sagerl.registry import Registry
from sagerl.view import ReplicaView
from sagerl.workload.request import Request

PLACEMENT: Registry[type[PlacementPolicy]] = Registry("placement policy")


class PlacementPolicy:
    """Base class. ``choose`` returns the index of the chosen replica."""

    name: ClassVar[str] = ""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        """Start a new run; re-seed the policy's own generator."""
        if seed is not None:
            self.seed = seed
        self.rng = np.random.default_rng(self.seed)

    def choose(
        self, request: Request, views: Sequence[ReplicaView], now: float, prediction: Any = None
    ) -> int:
        """Pick a replica for ``request`` at time ``now`` (s).

        Args:
            request: The arriving request (policies must not read ``output_tokens``).
            views: One snapshot per replica, in index order.
            now: Current time, s.
            prediction: The request's predicted length distribution, if a predictor runs.
        """
        raise NotImplementedError


def healthy_indices(views: Sequence[ReplicaView]) -> list[int]:
    """Indices of replicas that may receive requests; an error if there are none."""
    healthy = [v.index for v in views if v.healthy]
    if not healthy:
        raise SagerlError("no healthy replica to place the request on")
    return healthy


@PLACEMENT.register("random")
class RandomPlacement(PlacementPolicy):
    """Uniformly random healthy replica (seeded)."""

    name = "random"

    def choose(
        self, request: Request, views: Sequence[ReplicaView], now: float, prediction: Any = None
    ) -> int:
        healthy = healthy_indices(views)
        return healthy[int(self.rng.integers(len(healthy)))]


@PLACEMENT.register("round-robin")
class RoundRobin(PlacementPolicy):
    """Cycle through healthy replicas in index order."""

    name = "round-robin"

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self._next = 0

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._next = 0

    def choose(
        self, request: Request, views: Sequence[ReplicaView], now: float, prediction: Any = None
    ) -> int:
        n = len(views)
        for offset in range(n):
            i = (self._next + offset) % n
            if views[i].healthy:
                self._next = (i + 1) % n
                return i
        raise SagerlError("no healthy replica to place the request on")


@PLACEMENT.register("least-outstanding")
class LeastOutstanding(PlacementPolicy):
    """Fewest outstanding (running + waiting) requests; ties go to the lowest index."""

    name = "least-outstanding"

    def choose(
        self, request: Request, views: Sequence[ReplicaView], now: float, prediction: Any = None
    ) -> int:
        return min(healthy_indices(views), key=lambda i: (views[i].outstanding, i))


@PLACEMENT.register("least-kv")
class LeastKV(PlacementPolicy):
    """Lowest KV-cache use (fraction of blocks allocated); ties go to fewer outstanding requests,
    then the lowest index. Memory-aware routers (e.g. llm-d's KV-utilisation scorer) do this."""

    name = "least-kv"

    def choose(
        self, request: Request, views: Sequence[ReplicaView], now: float, prediction: Any = None
    ) -> int:
        return min(
            healthy_indices(views), key=lambda i: (views[i].kv_usage, views[i].outstanding, i)
        )


@PLACEMENT.register("power-of-two")
class PowerOfTwo(PlacementPolicy):
    """Power of two choices (Mitzenmacher): sample two healthy replicas, keep the one with fewer
    outstanding requests (then lower KV use). Near least-outstanding quality at O(1) probes."""

    name = "power-of-two"

    def choose(
        self, request: Request, views: Sequence[ReplicaView], now: float, prediction: Any = None
    ) -> int:
        healthy = healthy_indices(views)
        if len(healthy) == 1:
            return healthy[0]
        a, b = self.rng.choice(len(healthy), size=2, replace=False)
        pair = (healthy[int(a)], healthy[int(b)])
        return min(pair, key=lambda k: (views[k].outstanding, views[k].kv_usage, k))


def make_placement(name: str, seed: int = 0, **kwargs: Any) -> PlacementPolicy:
    """Instantiate the placement policy registered as ``name`` with its options.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the valid names).
        ConfigError: an option is unknown for this policy.
    """
    from sagerl.policy.ordering import check_options

    cls = PLACEMENT.get(name)
    check_options("placement policy", name, cls, kwargs)
    return cls(seed=seed, **kwargs)
