"""Simulator speed: requests simulated per wall-clock second.

Replays the first 10,000 requests of the Azure LLM 2023 conversation trace (its own timestamps)
on 4 replicas of Llama-2-7B on A100-80GB with FCFS ordering and round-robin placement, with the
multi-step decode fast path on, and (side by side, in the same run) step-by-step mode on the same
requests, checking that both give the same per-request results.

    python benchmarks/sim_speed.py [--requests N] [--repeat R] [--json PATH]

Target (issue 2): at least 20,000 requests/s with the fast path on this 2-core machine.
``requests_per_s`` is per wall-clock second (best of ``--repeat``); ``requests_per_cpu_s`` per
second of this process's CPU time, which is what to compare when other jobs share the machine.
A "plan" is one scheduling decision: a single iteration or a fast-path segment.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from sagerl.commands.common import print_table
from sagerl.sim.build import build_simulation
from sagerl.sim.config import ClusterConfig, ReplicaSpec, SchedulerConfig
from sagerl.workload.build import build_workload
from sagerl.workload.config import ArrivalSpec, DatasetSpec, WorkloadConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="timed repeats (best is reported)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()

    workload = WorkloadConfig(
        num_requests=args.requests,
        datasets=[DatasetSpec(name="azure_conv")],
        arrival=ArrivalSpec(kind="trace"),
    )
    requests = build_workload(workload, args.data_dir, seed=0)
    rows, results = [], {}
    for fast in (True, False):
        cluster = ClusterConfig(
            replicas=[ReplicaSpec(gpu="A100", model="llama-2-7b", count=args.replicas)],
            scheduler=SchedulerConfig(fast_path=fast),
        )
        sim = build_simulation(cluster, seed=0)
        walls, cpus = [], []
        for _ in range(args.repeat if fast else 1):
            start, cpu = time.perf_counter(), time.process_time()
            result = sim.run(requests)
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)
        best, best_cpu = min(walls), min(cpus)
        results[fast] = result
        summary = result.summary()
        rows.append(
            {
                "mode": "fast path" if fast else "step by step",
                "requests": len(requests),
                "wall_s": best,
                "requests_per_s": len(requests) / best,
                "requests_per_cpu_s": len(requests) / best_cpu,
                "iterations": summary["iterations"],
                "plans": int(result.replicas["plans"].sum()),
                "mean_ttlt_s": summary["ttlt_mean"],
            }
        )
    a, b = results[True].records, results[False].records
    same = bool(
        (a["replica"] == b["replica"]).all()
        and np.allclose(a["finish"], b["finish"], rtol=1e-9, atol=1e-9)
        and np.allclose(a["first_token"], b["first_token"], rtol=1e-9, atol=1e-9)
    )
    speedup = rows[0]["requests_per_s"] / rows[1]["requests_per_s"]
    print_table(
        f"Simulator speed: Azure conv trace, {args.replicas} x Llama-2-7B on A100-80GB", rows
    )
    print(f"fast path speed-up {speedup:.1f}x; identical results: {same}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "requests_per_s": rows[0]["requests_per_s"],
                    "requests_per_cpu_s": rows[0]["requests_per_cpu_s"],
                    "step_mode_requests_per_s": rows[1]["requests_per_s"],
                    "speedup": speedup,
                    "identical_results": same,
                    "rows": rows,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
