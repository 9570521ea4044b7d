"""Choose SageSched's unpublished thresholds on held-out *warm-up* data, never on the test set.

The paper fixes the similarity (cosine >= 0.8) and the history (10,000) but not the minimum
neighbour count below which the warm-up pool is searched, nor the k of the nearest-neighbour
fallback. This script splits each evaluation's warm-up pool once more (CASTILLO by prompt,
ShareGPT by conversation) into a tuning stream and a tuning pool, streams the tuning part
through SageSched for each grid point, and prints the CRPS. The test split of ``predict eval``
is not touched.

Usage (from the repository root)::

    python benchmarks/predictor_tuning.py [--json PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from sagerl.predict import PredictorConfig
from sagerl.predict.data import EvalData, castillo_eval, conversation_id, sharegpt_eval
from sagerl.predict.embedder import Embedder
from sagerl.predict.evaluate import evaluate
from sagerl.workload.request import Request

MODEL = "meta-llama--Llama-3.1-8B-Instruct"


def split_pool(data: EvalData, by_conversation: bool, limit: int, seed: int = 1) -> EvalData:
    """A tuning stream and pool carved out of ``data``'s warm-up pool."""
    pool = data.warmup
    keys = [conversation_id(p) if by_conversation else p for p in pool.prompt_ids]
    unique = np.unique(keys)
    rng = np.random.default_rng(seed)
    chosen = set(unique[rng.permutation(unique.size)[: unique.size // 5]])
    is_eval = np.array([k in chosen for k in keys])
    rows = np.flatnonzero(is_eval)
    if not by_conversation:
        rows = rng.permutation(rows)
    rows = rows[:limit]
    texts = pool.texts or [""] * len(pool)
    reqs = [
        Request(
            id=j,
            arrival=float(j),
            prompt_tokens=int(pool.prompt_tokens[i]),
            output_tokens=int(pool.samples[i, 0]),
            prompt_text=texts[i],
            prompt_id=pool.prompt_ids[i],
            length_samples=tuple(int(v) for v in pool.samples[i])
            if pool.samples.shape[1] > 1
            else (),
        )
        for j, i in enumerate(rows)
    ]
    truths = [np.asarray(r.length_samples or (r.output_tokens,), float) for r in reqs]
    warm = pool.take(np.flatnonzero(~is_eval)).excluding(
        [r.prompt_id for r in reqs], [r.prompt_text or "" for r in reqs]
    )
    return EvalData(data.label + "/tune", reqs, truths, warm)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--limit", type=int, default=3000, help="tuning requests per data set")
    args = parser.parse_args()
    sets = {
        "castillo": split_pool(castillo_eval(MODEL), False, args.limit),
        "sharegpt": split_pool(sharegpt_eval(), True, args.limit),
    }
    embedder = Embedder()
    grid = {
        "min_neighbors": [1, 4, 8, 16, 32],
        "k_fallback": [8, 16, 32, 64],
        "weighting": ["uniform", "similarity"],
    }
    results = []
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values, strict=True))
        cfg = PredictorConfig(**point)
        row: dict[str, object] = dict(point)
        for name, data in sets.items():
            fig = evaluate(
                data, ["sagesched"], cfg, embedder=embedder, progress=False, latency_requests=0
            )["sagesched"]
            row[f"{name}_crps"] = fig["crps"]
            row[f"{name}_tau"] = fig["kendall_tau"]
        results.append(row)
        print(row, flush=True)
    best = min(results, key=lambda r: float(r["castillo_crps"]) + float(r["sharegpt_crps"]))
    print("best (sum of CRPS):", best)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
