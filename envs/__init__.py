"""Gymnasium environments of sagerl, registered on import.

=========================  ==================================================================
id                         what
=========================  ==================================================================
``sagerl/Placement-v0``    place each arriving request on a replica of a simulated cluster
                           (:class:`envs.placement.PlacementEnv`)
=========================  ==================================================================

Entry points are strings, so importing this package does not import the simulator; ``gymnasium
.make("envs:sagerl/Placement-v0")`` imports it on demand.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

PLACEMENT_ID = "sagerl/Placement-v0"

if PLACEMENT_ID not in registry:
    register(id=PLACEMENT_ID, entry_point="envs.placement:PlacementEnv")

__all__ = ["PLACEMENT_ID"]
