"""Scheduling policies: ordering inside a replica and placement across replicas."""

from sagerl.policy.ordering import ORDERING, OrderingPolicy, make_ordering
from sagerl.policy.placement import PLACEMENT, PlacementPolicy, make_placement

__all__ = [
    "ORDERING",
    "PLACEMENT",
    "OrderingPolicy",
    "PlacementPolicy",
    "make_ordering",
    "make_placement",
]
