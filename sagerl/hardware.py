"""GPU and model specs, and the per-iteration step-time model the simulator calls.

What one iteration of a continuously batched engine (vLLM V1) costs, for a batch that mixes
prefill chunks and decode tokens, by a per-operator roofline::

    per iteration:  overhead (scheduler, input prep, sampler; CUDA graphs keep launches cheap)
                    embedding lookup ............................ num_tokens
    per layer (x L):
        input RMSNorm ........................................... num_tokens (not sharded by TP)
        QKV projection (GEMM) ................................... num_tokens x weights/tp
        RoPE .................................................... num_tokens
        attention: prefill  FLOPs ~ pairs (chunk x (context before + chunk/2)), compute-bound
                   decode   bytes ~ KV of every decode context, memory-bound (exactly linear)
        O projection (GEMM) -> all-reduce (tp > 1)
        post-attention RMSNorm, MLP up/gate (GEMM), SiLU-and-mul, MLP down (GEMM)
        -> all-reduce (tp > 1), residual add
    final norm, LM head (GEMM) on the num_seqs positions that emit a token, sampler

A GEMM takes ``floor + (t_c**p + t_m**p)**(1/p)`` with ``t_c = FLOPs / (peak * eff_c)`` and
``t_m = (weights + activations) bytes / (bandwidth * eff_m)``: the roofline ``max(t_c, t_m)``
smoothed by a fitted exponent ``p`` (``p -> inf`` is the hard max), because measured GEMMs are
slower than both bounds near the ridge point (tile and wave quantisation). Elementwise kernels
(norms, RoPE, activation, residual add, embedding) take ``floor + bytes / (bandwidth * eff)``.

Calibration: the GEMM and elementwise factors (``eff_c``, ``eff_m``, ``p``, floors) are fitted per
GPU to Vidur's measured operator tables (``vidur_profiling/compute/<gpu>/.../mlp.csv.xz``) by
:func:`sagerl.calibration.fit_calibration` and stored below as :data:`KERNEL_CALIBRATION`, so the
runtime never needs the data directory. The per-layer linear + elementwise time matches the
measurements with a MAPE of 2.5-9% per (GPU, model, TP degree) (see
``benchmarks/calibration_report.py``). H800 and H200 have no profiling: they reuse the H100 factors
(same Hopper SM and GEMM kernels) applied to their own peak and bandwidth.

Attention is analytic (the data has no attention tables), with FlashAttention efficiencies
(:data:`ATTN_PREFILL_EFF`, :data:`ATTN_DECODE_EFF`) from public figures, except Hopper's decode
efficiency, fitted to whole decoder layers timed on a real H200 (:mod:`sagerl.gpu_check`, which
also checks the H200 figures end to end). The per-iteration CPU overhead is not calibrated.
All-reduce is a latency + bandwidth fit of Vidur's NCCL measurements
(``vidur_profiling/network/*/all_reduce.csv.xz``), stored as :data:`ALLREDUCE_FITS`.

Derived from: Vidur (Agrawal et al., MLSys 2024) for the operator decomposition and profiling
tables; vLLM V1 for what runs in an iteration (logits only at each request's sampled position,
fused QKV and gate/up projections, vocabulary-parallel embedding and LM head).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from sagerl.errors import SagerlError, unknown_name

GIB = 1024**3
"""Bytes in one GiB."""

# ---------------------------------------------------------------------------------------------
# Calibrated kernel efficiencies
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KernelFit:
    """Time of one memory-bound elementwise kernel: ``floor_s + bytes / (bandwidth * eff)``.

    Attributes:
        eff: Fraction of the HBM bandwidth the kernel reaches (0-1].
        floor_s: Fixed kernel time in seconds (launch ramp, tail), paid even for one token.
    """

    eff: float
    floor_s: float


@dataclass(frozen=True, slots=True)
class KernelCalibration:
    """Fitted efficiency factors of one GPU family, from Vidur's measured operator tables.

    Attributes:
        source: Where the numbers come from (a profiled GPU, or the GPU they are borrowed from).
        gemm_compute_eff: Fraction of dense BF16 peak FLOP/s large GEMMs reach.
        gemm_memory_eff: Fraction of HBM bandwidth small-batch GEMMs (weight streaming) reach.
        gemm_blend_p: Exponent of the smoothed roofline ``(t_c**p + t_m**p)**(1/p)``; a large
            value is the hard ``max``, a small one adds time near the ridge point.
        gemm_floor_s: Fixed time of one GEMM kernel in seconds.
        norm: RMSNorm (input and post-attention; never sharded by tensor parallelism).
        rope: Rotary embedding on the query and key heads of this GPU.
        act: SiLU-and-mul (or GELU) on the MLP intermediate activations of this GPU.
        add: Residual add.
        emb: Embedding lookup (once per iteration, not per layer).
    """

    source: str
    gemm_compute_eff: float
    gemm_memory_eff: float
    gemm_blend_p: float
    gemm_floor_s: float
    norm: KernelFit
    rope: KernelFit
    act: KernelFit
    add: KernelFit
    emb: KernelFit


# NOTE: generated by `python benchmarks/calibration_report.py --refit` (sagerl.calibration
# .format_constants) from vidur_profiling/compute/<gpu>/*/*/mlp.csv.xz, median times, all
# models and TP degrees of each GPU pooled. Paste the new table here after a refit.
# BEGIN GENERATED KERNEL_CALIBRATION
KERNEL_CALIBRATION: dict[str, KernelCalibration] = {
    "a100": KernelCalibration(
        source="vidur a100 profiling",
        gemm_compute_eff=0.737,
        gemm_memory_eff=0.838,
        gemm_blend_p=1.485,
        gemm_floor_s=5.51e-06,
        norm=KernelFit(eff=0.392, floor_s=2.48e-06),
        rope=KernelFit(eff=0.455, floor_s=2.31e-06),
        act=KernelFit(eff=0.504, floor_s=2.01e-06),
        add=KernelFit(eff=0.984, floor_s=1.24e-06),
        emb=KernelFit(eff=0.156, floor_s=2.84e-06),
    ),
    "a40": KernelCalibration(
        source="vidur a40 profiling",
        gemm_compute_eff=0.771,
        gemm_memory_eff=0.783,
        gemm_blend_p=1.794,
        gemm_floor_s=3.4e-06,
        norm=KernelFit(eff=0.621, floor_s=2.26e-06),
        rope=KernelFit(eff=0.839, floor_s=9.4e-07),
        act=KernelFit(eff=0.794, floor_s=8.96e-07),
        add=KernelFit(eff=0.923, floor_s=2.59e-07),
        emb=KernelFit(eff=0.512, floor_s=2.1e-06),
    ),
    "h100": KernelCalibration(
        source="vidur h100 profiling",
        gemm_compute_eff=0.753,
        gemm_memory_eff=0.975,
        gemm_blend_p=1.391,
        gemm_floor_s=5.45e-06,
        norm=KernelFit(eff=0.437, floor_s=2.6e-06),
        rope=KernelFit(eff=0.520, floor_s=1.89e-06),
        act=KernelFit(eff=0.587, floor_s=1.58e-06),
        add=KernelFit(eff=1.000, floor_s=8.28e-07),
        emb=KernelFit(eff=0.188, floor_s=2.48e-06),
    ),
}
# END GENERATED KERNEL_CALIBRATION

# NOTE: latency (s) and algorithm bandwidth (bytes/s) per TP degree: one all-reduce of B bytes
# takes latency + B / algbw. Fitted (least squares on relative error) to the medians of Vidur's
# NCCL all_reduce tables on single DGX nodes (a100_dgx, h100_dgx). A40 has no all-reduce table:
# its entries are a ring model over the measured pairwise send_recv bandwidth (about 4 GB/s,
# i.e. PCIe-class), with the A100 NCCL latency. vLLM's custom all-reduce is faster than NCCL for
# small messages, so decode-heavy TP runs are slightly pessimistic.
# BEGIN GENERATED ALLREDUCE_FITS
ALLREDUCE_FITS: dict[str, dict[int, tuple[float, float]]] = {
    "a100": {2: (3.58e-05, 1.584e11), 4: (2.87e-05, 1.026e11), 8: (3.9e-05, 8.684e10)},
    "h100": {2: (1.66e-05, 2.821e11), 4: (3.06e-05, 2.53e11), 8: (2.86e-05, 1.937e11)},
    "a40": {2: (3.58e-05, 4.136e09), 4: (2.87e-05, 2.757e09), 8: (3.9e-05, 2.363e09)},
}
# END GENERATED ALLREDUCE_FITS

# NOTE: not calibrated (Vidur's attention tables are not in the data). Prefill: fraction of dense
# peak a FlashAttention forward reaches on causal chunks of a few thousand tokens (FlashAttention-2
# paper: 50-70% on A100; FlashAttention-3, which vLLM uses on Hopper: 55-75% on H100). Decode:
# fraction of HBM bandwidth a paged, split-KV decode kernel reaches streaming the KV cache.
ATTN_PREFILL_EFF = {"ampere": 0.60, "hopper": 0.55}
# NOTE: Hopper's decode efficiency is measured: fitted to whole-layer decode steps replayed
# from CUDA graphs on a real H200 (sagerl.gpu_check.fit_decode_efficiency on
# calibration_data/h200_measured.json; whole-layer decode MAPE 9.6% over 36 points) and applied
# to the whole Hopper family. Ampere's is still a public-figures guess.
ATTN_DECODE_EFF = {"ampere": 0.70, "hopper": 0.86}

# NOTE: not calibrated. CPU work per iteration (scheduling, input preparation, sampling metadata,
# output processing) that the GPU waits for, plus a per-sequence share. With CUDA graphs the
# kernel launches themselves are nearly free; the per-kernel floors above are GPU time.
DEFAULT_ITERATION_OVERHEAD_S = 0.3e-3
DEFAULT_PER_SEQ_OVERHEAD_S = 3e-6

# NOTE: KV-capacity reserve outside weights and activations: CUDA context, cuBLAS / NCCL
# workspaces and the CUDA-graph memory pool, which vLLM counts as non-torch memory (typically
# 0.5-1.5 GiB). Activations are estimated from max_num_batched_tokens in kv_cache_blocks.
NON_TORCH_RESERVE_BYTES = 1.0 * GIB
SAMPLER_MAX_SEQS = 256
"""Sequences vLLM's profiling run samples for (its default max_num_seqs): sizes the logits."""

