"""Scale-out on Ray: training env steps/s and compare cells/s with 1 vs 2 workers, side by side.

Two measurements on a local Ray (``--num-cpus``, default 2), each repeated for every worker
count in ``--workers`` (default 1 and 2):

* **training**: RLlib PPO on the default training config (``configs/train-default.yaml``: 4
  environments, 2,048 env steps and 4 epochs of minibatches of 256 per update), with
  ``rllib.num_env_runners`` = workers and the 4 environments spread over them. Reported: env
  steps/s over ``--iterations`` timed iterations (after one warm-up iteration), and the
  seconds per iteration spent sampling and updating (RLlib's own timers). With ``--sb3``, the
  stable-baselines3 path on the same config in one process, for reference.
* **compare**: the matrix of ``compare --backend ray`` (one Ray task per cell) on the bundled
  sample: the default cluster (2 x A100-80GB + 1 x H100), 4 policies x 2 rates x 3 seeds of 1,000
  requests (24 cells); Ray started with ``num_cpus`` = workers. Reported: cells/s of the sweep
  (the workers load the comparison's state once each, which is counted), and the local
  backend's processes=workers for reference. Every run's records are checked to be identical.

    python benchmarks/ray_scaling.py [--workers 1 2] [--iterations 3] [--sb3] [--json PATH]

Speed-ups are bounded by the cores: on a 2-core machine 2 workers share the cores with the
driver (which runs the PPO update between sampling rounds), and other load on the machine
shows up directly.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from typing import Any

from sagerl.commands.common import print_table, write_json

COMPARE = {
    "name": "ray-scaling",
    "seed": 0,
    "workload": {
        "num_requests": 1000,
        "max_output_tokens": 8192,
        "datasets": [
            {"name": "sample_castillo", "options": {"model": "meta-llama--Llama-3.1-8B-Instruct"}}
        ],
        "arrival": {"kind": "poisson", "rate": 12.0},
    },
    "cluster": {
        "replicas": [
            {"gpu": "A100-80GB", "model": "llama-3.1-8b", "count": 2},
            {"gpu": "H100", "model": "llama-3.1-8b", "count": 1},
        ],
        "scheduler": {"max_num_batched_tokens": 2048, "max_num_seqs": 256},
    },
    "compare": {
        "rates": [12.0, 16.0],
        "rate_unit": "rps",
        "seeds": [0, 1, 2],
        "predictor": {"name": "oracle"},
        "policies": [
            {"name": "fcfs+lo", "ordering": "fcfs", "placement": "least-outstanding"},
            {"name": "sagesched+lo", "ordering": "sagesched", "placement": "least-outstanding"},
            {"name": "sagesched+p2c", "ordering": "sagesched", "placement": "power-of-two"},
            {"name": "sagesched+rr", "ordering": "sagesched", "placement": "round-robin"},
        ],
    },
}


def _spin(n: int) -> float:
    """A fixed amount of pure-Python work; returns its seconds."""
    start = time.perf_counter()
    x = 0
    for i in range(n):
        x += i * i % 7
    return time.perf_counter() - start


def cores_available(n: int = 3_000_000) -> float:
    """How many cores this machine gives us right now: the throughput of the same CPU-bound
    work in 2 processes over 1 (2.0 on an idle 2-core machine; less when others load it)."""
    import multiprocessing as mp

    one = _spin(n)
    with mp.get_context("fork").Pool(2) as pool:
        start = time.perf_counter()
        pool.map(_spin, [n, n])
        two = time.perf_counter() - start
    return 2 * one / two


def quiet() -> None:
    for name in ("ray", "ray.rllib", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.simplefilter("ignore")


def training(workers: int, iterations: int, num_cpus: int, overrides: list[str]) -> dict:
    """RLlib PPO iterations with ``workers`` env runners; env steps/s and the time split."""
    import torch

    from agents.common.config import load_train_config
    from agents.common.envs import make_env
    from agents.rllib.config import algorithm_config, envs_per_runner
    from sagerl.compare.ray_backend import ray_session

    cfg = load_train_config(None, [*overrides, f"rllib.num_env_runners={workers}"])
    torch.set_num_threads(cfg.ppo.torch_threads)  # as train does: the update runs here
    env = make_env(cfg)
    with ray_session(num_cpus=num_cpus):
        quiet()
        algo = algorithm_config(cfg, env.actor_size).build_algo()
        try:
            # Warm-up: the env runners' first episodes, the first update.
            before = int(algo.train()["num_env_steps_sampled_lifetime"])
            sample = learn = 0.0
            start = time.perf_counter()
            for _ in range(iterations):
                result = algo.train()
                sample += float(result["timers"].get("env_runner_sampling_timer", 0.0))
                learn += float(result["timers"].get("learner_update_timer", 0.0))
            wall = time.perf_counter() - start
            steps = int(result["num_env_steps_sampled_lifetime"]) - before
        finally:
            algo.stop()
    n = max(iterations, 1)
    return {
        "what": "training (RLlib PPO)",
        "workers": workers,
        "envs": f"{workers} x {envs_per_runner(cfg)}" if workers else f"driver x {cfg.ppo.n_envs}",
        "steps": steps,
        "wall_s": wall,
        "steps_per_s": steps / wall,
        "sample_s_per_iter": sample / n,
        "learn_s_per_iter": learn / n,
    }


def sb3_training(steps: int, overrides: list[str]) -> dict:
    """The SB3 path's PPO on the same config, one process (reference)."""
    import torch
    from stable_baselines3.common.logger import Logger

    from agents.common.config import load_train_config
    from agents.common.envs import make_env, make_vec_env
    from agents.ppo import build_model

    cfg = load_train_config(None, overrides)
    torch.set_num_threads(cfg.ppo.torch_threads)
    env = make_env(cfg)
    venv = make_vec_env(cfg)
    model = build_model(cfg.ppo, venv, seed=cfg.seed, actor_size=env.actor_size)
    model.set_logger(Logger(None, []))
    model.learn(cfg.ppo.n_envs * cfg.ppo.n_steps)  # warm-up
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=True)
    wall = time.perf_counter() - start
    return {
        "what": "training (SB3 MaskablePPO)",
        "workers": 0,
        "envs": f"driver x {cfg.ppo.n_envs}",
        "steps": steps,
        "wall_s": wall,
        "steps_per_s": steps / wall,
    }


