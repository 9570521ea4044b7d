"""Scheduling policies: ordering inside a replica and placement across replicas.

Importing the package registers every policy: FCFS and the basic placements
(:mod:`~sagerl.policy.ordering`, :mod:`~sagerl.policy.placement`), SageSched's ordering and
placement (:mod:`~sagerl.policy.sagesched`) and the baselines it is compared with
(:mod:`~sagerl.policy.baselines`).
"""

from sagerl.policy import baselines as _baselines  # noqa: F401  (fills ORDERING)
from sagerl.policy import sagesched as _sagesched  # noqa: F401  (fills ORDERING, PLACEMENT)
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
