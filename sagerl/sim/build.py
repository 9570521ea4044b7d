"""Build a :class:`~sagerl.sim.cluster.Simulation` from a ``ClusterConfig``."""

from __future__ import annotations

from sagerl.hardware import StepTimeModel, get_gpu, get_model
from sagerl.policy import make_ordering, make_placement
from sagerl.sim.cluster import Simulation
from sagerl.sim.config import ClusterConfig
from sagerl.sim.replica import Replica


def build_replicas(config: ClusterConfig) -> list[Replica]:
    """One :class:`Replica` per replica in the config's groups, with its own step-time model.

    Identical groups share one step-time model (it is stateless).
    """
    replicas: list[Replica] = []
    sched = config.scheduler
    for spec in config.replicas:
        gpu = get_gpu(spec.gpu)
        if spec.gpu_memory_gib is not None:
            gpu = gpu.with_memory(spec.gpu_memory_gib)
        model = get_model(spec.model)
        timer = StepTimeModel(model, gpu, tp=spec.tp)
        blocks = timer.kv_cache_blocks(sched.block_size, sched.gpu_memory_utilization)
        for _ in range(spec.count):
            replicas.append(
                Replica(
                    len(replicas),
                    timer,
                    blocks,
                    sched,
                    make_ordering(config.ordering, **config.ordering_options),
                    gpu=gpu.name,
                    model=model.name,
                    kv_bytes_per_block=timer.kv_bytes_per_token * sched.block_size,
                )
            )
    return replicas


def build_simulation(config: ClusterConfig, seed: int = 0) -> Simulation:
    """The cluster with its ordering policy in every replica and its placement policy."""
    placement = make_placement(config.placement, seed=seed)
    return Simulation(build_replicas(config), placement)
