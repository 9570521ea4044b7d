"""``python -m sagerl train``: teach a PPO placement agent with SageSched, then hold it up
against SageSched and the heuristics on held-out windows."""

from __future__ import annotations

import argparse

from sagerl.commands.common import add_run_arguments, overrides_with_seed, print_table, write_json


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train",
        help="train a PPO placement agent (imitation of SageSched, then PPO) and evaluate it",
        description="Imitate the SageSched placement teacher (behaviour cloning, DAgger), "
        "fine-tune with MaskablePPO, evaluate against SageSched and the heuristics on held-out "
        "windows. Writes runs/<name>/: checkpoints, TensorBoard runs (one per policy), "
        "comparison.csv/png, results.json. Watch with: tensorboard --logdir runs/<name>",
    )
    add_run_arguments(parser)
    set_config_help(parser, "YAML training config (default: configs/train-default.yaml)")
    parser.add_argument(
        "--resume", action="store_true", help="continue runs/<name>/ from its last checkpoint"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--backend",
        choices=("sb3", "rllib"),
        default="sb3",
        help="sb3: stable-baselines3 MaskablePPO in this process; rllib: Ray RLlib's PPO with "
        "the config's rllib: resources (env runners on a local Ray, or --address); same env, "
        "config, outputs and export (needs the ray extra)",
    )
    parser.add_argument(
        "--address",
        metavar="ADDR",
        help="with --backend rllib: an existing Ray cluster (auto, HOST:6379, "
        "ray://HOST:10001); default: start a local Ray",
    )
    parser.set_defaults(func=run)


def set_config_help(parser: argparse.ArgumentParser, text: str) -> None:
    """Reword the shared ``--config`` help (its default is the training config here)."""
    for action in parser._actions:
        if action.dest == "config":
            action.help = text


def run(args: argparse.Namespace) -> int:
    import time

    from agents.common.config import load_train_config
    from agents.common.evaluation import table_rows
    from agents.pipeline import AGENT, GREEDY, IMITATION, IMITATION_SAMPLED, train

    if args.address and args.backend != "rllib":
        from sagerl.errors import SagerlError

        raise SagerlError("--address needs --backend rllib")
    cfg = load_train_config(args.config, overrides_with_seed(args))  # config errors first
    if args.backend == "rllib":
        from agents.rllib import require_rllib

        require_rllib("--backend rllib")
    start = time.perf_counter()
    if args.backend == "rllib":
        from agents.rllib.train import train_rllib

        result = train_rllib(
            cfg, resume=args.resume, address=args.address, progress=not args.no_progress
        )
    else:
        result = train(cfg, resume=args.resume, progress=not args.no_progress)
    wall = time.perf_counter() - start
    reference = cfg.evaluation.reference
    print_table(
        f"{cfg.name} ({args.backend}): {cfg.evaluation.seeds} held-out windows of "
        f"{cfg.evaluation.episode_requests or cfg.env.episode_requests} requests",
        table_rows(result.table, reference),
    )
    table = result.table.set_index("policy")
    ref = float(table["mean_ttlt"].loc[reference])
    for label in (AGENT, GREEDY, IMITATION, IMITATION_SAMPLED):
        if label in table.index:
            value = float(table["mean_ttlt"].loc[label])
            change = (value / ref - 1.0) * 100.0
            word = "lower" if change < 0 else "higher"
            print(
                f"{label}: mean TTLT {value:.3f} s vs {reference} {ref:.3f} s "
                f"({abs(change):.1f}% {word})"
            )
    print(
        f"done in {wall / 60:.1f} min; outputs in {result.run_dir}/ "
        f"(tensorboard --logdir {result.run_dir})"
    )
    write_json(
        args.json,
        {
            "run_dir": str(result.run_dir),
            "backend": args.backend,
            "table": result.table.to_dict(orient="records"),
            "records": result.records,
            "timings": result.timings,
            "wall_s": wall,
        },
    )
    return 0
