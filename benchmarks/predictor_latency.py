"""Latency and accuracy of the SageSched predictor per embedding variant, side by side.

Usage (from the repository root; ``pip install -e '.[predict]'`` or ``PYTHONPATH=.``)::

    python benchmarks/predictor_latency.py [--json PATH] [--variants onnx-int8:128,torch:256]

For each variant (backend x maximum sequence length x truncation; ``:ht`` keeps the head and the
tail of a long prompt) it measures, on one CPU thread, best of ``--repeats`` runs:

* the prompt embedding alone: single-request p50/p99, batches of 16 (ms per request), and a
  repeated prompt (served by the LRU cache);
* the neighbour search: SageSched's ``predict_from_embeddings`` against a full 10,000-entry
  history plus a warm-up pool (single p50/p99, batched ms per request);
* the raw scans inside that search (history + flat pool): the exact BLAS scan the predictor
  uses, side by side with FAISS flat indexes over the same vectors (the previous method);
* embedding + search together (the figures the targets are about: <= 10 ms p50 single,
  <= 2 ms per request in batches of 16);
* accuracy of SageSched with that variant: CRPS, Kendall tau and bucket accuracy on the CASTILLO
  test split (Llama-3.1-8B) and a ShareGPT subset, streamed as in ``python -m sagerl predict
  eval`` (torch variants reuse the fp32 ONNX vectors: same function, cosine > 0.99999); and the
  mean cosine of the variant's vectors to the reference (torch, 256 tokens).

Latency is measured separately on CASTILLO prompts (long: median ~100 WordPiece tokens, many
code problems) and ShareGPT turns (short: median ~20). Bulk embeddings for the accuracy figures
are computed once per variant with two threads and cached under ``cache_dir()/embeddings``; the
first run takes several minutes (torch at 256 tokens is slow), later runs are quick.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from sagerl.predict import PredictorConfig, make_predictor
from sagerl.predict.config import EmbedderConfig
from sagerl.predict.data import EvalData, castillo_eval, sharegpt_eval, stream_texts
from sagerl.predict.embedder import Embedder
from sagerl.predict.evaluate import evaluate, prepare_embeddings

DEFAULT_VARIANTS = (
    "torch:256,torch:128,onnx:256,onnx:128,onnx-int8:256,onnx-int8:128,"
    "onnx-int8:64,onnx-int8:64:ht,onnx-int8:32,onnx-int8:32:ht"
)
MODEL = "meta-llama--Llama-3.1-8B-Instruct"
BATCH = 16


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q))


def best_of(repeats: int, fn, *args) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Each figure's minimum over ``repeats`` runs (other processes only ever add time)."""
    runs = [fn(*args) for _ in range(repeats)]
    return {k: min(r[k] for r in runs) for k in runs[0]}


def embed_latency(emb: Embedder, texts: list[str], now=time.perf_counter) -> dict[str, float]:  # type: ignore[no-untyped-def]
    emb.embed(texts[:2], use_cache=False)  # load the model outside the timing
    single = []
    for t in texts:
        t0 = now()
        emb.embed([t], use_cache=False)
        single.append(now() - t0)
    t0 = now()
    for i in range(0, len(texts), BATCH):
        emb.embed(texts[i : i + BATCH], use_cache=False)
    batched = (now() - t0) / len(texts) * 1e3
    emb.embed(texts)  # now cached: the cost of a repeated prompt
    t0 = now()
    for t in texts:
        emb.embed([t])
    cached = (now() - t0) / len(texts) * 1e3
    emb.clear_cache()
    return {
        "embed_p50_ms": pct(single, 50),
        "embed_p99_ms": pct(single, 99),
        "embed_batched_ms": batched,
        "embed_cached_ms": cached,
    }


def search_latency(
    predictor, vectors: np.ndarray, prompt_tokens: np.ndarray, now=time.perf_counter
) -> dict[str, float]:  # type: ignore[no-untyped-def]
    predictor.predict_from_embeddings(vectors[:1], prompt_tokens[:1])
    single = []
    for i in range(len(vectors)):
        t0 = now()
        predictor.predict_from_embeddings(vectors[i : i + 1], prompt_tokens[i : i + 1])
        single.append(now() - t0)
    t0 = now()
    for i in range(0, len(vectors), BATCH):
        predictor.predict_from_embeddings(vectors[i : i + BATCH], prompt_tokens[i : i + BATCH])
    batched = (now() - t0) / len(vectors) * 1e3
    return {
        "search_p50_ms": pct(single, 50),
        "search_p99_ms": pct(single, 99),
        "search_batched_ms": batched,
    }


