"""``python -m sagerl eval``: a saved agent and the baselines on the same windows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from agents.common.checkpoints import saved_checkpoint
from agents.common.config import load_train_config
from agents.common.evaluation import evaluate, summarize
from sagerl.errors import SagerlError


@dataclass
class EvalResult:
    """Records (one per policy and seed), their summary, and what was evaluated."""

    name: str
    checkpoint: Path
    seeds: int
    reference: str
    table: pd.DataFrame
    records: list[dict[str, Any]]


def latest_checkpoint(run_dir: Path) -> Path:
    """The archive the run's state points at (its latest save)."""
    path = saved_checkpoint(run_dir)
    if path is None:
        raise SagerlError(
            f"no checkpoint in {run_dir}/checkpoints; train first or pass --checkpoint"
        )
    return path


def _rllib_actors(run_dir: Path, actor_size: int) -> tuple[Path, list[Any]]:
    """The sampling and greedy agents of an RLlib run (``train --backend rllib``)."""
    from agents.pipeline import AGENT, GREEDY
    from agents.rllib.export import rllib_actor
    from agents.rllib.nets import ActorNetActor

    net, meta = rllib_actor(run_dir)
    if meta["actor_size"] != actor_size:
        raise SagerlError(
            f"{meta['checkpoint']} reads {meta['actor_size']} features, the config's encoder "
            f"gives {actor_size} (different cluster size or feature layout)"
        )
    actors = [ActorNetActor(net, AGENT), ActorNetActor(net, GREEDY, deterministic=True)]
    return Path(meta["checkpoint"]), actors


def evaluate_saved(
    *,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    run_dir: Path | None = None,
    checkpoint: Path | None = None,
    split: str = "eval",
) -> EvalResult:
    """Evaluate a saved agent beside ``evaluation.baselines``.

    Args:
        config: Training config (default: the run's ``config.yaml``, else the default config).
        overrides: ``key=value`` overrides.
        run_dir: Run directory (default ``runs/<name>`` of the config).
        checkpoint: Model archive (default: the run's latest checkpoint; for a run trained with
            ``--backend rllib``, its latest RLlib checkpoint).
        split: ``eval`` (held-out windows) or ``train``.
    """
    from agents.common.actors import Actor, PolicyActor, TorchPolicyActor
    from agents.common.envs import make_eval_env
    from agents.pipeline import AGENT, GREEDY, eval_seeds, run_dir_of
    from agents.ppo import load_model

    if config is None and run_dir is not None and (run_dir / "config.yaml").is_file():
        config = run_dir / "config.yaml"
    cfg = load_train_config(config, overrides)
    if config is None and run_dir is None:
        saved = run_dir_of(cfg) / "config.yaml"
        if saved.is_file():
            cfg = load_train_config(saved, overrides)
    rdir = run_dir or run_dir_of(cfg)
    env = make_eval_env(cfg)
    actors: list[Actor]
    if checkpoint is None and (rdir / "rllib").is_dir():
        path, actors = _rllib_actors(rdir, env.actor_size)
    else:
        path = checkpoint or latest_checkpoint(rdir)
        if not path.is_file():
            raise SagerlError(f"checkpoint {path} does not exist")
        model = load_model(path, cfg.ppo)
        if env.observation_space.shape != model.observation_space.shape:
            raise SagerlError(
                f"{path} expects observations of shape {model.observation_space.shape}, the "
                f"config gives {env.observation_space.shape} (different cluster size or feature "
                "layout)"
            )
        actors = [
            TorchPolicyActor(model.policy, AGENT, deterministic=False),
            TorchPolicyActor(model.policy, GREEDY, deterministic=True),
        ]
    actors += [PolicyActor(name, seed=cfg.seed) for name in cfg.evaluation.baselines]
    records = evaluate(actors, env, eval_seeds(cfg), split=split)
    table = summarize(records, cfg.evaluation.reference)
    return EvalResult(
        cfg.name, path, cfg.evaluation.seeds, cfg.evaluation.reference, table, records
    )
