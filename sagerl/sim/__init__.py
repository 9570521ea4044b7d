"""Discrete-event simulator of LLM serving replicas (continuous batching, paged KV cache)."""

from sagerl.sim.cluster import Simulation
from sagerl.sim.config import ClusterConfig, ReplicaSpec, SchedulerConfig
from sagerl.sim.metrics import SimResult
from sagerl.sim.replica import Replica
from sagerl.sim.sequence import SeqStatus, Sequence

__all__ = [
    "ClusterConfig",
    "Replica",
    "ReplicaSpec",
    "SchedulerConfig",
    "SeqStatus",
    "Sequence",
    "SimResult",
    "Simulation",
]
