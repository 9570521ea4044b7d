"""Cost of one SageSched scheduling decision, in microseconds (target: at most 50 µs).

    python benchmarks/decision_cost.py [--repeat N] [--json PATH]

Decisions timed (median over ``--repeat`` calls, after a warm-up; one process, one thread):

* ``gittins exact`` / ``gittins bucketed``: the rank of a cost distribution of m support points
  conditional on attained cost (m = 10 is CASTILLO's 10 samples; the semantic predictor's
  neighbour sets are tens to hundreds);
* ``rank refresh``: what the replica pays when a running request crosses a bucket boundary:
  ``SageSched.key`` recomputing the cached rank and expected remaining cost, plus
  ``next_rekey``;
* ``placement``: ``SageSchedPlacement.choose`` over N = 16 replicas with Q requests each
  (the request's own rank, its KV quantile, and per replica a binary search in the sorted ranks
  and a prefix-sum lookup: O(m + N log Q)), with the replicas' queue profiles already built;
* ``profile rebuild``: building one replica's sorted ranks and prefix sums from its ordering's
  cached (rank, work) pairs, which a replica does lazily when its queue changed (O(Q log Q)).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np

from sagerl.commands.common import print_table
from sagerl.cost import CostDistribution
from sagerl.policy import make_ordering, make_placement
from sagerl.policy.gittins import gittins_rank, gittins_rank_bucketed
from sagerl.predict.distribution import LengthDistribution
from sagerl.sim.sequence import Sequence
from sagerl.view import QueueProfile, ReplicaView
from sagerl.workload.request import Request


def timeit(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of one call, µs (batches of calls so the timer's resolution is moot)."""
    for _ in range(min(repeat, 200)):
        fn()
    batch = 20
    samples = []
    for _ in range(max(1, repeat // batch)):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - start) / batch)
    return 1e6 * statistics.median(samples)


def lengths(rng: np.random.Generator, m: int) -> np.ndarray:
    return np.maximum(1, rng.lognormal(5.5, 0.8, size=m)).round()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--replicas", type=int, default=16)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows: list[dict[str, object]] = []

    for m in (10, 50, 200, 1000):
        dist = CostDistribution.from_lengths(lengths(rng, m), None, 800, "hybrid")
        g = int(dist.lengths[m // 3])
        rows.append(
            {
                "decision": "gittins exact",
                "size": f"m={m}",
                "us": timeit(lambda dist=dist, g=g: gittins_rank(dist, g), args.repeat),
            }
        )
        rows.append(
            {
                "decision": "gittins bucketed",
                "size": f"m={m}",
                "us": timeit(lambda dist=dist, g=g: gittins_rank_bucketed(dist, g), args.repeat),
            }
        )

    for m in (10, 50, 200):
        policy = make_ordering("sagesched", refresh="tokens", refresh_tokens=1)
        seq = Sequence(Request(id=0, arrival=0.0, prompt_tokens=800, output_tokens=10_000))
        seq.prediction = LengthDistribution(lengths(rng, m))
        policy.key(seq, 0.0)
        top = int(seq.prediction.support[-1])
        counter = iter(range(1, 10**9))

        def refresh(policy=policy, seq=seq, counter=counter, top=top) -> None:
            seq.num_generated = next(counter) % top  # a new refresh point every call
            policy.key(seq, 0.0)
            policy.next_rekey(seq)

        rows.append(
            {"decision": "rank refresh", "size": f"m={m}", "us": timeit(refresh, args.repeat)}
        )

    placement = make_placement("sagesched")
    request = Request(id=1, arrival=0.0, prompt_tokens=600, output_tokens=300)
    for q in (16, 64, 256):
        profiles = [
            QueueProfile.build(zip(rng.lognormal(10, 2, q), rng.lognormal(11, 1, q), strict=True))
            for _ in range(args.replicas)
        ]
        views = [
            ReplicaView(
                index=i,
                gpu="H100" if i % 2 else "A100-80GB",
                model="llama-3.1-8b",
                num_running=q // 2,
                num_waiting=q - q // 2,
                kv_blocks_used=int(rng.integers(1000, 9000)),
                kv_blocks_total=10_000,
                block_size=16,
                decode_tokens_per_s=40.0 + i,
                cost_rate=3e6,
                queue_profile=(lambda p=p: p),
            )
            for i, p in enumerate(profiles)
        ]
        for m in (10, 50):
            pred = LengthDistribution(lengths(rng, m))
            rows.append(
                {
                    "decision": f"placement N={args.replicas}",
                    "size": f"Q={q}, m={m}",
                    "us": timeit(
                        lambda views=views, pred=pred: placement.choose(request, views, 0.0, pred),
                        args.repeat,
                    ),
                }
            )
        pairs = list(
            zip(rng.lognormal(10, 2, q).tolist(), rng.lognormal(11, 1, q).tolist(), strict=True)
        )
        rows.append(
            {
                "decision": "profile rebuild (1 replica)",
                "size": f"Q={q}",
                "us": timeit(lambda pairs=pairs: QueueProfile.build(pairs), args.repeat),
            }
        )

    for row in rows:
        row["us"] = round(float(row["us"]), 2)  # type: ignore[arg-type]
        row["within 50 us"] = "yes" if row["us"] <= 50 else "NO"  # type: ignore[operator]
    print_table("SageSched decision cost (median µs per decision, 1 thread)", rows)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
