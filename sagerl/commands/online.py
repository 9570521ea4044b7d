"""``python -m sagerl online``: an agent keeps learning on a shifting stream, side by side with
its frozen copy, SageSched placement and the heuristics, held by a guardrail."""

from __future__ import annotations

import argparse

from sagerl.commands.common import add_run_arguments, overrides_with_seed, print_table, write_json


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "online",
        help="online adaptation under workload shift: learning agent vs frozen vs SageSched",
        description="Play a shift scenario (phases of real workloads, bursts, a slowed replica) "
        "with the trained agent learning online (PPO every K decisions, guarded by SageSched "
        "placement), the same agent frozen, SageSched placement and the baselines, on the same "
        "streams. Writes runs/<name>/: online.png, report.json, TensorBoard runs per seed and "
        "policy. Trains the agent first if the run it names does not exist.",
    )
    add_run_arguments(parser)
    for action in parser._actions:
        if action.dest == "config":
            action.help = "YAML online config (default: configs/shift-default.yaml)"
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from agents.online.config import load_online_config
    from agents.online.report import overall_rows, plot, summary, write_tensorboard
    from agents.online.runner import run_online

    cfg = load_online_config(args.config, overrides_with_seed(args))
    start = time.perf_counter()
    results = run_online(cfg, progress=not args.no_progress)
    run_dir = Path(cfg.output_dir) / cfg.name
    report = summary(results, cfg)
    report["wall_s"] = time.perf_counter() - start
    write_tensorboard(results, run_dir, cfg)
    png = plot(results, run_dir, cfg)
    (run_dir / "report.json").write_text(json.dumps(report, indent=2, default=float))
    seeds = len(results)
    print_table(f"{cfg.name}: mean TTLT per phase ({seeds} seeds)", report["phase_table"])
    print_table(
        f"{cfg.name}: whole stream, regret against {cfg.reference} (s of TTLT summed over "
        "requests; mean over seeds) and seconds to recover after each shift",
        overall_rows(report),
    )
    print(
        f"done in {report['wall_s'] / 60:.1f} min; {png}, {run_dir}/report.json "
        f"(tensorboard --logdir {run_dir})"
    )
    write_json(args.json, report)
    return 0
