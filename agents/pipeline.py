"""``python -m sagerl train``: imitation of the teacher, PPO fine-tuning, evaluation; resumable.

Phases, each checkpointed into ``runs/<name>/checkpoints/`` (see
:mod:`agents.common.checkpoints`)::

    imitation   record teacher episodes -> behaviour cloning -> DAgger rounds   (imitation.zip)
    ppo         MaskablePPO from the cloned weights, a checkpoint every K steps (ppo_<steps>.zip)
    evaluation  agent, cloned agent and baselines on the same held-out windows  (comparison.*)

``--resume`` reads ``state.json`` and continues where the run stopped (a finished phase is not
redone; PPO continues from the saved step count, so raising ``ppo.total_timesteps`` extends a
finished run). Ctrl-C during PPO saves a checkpoint before exiting.

Outputs (``runs/<name>/``): ``config.yaml``, ``features.json`` (the encoder's spec, for export),
``agent/`` (TensorBoard and CSV: imitation and training curves, the agent's evaluations), one
TensorBoard run per evaluated policy (``sagesched/``, ``least-outstanding/``, ...: the same
``eval/`` tags), ``comparison.csv`` and ``comparison.png``, ``results.json``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from agents.common.actors import Actor, PolicyActor, TorchPolicyActor
from agents.common.checkpoints import Checkpointer, RunState
from agents.common.config import TrainConfig
from agents.common.evaluation import EVAL_TAGS, evaluate, save_table, summarize, write_tensorboard
from sagerl.errors import SagerlError

Log = Callable[[str], None]

AGENT = "agent"
"""The trained agent, sampling its actions as PPO trained it to (its TensorBoard run also holds
the training curves)."""
GREEDY = "agent-greedy"
"""The trained agent taking its most likely action."""
IMITATION = "agent-imitation"
"""The agent as it was after imitation, before PPO, taking its most likely action (the clone's
smoothing noise is a device for PPO's exploration, not part of what it imitates)."""
IMITATION_SAMPLED = "agent-imitation-sampled"
"""The clone sampling its actions: PPO's starting point, so the gain PPO itself added is the
difference between :data:`AGENT` and this."""

_OUTPUTS = ("checkpoints", "rllib", AGENT, "comparison.csv", "comparison.png", "results.json")
"""What a new run under the same name removes (``rllib/``: an RLlib run's checkpoints, which
``export`` would otherwise take for this run's policy)."""


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        run_dir: The run directory.
        table: One row per evaluated policy (see :func:`agents.common.evaluation.summarize`).
        records: One record per (policy, seed).
        state: The final run state.
        timings: Seconds per phase.
    """

    run_dir: Path
    table: pd.DataFrame
    records: list[dict[str, Any]]
    state: RunState
    timings: dict[str, float] = field(default_factory=dict)


def run_dir_of(cfg: TrainConfig) -> Path:
    return Path(cfg.output_dir) / cfg.name


def eval_seeds(cfg: TrainConfig, count: int | None = None) -> list[int]:
    n = cfg.evaluation.seeds if count is None else count
    return [cfg.evaluation.seed_offset + i for i in range(n)]


def fresh_run_dir(run_dir: Path, baselines: Sequence[str], log: Log) -> None:
    """Remove a previous run's outputs under the same name, of either backend (a new run starts
    clean)."""
    from agents.common.evaluation import safe_name

    agents = (GREEDY, IMITATION, IMITATION_SAMPLED)
    names = [*_OUTPUTS, *(safe_name(a) for a in agents), *(safe_name(b) for b in baselines)]
    removed = []
    for name in names:
        p = run_dir / name
        if p.is_dir():
            shutil.rmtree(p)
            removed.append(name)
        elif p.exists():
            p.unlink()
            removed.append(name)
    if removed:
        log(
            f"starting fresh: removed the previous outputs in {run_dir}/ (use --resume to continue)"
        )


def prepare_run(cfg: TrainConfig, run_dir: Path, log: Log) -> tuple[Any, Any]:
    """What every backend does before training: write ``config.yaml``, build the episode data
    (embedding prompts on the first run), the imitation and evaluation environments, and
    ``features.json`` (the encoder spec export checks against).

    Returns:
        ``(env, eval_env)``: a training-split env and the held-out evaluation env.
    """
    import torch

    from agents.common.envs import make_env, make_eval_env
    from envs.data import load_env_data

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    torch.set_num_threads(cfg.ppo.torch_threads)
    log("preparing episode data (the first run embeds the prompts once; later runs read the cache)")
    load_env_data(cfg, progress=True)
    env = make_env(cfg)
    eval_env = make_eval_env(cfg)
    env.encoder.to_json(run_dir / "features.json")
    return env, eval_env


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    log: Log = print,
    progress: bool = False,
    extra_callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Run (or resume) the whole pipeline for ``cfg``.

    Args:
        cfg: The training config.
        resume: Continue the run in ``runs/<name>/`` from its last checkpoint.
        log: Progress lines go here.
        progress: Show a progress bar during PPO.
        extra_callbacks: More SB3 callbacks for the PPO phase (tests).

    Raises:
        SagerlError: ``resume`` without a checkpoint to resume from.
        KeyboardInterrupt: after saving a checkpoint, when interrupted during PPO.
    """

    from agents.common.envs import make_vec_env
    from agents.ppo import build_model, load_model

    timings: dict[str, float] = {}
    run_dir = run_dir_of(cfg)
    checkpointer = Checkpointer(run_dir)
    state = RunState.load(run_dir) if resume else None
    if resume and (state is None or checkpointer.path(state) is None):
        raise SagerlError(f"nothing to resume in {run_dir}/ (no checkpoint); run without --resume")
    if not resume:
        fresh_run_dir(run_dir, cfg.evaluation.baselines, log)
        state = RunState(phase="imitation" if cfg.imitation.enabled else "ppo")
    assert state is not None
    t0 = time.perf_counter()
    env, eval_env = prepare_run(cfg, run_dir, log)
    venv = make_vec_env(cfg)
    timings["data_s"] = time.perf_counter() - t0

    ckpt = checkpointer.path(state)
    if ckpt is not None:
        model = load_model(ckpt, cfg.ppo, venv)
        log(f"resuming from {ckpt} (phase {state.phase}, {model.num_timesteps} PPO steps)")
    else:
        actor_size = env.actor_size if env.critic is not None else None
        model = build_model(cfg.ppo, venv, seed=cfg.seed, actor_size=actor_size)
    logger = _logger(run_dir / AGENT, int(model.num_timesteps) if ckpt is not None else None)
    model.set_logger(logger)

    if state.phase == "imitation":
        t0 = time.perf_counter()
        _imitation(cfg, model, env, state, checkpointer, log)
        timings["imitation_s"] = time.perf_counter() - t0

    if state.phase in ("ppo", "done") and model.num_timesteps < cfg.ppo.total_timesteps:
        t0 = time.perf_counter()
        _ppo(cfg, model, venv, eval_env, state, checkpointer, log, extra_callbacks, progress)
        timings["ppo_s"] = time.perf_counter() - t0
        timings["ppo_steps_per_s"] = cfg.ppo.total_timesteps / max(timings["ppo_s"], 1e-9)

    t0 = time.perf_counter()
    step = int(model.num_timesteps)
    agent: list[Actor] = [
        TorchPolicyActor(model.policy, AGENT, deterministic=False),
        TorchPolicyActor(model.policy, GREEDY, deterministic=True),
    ]
    table, records = final_evaluation(
        cfg,
        agent,
        checkpointer.dir / "imitation.zip",
        step,
        eval_env,
        run_dir,
        model.logger,
        log,
        f"{cfg.name}: mean TTLT on {cfg.evaluation.seeds} windows",
    )
    timings["eval_s"] = time.perf_counter() - t0
    state.phase = "done"
    state.events.append({"event": "evaluated", "num_timesteps": step})
    state.save(run_dir)
    write_results(run_dir, cfg, table, records, state, timings)
    logger.close()
    venv.close()
    return TrainResult(run_dir, table, records, state, timings)


