"""Arguments and output helpers shared by the CLI commands."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--seed``, ``--json`` and trailing ``key=value`` overrides."""
    parser.add_argument("--config", "-c", help="YAML config (default: configs/default.yaml)")
    parser.add_argument("--seed", type=int, help="seed (overrides the config's seed)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. cluster.placement=random",
    )


def overrides_with_seed(args: argparse.Namespace) -> list[str]:
    """The overrides plus ``seed=N`` when ``--seed`` was given (it wins)."""
    extra = [f"seed={args.seed}"] if getattr(args, "seed", None) is not None else []
    return list(args.overrides) + extra


def write_json(path: str | Path | None, payload: Any) -> None:
    """Write ``payload`` as indented JSON when ``path`` is given."""
    if path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(payload, indent=2, default=float))


def print_table(
    title: str, rows: Sequence[Mapping[str, Any]], console: Console | None = None
) -> None:
    """Print rows of equal keys as a rich table (floats to 4 significant digits)."""
    console = console or Console(width=max(Console().width, 140))
    table = Table(title=title)
    if not rows:
        console.print(f"{title}: (no rows)")
        return
    for key in rows[0]:
        table.add_column(str(key), justify="right")
    for row in rows:
        table.add_row(*(_fmt(v) for v in row.values()))
    console.print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
