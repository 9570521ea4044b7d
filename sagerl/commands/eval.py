"""``python -m sagerl eval``: evaluate a saved agent beside SageSched and the heuristics."""

from __future__ import annotations

import argparse
from pathlib import Path

from sagerl.commands.common import add_run_arguments, overrides_with_seed, print_table, write_json
from sagerl.commands.train import set_config_help


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "eval",
        help="evaluate a saved agent against SageSched and the heuristics",
        description="Run the agent saved in runs/<name>/ (or --checkpoint) and the config's "
        "baselines on the same held-out windows; print the comparison, write one JSON record "
        "per (policy, seed) with --json.",
    )
    add_run_arguments(parser)
    set_config_help(
        parser,
        "YAML training config (default: the run's config.yaml, else configs/train-default.yaml)",
    )
    parser.add_argument(
        "--run",
        metavar="DIR",
        help="run directory to evaluate (default runs/<name>); its config.yaml is the default "
        "config",
    )
    parser.add_argument("--checkpoint", metavar="ZIP", help="model archive (default: latest)")
    parser.add_argument("--seeds", type=int, help="evaluation windows (default: the config's)")
    parser.add_argument(
        "--split", choices=["eval", "train"], default="eval", help="which windows (default eval)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agents.common.evaluation import table_rows
    from agents.evaluate import evaluate_saved

    overrides = overrides_with_seed(args)
    if args.seeds is not None:
        overrides.append(f"evaluation.seeds={args.seeds}")
    result = evaluate_saved(
        config=args.config,
        overrides=overrides,
        run_dir=Path(args.run) if args.run else None,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        split=args.split,
    )
    print_table(
        f"{result.name}: {result.seeds} {args.split} windows, checkpoint {result.checkpoint}",
        table_rows(result.table, result.reference),
    )
    write_json(args.json, result.records)
    return 0
