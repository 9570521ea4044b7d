"""Streaming evaluation of predictors: accuracy against the true distribution, and latency.

Protocol (the way a scheduler uses a predictor): requests arrive one at a time in stream order;
each is predicted *before* its outcome is observed, then ``observe`` feeds its output length
back. Trained heads are fit on the warm-up pool first; history predictors start empty and use
the pool at start-up. Accuracy figures come from :func:`sagerl.predict.metrics.score`.

Latency is measured after the stream, on its first ``latency_requests`` requests, cold (the
embedder's text cache bypassed, so every request pays a transformer pass):

* ``embed_*``: the prompt embedding alone; ``search_*``: the rest of ``predict`` given the
  vector (neighbour search and building the distribution); ``latency_*``: both, per request.
* ``batched_ms_per_request``: the same on batches of ``batch_size`` requests, divided by the
  batch size.

Each figure is wall-clock time, best of three runs; the ``*_cpu_*`` twins are the CPU time of
the calling thread (the embedder, FAISS and the tokenizer all run on it at one thread), which
other processes on a shared machine cannot inflate.

The stream itself runs on vectors precomputed once per data set (see
:class:`~sagerl.predict.embedding_store.EmbeddingStore`): they are the numbers a cold pass gives.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from sagerl.predict.base import PREDICTORS, EmbeddingPredictor, Predictor, make_predictor
from sagerl.predict.config import PredictorConfig
from sagerl.predict.data import EvalData, stream_texts
from sagerl.predict.distribution import LengthDistribution
from sagerl.predict.embedder import Embedder
from sagerl.predict.embedding_store import EmbeddingStore
from sagerl.predict.metrics import latency_summary, score
from sagerl.predict.warmup import WarmupPool
from sagerl.workload.request import Request

Figures = dict[str, float]


def prepare_embeddings(data: EvalData, embedder: Embedder, progress: bool = True) -> WarmupPool:
    """Load (or compute once) the vectors of the stream and pool; preload the stream's into
    the embedder and return the pool with its vectors attached."""
    store = EmbeddingStore(data.label.split("/")[0], embedder.variant)
    texts = stream_texts(data.requests)
    embedder.preload(texts, store.ensure(texts, embedder, progress))
    if data.warmup.texts is None or len(data.warmup) == 0:
        return data.warmup
    return data.warmup.with_embeddings(store.ensure(data.warmup.texts, embedder, progress))


def run_stream(
    predictor: Predictor, requests: Sequence[Request], progress: bool = True, desc: str = ""
) -> list[LengthDistribution]:
    """Predict each request, then observe its output length, in order."""
    preds = []
    for r in tqdm(requests, desc=desc or predictor.name, disable=not progress, leave=False):
        preds.append(predictor.predict(r))
        predictor.observe(r, r.output_tokens)
    return preds


def measure_latency(
    predictor: Predictor, requests: Sequence[Request], batch_size: int = 16, repeats: int = 3
) -> Figures:
    """Per-request and batched prediction latency (milliseconds), cold embedding.

    Each figure is the best of ``repeats`` runs: the timings answer "how fast is the code",
    and on a shared machine other processes only ever add time.
    """
    if not requests:
        return {}
    runs = [_latency_once(predictor, requests, batch_size) for _ in range(max(1, repeats))]
    return {key: min(run[key] for run in runs) for key in runs[0]}


def _clocks() -> tuple[float, float]:
    """Wall-clock and this thread's CPU time, in seconds."""
    return time.perf_counter(), time.thread_time()