def compare(backend: str, workers: int) -> tuple[dict, list[dict]]:
    """The compare matrix on ``workers`` CPUs; cells/s and the records."""
    import tempfile

    from sagerl.compare.config import CompareConfig
    from sagerl.compare.ray_backend import ray_session
    from sagerl.compare.runner import run_matrix

    cfg = CompareConfig.model_validate({**COMPARE, "output_dir": tempfile.gettempdir()})
    if backend == "ray":
        with ray_session(num_cpus=workers):
            quiet()
            start = time.perf_counter()
            records, _ = run_matrix(cfg, progress=False, backend="ray")
            wall = time.perf_counter() - start
    else:
        start = time.perf_counter()
        records, _ = run_matrix(cfg, progress=False, processes=workers)
        wall = time.perf_counter() - start
    row = {
        "what": f"compare ({backend})",
        "workers": workers,
        "cells": len(records),
        "wall_s": wall,
        "cells_per_s": len(records) / wall,
    }
    return row, records


def strip(records: list[dict]) -> list[dict]:
    import math

    return [
        {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in ({k: v for k, v in rec.items() if k != "wall_s"} for rec in records)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--iterations", type=int, default=3, help="timed PPO iterations")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray (training)")
    parser.add_argument("--sb3", action="store_true", help="also time the SB3 path (reference)")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="training config")
    args = parser.parse_args()

    cores_before = cores_available()
    print(f"cores available now: {cores_before:.2f} (2 processes vs 1 on CPU-bound work)")
    rows: list[dict[str, Any]] = []
    if not args.skip_training:
        for w in args.workers:
            row = training(w, args.iterations, args.num_cpus, args.overrides)
            print(f"training, {w} worker(s): {row['steps_per_s']:.0f} env steps/s", flush=True)
            rows.append(row)
        if args.sb3:
            steps = rows[0]["steps"] if rows else 4096
            rows.append(sb3_training(steps, args.overrides))
    compare_rows: list[dict[str, Any]] = []
    identical = True
    if not args.skip_compare:
        reference = None
        for backend in ("ray", "local"):
            for w in args.workers:
                row, records = compare(backend, w)
                same = reference is None or strip(records) == reference
                reference = reference or strip(records)
                identical = identical and same
                row["records_identical"] = same
                print(f"compare {backend}, {w} worker(s): {row['cells_per_s']:.2f} cells/s")
                compare_rows.append(row)

    def speedup(table: list[dict], key: str, what: str) -> None:
        base = next((r[key] for r in table if r["what"] == what and r["workers"] == 1), None)
        for r in table:
            if r["what"] == what and base:
                r["speedup"] = r[key] / base

    for what in ("training (RLlib PPO)",):
        speedup(rows, "steps_per_s", what)
    for what in ("compare (ray)", "compare (local)"):
        speedup(compare_rows, "cells_per_s", what)
    if rows:
        print_table(
            "training throughput (env steps/s, local Ray)",
            [
                {
                    "path": r["what"],
                    "workers": r["workers"],
                    "envs": r["envs"],
                    "env steps/s": r["steps_per_s"],
                    "sample s/iter": r.get("sample_s_per_iter", float("nan")),
                    "update s/iter": r.get("learn_s_per_iter", float("nan")),
                    "speed-up": r.get("speedup", float("nan")),
                }
                for r in rows
            ],
        )
    if compare_rows:
        print_table(
            f"compare sweep ({compare_rows[0]['cells']} cells)",
            [
                {
                    "backend": r["what"],
                    "workers": r["workers"],
                    "wall (s)": r["wall_s"],
                    "cells/s": r["cells_per_s"],
                    "speed-up": r.get("speedup", float("nan")),
                    "records = first run": r["records_identical"],
                }
                for r in compare_rows
            ],
        )
    cores_after = cores_available()
    print(
        f"cores available: {cores_before:.2f} before, {cores_after:.2f} after "
        "(2.0 = two idle cores; other load on the machine lowers every speed-up above)"
    )
    write_json(
        args.json,
        {
            "training": rows,
            "compare": compare_rows,
            "identical": identical,
            "cores_available": [cores_before, cores_after],
        },
    )


if __name__ == "__main__":
    main()
