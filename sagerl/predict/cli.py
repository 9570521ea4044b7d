"""``python -m sagerl predict eval``: score the length predictors on CASTILLO and ShareGPT.

Example::

    python -m sagerl predict eval --dataset both --json runs/predict.json
    python -m sagerl predict eval --dataset castillo --model Qwen--Qwen2.5-7B-Instruct-1M \\
        --predictors sagesched,tie embedder.max_seq_len=256

Trailing ``key=value`` pairs override :class:`~sagerl.predict.config.PredictorConfig` fields.
With one data set ``--json`` writes ``{predictor: {figure: value}}``; with ``both`` it writes
``{"castillo": {...}, "sharegpt": {...}}``.
"""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_PREDICTORS = "sagesched,length-history,point,tie,global,oracle"
DEFAULT_MODEL = "meta-llama--Llama-3.1-8B-Instruct"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``predict`` command (with its ``eval`` action) to the CLI."""
    parser = sub.add_parser(
        "predict",
        help="output-length predictors: evaluate them on real data",
        description="Output-length distribution predictors (SageSched and baselines).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    ev = actions.add_parser(
        "eval",
        help="stream a data set through each predictor and print accuracy and latency",
        description="Streaming evaluation: each request is predicted before its outcome is "
        "observed. Prints CRPS, pinball loss, 80% coverage, Kendall tau, bucket accuracy "
        "and latency per predictor.",
    )
    ev.add_argument(
        "--dataset",
        default="both",
        help="castillo, sharegpt, both, or sample_castillo (bundled sample; default: both)",
    )
    ev.add_argument("--model", default=DEFAULT_MODEL, help="CASTILLO model (default: %(default)s)")
    ev.add_argument(
        "--predictors",
        default=DEFAULT_PREDICTORS,
        help="comma-separated predictor names (default: %(default)s)",
    )
    ev.add_argument("--limit", type=int, help="evaluate at most N requests per data set")
    ev.add_argument("--seed", type=int, default=0, help="stream order and split (default: 0)")
    ev.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    ev.add_argument(
        "--data-dir", help="full-data directory (default: SAGERL_DATA or ../shared/data)"
    )
    ev.add_argument("--config", "-c", help="YAML file with PredictorConfig fields")
    ev.add_argument(
        "--latency-requests",
        type=int,
        default=200,
        help="requests timed for the latency figures (default: %(default)s; 0 skips)",
    )
    ev.add_argument("--no-progress", action="store_true", help="hide progress bars")
    ev.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="PredictorConfig overrides, e.g. similarity=0.75 embedder.max_seq_len=256",
    )
    ev.set_defaults(func=run)
    parser.set_defaults(func=lambda _args: (parser.print_help(), 0)[1])


def run(args: argparse.Namespace) -> int:
    """Run ``predict eval``; user errors raise :class:`~sagerl.errors.SagerlError`."""
    from sagerl.errors import ConfigError, SagerlError, unknown_name
    from sagerl.predict.config import PredictorConfig
    from sagerl.schema import load_config

    config = load_config(PredictorConfig, args.config, list(args.overrides))
    names = [n.strip() for n in args.predictors.split(",") if n.strip()]
    if not names:
        raise ConfigError("--predictors is empty")
    _check_names(names)
    choices = ("castillo", "sharegpt", "both", "sample_castillo")
    if args.dataset not in choices:
        raise unknown_name("evaluation data set", args.dataset, choices)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    datasets = ["castillo", "sharegpt"] if args.dataset == "both" else [args.dataset]
    try:
        return _run(args, config, names, datasets)
    except ImportError as exc:
        raise SagerlError(
            f"predict needs its optional dependencies ({exc.name or exc}); "
            "pip install 'sagerl[predict]'"
        ) from None


def _check_names(names: list[str]) -> None:
    from sagerl.predict import predictors as _predictors  # noqa: F401  (fills the table)
    from sagerl.predict.base import PREDICTORS

    for name in names:
        PREDICTORS.get(name)  # raises UnknownNameError listing the valid names


def _run(args: argparse.Namespace, config: Any, names: list[str], datasets: list[str]) -> int:
    from sagerl.commands.common import print_table, write_json
    from sagerl.predict.data import load_eval
    from sagerl.predict.embedder import Embedder
    from sagerl.predict.evaluate import LATENCY_COLUMNS, evaluate, table_rows

    embedder = Embedder(config.embedder)
    payload: dict[str, Any] = {}
    for dataset in datasets:
        data = load_eval(
            dataset, model=args.model, data_dir=args.data_dir, limit=args.limit, seed=args.seed
        )
        results = evaluate(
            data,
            names,
            config,
            embedder=embedder,
            progress=not args.no_progress,
            latency_requests=args.latency_requests,
        )
        title = (
            f"{data.label}: {len(data.requests)} requests streamed, warm-up pool "
            f"{len(data.warmup)}, {embedder.variant}, seed {args.seed}"
        )
        print_table(f"{title}: accuracy (tokens)", table_rows(results))
        if args.latency_requests:
            print_table(
                f"{data.label}: latency in ms on one CPU thread, first "
                f"{args.latency_requests} requests, cold embedding, best of 3 "
                "(wall-clock, then the thread's CPU time)",
                table_rows(results, LATENCY_COLUMNS),
            )
        payload[dataset] = results
    write_json(args.json, payload[datasets[0]] if len(datasets) == 1 else payload)
    return 0
