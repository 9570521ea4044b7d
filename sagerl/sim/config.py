"""Config of the simulated cluster: replicas (GPU, model, parallelism) and engine scheduler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sagerl.errors import UnknownNameError
from sagerl.schema import StrictModel


def _check(lookup: Callable[[], object]) -> None:
    """Run a registry lookup; re-raise its error as the ValueError pydantic attaches to a key."""
    try:
        lookup()
    except UnknownNameError as exc:
        raise ValueError(str(exc)) from None


class SchedulerConfig(StrictModel):
    """Per-replica engine settings, named as in vLLM's engine arguments."""

    max_num_batched_tokens: int = Field(
        2048, ge=1, description="Token budget of one iteration (prefill chunks + decode tokens)."
    )
    max_num_seqs: int = Field(256, ge=1, description="Cap on sequences in the running batch.")
    block_size: int = Field(16, ge=1, description="Tokens per paged KV-cache block.")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="Fraction of GPU memory the engine may use (weights + KV)."
    )
    enable_chunked_prefill: bool = Field(
        True, description="Split long prompts over iterations within the token budget."
    )
    preemption_mode: Literal["recompute", "swap"] = Field(
        "recompute",
        description="On KV exhaustion, drop the victim's KV and recompute it later, or swap it "
        "to host memory over PCIe.",
    )
    swap_bandwidth_gb_s: float = Field(
        25.0, gt=0, description="Host<->GPU bandwidth for swap preemption, GB/s."
    )
    fast_path: bool = Field(
        True,
        description="Advance many decode iterations at once while nothing changes. Same results "
        "as step-by-step mode (up to float rounding), far faster.",
    )
    reserve_quantile: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Admission by reservation (S3-style): admit a waiting request only while the "
        "KV its prompt and this quantile of its predicted output length need, added to what the "
        "running requests reserved, fits the cache. null: vLLM's rule (admit when the prompt's "
        "blocks are free; preempt when decoding runs out).",
    )


class ReplicaSpec(StrictModel):
    """A group of identical replicas."""

    gpu: str = Field("A100", description="GPU kind (A40, A100-80GB, H100, H800, H200).")
    model: str = Field("llama-2-7b", description="Served model (e.g. llama-3.1-8b).")
    tp: int = Field(1, ge=1, description="Tensor-parallel degree (GPUs per replica).")
    count: int = Field(1, ge=1, description="How many replicas of this kind.")
    gpu_memory_gib: float | None = Field(
        None, gt=0, description="Override the GPU's memory size, GiB (e.g. the paper's 96 GB H800)."
    )

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, name: str) -> str:
        from sagerl.hardware import get_gpu

        _check(lambda: get_gpu(name))
        return name

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from sagerl.hardware import get_model

        _check(lambda: get_model(name))
        return name


class ClusterConfig(StrictModel):
    """The cluster: replica groups, engine settings, and the two policy families."""

    replicas: list[ReplicaSpec] = Field(
        default_factory=lambda: [ReplicaSpec()], description="Replica groups, in index order."
    )
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    ordering: str = Field("fcfs", description="Ordering policy inside each replica.")
    ordering_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword options of the ordering policy (e.g. sagesched's refresh, "
        "buckets, refresh_tokens, preempt; every policy's victim), as in compare's policies.",
    )
    placement: str = Field("round-robin", description="Placement policy across replicas.")

    @field_validator("ordering")
    @classmethod
    def _known_ordering(cls, name: str) -> str:
        from sagerl.policy import ORDERING

        _check(lambda: ORDERING.get(name))
        return name

    @model_validator(mode="after")
    def _known_ordering_options(self) -> ClusterConfig:
        """Build the ordering once, so an unknown or invalid option fails at load time."""
        from sagerl.policy import make_ordering

        if self.ordering_options:
            make_ordering(self.ordering, **self.ordering_options)
        return self

    @field_validator("placement")
    @classmethod
    def _known_placement(cls, name: str) -> str:
        from sagerl.policy import PLACEMENT

        _check(lambda: PLACEMENT.get(name))
        return name
