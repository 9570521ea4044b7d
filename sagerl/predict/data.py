"""Evaluation streams with a disjoint warm-up pool, for CASTILLO and ShareGPT.

* **CASTILLO** (one model): the ``test`` split is evaluated, in a seeded random order (the file
  is grouped by source data set, which no real arrival stream is); the ``train`` and
  ``validate`` splits form the warm-up pool. The truth of a request is its 10 sampled lengths;
  the request's own output (what ``observe`` learns) is the first sample.
* **ShareGPT** (turns): conversations, not turns, are split (the part of ``id`` before the last
  ``_`` names the original conversation, which "cleaned_split" cut into segments), so the turns
  of one conversation never sit on both sides. A seeded ``eval_fraction`` of conversations is
  evaluated in file order (a conversation's turns arrive in order); the rest is the pool.

Both pools then drop every row whose prompt id or normalised text is evaluated, so repeated
prompts ("continue", duplicated instructions) cannot leak the answer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sagerl.predict.warmup import WarmupPool, check_disjoint
from sagerl.workload.pool import RequestPool
from sagerl.workload.request import Request

EVAL_DATASETS = ("castillo", "sharegpt")


@dataclass
class EvalData:
    """One evaluation: the request stream, the truth per request, and the warm-up pool.

    Attributes:
        label: Names the data (``castillo/<model>`` or ``sharegpt``); keys the embedding cache.
        requests: The stream, in arrival order.
        truths: Equally likely true output lengths of each request (tokens).
        warmup: Public requests disjoint from the stream.
    """

    label: str
    requests: list[Request]
    truths: list[np.ndarray]
    warmup: WarmupPool


def conversation_id(prompt_id: str) -> str:
    """ShareGPT conversation of a turn id ``"<record id>:<turn>"``, e.g. ``QWJhYvA_0:2`` ->
    ``QWJhYvA`` (the record id's part before its last ``_``)."""
    record = prompt_id.rsplit(":", 1)[0]
    return record.rsplit("_", 1)[0] if "_" in record else record


def castillo_eval(
    model: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    limit: int | None = None,
    seed: int = 0,
    name: str = "castillo",
) -> EvalData:
    """CASTILLO ``test`` split of ``model`` against a warm-up pool of ``train`` + ``validate``.

    Args:
        model: CASTILLO's model spelling, e.g. ``meta-llama--Llama-3.1-8B-Instruct``.
        data_dir: Full-data directory (``None``: the default resolution).
        limit: Evaluate at most this many requests (after the seeded shuffle).
        seed: Order of the stream.
        name: ``castillo``, or ``sample_castillo`` for the bundled sample.
    """
    from sagerl.workload.datasets import load_pool

    test = load_pool(name, data_dir, model=model, splits=["test"])
    pool = load_pool(name, data_dir, model=model, splits=["train", "validate"])
    order = np.random.default_rng(seed).permutation(len(test))[:limit]
    stream = test.take(order)
    warm = WarmupPool.from_pool(pool).excluding(stream.prompt_ids or (), stream.texts or ())
    return _finish(f"{name}/{model}", stream, warm)


def sharegpt_eval(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    limit: int | None = None,
    seed: int = 0,
    eval_fraction: float = 0.2,
    warmup_limit: int | None = None,
    pool: RequestPool | None = None,
) -> EvalData:
    """ShareGPT turns, split by conversation (see the module docstring).

    Args:
        data_dir: Full-data directory (``None``: the default resolution).
        limit: Evaluate at most this many turns (the first ones, in file order).
        seed: Which conversations are evaluated, and which pool rows a ``warmup_limit`` keeps.
        eval_fraction: Share of conversations evaluated.
        warmup_limit: Keep at most this many warm-up turns (a seeded sample).
        pool: A pool to split instead of loading ``sharegpt`` (tests).
    """
    if pool is None:
        from sagerl.workload.datasets import load_pool

        pool = load_pool("sharegpt", data_dir)
    texts = pool.texts or [""] * len(pool)
    ids = pool.prompt_ids or [str(i) for i in range(len(pool))]
    has_text = np.array([bool(t.strip()) for t in texts], dtype=bool)
    usable = np.flatnonzero(has_text & (pool.prompt_tokens > 0))
    conv = np.array([conversation_id(ids[i]) for i in usable])
    unique = np.unique(conv)
    rng = np.random.default_rng(seed)
    chosen = set(unique[rng.permutation(unique.size)[: round(unique.size * eval_fraction)]])
    in_eval = np.array([c in chosen for c in conv], dtype=bool)
    stream = pool.take(usable[in_eval][:limit])
    rest = usable[~in_eval]
    if warmup_limit is not None and rest.size > warmup_limit:
        rest = np.sort(rng.choice(rest, size=warmup_limit, replace=False))
    warm = WarmupPool.from_pool(pool.take(rest)).excluding(
        stream.prompt_ids or (), stream.texts or ()
    )
    return _finish("sharegpt", stream, warm)


def _finish(label: str, stream: RequestPool, warm: WarmupPool) -> EvalData:
    samples = stream.output_samples
    requests = [
        Request(
            id=i,
            arrival=float(i),
            prompt_tokens=int(stream.prompt_tokens[i]),
            output_tokens=int(stream.output_tokens[i]),
            prompt_text=None if stream.texts is None else stream.texts[i],
            source=stream.source,
            prompt_id="" if stream.prompt_ids is None else stream.prompt_ids[i],
            length_samples=() if samples is None else tuple(int(v) for v in samples[i]),
        )
        for i in range(len(stream))
    ]
    truths = [
        np.asarray(r.length_samples or (r.output_tokens,), dtype=np.float64) for r in requests
    ]
    check_disjoint(warm, [r.prompt_id for r in requests], [r.prompt_text for r in requests])
    return EvalData(label, requests, truths, warm)


def load_eval(
    dataset: str,
    *,
    model: str,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> EvalData:
    """The evaluation of ``dataset`` (``castillo``, ``sharegpt`` or ``sample_castillo``)."""
    from sagerl.errors import unknown_name

    if dataset in ("castillo", "sample_castillo"):
        return castillo_eval(model, data_dir, limit=limit, seed=seed, name=dataset)
    if dataset == "sharegpt":
        return sharegpt_eval(data_dir, limit=limit, seed=seed)
    raise unknown_name("evaluation data set", dataset, (*EVAL_DATASETS, "sample_castillo"))


def stream_texts(requests: Sequence[Request]) -> list[str]:
    """Prompt texts of a stream (empty string where a request has none)."""
    return [r.prompt_text or "" for r in requests]