def final_evaluation(
    cfg: TrainConfig,
    agent: Sequence[Actor],
    imitation_path: Path,
    steps: int,
    eval_env: Any,
    run_dir: Path,
    logger: Any,
    log: Log,
    title: str,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The agent (sampling and greedy), the clone PPO started from, and the baselines on the
    same held-out windows; every policy's TensorBoard run, the agent's ``eval/*`` scalars at
    ``steps``, and ``comparison.csv/png``. Shared by both training backends."""
    from agents.ppo import load_model

    actors = list(agent)
    if steps > 0 and imitation_path.is_file():
        imitated = load_model(imitation_path, cfg.ppo)
        actors.append(TorchPolicyActor(imitated.policy, IMITATION, deterministic=True))
        actors.append(TorchPolicyActor(imitated.policy, IMITATION_SAMPLED, deterministic=False))
    actors += [PolicyActor(name, seed=cfg.seed) for name in cfg.evaluation.baselines]
    log(f"evaluating {len(actors)} policies on {cfg.evaluation.seeds} held-out windows")
    records = evaluate(actors, eval_env, eval_seeds(cfg))
    reference = cfg.evaluation.reference
    table = summarize(records, reference)
    write_tensorboard(records, run_dir, steps=sorted({0, steps}), skip=[AGENT])
    agent_row = table[table["policy"] == AGENT].iloc[0]
    for metric, tag in EVAL_TAGS.items():
        if metric in agent_row and pd.notna(agent_row[metric]):
            logger.record(tag, float(agent_row[metric]))
    logger.dump(steps)
    save_table(table, reference, run_dir, title)
    return table, records


def _logger(folder: Path, resumed_at: int | None) -> Any:
    """SB3 logger writing TensorBoard events and CSV into ``folder``.

    TensorBoard appends a new event file per session (one run, continuous steps); SB3's CSV
    writer truncates its file, so a resumed session writes ``progress_from_<step>.csv``.
    """
    from stable_baselines3.common.logger import CSVOutputFormat, Logger, TensorBoardOutputFormat

    folder.mkdir(parents=True, exist_ok=True)
    name = "progress.csv" if resumed_at is None else f"progress_from_{resumed_at}.csv"
    return Logger(
        str(folder), [TensorBoardOutputFormat(str(folder)), CSVOutputFormat(str(folder / name))]
    )


def _imitation(
    cfg: TrainConfig,
    model: Any,
    env: Any,
    state: RunState,
    checkpointer: Checkpointer,
    log: Log,
) -> None:
    """Behaviour cloning and DAgger rounds, checkpointed after each."""
    from agents.imitation import Demonstrations, clone, dagger_round, record

    im = cfg.imitation
    gamma = cfg.ppo.gamma
    demos_path = checkpointer.dir / "demos.npz"
    logger = model.logger
    epoch_counter = [0]

    def on_epoch(_: int, figures: dict[str, float]) -> None:
        for key, value in figures.items():
            logger.record(f"imitation/{key}", value)
        logger.dump(epoch_counter[0])
        epoch_counter[0] += 1

    base = cfg.seed * 1_000_003
    if not state.bc_done:
        seeds = [base + i for i in range(im.bc_episodes)]
        t0 = time.perf_counter()
        demos = record(env, None, seeds, gamma)
        log(
            f"imitation: {len(demos)} teacher decisions ({env.teacher.name}) in "
            f"{time.perf_counter() - t0:.1f} s; cloning"
        )
        figures = clone(
            model.policy,
            demos,
            epochs=im.bc_epochs,
            batch_size=im.batch_size,
            learning_rate=im.learning_rate,
            value_coef=im.value_coef,
            label_smoothing=im.label_smoothing,
            seed=cfg.seed,
            on_epoch=on_epoch,
        )
        log(f"behaviour cloning: agreement with the teacher {figures['agreement']:.3f}")
        demos.save(demos_path)
        state.bc_done = True
        checkpointer.save(model, state, "imitation", "behaviour cloning")
    else:
        demos = Demonstrations.load(demos_path)
        epoch_counter[0] = im.bc_epochs + state.dagger_rounds * im.dagger_epochs
    for k in range(state.dagger_rounds + 1, im.dagger_rounds + 1):
        seeds = [base + 100_000 * k + i for i in range(im.dagger_episodes)]
        demos, figures = dagger_round(
            model.policy,
            env,
            demos,
            round_index=k,
            seeds=seeds,
            beta=im.dagger_beta,
            gamma=gamma,
            epochs=im.dagger_epochs,
            batch_size=im.batch_size,
            learning_rate=im.learning_rate,
            value_coef=im.value_coef,
            label_smoothing=im.label_smoothing,
            on_epoch=on_epoch,
        )
        own = figures["on_policy_agreement"]
        log(
            f"DAgger round {k}: learner agreed with the teacher on {own:.3f} of its own states; "
            f"after cloning {figures['agreement']:.3f} on {len(demos)} states"
        )
        demos.save(demos_path)
        state.dagger_rounds = k
        checkpointer.save(model, state, "imitation", f"DAgger round {k}")
    state.phase = "ppo"
    checkpointer.save(model, state, "imitation", "imitation done")


def _ppo(
    cfg: TrainConfig,
    model: Any,
    venv: Any,
    eval_env: Any,
    state: RunState,
    checkpointer: Checkpointer,
    log: Log,
    extra_callbacks: Sequence[Any],
    progress: bool = False,
) -> None:
    """MaskablePPO until ``ppo.total_timesteps``; checkpoints, periodic evaluation, Ctrl-C save."""
    from stable_baselines3.common.callbacks import CallbackList

    from agents.common.callbacks import CheckpointEvery, EpisodeMetricsLogger, HParams, PeriodicEval

    periodic = eval_seeds(cfg, cfg.evaluation.periodic_seeds)

    def periodic_eval(m: Any, step: int) -> dict[str, float]:
        records = evaluate(
            [TorchPolicyActor(m.policy, AGENT, deterministic=False)], eval_env, periodic
        )
        out = {tag: float(np.mean([r[k] for r in records])) for k, tag in EVAL_TAGS.items()}
        log(f"  step {step}: held-out mean TTLT {out['eval/mean_ttlt']:.3f} s")
        return out

    checkpoint = CheckpointEvery(checkpointer, state, cfg.checkpoint_every)
    hparams = {f"ppo.{k}": v for k, v in cfg.ppo.model_dump().items()}
    hparams.update({f"env.{k}": v for k, v in cfg.env.model_dump().items() if k != "predictor"})
    callbacks = [
        checkpoint,
        PeriodicEval(periodic_eval, cfg.evaluation.every_steps),
        EpisodeMetricsLogger(venv),
        HParams(hparams),
        *extra_callbacks,
    ]
    remaining = cfg.ppo.total_timesteps - model.num_timesteps
    state.phase = "ppo"
    log(f"PPO: {remaining} steps from step {model.num_timesteps} ({cfg.ppo.n_envs} envs)")
    try:
        model.learn(
            remaining,
            callback=CallbackList(callbacks),
            reset_num_timesteps=False,
            log_interval=1,
            progress_bar=progress,
        )
    except KeyboardInterrupt:
        checkpoint.save_interrupted()
        log(
            f"interrupted: checkpoint saved at step {model.num_timesteps}; "
            f"continue with --resume (runs/{cfg.name})"
        )
        raise
    checkpoint.save("ppo done")


def write_results(
    run_dir: Path,
    cfg: TrainConfig,
    table: pd.DataFrame,
    records: list[dict[str, Any]],
    state: RunState,
    timings: dict[str, float],
    **extra: Any,
) -> None:
    """``results.json``: the comparison, per-seed records, run state and timings; a backend
    adds its own fields through ``extra``."""
    import json

    payload = {
        "name": cfg.name,
        **extra,
        "reference": cfg.evaluation.reference,
        "table": table.to_dict(orient="records"),
        "records": records,
        "state": state.__dict__,
        "timings": timings,
    }
    (run_dir / "results.json").write_text(json.dumps(payload, indent=2, default=float))
