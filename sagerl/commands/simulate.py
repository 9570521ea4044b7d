"""``python -m sagerl simulate``: replay a workload on a simulated cluster and summarise it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from sagerl.commands.common import add_run_arguments, overrides_with_seed, print_table, write_json


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "simulate",
        help="simulate a workload on a cluster and print the summary",
        description="Simulate the config's workload on its cluster; write per-request records, "
        "per-replica stats and a summary under runs/<name>/.",
    )
    add_run_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sagerl import paths
    from sagerl.config import load_run_config
    from sagerl.sim.build import build_simulation
    from sagerl.workload.build import build_workload

    cfg = load_run_config(args.config, overrides_with_seed(args))
    data_dir = paths.data_dir(cfg.data_dir, must_exist=False)
    requests = build_workload(cfg.workload, data_dir, cfg.seed)
    sim = build_simulation(cfg.cluster, seed=cfg.seed)
    start = time.perf_counter()
    result = sim.run(requests, progress=not args.no_progress)
    wall = time.perf_counter() - start
    summary = result.summary()
    out_dir = Path(cfg.output_dir) / cfg.name
    result.write(out_dir, extra={"config": cfg.model_dump(), "wall_s": wall})
    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    rows = [
        {"metric": "requests", "value": summary["requests"]},
        {"metric": "rejected (too long)", "value": summary["rejected"]},
    ]
    for key in ("ttft", "tpot", "ttlt"):
        for stat in ("mean", "p50", "p90", "p99"):
            rows.append({"metric": f"{key.upper()} {stat} (s)", "value": summary[f"{key}_{stat}"]})
    rows += [
        {"metric": "throughput (req/s)", "value": summary["throughput_rps"]},
        {"metric": "throughput (tok/s)", "value": summary["throughput_tok_s"]},
        {"metric": "KV use mean", "value": summary["kv_use_mean"]},
        {"metric": "KV use peak", "value": summary["kv_use_peak"]},
        {"metric": "preemptions", "value": summary["preemptions"]},
        {"metric": "makespan (s)", "value": summary["makespan_s"]},
    ]
    replicas = len(sim.replicas)
    print_table(
        f"{cfg.name}: {len(requests)} requests on {replicas} replica(s), "
        f"{cfg.cluster.placement} / {cfg.cluster.ordering}, seed {cfg.seed}",
        rows,
    )
    print(
        f"simulated in {wall:.2f} s ({len(requests) / max(wall, 1e-9):,.0f} req/s); "
        f"outputs in {out_dir}/"
    )
    write_json(args.json, {"summary": summary, "wall_s": wall, "out_dir": str(out_dir)})
    return 0