# ---------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GPUSpec:
    """One GPU model: capacity, peak rates, and the efficiency factors that turn them into time.

    Attributes:
        name: Display name (``"A100-80GB"``).
        memory_gib: Device memory in GiB as the driver reports it (nvidia-smi ``memory.total``);
            vLLM's ``gpu_memory_utilization`` is a fraction of this.
        peak_flops: Dense BF16 tensor-core peak in FLOP/s (no sparsity).
        mem_bw: HBM (or GDDR) bandwidth in bytes/s.
        calibration: Fitted GEMM and elementwise efficiencies.
        attn_prefill_eff: Fraction of ``peak_flops`` prefill attention reaches (analytic).
        attn_decode_eff: Fraction of ``mem_bw`` decode attention reaches reading KV (analytic).
        allreduce: ``((tp, latency_s, algbw_bytes_per_s), ...)`` for tensor-parallel all-reduce.
        notes: Provenance of the numbers.
    """

    name: str
    memory_gib: float
    peak_flops: float
    mem_bw: float
    calibration: KernelCalibration
    attn_prefill_eff: float
    attn_decode_eff: float
    allreduce: tuple[tuple[int, float, float], ...]
    notes: str = ""

    @property
    def memory_bytes(self) -> float:
        """Device memory in bytes."""
        return self.memory_gib * GIB

    def with_memory(self, memory_gib: float) -> GPUSpec:
        """The same GPU with a different memory size in GiB (e.g. a 96 GB H800 variant)."""
        if memory_gib <= 0:
            raise SagerlError(f"GPU memory must be positive, got {memory_gib} GiB")
        return dataclasses.replace(self, memory_gib=float(memory_gib))

    def allreduce_params(self, tp: int) -> tuple[float, float]:
        """(latency_s, algbw_bytes_per_s) of one all-reduce across ``tp`` GPUs.

        TP degrees without a measurement use the nearest measured degree, scaling the algorithm
        bandwidth by the ring factor ``n / (2 (n - 1))`` so the bus bandwidth stays the same.
        """
        if tp <= 1:
            return 0.0, float("inf")
        table = {n: (lat, bw) for n, lat, bw in self.allreduce}
        if tp in table:
            return table[tp]
        near = min(table, key=lambda n: (abs(n - tp), n))
        lat, bw = table[near]
        bus = bw * 2.0 * (near - 1) / near
        return lat, bus * tp / (2.0 * (tp - 1))