def scan_latency(predictor, vectors: np.ndarray, now=time.perf_counter) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The raw neighbour scans alone (history + flat warm-up pool), ms per query: the exact
    BLAS scan the predictor uses against FAISS flat indexes over the same vectors (top 64 per
    query, the previous method), single queries and batches of 16, on one thread."""
    import faiss

    from sagerl.predict.history import exact_search

    cfg = predictor.config
    hist_t = predictor.history._vt[:, : len(predictor.history)]
    warm_t = predictor._warm_t
    indexes = []
    for mat in (hist_t, warm_t):
        if mat is not None:
            index = faiss.IndexFlatIP(mat.shape[0])
            index.add(np.ascontiguousarray(mat.T))
            indexes.append(index)

    def exact(q: np.ndarray) -> None:
        for mat in (hist_t, warm_t):
            if mat is not None:
                exact_search(mat, q, cfg.similarity, cfg.k_fallback)

    def flat(q: np.ndarray) -> None:
        for index in indexes:
            index.search(q, max(cfg.k_fallback, cfg.search_k))

    out = {}
    for name, fn in (("exact", exact), ("faiss", flat)):
        fn(vectors[:1])
        t0 = now()
        for i in range(len(vectors)):
            fn(vectors[i : i + 1])
        out[f"scan_{name}_single_ms"] = (now() - t0) / len(vectors) * 1e3
        t0 = now()
        for i in range(0, len(vectors), BATCH):
            fn(vectors[i : i + BATCH])
        out[f"scan_{name}_batched_ms"] = (now() - t0) / len(vectors) * 1e3
    return out


def observe_cost(predictor, now=time.perf_counter, n: int = 2000) -> float:  # type: ignore[no-untyped-def]
    """Microseconds per ``observe_embeddings`` of one request into the full FIFO history
    (it overwrites the oldest slot in place; the index is never rebuilt)."""
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, predictor.embedder.dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    t0 = now()
    for i in range(n):
        predictor.observe_embeddings(vecs[i : i + 1], np.array([10]), np.array([100]))
    return (now() - t0) / n * 1e6


def full_history_predictor(
    config: PredictorConfig, emb: Embedder, history: EvalData, pool: EvalData
):  # type: ignore[no-untyped-def]
    """SageSched with a full 10,000-entry history (ShareGPT pool prompts) and a warm-up pool
    (CASTILLO's), i.e. the steady state a serving system runs in."""
    hist_pool = prepare_embeddings(history, emb, progress=False)
    warm = prepare_embeddings(pool, emb, progress=False)
    p = make_predictor("sagesched", config, emb)
    p.fit(warm)
    vecs = hist_pool.embeddings
    n = config.history_size
    reps = int(np.ceil(n / len(vecs)))
    p.observe_embeddings(
        np.tile(vecs, (reps, 1))[:n],
        np.tile(hist_pool.prompt_tokens, reps)[:n],
        np.tile(hist_pool.samples[:, 0], reps)[:n],
    )
    return p


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="backend:max_len,...")
    parser.add_argument("--requests", type=int, default=200, help="prompts timed per data set")
    parser.add_argument("--castillo-limit", type=int, default=None, help="CASTILLO stream size")
    parser.add_argument("--sharegpt-limit", type=int, default=2000, help="ShareGPT stream size")
    parser.add_argument("--sharegpt-warmup", type=int, default=10_000, help="ShareGPT pool size")
    parser.add_argument("--repeats", type=int, default=3, help="latency runs, best kept")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall-clock, or the thread's CPU time (immune to other processes on the machine)",
    )
    parser.add_argument("--json", metavar="PATH", help="write the figures to this JSON file")
    args = parser.parse_args()

    import faiss
    from rich.console import Console

    from sagerl.commands.common import print_table

    faiss.omp_set_num_threads(1)
    now = time.thread_time if args.clock == "cpu" else time.perf_counter
    castillo = castillo_eval(MODEL, limit=args.castillo_limit)
    sharegpt = sharegpt_eval(limit=args.sharegpt_limit, warmup_limit=args.sharegpt_warmup)
    probe = {
        "castillo": stream_texts(castillo.requests[: args.requests]),
        "sharegpt": stream_texts(sharegpt.requests[: args.requests]),
    }
    reference = Embedder(
        EmbedderConfig(backend="torch", max_seq_len=256, truncation="head", threads=2)
    )
    ref_vecs = {k: reference.embed(v) for k, v in probe.items()}

    rows, payload = [], {}
    for spec in args.variants.split(","):
        backend, length, *rest = spec.split(":")
        truncation = "head_tail" if rest == ["ht"] else "head"
        cfg = EmbedderConfig(
            backend=backend, max_seq_len=int(length), truncation=truncation, threads=1
        )
        config = PredictorConfig(embedder=cfg)
        # NOTE: torch and fp32 ONNX compute the same function (cosine > 0.99999 between their
        # vectors), so torch's accuracy is taken from the ONNX vectors: embedding both data
        # sets with torch at 256 tokens alone would take most of an hour on two CPU cores.
        same = "onnx" if backend == "torch" else backend
        bulk = Embedder(cfg.model_copy(update={"threads": 2, "backend": same}))
        accuracy = {
            name: evaluate(data, ["sagesched"], config, embedder=bulk, latency_requests=0)[
                "sagesched"
            ]
            for name, data in (("castillo", castillo), ("sharegpt", sharegpt))
        }
        emb = Embedder(cfg)
        if backend == "torch":
            import torch

            torch.set_num_threads(1)
        searcher = full_history_predictor(config, emb, sharegpt_pool(sharegpt), castillo)
        observe_us = observe_cost(
            full_history_predictor(config, emb, sharegpt_pool(sharegpt), castillo), now
        )
        for name, texts in probe.items():
            vecs = emb.embed(texts, use_cache=False)
            data = castillo if name == "castillo" else sharegpt
            pts = np.array([r.prompt_tokens for r in data.requests[: len(texts)]])
            fig = {"cos_to_reference": float((vecs * ref_vecs[name]).sum(1).mean())}
            fig["observe_us"] = observe_us
            fig.update(best_of(args.repeats, embed_latency, emb, texts, now))
            fig.update(best_of(args.repeats, search_latency, searcher, vecs, pts, now))
            fig.update(best_of(args.repeats, scan_latency, searcher, vecs, now))
            fig["total_p50_ms"] = fig["embed_p50_ms"] + fig["search_p50_ms"]
            fig["total_batched_ms"] = fig["embed_batched_ms"] + fig["search_batched_ms"]
            acc = accuracy[name]
            fig.update(
                crps=acc["crps"],
                kendall_tau=acc["kendall_tau"],
                bucket_accuracy=acc["bucket_accuracy"],
            )
            payload.setdefault(spec, {})[name] = fig
            rows.append({"variant": spec, "data": name, **fig})
            print(spec, name, {k: round(v, 3) for k, v in fig.items()}, flush=True)

    titles = {
        "cos_to_reference": "cos ref",
        "embed_p50_ms": "emb p50",
        "embed_p99_ms": "emb p99",
        "embed_batched_ms": "emb b16",
        "embed_cached_ms": "emb cached",
        "search_p50_ms": "srch p50",
        "search_p99_ms": "srch p99",
        "search_batched_ms": "srch b16",
        "scan_exact_single_ms": "scan 1",
        "scan_faiss_single_ms": "faiss 1",
        "scan_exact_batched_ms": "scan b16",
        "scan_faiss_batched_ms": "faiss b16",
        "total_p50_ms": "total p50",
        "total_batched_ms": "total b16",
        "crps": "CRPS",
        "kendall_tau": "tau",
        "bucket_accuracy": "bucket",
    }
    table = [
        {"variant": r["variant"], "data": r["data"], **{t: r[k] for k, t in titles.items()}}
        for r in rows
    ]
    print_table(
        f"SageSched predictor per embedding variant: latency on 1 CPU thread ({args.clock} "
        f"clock, ms, best of {args.repeats}; b16 = per request in batches of 16), search "
        "against a full 10k history + warm-up pool (scan: its exact BLAS scans; faiss: FAISS "
        "flat indexes over the same vectors), accuracy streamed (tokens)",
        table,
        Console(width=240),
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0


def sharegpt_pool(data: EvalData) -> EvalData:
    """The ShareGPT warm-up pool viewed as a data set (its prompts fill the history)."""
    return EvalData("sharegpt", [], [], data.warmup)


if __name__ == "__main__":
    raise SystemExit(main())