def _latency_once(predictor: Predictor, requests: Sequence[Request], batch_size: int) -> Figures:
    embedding = isinstance(predictor, EmbeddingPredictor)
    texts = stream_texts(requests)
    pts = np.array([r.prompt_tokens for r in requests], dtype=np.int64)

    def embed(chunk: list[str]) -> np.ndarray | None:
        if isinstance(predictor, EmbeddingPredictor):
            return predictor.embedder.embed(chunk, use_cache=False)
        return None

    def search(vectors: np.ndarray | None, lo: int, hi: int) -> None:
        if isinstance(predictor, EmbeddingPredictor) and vectors is not None:
            predictor.predict_from_embeddings(vectors, pts[lo:hi])
        else:
            predictor.predict_many(requests[lo:hi])

    search(embed(texts[:1]), 0, 1)  # load the model, warm the caches
    wall: dict[str, list[float]] = {"embed": [], "search": []}
    cpu: dict[str, list[float]] = {"embed": [], "search": []}
    for i in range(len(requests)):
        w0, c0 = _clocks()
        vectors = embed(texts[i : i + 1])
        w1, c1 = _clocks()
        search(vectors, i, i + 1)
        w2, c2 = _clocks()
        wall["embed"].append(w1 - w0 if embedding else 0.0)
        wall["search"].append(w2 - w1)
        cpu["embed"].append(c1 - c0 if embedding else 0.0)
        cpu["search"].append(c2 - c1)
    out: Figures = {}
    out.update(latency_summary(np.add(wall["embed"], wall["search"]), "latency"))
    out.update(latency_summary(wall["embed"], "embed"))
    out.update(latency_summary(wall["search"], "search"))
    out.update(latency_summary(np.add(cpu["embed"], cpu["search"]), "latency_cpu"))
    out.update(latency_summary(cpu["embed"], "embed_cpu"))
    out.update(latency_summary(cpu["search"], "search_cpu"))
    w0, c0 = _clocks()
    for start in range(0, len(texts), batch_size):
        stop = min(start + batch_size, len(texts))
        search(embed(texts[start:stop]), start, stop)
    w1, c1 = _clocks()
    out["batched_ms_per_request"] = (w1 - w0) / len(texts) * 1e3
    out["batched_cpu_ms_per_request"] = (c1 - c0) / len(texts) * 1e3
    return out


def evaluate(
    data: EvalData,
    names: Sequence[str],
    config: PredictorConfig | None = None,
    *,
    embedder: Embedder | None = None,
    progress: bool = True,
    latency_requests: int = 200,
    batch_size: int = 16,
) -> dict[str, Figures]:
    """Score every predictor in ``names`` on ``data``; figures keyed by predictor name.

    Args:
        data: Stream, truths and warm-up pool (see :mod:`sagerl.predict.data`).
        names: Registered predictor names (an unknown one is an error before any work).
        config: Shared thresholds (defaults: the paper's).
        embedder: Shared sentence encoder (built from ``config.embedder`` when needed).
        progress: Show tqdm bars.
        latency_requests: Requests timed after the stream (0 skips the latency figures).
        batch_size: Batch size of the batched latency figure.
    """
    from sagerl.predict import predictors as _predictors  # noqa: F401  (fills the table)

    config = config or PredictorConfig()
    classes = {n: PREDICTORS.get(n) for n in names}
    warm = data.warmup
    if any(c.uses_embedding for c in classes.values()):
        embedder = embedder or Embedder(config.embedder)
        warm = prepare_embeddings(data, embedder, progress)
    results: dict[str, Figures] = {}
    for name in names:
        predictor = make_predictor(name, config, embedder)
        predictor.fit(warm)
        preds = run_stream(predictor, data.requests, progress, desc=f"{data.label} {name}")
        figures = score(preds, data.truths)
        figures.update(measure_latency(predictor, data.requests[:latency_requests], batch_size))
        results[name] = figures
    return results


ACCURACY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("crps", "CRPS"),
    ("pinball_q10", "pinball .1"),
    ("pinball_q50", "pinball .5"),
    ("pinball_q90", "pinball .9"),
    ("coverage_80", "cover 80%"),
    ("kendall_tau", "Kendall tau"),
    ("bucket_accuracy", "bucket acc"),
    ("mean_abs_error", "MAE of mean"),
)
LATENCY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("latency_p50_ms", "p50"),
    ("latency_p99_ms", "p99"),
    ("embed_p50_ms", "embed p50"),
    ("search_p50_ms", "search p50"),
    ("search_p99_ms", "search p99"),
    ("batched_ms_per_request", "batched/req"),
    ("latency_cpu_p50_ms", "cpu p50"),
    ("latency_cpu_p99_ms", "cpu p99"),
    ("embed_cpu_p50_ms", "cpu embed p50"),
    ("search_cpu_p50_ms", "cpu search p50"),
    ("batched_cpu_ms_per_request", "cpu batched/req"),
)


def table_rows(
    results: dict[str, Figures], columns: tuple[tuple[str, str], ...] = ACCURACY_COLUMNS
) -> list[dict[str, object]]:
    """Rows for a printed table, one per predictor, with the given ``(key, title)`` columns."""
    rows = []
    for name, fig in results.items():
        row: dict[str, object] = {"predictor": name}
        for key, title in columns:
            row[title] = fig.get(key, float("nan"))
        rows.append(row)
    return rows
