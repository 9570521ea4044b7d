"""Every threshold of the length predictors, in one validated config section.

The paper fixes only the similarity threshold (cosine >= 0.8) and the history size (10,000); the
rest (minimum neighbour count, k-nearest fallback, embedding variant, trained heads) is ours and
lives here so experiments change it with ``key=value`` overrides instead of code edits.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sagerl.schema import StrictModel

EmbedBackend = Literal["onnx-int8", "onnx", "torch"]


class EmbedderConfig(StrictModel):
    """How prompts become vectors (all-MiniLM-L6-v2, 384 dimensions, L2-normalised)."""

    backend: EmbedBackend = "onnx-int8"
    """``onnx-int8`` (dynamic int8, per-channel weights; fastest), ``onnx`` (fp32 ONNX) or
    ``torch`` (the reference). The ONNX files are exported once into the cache directory;
    without onnxruntime the embedder falls back to ``torch``."""

    max_seq_len: int = Field(default=64, ge=8, le=512)
    """Prompt tokens (WordPiece, including [CLS]/[SEP]) kept before truncation. The model's
    cost is linear in it; at 64 tokens with ``head_tail`` SageSched's CRPS is within 0.1%
    (CASTILLO) and 0.6% (ShareGPT) of the full 256 (see ``benchmarks/predictor_latency.py``)."""

    truncation: Literal["head", "head_tail"] = "head_tail"
    """Which tokens a long prompt keeps: the first ``max_seq_len`` (``head``, as
    sentence-transformers does), or the first three quarters and the last quarter
    (``head_tail``: a long prompt often ends with its instruction or the function to write)."""

    threads: int = Field(default=1, ge=1)
    """Intra-op threads of the ONNX session (or torch, set for each pass and restored); 1 for
    the per-request latency figures."""

    batch_size: int = Field(default=16, ge=1)
    """Prompts per forward pass when embedding many at once (sorted by length to cut padding)."""

    cache_size: int = Field(default=4096, ge=0)
    """Distinct prompt texts kept in an LRU cache, so repeated prompts (system prompts,
    "continue") and ``observe`` after ``predict`` skip the transformer. 0 disables it."""


class TrainConfig(StrictModel):
    """Trained heads (``point``, ``tie``): small MLPs on the prompt embedding."""

    hidden: int = Field(default=128, ge=1)
    """Width of the one hidden layer."""

    steps: int = Field(default=2000, ge=1)
    """Adam steps (mini-batches) of training."""

    batch_size: int = Field(default=256, ge=1)
    """Prompts per mini-batch."""

    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Share of the warm-up pool held out to pick the best checkpoint (early stopping)."""

    lr: float = Field(default=1e-3, gt=0)
    """Adam learning rate."""

    weight_decay: float = Field(default=1e-4, ge=0)
    """AdamW weight decay."""

    seed: int = 0
    """Seed of the initialisation (training is deterministic for a fixed seed)."""

    nu: float = Field(default=3.5, gt=2)
    """Degrees of freedom of TIE's log-t distribution (the paper's 3.5)."""

    tie_points: int = Field(default=32, ge=2)
    """Equal-probability support points used to discretise the log-t prediction."""


class PredictorConfig(StrictModel):
    """Settings of every predictor; each uses the fields it needs."""

    name: str = "sagesched"
    """Registered predictor: sagesched, length-history, point, tie, global, oracle."""

    similarity: float = Field(default=0.8, ge=-1.0, le=1.0)
    """Cosine threshold of the range search (the paper's 0.8)."""

    history_size: int = Field(default=10_000, ge=1)
    """Finished requests kept in the FIFO history (the paper's 10,000)."""

    min_neighbors: int = Field(default=16, ge=0)
    """Below this many history neighbours the warm-up pool is searched too (chosen on held-out
    warm-up data, ``benchmarks/predictor_tuning.py``; 8 to 32 score within 0.1%)."""

    warmup_max: int | None = Field(default=None, ge=1)
    """Use at most this many warm-up rows (evenly spaced over the pool); ``None`` keeps all."""

    warmup_ivf_above: int = Field(default=20_000, ge=1)
    """Warm-up pools larger than this are searched through an IVF index (2 sqrt(n) cells)
    instead of a flat one: a flat scan of ShareGPT's 45k-row pool misses the CPU cache and
    costs 3-5 ms per request; the IVF index costs 0.3 ms and scored the same CRPS."""

    warmup_nprobe: int = Field(default=16, ge=1)
    """IVF cells scanned per query (more: closer to exact, slower)."""

    k_fallback: int = Field(default=32, ge=1)
    """When history and warm-up pool together give fewer than ``min_neighbors``, take the
    ``k_fallback`` nearest of both regardless of the threshold."""

    search_k: int = Field(default=64, ge=1)
    """Candidates fetched from an IVF warm-up index (pools above ``warmup_ivf_above``) in its
    single search pass; a query whose candidates are all above the threshold gets a second,
    range search, so this changes speed only. The history and flat pools are scanned exactly
    (one BLAS product), which answers range and k-nearest queries at once."""

    max_neighbors: int | None = Field(default=None, ge=1)
    """Keep only the most similar neighbours (``None``: all above the threshold, as the paper)."""

    weighting: Literal["uniform", "similarity"] = "uniform"
    """Neighbour weights: equal (the paper), or proportional to cosine similarity (about 1%
    lower CRPS on held-out warm-up data)."""

    length_tolerance: float = Field(default=0.1, gt=0)
    """``length-history``: neighbours have a prompt length within this relative distance."""

    global_min_history: int = Field(default=100, ge=0)
    """``global``: below this many observed requests the warm-up pool's lengths are included."""

    prior_length: float = Field(default=256.0, gt=0)
    """Answer (a one-point distribution, tokens) when a predictor has no data at all."""

    max_output_tokens: int = Field(default=16_384, ge=1)
    """Upper clip of predicted lengths (the log-t tail is unbounded)."""

    search_threads: int = Field(default=1, ge=1)
    """OpenMP threads FAISS may use during an IVF search (restored afterwards). The exact
    scans always run numpy's BLAS on the calling thread (see ``history.one_blas_thread``)."""

    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
