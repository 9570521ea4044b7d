"""Length predictors for comparison runs: built per run, sharing the expensive parts.

A run must start from the same predictor state for every policy (an empty history plus the
warm-up pool), so a fresh predictor is built per run. What is expensive and identical across
runs is computed once per process and shared: the warm-up pool (loaded, with every evaluated
prompt removed) and, for semantic predictors, one :class:`~sagerl.predict.embedder.Embedder`
whose cache already holds the vectors of every prompt the runs will see.

The robustness ablation mixes every prediction with a uniform distribution
(:class:`UniformMix`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from sagerl.compare.config import PredictorSpec
from sagerl.predict import LengthDistribution, PredictorConfig, WarmupPool, make_predictor
from sagerl.workload.request import Request

_EMBEDDERS: dict[str, Any] = {}
_ENSURED: dict[str, set[str]] = {}
_WARMUPS: dict[str, WarmupPool | None] = {}


class UniformMix:
    """Wraps a predictor: each prediction becomes ``(1 - w) · prediction + w · uniform``.

    The uniform part spreads its weight over ``points`` equally spaced lengths in
    ``[1, max_tokens]`` (the paper's robustness test mixes prediction and uniform 1:4).
    """

    def __init__(self, inner: Any, weight: float, max_tokens: int, points: int) -> None:
        self.inner = inner
        self.weight = float(weight)
        self.uniform = LengthDistribution(np.linspace(1.0, float(max_tokens), points))

    def predict(self, request: Request) -> LengthDistribution:
        pred = self.inner.predict(request)
        return LengthDistribution.mixture([pred, self.uniform], [1.0 - self.weight, self.weight])

    def observe(self, request: Request, output_tokens: int) -> None:
        self.inner.observe(request, output_tokens)


def _spec_key(spec: PredictorSpec) -> str:
    return spec.model_dump_json()


def warmup_pool(
    spec: PredictorSpec, data_dir: str | os.PathLike[str] | None, evaluated: Iterable[Request]
) -> WarmupPool | None:
    """The warm-up pool of ``spec`` without any prompt of ``evaluated`` (cached per process)."""
    key = _spec_key(spec)
    if key in _WARMUPS:
        return _WARMUPS[key]
    if not spec.warmup:
        _WARMUPS[key] = None
        return None
    from sagerl.workload.datasets import load_pool

    pools = [WarmupPool.from_pool(load_pool(d.name, data_dir, **d.options)) for d in spec.warmup]
    merged = _concat(pools)
    reqs = list(evaluated)
    ids = {r.prompt_id for r in reqs if r.prompt_id}
    texts = {r.prompt_text for r in reqs if r.prompt_text}
    pool = merged.excluding(ids, texts)
    _WARMUPS[key] = pool
    return pool


def _concat(pools: Sequence[WarmupPool]) -> WarmupPool:
    if len(pools) == 1:
        return pools[0]
    width = max(p.samples.shape[1] for p in pools)
    samples = []
    for p in pools:
        s = p.samples
        if s.shape[1] < width:  # repeat the columns of single-answer sets to the common width
            s = np.repeat(s, -(-width // s.shape[1]), axis=1)[:, :width]
        samples.append(s)
    texts: list[str] | None = []
    for p in pools:
        if p.texts is None:
            texts = None
            break
        texts.extend(p.texts)
    return WarmupPool(
        prompt_ids=[i for p in pools for i in p.prompt_ids],
        prompt_tokens=np.concatenate([p.prompt_tokens for p in pools]),
        samples=np.concatenate(samples),
        texts=texts,
    )


def predictor_config(spec: PredictorSpec) -> PredictorConfig:
    """The :class:`PredictorConfig` of ``spec`` (its name and options)."""
    return PredictorConfig.model_validate({**spec.options, "name": spec.name})


def shared_embedder(spec: PredictorSpec, texts: Iterable[str]) -> Any:
    """One embedder per embedder config and process whose cache holds ``texts``' vectors.

    The first call sizes the cache for its texts (so pass every text the runs will need);
    texts not seen before are embedded once, later calls only look up.
    """
    cfg = predictor_config(spec)
    key = cfg.embedder.model_dump_json()
    unique = {t for t in texts if t}
    emb = _EMBEDDERS.get(key)
    if emb is None:
        from sagerl.predict.embedder import Embedder

        size = max(cfg.embedder.cache_size, 2 * len(unique) + 1024)
        emb = Embedder(cfg.embedder.model_copy(update={"cache_size": size}))
        _EMBEDDERS[key] = emb
        _ENSURED[key] = set()
    new = sorted(unique - _ENSURED[key])
    if new:
        emb.embed(new)
        _ENSURED[key].update(new)
    return emb


def needs_embedding(spec: PredictorSpec) -> bool:
    """Whether the predictor reads prompt vectors (and so needs text and an embedder)."""
    from sagerl.predict import PREDICTORS, predictor_names

    predictor_names()  # fills the table
    return bool(PREDICTORS.get(spec.name).uses_embedding)


def build_predictor(
    spec: PredictorSpec,
    data_dir: str | os.PathLike[str] | None,
    evaluated: Sequence[Request],
) -> Any:
    """A fresh predictor for one run: empty history, fitted on the warm-up pool, maybe mixed.

    Args:
        spec: What to build.
        data_dir: Data directory for the warm-up data sets.
        evaluated: Every request of the comparison (excluded from the warm-up pool; their
            prompt texts pre-fill the shared embedder's cache).
    """
    embedder = None
    if needs_embedding(spec):
        pool = warmup_pool(spec, data_dir, evaluated)
        texts = [r.prompt_text for r in evaluated if r.prompt_text]
        if pool is not None and pool.texts is not None:
            texts.extend(pool.texts)
        embedder = shared_embedder(spec, texts)
    predictor = make_predictor(spec.name, predictor_config(spec), embedder)
    pool = warmup_pool(spec, data_dir, evaluated)
    if pool is not None:
        predictor.fit(pool)
    if spec.uniform_mix > 0:
        return UniformMix(predictor, spec.uniform_mix, spec.uniform_max_tokens, spec.uniform_points)
    return predictor