def _allreduce_table(key: str, bw_scale: float = 1.0) -> tuple[tuple[int, float, float], ...]:
    return tuple((n, lat, bw * bw_scale) for n, (lat, bw) in sorted(ALLREDUCE_FITS[key].items()))


def _derived(base: str, gpu: str) -> KernelCalibration:
    return dataclasses.replace(
        KERNEL_CALIBRATION[base], source=f"derived from {base} profiling (no {gpu} profiling)"
    )


GPUS: dict[str, GPUSpec] = {
    spec.name: spec
    for spec in (
        GPUSpec(
            name="A40",
            memory_gib=46068 / 1024,  # 48 GB GDDR6 with ECC: 46068 MiB
            peak_flops=149.7e12,
            mem_bw=696e9,
            calibration=KERNEL_CALIBRATION["a40"],
            attn_prefill_eff=ATTN_PREFILL_EFF["ampere"],
            attn_decode_eff=ATTN_DECODE_EFF["ampere"],
            allreduce=_allreduce_table("a40"),
            notes="NVIDIA A40 datasheet; kernels fitted to vidur a40 profiling",
        ),
        GPUSpec(
            name="A100-80GB",
            memory_gib=80.0,  # 81920 MiB
            peak_flops=312e12,
            mem_bw=2.039e12,  # SXM4; the PCIe card has 1.935e12
            calibration=KERNEL_CALIBRATION["a100"],
            attn_prefill_eff=ATTN_PREFILL_EFF["ampere"],
            attn_decode_eff=ATTN_DECODE_EFF["ampere"],
            allreduce=_allreduce_table("a100"),
            notes="NVIDIA A100 80GB SXM4 datasheet; kernels fitted to vidur a100 profiling",
        ),
        GPUSpec(
            name="H100",
            memory_gib=81559 / 1024,  # 80 GB HBM3: 81559 MiB
            peak_flops=989.4e12,
            mem_bw=3.35e12,
            calibration=KERNEL_CALIBRATION["h100"],
            attn_prefill_eff=ATTN_PREFILL_EFF["hopper"],
            attn_decode_eff=ATTN_DECODE_EFF["hopper"],
            allreduce=_allreduce_table("h100"),
            notes="NVIDIA H100 SXM5 80GB datasheet; kernels fitted to vidur h100 profiling",
        ),
        GPUSpec(
            name="H800",
            # NOTE: the SageSched paper lists a 96 GB H800; the SXM part sold as H800 has 80 GB.
            # Use get_gpu("H800", memory_gib=96) (or GPUSpec.with_memory) to match the paper.
            memory_gib=81559 / 1024,
            peak_flops=989.4e12,
            mem_bw=3.35e12,
            calibration=_derived("h100", "H800"),
            attn_prefill_eff=ATTN_PREFILL_EFF["hopper"],
            attn_decode_eff=ATTN_DECODE_EFF["hopper"],
            # NVLink cut to 400 GB/s from H100's 900 GB/s.
            allreduce=_allreduce_table("h100", bw_scale=400 / 900),
            notes="H100 SXM compute and HBM3 with 400 GB/s NVLink; kernels derived from H100",
        ),
        GPUSpec(
            name="H200",
            memory_gib=143771 / 1024,  # 141 GB HBM3e: 143771 MiB
            peak_flops=989.4e12,
            mem_bw=4.8e12,
            calibration=_derived("h100", "H200"),
            attn_prefill_eff=ATTN_PREFILL_EFF["hopper"],
            attn_decode_eff=ATTN_DECODE_EFF["hopper"],
            allreduce=_allreduce_table("h100"),
            notes="NVIDIA H200 SXM datasheet; kernels derived from H100 (same SM, faster HBM)",
        ),
    )
}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A decoder-only transformer's architecture, as far as timing and KV memory need it.

    Attributes:
        name: Canonical lower-case name (``"llama-3.1-8b"``).
        num_layers: Transformer blocks.
        hidden_size: Residual-stream width.
        num_heads: Query heads.
        num_kv_heads: Key/value heads (grouped-query attention when fewer than ``num_heads``).
        head_dim: Width of one head; ``num_heads * head_dim`` may differ from ``hidden_size``
            (Qwen3-32B: 64 x 128 = 8192 vs 5120).
        intermediate_size: MLP width (per projection; gate and up each have this width).
        gated_mlp: SwiGLU-style gate and up projections (fused) instead of one up projection.
        vocab_size: Embedding rows and LM-head columns.
        num_params: Published parameter count; 0 means compute it from the architecture.
        dtype_bytes: Bytes per weight and KV element (2 for BF16/FP16).
        hf_id: Hugging Face repository of the reference checkpoint.
    """

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    gated_mlp: bool
    vocab_size: int
    num_params: int = 0
    dtype_bytes: int = 2
    hf_id: str = ""

    @property
    def q_size(self) -> int:
        """Width of all query heads together."""
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Width of all key (or value) heads together."""
        return self.num_kv_heads * self.head_dim

    @property
    def architecture_params(self) -> int:
        """Parameters implied by the shapes: embeddings, LM head, attention, MLP and norms."""
        h = self.hidden_size
        attn = h * (self.q_size + 2 * self.kv_size) + self.q_size * h
        mlp = (3 if self.gated_mlp else 2) * h * self.intermediate_size
        return 2 * self.vocab_size * h + self.num_layers * (attn + mlp + 2 * h) + h

    @property
    def params(self) -> int:
        """Published parameter count, or the architecture's when none is given."""
        return self.num_params or self.architecture_params

    @property
    def weight_bytes(self) -> int:
        """Bytes of all weights at ``dtype_bytes`` per parameter."""
        return self.params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token occupies over the whole model (all layers, K and V)."""
        return 2 * self.num_layers * self.kv_size * self.dtype_bytes


# Shapes from each checkpoint's config.json; parameter counts as published (safetensors totals,
# which the architecture reproduces: see ModelSpec.architecture_params and the tests).
# fmt: off
_LLAMA_LIKE: tuple[tuple[str, int, int, int, int, int, int, int], ...] = (
    # name            layers hidden heads kv  intermediate vocab   parameters
    ("llama-2-7b",     32,   4096,  32,  32,  11008,  32000,   6_738_415_616),
    ("llama-2-13b",    40,   5120,  40,  40,  13824,  32000,  13_015_864_320),
    ("llama-2-70b",    80,   8192,  64,   8,  28672,  32000,  68_976_648_192),
    ("llama-3-8b",     32,   4096,  32,   8,  14336, 128256,   8_030_261_248),
    ("llama-3-70b",    80,   8192,  64,   8,  28672, 128256,  70_553_706_496),
    ("llama-3.1-8b",   32,   4096,  32,   8,  14336, 128256,   8_030_261_248),
    ("llama-3.1-70b",  80,   8192,  64,   8,  28672, 128256,  70_553_706_496),
    # NOTE: Mistral-7B v0.1 has a 4096-token sliding window; modelled as full attention.
    ("mistral-7b",     32,   4096,  32,   8,  14336,  32000,   7_241_732_096),
    ("codellama-34b",  48,   8192,  64,   8,  22016,  32000,  33_743_970_304),
    ("internlm-20b",   60,   5120,  40,  40,  13824, 103168,  20_088_871_424),
    ("qwen-72b",       80,   8192,  64,  64,  24576, 152064,  72_287_920_128),
    # Qwen2.5 adds QKV biases (1.4 M parameters), negligible for time.
    ("qwen2.5-32b",    64,   5120,  40,   8,  27648, 152064,  32_763_876_352),
    # Qwen3-32B: 64 query heads of 128 (8192 wide) on a 5120-wide residual stream.
    ("qwen3-32b",      64,   5120,  64,   8,  25600, 151936,  32_762_123_264),
)
# fmt: on

_HF_IDS = {
    "llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "llama-2-13b": "meta-llama/Llama-2-13b-hf",
    "llama-2-70b": "meta-llama/Llama-2-70b-hf",
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B",
    "llama-3-70b": "meta-llama/Meta-Llama-3-70B",
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B-Instruct",
    "llama-3.1-70b": "meta-llama/Llama-3.1-70B-Instruct",
    "mistral-7b": "mistralai/Mistral-7B-Instruct-v0.2",
    "codellama-34b": "codellama/CodeLlama-34b-Instruct-hf",
    "internlm-20b": "internlm/internlm-20b",
    "qwen-72b": "Qwen/Qwen-72B",
    "qwen2.5-32b": "Qwen/Qwen2.5-32B-Instruct",
    "qwen3-32b": "Qwen/Qwen3-32B",
    "phi-2": "microsoft/phi-2",
}

MODELS: dict[str, ModelSpec] = {
    row[0]: ModelSpec(
        name=row[0],
        num_layers=row[1],
        hidden_size=row[2],
        num_heads=row[3],
        num_kv_heads=row[4],
        head_dim=128,
        intermediate_size=row[5],
        gated_mlp=True,
        vocab_size=row[6],
        num_params=row[7],
        hf_id=_HF_IDS[row[0]],
    )
    for row in _LLAMA_LIKE
}
# Phi-2: GELU MLP (not gated), 80-wide heads; its parallel attention/MLP block is modelled as
# sequential (same kernels, same bytes).
MODELS["phi-2"] = ModelSpec(
    name="phi-2",
    num_layers=32,
    hidden_size=2560,
    num_heads=32,
    num_kv_heads=32,
    head_dim=80,
    intermediate_size=10240,
    gated_mlp=False,
    vocab_size=51200,
    num_params=2_779_683_840,
    hf_id=_HF_IDS["phi-2"],
)

_GPU_ALIASES: dict[str, str] = {
    "a40": "A40",
    "a100": "A100-80GB",
    "a10080gb": "A100-80GB",
    "a100sxm80gb": "A100-80GB",
    "a100sxm480gb": "A100-80GB",
    "h100": "H100",
    "h10080gb": "H100",
    "h100sxm": "H100",
    "h100sxm5": "H100",
    "h100sxm580gb": "H100",
    "h10080gbhbm3": "H100",
    "h800": "H800",
    "h80080gb": "H800",
    "h200": "H200",
    "h200141gb": "H200",
}

_MODEL_SUFFIXES = ("-hf", "-instruct", "-chat", "-it", "-v0.1", "-v0.2", "-v0.3")


def _gpu_key(name: str) -> str:
    key = name.lower().replace("nvidia", "")
    return re.sub(r"[^a-z0-9]", "", key)


def _model_key(name: str) -> str:
    """Canonical lookup key: no org prefix, no chat/instruct suffixes, no separators but dots."""
    key = name.strip().lower().rsplit("/", 1)[-1]
    key = key.removeprefix("meta-")
    stripped = True
    while stripped:
        stripped = False
        for suffix in _MODEL_SUFFIXES:
            if key.endswith(suffix):
                key, stripped = key[: -len(suffix)], True
    return re.sub(r"[^a-z0-9.]", "", key)


_MODEL_KEYS: dict[str, str] = {_model_key(name): name for name in MODELS}
_MODEL_KEYS.update({_model_key(spec.hf_id): name for name, spec in MODELS.items()})


def gpu_names() -> list[str]:
    """Canonical GPU names."""
    return sorted(GPUS)


def model_names() -> list[str]:
    """Canonical model names."""
    return sorted(MODELS)


def get_gpu(name: str | GPUSpec, *, memory_gib: float | None = None) -> GPUSpec:
    """Look up a GPU by name, case-insensitively, with aliases (``"A100"``, ``"h100-sxm"``).

    Args:
        name: A GPU name or alias, or a :class:`GPUSpec` (returned as is, with the override).
        memory_gib: Override the device memory in GiB (e.g. 96 for the paper's H800).

    Raises:
        UnknownNameError: The name is not known; the message lists the valid names.
    """
    if isinstance(name, GPUSpec):
        spec = name
    else:
        canonical = _GPU_ALIASES.get(_gpu_key(name))
        if canonical is None:
            raise unknown_name("GPU", name, GPUS)
        spec = GPUS[canonical]
    return spec if memory_gib is None else spec.with_memory(memory_gib)


def get_model(name: str | ModelSpec) -> ModelSpec:
    """Look up a model by name or Hugging Face id, case-insensitively.

    ``"Llama-3.1-8B"``, ``"meta-llama/Llama-3.1-8B-Instruct"`` and ``"llama3.1-8b"`` all find
    ``llama-3.1-8b``; instruct/chat variants share their base model's architecture.

    Raises:
        UnknownNameError: The name is not known; the message lists the valid names.
    """
    if isinstance(name, ModelSpec):
        return name
    canonical = _MODEL_KEYS.get(_model_key(name))
    if canonical is None:
        raise unknown_name("model", name, MODELS)
    return MODELS[canonical]


# ---------------------------------------------------------------------------------------------
# Operator shapes and kernel-time formulas (shared by the step-time model and the calibration fit)
# ---------------------------------------------------------------------------------------------

GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
"""Per-layer GEMMs, named as in Vidur's tables: fused QKV, attention output, fused gate/up, down."""
ELEMENTWISE_OPS = ("input_layernorm", "post_attention_layernorm", "attn_rope", "mlp_act", "add")
"""Per-layer memory-bound kernels, named as in Vidur's tables."""
ELEMENTWISE_KIND = {
    "input_layernorm": "norm",
    "post_attention_layernorm": "norm",
    "attn_rope": "rope",
    "mlp_act": "act",
    "add": "add",
}
"""Which fitted :class:`KernelFit` of a :class:`KernelCalibration` times each elementwise op."""


def layer_gemm_shapes(model: ModelSpec, tp: int) -> dict[str, tuple[int, int]]:
    """(input width, output width) of each per-layer GEMM on one GPU of a ``tp``-way group.

    Column-parallel layers (QKV, gate/up) split their output, row-parallel ones (O, down) their
    input, as Megatron-style tensor parallelism (and vLLM, and Vidur's profiler) do.
    """
    kv_heads = kv_heads_per_gpu(model, tp)
    h = model.hidden_size
    up = (2 if model.gated_mlp else 1) * model.intermediate_size
    return {
        "attn_pre_proj": (h, model.q_size // tp + 2 * kv_heads * model.head_dim),
        "attn_post_proj": (model.q_size // tp, h),
        "mlp_up_proj": (h, up // tp),
        "mlp_down_proj": (model.intermediate_size // tp, h),
    }


def layer_elementwise_bytes(model: ModelSpec, tp: int) -> dict[str, float]:
    """HBM bytes per token each per-layer elementwise kernel reads plus writes on one GPU.

    Norms and the residual add see the full hidden state on every GPU (not sharded); RoPE and
    the activation see this GPU's heads and MLP slice.
    """
    b = model.dtype_bytes
    h = model.hidden_size
    rope_width = model.q_size // tp + kv_heads_per_gpu(model, tp) * model.head_dim
    act_width = model.intermediate_size / tp
    return {
        "input_layernorm": 2 * h * b,  # read x, write norm(x)
        "post_attention_layernorm": 2 * h * b,
        "attn_rope": 2 * rope_width * b,  # in place on q and k
        "mlp_act": (3 if model.gated_mlp else 2) * act_width * b,  # read gate, up; write
        "add": 3 * h * b,  # read two, write one
    }


def kv_heads_per_gpu(model: ModelSpec, tp: int) -> int:
    """KV heads each GPU stores: split across TP ranks, replicated when fewer than ``tp``."""
    return max(1, model.num_kv_heads // tp)


def gemm_time(flops: Any, weight_bytes: Any, act_bytes: Any, gpu: GPUSpec) -> Any:
    """Seconds of one GEMM by the smoothed roofline (works on floats and numpy arrays).

    Args:
        flops: Floating-point operations (2 per multiply-add).
        weight_bytes: Weight bytes read (once per iteration, however many tokens).
        act_bytes: Activation bytes read and written.
        gpu: Supplies peak, bandwidth and the fitted efficiencies.
    """
    cal = gpu.calibration
    p = cal.gemm_blend_p
    t_c = flops / (gpu.peak_flops * cal.gemm_compute_eff)
    t_m = (weight_bytes + act_bytes) / (gpu.mem_bw * cal.gemm_memory_eff)
    return cal.gemm_floor_s + (t_c**p + t_m**p) ** (1.0 / p)


def elementwise_time(nbytes: Any, fit: KernelFit, gpu: GPUSpec) -> Any:
    """Seconds of one memory-bound kernel moving ``nbytes`` (floats or numpy arrays)."""
    return fit.floor_s + nbytes / (gpu.mem_bw * fit.eff)


# ---------------------------------------------------------------------------------------------
# Step-time model
# ---------------------------------------------------------------------------------------------

BREAKDOWN_KEYS = (
    "overhead",
    "embedding",
    "norm",
    "qkv_proj",
    "rope",
    "attn_launch",
    "attn_prefill",
    "attn_decode",
    "o_proj",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "residual_add",
    "all_reduce",
    "lm_head",
    "sampler",
)
"""Keys of :meth:`StepTimeModel.breakdown`, in execution order."""


class StepTimeModel:
    """Seconds one engine iteration takes on one replica (``tp`` GPUs) for a mixed batch.

    The simulator calls :meth:`step_time` about 10^5 times per run, so everything that does not
    depend on the batch is folded into a handful of float constants in ``__init__`` and a call
    is pure float arithmetic (a few microseconds in CPython). The time is exactly affine in
    ``decode_kv_tokens`` (``base + kv_coef * decode_kv_tokens``), which lets the simulator sum
    runs of pure-decode iterations in closed form via :meth:`decode_coefficients`.

    Args:
        model: A :class:`ModelSpec` or a model name.
        gpu: A :class:`GPUSpec` or a GPU name.
        tp: Tensor-parallel degree (GPUs per replica); must divide the query heads, and the KV
            heads must divide by it or it by them, as vLLM requires.
        iteration_overhead_s: Fixed CPU overhead per iteration in seconds (default
            :data:`DEFAULT_ITERATION_OVERHEAD_S`).
        per_seq_overhead_s: CPU overhead per sequence in the batch in seconds (default
            :data:`DEFAULT_PER_SEQ_OVERHEAD_S`).

    Raises:
        SagerlError: ``tp`` is not a valid tensor-parallel degree for the model.
    """

    def __init__(
        self,
        model: ModelSpec | str,
        gpu: GPUSpec | str,
        tp: int = 1,
        *,
        iteration_overhead_s: float | None = None,
        per_seq_overhead_s: float | None = None,
    ) -> None:
        self.model = get_model(model)
        self.gpu = get_gpu(gpu)
        self.tp = _check_tp(self.model, tp)
        m, g, cal = self.model, self.gpu, self.gpu.calibration
        b = m.dtype_bytes
        layers = m.num_layers
        self.iteration_overhead_s = (
            DEFAULT_ITERATION_OVERHEAD_S if iteration_overhead_s is None else iteration_overhead_s
        )
        self.per_seq_overhead_s = (
            DEFAULT_PER_SEQ_OVERHEAD_S if per_seq_overhead_s is None else per_seq_overhead_s
        )

        # GEMM constants: t = floor + ((n * c)**p + (m0 + n * m1)**p)**(1/p), n = tokens.
        self._p = cal.gemm_blend_p
        self._inv_p = 1.0 / cal.gemm_blend_p
        self._gemm_floor = cal.gemm_floor_s
        flop_rate = g.peak_flops * cal.gemm_compute_eff
        byte_rate = g.mem_bw * cal.gemm_memory_eff
        self._gemm_consts: dict[str, tuple[float, float, float]] = {}
        for op, (d_in, d_out) in layer_gemm_shapes(m, self.tp).items():
            self._gemm_consts[op] = _gemm_consts(d_in, d_out, b, flop_rate, byte_rate)
        (self._qkv_c, self._qkv_m0, self._qkv_m1) = self._gemm_consts["attn_pre_proj"]
        (self._o_c, self._o_m0, self._o_m1) = self._gemm_consts["attn_post_proj"]
        (self._up_c, self._up_m0, self._up_m1) = self._gemm_consts["mlp_up_proj"]
        (self._dn_c, self._dn_m0, self._dn_m1) = self._gemm_consts["mlp_down_proj"]
        # LM head: vocabulary-parallel, on the num_seqs positions that are sampled.
        (self._lm_c, self._lm_m0, self._lm_m1) = _gemm_consts(
            m.hidden_size, -(-m.vocab_size // self.tp), b, flop_rate, byte_rate
        )

        # Elementwise kernels: floor + n * bytes_per_token / (bw * eff), per layer.
        self._elem: dict[str, tuple[float, float]] = {}
        for op, per_token in layer_elementwise_bytes(m, self.tp).items():
            fit: KernelFit = getattr(cal, ELEMENTWISE_KIND[op])
            self._elem[op] = (fit.floor_s, per_token / (g.mem_bw * fit.eff))
        emb_bytes = 2 * m.hidden_size * b  # gather one row, write it
        self._emb = (cal.emb.floor_s, emb_bytes / (g.mem_bw * cal.emb.eff))
        final_norm = (cal.norm.floor_s, 2 * m.hidden_size * b / (g.mem_bw * cal.norm.eff))
        # NOTE: sampler: FP32 logits of this GPU's vocabulary slice, about three passes (write,
        # softmax/top-p read, read) per sampled sequence.
        self._sampler = (
            cal.act.floor_s,
            3 * 4 * -(-m.vocab_size // self.tp) / (g.mem_bw * cal.act.eff),
        )

        # All-reduce after the O and down projections of every layer, plus one for the
        # vocabulary-parallel embedding: affine in tokens (n * hidden * dtype bytes each).
        if self.tp > 1:
            lat, algbw = g.allreduce_params(self.tp)
            n_ar = 2 * layers + 1
            self._ar = (n_ar * lat, n_ar * m.hidden_size * b / algbw)
        else:
            self._ar = (0.0, 0.0)

        # Attention: prefill FLOPs per (query, key) pair = 4 * heads * head_dim (QK^T and PV,
        # 2 FLOPs per multiply-add); decode reads K and V of every context token.
        heads = m.num_heads // self.tp
        kv_heads = kv_heads_per_gpu(m, self.tp)
        self._attn_launch = cal.gemm_floor_s  # NOTE: one attention kernel per layer
        self._prefill_coef = layers * 4.0 * heads * m.head_dim / (g.peak_flops * g.attn_prefill_eff)
        self._kv_bytes_per_token = 2 * layers * kv_heads * m.head_dim * b
        self._kv_coef = self._kv_bytes_per_token / (g.mem_bw * g.attn_decode_eff)

        # Everything affine in num_tokens folded into two numbers (per iteration, all layers).
        elem_floor = sum(floor for floor, _ in self._elem.values())
        elem_per_token = sum(per for _, per in self._elem.values())
        self._fixed = (
            self.iteration_overhead_s
            + layers * (4 * self._gemm_floor + elem_floor + self._attn_launch)
            + self._emb[0]
            + final_norm[0]
            + self._gemm_floor  # LM head
            + self._sampler[0]
            + self._ar[0]
        )
        self._per_token = layers * elem_per_token + self._emb[1] + final_norm[1] + self._ar[1]
        self._per_seq = self.per_seq_overhead_s + self._sampler[1]
        self._final_norm = final_norm

    # -- the hot path -----------------------------------------------------------------------

    def step_time(
        self,
        num_tokens: int,
        num_seqs: int,
        prefill_attn_pairs: float,
        decode_kv_tokens: int,
    ) -> float:
        """Seconds of one iteration.

        Args:
            num_tokens: Tokens processed this iteration: prefill-chunk tokens plus one per
                decode sequence (>= 1).
            num_seqs: Sequences in the batch (prefill and decode); each has one sampled
                position, so this sizes the LM head and sampler.
            prefill_attn_pairs: Sum over prefill chunks of
                ``chunk * (context_before + (chunk + 1) / 2)`` (causal query-key pairs).
            decode_kv_tokens: Sum over decode sequences of their context length in tokens.

        Returns:
            Seconds; exactly ``base + kv_coef * decode_kv_tokens`` with ``base`` independent
            of ``decode_kv_tokens``.
        """
        n = num_tokens
        p = self._p
        ip = self._inv_p
        s = num_seqs
        layer = (
            ((n * self._qkv_c) ** p + (self._qkv_m0 + n * self._qkv_m1) ** p) ** ip
            + ((n * self._o_c) ** p + (self._o_m0 + n * self._o_m1) ** p) ** ip
            + ((n * self._up_c) ** p + (self._up_m0 + n * self._up_m1) ** p) ** ip
            + ((n * self._dn_c) ** p + (self._dn_m0 + n * self._dn_m1) ** p) ** ip
        )
        lm_head = ((s * self._lm_c) ** p + (self._lm_m0 + s * self._lm_m1) ** p) ** ip
        base = (
            self._fixed
            + self._per_token * n
            + self._per_seq * s
            + self.model.num_layers * layer
            + lm_head
            + self._prefill_coef * prefill_attn_pairs
        )
        return base + self._kv_coef * decode_kv_tokens

    def decode_coefficients(self, num_seqs: int) -> tuple[float, float]:
        """(base_s, per_kv_token_s) of a pure-decode iteration of ``num_seqs`` sequences.

        ``step_time(num_seqs, num_seqs, 0, kv) == base_s + per_kv_token_s * kv`` exactly, so a
        run of k decode iterations whose total context grows by ``num_seqs`` per iteration
        costs ``k * base_s + per_kv_token_s * (k * kv0 + num_seqs * k * (k - 1) / 2)``.
        """
        return self.step_time(num_seqs, num_seqs, 0.0, 0), self._kv_coef

    @property
    def kv_coef(self) -> float:
        """Seconds each decode context token adds to an iteration (all layers)."""
        return self._kv_coef

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token occupies on each GPU of the replica (all layers, K and V)."""
        return self._kv_bytes_per_token

    # -- inspection -------------------------------------------------------------------------

    def breakdown(
        self,
        num_tokens: int,
        num_seqs: int,
        prefill_attn_pairs: float,
        decode_kv_tokens: int,
    ) -> dict[str, float]:
        """Seconds per operator (summed over layers) for the same arguments as :meth:`step_time`.

        Keys are :data:`BREAKDOWN_KEYS`; the values sum to :meth:`step_time` (up to rounding).
        """
        n, s, layers = num_tokens, num_seqs, self.model.num_layers
        ops = self.layer_op_times(n)
        elem = self._elem
        lm = gemm_from_consts(s, self._lm_c, self._lm_m0, self._lm_m1, self._p, self._gemm_floor)
        return {
            "overhead": self.iteration_overhead_s + self.per_seq_overhead_s * s,
            "embedding": self._emb[0] + self._emb[1] * n,
            "norm": layers * (ops["input_layernorm"] + ops["post_attention_layernorm"])
            + self._final_norm[0]
            + self._final_norm[1] * n,
            "qkv_proj": layers * ops["attn_pre_proj"],
            "rope": layers * ops["attn_rope"],
            "attn_launch": layers * self._attn_launch,
            "attn_prefill": self._prefill_coef * prefill_attn_pairs,
            "attn_decode": self._kv_coef * decode_kv_tokens,
            "o_proj": layers * ops["attn_post_proj"],
            "mlp_up_proj": layers * ops["mlp_up_proj"],
            "mlp_act": layers * ops["mlp_act"],
            "mlp_down_proj": layers * ops["mlp_down_proj"],
            "residual_add": layers * (elem["add"][0] + elem["add"][1] * n),
            "all_reduce": self._ar[0] + self._ar[1] * n,
            "lm_head": lm,
            "sampler": self._sampler[0] + self._sampler[1] * s,
        }

    def layer_op_times(self, num_tokens: int) -> dict[str, float]:
        """Seconds of each profiled per-layer operator (Vidur's names) for ``num_tokens`` tokens.

        The same constants as :meth:`step_time`; the calibration compares these with Vidur's
        measured ``mlp.csv`` rows.
        """
        n = num_tokens
        out = {
            op: gemm_from_consts(n, c, m0, m1, self._p, self._gemm_floor)
            for op, (c, m0, m1) in self._gemm_consts.items()
        }
        for op, (floor, per_token) in self._elem.items():
            out[op] = floor + per_token * n
        return out

    def all_reduce_time(self, nbytes: float) -> float:
        """Seconds of one all-reduce of ``nbytes`` across this replica's GPUs (0 when tp == 1)."""
        if self.tp == 1:
            return 0.0
        lat, algbw = self.gpu.allreduce_params(self.tp)
        return lat + nbytes / algbw

    # -- memory -----------------------------------------------------------------------------

    def kv_cache_blocks(
        self,
        block_size: int = 16,
        gpu_memory_utilization: float = 0.9,
        *,
        max_num_batched_tokens: int = 8192,
    ) -> int:
        """KV-cache blocks per replica, as vLLM sizes them at start-up.

        ``memory * utilisation - weights / tp - activations - non-torch reserve`` on one GPU,
        divided by one block's bytes on that GPU (every GPU of the replica holds its heads'
        slice of every block, so the count is the replica's).

        Args:
            block_size: Tokens per KV block.
            gpu_memory_utilization: Fraction of device memory vLLM may use (0-1].
            max_num_batched_tokens: Token budget of vLLM's profiling forward pass, which sizes
                the activation reserve.

        Raises:
            SagerlError: An argument is out of range, or the weights and reserves do not fit.
        """
        if block_size < 1:
            raise SagerlError(f"block_size must be >= 1 token, got {block_size}")
        if not 0.0 < gpu_memory_utilization <= 1.0:
            raise SagerlError(
                f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}"
            )
        m, tp = self.model, self.tp
        budget = self.gpu.memory_bytes * gpu_memory_utilization
        weights = m.weight_bytes / tp
        reserve = NON_TORCH_RESERVE_BYTES + self.activation_bytes(max_num_batched_tokens)
        free = budget - weights - reserve
        block_bytes = self._kv_bytes_per_token * block_size
        if free < block_bytes:
            raise SagerlError(
                f"{m.name} does not fit on {tp} x {self.gpu.name}: "
                f"{weights / GIB:.1f} GiB of weights and {reserve / GIB:.1f} GiB of activations "
                f"and runtime per GPU against {budget / GIB:.1f} GiB usable "
                f"({self.gpu.memory_gib:.1f} GiB x {gpu_memory_utilization}); "
                "raise tp or gpu_memory_utilization"
            )
        return int(free // block_bytes)

    def activation_bytes(self, num_tokens: int) -> float:
        """Peak activation bytes per GPU of a forward pass over ``num_tokens`` tokens.

        NOTE: the largest live set inside one layer: residual and hidden states, the QKV output,
        the gate/up output and the activation output, plus FP32 logits of up to
        :data:`SAMPLER_MAX_SEQS` sequences; intermediate layers free theirs.
        """
        m, tp, b = self.model, self.tp, self.model.dtype_bytes
        qkv = m.q_size // tp + 2 * kv_heads_per_gpu(m, tp) * m.head_dim
        mlp = (3 if m.gated_mlp else 2) * m.intermediate_size / tp
        per_token = (2 * m.hidden_size + qkv + mlp) * b
        logits = SAMPLER_MAX_SEQS * m.vocab_size * 4 * 2
        return num_tokens * per_token + logits

    def __repr__(self) -> str:
        return f"StepTimeModel({self.model.name!r}, {self.gpu.name!r}, tp={self.tp})"


def _gemm_consts(
    d_in: int, d_out: int, dtype_bytes: int, flop_rate: float, byte_rate: float
) -> tuple[float, float, float]:
    """(compute s/token, weight-read s, activation s/token) of a (d_in x d_out) GEMM."""
    return (
        2.0 * d_in * d_out / flop_rate,
        float(d_in) * d_out * dtype_bytes / byte_rate,
        float(d_in + d_out) * dtype_bytes / byte_rate,
    )


def gemm_from_consts(n: float, c: float, m0: float, m1: float, p: float, floor: float) -> float:
    """GEMM seconds from :func:`_gemm_consts` constants for ``n`` tokens (step_time's formula)."""
    return floor + ((n * c) ** p + (m0 + n * m1) ** p) ** (1.0 / p)


def _check_tp(model: ModelSpec, tp: int) -> int:
    if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1:
        raise SagerlError(f"tp (tensor-parallel degree) must be an integer >= 1, got {tp!r}")
    if model.num_heads % tp:
        raise SagerlError(
            f"tp={tp} does not divide the {model.num_heads} attention heads of {model.name}"
        )
    if model.num_kv_heads % tp and tp % model.num_kv_heads:
        raise SagerlError(
            f"tp={tp} and the {model.num_kv_heads} KV heads of {model.name} do not divide "
            "one another"
        )
    return tp
