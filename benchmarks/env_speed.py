"""Placement environment speed: decisions (env steps) per second on one core.

Steps ``sagerl/Placement-v0`` on the default training config (2 x A100-80GB + 1 x H100,
Llama-3.1-8B, real CASTILLO prompts, SageSched ordering in every replica) with actions that cost
nothing to choose (the valid replicas in turn), and times ``reset`` + ``step`` only. Variants,
side by side in one run: the SageSched semantic predictor (FAISS search over the history,
prompt vectors precomputed once per data set), the oracle predictor, no predictor; with and
without the teacher's estimates and the critic-only features in the observation.

    python benchmarks/env_speed.py [--episodes N] [--repeat R] [--json PATH]

Target (the training issue): at least 2,000 steps/s on one core with the SageSched predictor.
``steps_per_s`` is per wall-clock second (best of ``--repeat``); ``steps_per_cpu_s`` per second
of this process's CPU time, which is what to compare when other jobs share the machine. Everything
runs on one thread (FAISS and torch too); ``--cpu N`` also pins the process to core N.
"""

from __future__ import annotations

import argparse
import os
import time

from sagerl.commands.common import print_table, write_json

CONFIG = "configs/train-default.yaml"

VARIANTS: tuple[tuple[str, list[str]], ...] = (
    ("sagesched predictor (full observation)", []),
    ("sagesched predictor, no critic features", ["env.critic_features=false"]),
    (
        "sagesched predictor, no teacher or critic features",
        ["env.critic_features=false", "env.teacher_features=false"],
    ),
    ("oracle predictor", ["env.predictor.name=oracle"]),
    ("no predictor (fcfs ordering)", ["env.predictor.name=none", "cluster.ordering=fcfs"]),
)


def measure(overrides: list[str], episodes: int, repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` steps/s over ``episodes`` episodes (after one warm-up episode)."""
    from envs.placement import PlacementEnv

    env = PlacementEnv(CONFIG, overrides)

    def run(n: int, first_seed: int) -> int:
        steps = 0
        for seed in range(first_seed, first_seed + n):
            env.reset(seed=seed)
            done = False
            while not done:
                mask = env._mask  # NOTE: the valid replicas in turn, without a copy
                valid = mask.nonzero()[0]
                _, _, done, _, _ = env.step(int(valid[steps % len(valid)]))
                steps += 1
        return steps

    run(1, 10_000)
    best_wall, best_cpu, steps = float("inf"), float("inf"), 0
    for r in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        steps = run(episodes, 100 * r)
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return {
        "steps": steps,
        "steps_per_s": steps / best_wall,
        "steps_per_cpu_s": steps / best_cpu,
        "us_per_step": best_wall / steps * 1e6,
        "observation_size": float(env.observation_space.shape[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=8, help="episodes per timing")
    parser.add_argument("--repeat", type=int, default=3, help="timings (the best is reported)")
    parser.add_argument("--cpu", type=int, default=-1, help="core to pin to (-1: no pinning)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    import torch

    torch.set_num_threads(1)
    rows = []
    for label, overrides in VARIANTS:
        figures = measure(overrides, args.episodes, args.repeat)
        rows.append({"variant": label, **figures})
        print(f"{label}: {figures['steps_per_s']:,.0f} steps/s", flush=True)
    print_table("placement env: steps per second on one core", rows)
    target = rows[0]["steps_per_s"]
    print(
        f"target >= 2,000 steps/s with the SageSched predictor: {target:,.0f} "
        f"({'met' if target >= 2000 else 'NOT met'}; per CPU-second "
        f"{rows[0]['steps_per_cpu_s']:,.0f})"
    )
    write_json(args.json, {"config": CONFIG, "rows": rows})


if __name__ == "__main__":
    main()
