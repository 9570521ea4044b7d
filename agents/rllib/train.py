"""``python -m sagerl train --backend rllib``: the training pipeline with RLlib's PPO; resumable.

The phases of the stable-baselines3 pipeline (:mod:`agents.pipeline`), on the same config:

    imitation   record teacher episodes -> behaviour cloning -> DAgger rounds, on the SB3 policy
                with the very code (and seeds) the SB3 path runs, so both backends start PPO from
                the same weights                                 (rllib/checkpoints/imitation.zip)
    ppo         RLlib PPO on Ray (env runners step the environments), starting from those
                weights; a checkpoint every ``checkpoint_every`` env steps
                                                                 (rllib/checkpoints/ppo_<steps>/)
    evaluation  the agent, the clone and the baselines on the same held-out windows, through
                :func:`agents.common.evaluation.evaluate`               (comparison.*, results.json)

Outputs in ``runs/<name>/`` carry the SB3 path's names and TensorBoard tags (``agent/`` holds the
training curves: ``rollout/ep_rew_mean``, ``rollout/ep_mean_ttlt``, ``train/*``, ``eval/*``;
one run per baseline), so the two backends overlay in TensorBoard and read the same way. A run
directory holds one backend's run: a fresh RLlib run removes a previous run's outputs, as a fresh
SB3 run does. The RLlib checkpoints are ordinary RLlib checkpoints
(``Algorithm.from_checkpoint``); :func:`agents.rllib.export.rllib_actor` reads the actor from
the newest.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from agents.common.checkpoints import RunState
from agents.common.config import TrainConfig
from agents.pipeline import (
    AGENT,
    GREEDY,
    TrainResult,
    eval_seeds,
    fresh_run_dir,
    prepare_run,
    write_results,
)
from agents.rllib import require_rllib
from sagerl.errors import SagerlError

RLLIB_DIR = "rllib"
"""The RLlib backend's folder in a run directory (checkpoints, run state)."""

KEEP = 3
"""PPO checkpoints kept (older ones are deleted)."""


def rllib_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / RLLIB_DIR


def checkpoints_dir(run_dir: str | Path) -> Path:
    return rllib_dir(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest RLlib PPO checkpoint of a run (``runs/<name>`` or its ``rllib/``), if any."""
    base = Path(run_dir)
    if base.name != RLLIB_DIR and (base / RLLIB_DIR).is_dir():
        base = base / RLLIB_DIR
    state = RunState.load(base)
    if state is not None and state.checkpoint:
        p = base / state.checkpoint
        if p.is_dir():
            return p
    found = sorted(_ppo_dirs(base / "checkpoints"), key=_steps_of)
    return found[-1] if found else None


def _ppo_dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.glob("ppo_*") if p.is_dir() and p.name[4:].isdigit()]


def _steps_of(path: Path) -> int:
    return int(path.name[4:])


# ----------------------------------------------------------------------------- scalars
def train_scalars(result: dict[str, Any], steps_this_iter: int) -> dict[str, float]:
    """An RLlib result as the SB3 path's TensorBoard tags (only the finite ones).

    ``rollout/ep_rew_mean`` and ``rollout/ep_len_mean`` (episode return and length, last 100
    episodes), ``rollout/ep_mean_ttlt`` and friends (the windows' metrics), ``train/*`` (the
    PPO update: ``entropy_loss`` is minus the entropy, ``value_loss`` the unclipped squared
    error, ``approx_kl`` the mean KL against the sampling policy, ``clip_fraction`` the share
    of samples whose probability ratio was clipped), ``time/fps``.
    """
    from ray.rllib.core import DEFAULT_MODULE_ID

    runners = result.get("env_runners", {}) or {}
    learner = (result.get("learners", {}) or {}).get(DEFAULT_MODULE_ID, {}) or {}
    seconds = float(result.get("time_this_iter_s", float("nan")))
    out: dict[str, float] = {
        "rollout/ep_rew_mean": runners.get("episode_return_mean", math.nan),
        "rollout/ep_len_mean": runners.get("episode_len_mean", math.nan),
        "train/policy_gradient_loss": learner.get("policy_loss", math.nan),
        "train/value_loss": learner.get("vf_loss_unclipped", math.nan),
        "train/entropy_loss": -float(learner.get("entropy", math.nan)),
        "train/approx_kl": learner.get("mean_kl_loss", math.nan),
        "train/clip_fraction": learner.get("clip_fraction", math.nan),
        "train/explained_variance": learner.get("vf_explained_var", math.nan),
        "train/loss": learner.get("total_loss", math.nan),
        "train/learning_rate": learner.get("default_optimizer_learning_rate", math.nan),
        "time/fps": steps_this_iter / seconds if seconds > 0 else math.nan,
    }
    from agents.rllib.config import EPISODE_KEYS

    for key in EPISODE_KEYS:
        out[f"rollout/ep_{key}"] = runners.get(f"ep_{key}", math.nan)
    clean: dict[str, float] = {}
    for tag, value in out.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            clean[tag] = v
    return clean


# ----------------------------------------------------------------------------- the pipeline
def train_rllib(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    address: str | None = None,
    log: Any = print,
    progress: bool = False,
) -> TrainResult:
    """Run (or resume) the pipeline for ``cfg`` with RLlib's PPO on Ray.

    Args:
        cfg: The training config (``ppo:`` hyperparameters, ``rllib:`` resources).
        resume: Continue ``runs/<name>/`` from its last RLlib checkpoint.
        address: An existing Ray cluster; ``None`` starts a local Ray for the run.
        log: Progress lines go here.
        progress: Show a progress bar during PPO.

    Raises:
        SagerlError: Ray missing, or ``resume`` without a checkpoint.
        KeyboardInterrupt: after saving a checkpoint, when interrupted during PPO.
    """
    require_rllib()

    from agents.common.checkpoints import Checkpointer
    from agents.pipeline import _logger

    timings: dict[str, float] = {}
    run_dir = Path(cfg.output_dir) / cfg.name
    rdir = rllib_dir(run_dir)
    checkpointer = Checkpointer(rdir, keep=0)
    state = RunState.load(rdir) if resume else None
    if resume and (state is None or state.checkpoint is None):
        raise SagerlError(
            f"nothing to resume in {rdir}/ (no RLlib checkpoint); run without --resume"
        )
    if not resume:
        fresh_run_dir(run_dir, cfg.evaluation.baselines, log)
        state = RunState(phase="imitation" if cfg.imitation.enabled else "ppo")
    assert state is not None
    t0 = time.perf_counter()
    env, eval_env = prepare_run(cfg, run_dir, log)
    actor_size = env.actor_size if env.critic is not None else None
    timings["data_s"] = time.perf_counter() - t0
    logger = _logger(run_dir / AGENT, state.num_timesteps if resume else None)

    if state.phase == "imitation":
        t0 = time.perf_counter()
        _imitation(cfg, env, state, checkpointer, logger, actor_size, log)
        timings["imitation_s"] = time.perf_counter() - t0
    imitation_zip = checkpointer.dir / "imitation.zip"

    import agents
    import envs
    import sagerl
    from sagerl.compare.ray_backend import ray_session

    t0 = time.perf_counter()
    with ray_session(
        address, num_cpus=cfg.rllib.num_cpus, ship=[sagerl, envs, agents], log=log
    ) as resources:
        algo = _build_algorithm(cfg, actor_size)
        timings["ray_start_s"] = time.perf_counter() - t0
        try:
            steps = _starting_point(algo, cfg, rdir, state, imitation_zip, log)
            if steps < cfg.ppo.total_timesteps:
                t0 = time.perf_counter()
                start = steps
                steps = _ppo(cfg, algo, eval_env, state, rdir, logger, steps, log, progress)
                timings["ppo_s"] = time.perf_counter() - t0
                timings["ppo_steps_per_s"] = (steps - start) / max(timings["ppo_s"], 1e-9)
            net = _actor_of(algo, cfg)
        finally:
            algo.stop()

    t0 = time.perf_counter()
    result = _evaluate(cfg, run_dir, net, imitation_zip, eval_env, logger, steps, state, log)
    timings["eval_s"] = time.perf_counter() - t0
    result.timings = timings
    import ray

    write_results(
        run_dir,
        cfg,
        result.table,
        result.records,
        state,
        timings,
        backend="rllib",
        ray_version=ray.__version__,
        ray_resources={k: v for k, v in resources.items() if k in ("CPU", "GPU", "memory")},
        checkpoint=str(latest_checkpoint(run_dir) or ""),
    )
    logger.close()
    return result


def _imitation(
    cfg: TrainConfig,
    env: Any,
    state: RunState,
    checkpointer: Any,
    logger: Any,
    actor_size: int | None,
    log: Any,
) -> None:
    """Behaviour cloning and DAgger on the SB3 policy, exactly as the SB3 pipeline runs them
    (same initial weights, demonstrations and seeds), checkpointed under ``rllib/``."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents.common.envs import EnvFactory
    from agents.pipeline import _imitation as imitate
    from agents.ppo import build_model, load_model

    venv = DummyVecEnv([EnvFactory(cfg)])
    ckpt = checkpointer.path(state)
    if ckpt is not None:
        model = load_model(ckpt, cfg.ppo, venv)
        log(f"resuming imitation from {ckpt}")
    else:
        model = build_model(cfg.ppo, venv, seed=cfg.seed, actor_size=actor_size)
    model.set_logger(logger)
    imitate(cfg, model, env, state, checkpointer, log)
    venv.close()


def _build_algorithm(cfg: TrainConfig, actor_size: int | None) -> Any:
    import logging
    import warnings

    from agents.rllib.config import algorithm_config

    for name in ("ray.rllib", "ray.tune", "ray.util", "ray._common.deprecation"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return algorithm_config(cfg, actor_size).build_algo()


def _starting_point(
    algo: Any, cfg: TrainConfig, rdir: Path, state: RunState, imitation_zip: Path, log: Any
) -> int:
    """Restore a PPO checkpoint, or load the imitation weights; returns the env steps done."""
    ckpt = rdir / state.checkpoint if state.checkpoint else None
    if ckpt is not None and ckpt.is_dir():
        algo.restore_from_path(str(ckpt.resolve()))
        log(f"resuming from {ckpt} ({state.num_timesteps} PPO steps)")
        return int(state.num_timesteps)
    if imitation_zip.is_file():
        _load_imitation(algo, cfg, imitation_zip)
        log("PPO starts from the imitation weights")
    return 0


def _load_imitation(algo: Any, cfg: TrainConfig, path: Path) -> None:
    """Put the SB3 imitation policy's weights into the learner(s) and the env runners."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    from agents.ppo import load_model
    from agents.rllib.nets import load_sb3_weights

    policy = load_model(path, cfg.ppo).policy
    weights = algo.learner_group.get_weights()[DEFAULT_MODULE_ID]
    nets = networks(weights, cfg)
    load_sb3_weights(nets, policy)
    new = {k: v.detach().cpu().numpy() for k, v in nets.state_dict().items()}
    if set(new) != set(weights):
        raise RuntimeError(f"weight names differ: {sorted(set(new) ^ set(weights))}")
    algo.learner_group.set_weights({DEFAULT_MODULE_ID: new})
    algo.env_runner_group.sync_weights(
        from_worker_or_learner_group=algo.learner_group, inference_only=True, timeout_seconds=120
    )


def networks(weights: dict[str, Any], cfg: TrainConfig) -> Any:
    """A module with the RLModule's ``pi`` and ``vf``, shaped after (and holding) ``weights``."""
    import torch

    from agents.rllib.nets import mlp

    def build(prefix: str) -> torch.nn.Sequential:
        linear = sorted(
            (int(k.split(".")[1]), np.asarray(v).shape)
            for k, v in weights.items()
            if k.startswith(prefix + ".") and k.endswith(".weight")
        )
        sizes = [shape for _, shape in linear]
        hidden = [shape[0] for shape in sizes[:-1]]
        return mlp(sizes[0][1], hidden, sizes[-1][0], cfg.ppo.activation, out_gain=1.0)

    nets = torch.nn.Module()
    nets.pi = build("pi")
    nets.vf = build("vf")
    nets.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in weights.items()})
    return nets


def _ppo(
    cfg: TrainConfig,
    algo: Any,
    eval_env: Any,
    state: RunState,
    rdir: Path,
    logger: Any,
    steps: int,
    log: Any,
    progress: bool,
) -> int:
    """RLlib PPO iterations until ``ppo.total_timesteps`` env steps; returns the steps done."""
    from stable_baselines3.common.logger import HParam
    from tqdm import tqdm

    from agents.common.evaluation import EVAL_TAGS, evaluate
    from agents.rllib.config import envs_per_runner
    from agents.rllib.nets import ActorNetActor

    total = cfg.ppo.total_timesteps
    every = cfg.checkpoint_every
    eval_every = cfg.evaluation.every_steps
    periodic = eval_seeds(cfg, cfg.evaluation.periodic_seeds)
    next_ckpt = (steps // every + 1) * every
    next_eval = (steps // eval_every + 1) * eval_every if eval_every else None
    state.phase = "ppo"
    hparams = {f"ppo.{k}": v for k, v in cfg.ppo.model_dump().items()}
    hparams.update({f"rllib.{k}": v for k, v in cfg.rllib.model_dump().items()})
    hparams.update({f"env.{k}": v for k, v in cfg.env.model_dump().items() if k != "predictor"})
    logger.record(
        "hparams",
        HParam(
            {
                k: v if isinstance(v, int | float | str | bool) else str(v)
                for k, v in hparams.items()
            },
            {"rollout/ep_rew_mean": 0.0, "eval/mean_ttlt": 0.0},
        ),
        exclude=("stdout", "log", "json", "csv"),
    )
    r = cfg.rllib
    log(
        f"PPO (RLlib): {total - steps} steps from step {steps} ({r.num_env_runners} env "
        f"runner(s) x {envs_per_runner(cfg)} envs, {cfg.ppo.n_envs * cfg.ppo.n_steps} steps "
        "per update)"
    )
    bar = tqdm(total=total, initial=steps, unit="step", desc="PPO (RLlib)", disable=not progress)
    done_steps = steps
    # RLlib's lifetime counter as restored with the checkpoint (0 for a fresh algorithm): the
    # run's steps are ours, the counter only measures what each iteration adds.
    base = steps - _lifetime_steps(algo)
    try:
        while done_steps < total:
            result = algo.train()
            new = base + int(result.get("num_env_steps_sampled_lifetime", 0))
            scalars = train_scalars(result, new - done_steps)
            bar.update(new - done_steps)
            done_steps = new
            state.num_timesteps = done_steps
            if "rollout/ep_mean_ttlt" in scalars:
                bar.set_postfix(ttlt=f"{scalars['rollout/ep_mean_ttlt']:.3f}")
            for tag, value in scalars.items():
                logger.record(tag, value)
            logger.record("train/clip_range", cfg.ppo.clip_range)
            # As SB3 does: counters in the CSV only, not in TensorBoard.
            logger.record("time/total_timesteps", done_steps, exclude="tensorboard")
            logger.record(
                "time/iterations", int(result.get("training_iteration", 0)), exclude="tensorboard"
            )
            if next_eval is not None and done_steps >= next_eval:
                net = _actor_of(algo, cfg)
                records = evaluate(
                    [ActorNetActor(net, AGENT, deterministic=False)], eval_env, periodic
                )
                for metric, tag in EVAL_TAGS.items():
                    logger.record(tag, float(np.mean([rec[metric] for rec in records])))
                msg = f"  step {done_steps}: held-out mean TTLT "
                log(msg + f"{np.mean([rec['mean_ttlt'] for rec in records]):.3f} s")
                next_eval = (done_steps // eval_every + 1) * eval_every
            logger.dump(done_steps)
            if done_steps >= next_ckpt:
                _save(algo, state, rdir, done_steps)
                next_ckpt = (done_steps // every + 1) * every
    except KeyboardInterrupt:
        bar.close()
        _save(algo, state, rdir, done_steps, "interrupted")
        log(
            f"interrupted: checkpoint saved at step {done_steps}; "
            f"continue with --resume --backend rllib (runs/{cfg.name})"
        )
        raise
    bar.close()
    _save(algo, state, rdir, done_steps, "ppo done")
    return done_steps


def _lifetime_steps(algo: Any) -> int:
    """Env steps RLlib's metrics count so far (restored from a checkpoint, else 0)."""
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

    try:
        value = algo.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
    except (KeyError, AttributeError, TypeError):
        return 0
    return int(value or 0)


def _save(algo: Any, state: RunState, rdir: Path, steps: int, event: str | None = None) -> Path:
    """``rllib/checkpoints/ppo_<steps>/`` (written to a temporary name, then renamed), the run
    state pointed at it, older checkpoints pruned to :data:`KEEP`."""
    folder = rdir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ppo_{steps:09d}"
    tmp = folder / f".tmp_ppo_{steps:09d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    algo.save_to_path(str(tmp.resolve()))
    if path.exists():
        shutil.rmtree(path)
    tmp.replace(path)
    state.checkpoint = str(path.relative_to(rdir))
    state.num_timesteps = steps
    if event:
        state.events.append({"event": event, "num_timesteps": steps})
    state.save(rdir)
    for old in sorted(_ppo_dirs(folder), key=_steps_of)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _actor_of(algo: Any, cfg: TrainConfig) -> Any:
    """The learner's current actor as a plain torch module (:class:`ActorNet`)."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    from agents.rllib.nets import ActorNet

    nets = networks(algo.learner_group.get_weights()[DEFAULT_MODULE_ID], cfg)
    return ActorNet(nets.pi, int(nets.pi[0].in_features)).eval()


def _evaluate(
    cfg: TrainConfig,
    run_dir: Path,
    net: Any,
    imitation_zip: Path,
    eval_env: Any,
    logger: Any,
    steps: int,
    state: RunState,
    log: Any,
) -> TrainResult:
    """The agent, the clone and the baselines on the held-out windows (as the SB3 path)."""
    from agents.common.actors import Actor
    from agents.pipeline import final_evaluation
    from agents.rllib.nets import ActorNetActor

    agent: list[Actor] = [
        ActorNetActor(net, AGENT, deterministic=False),
        ActorNetActor(net, GREEDY, deterministic=True),
    ]
    table, records = final_evaluation(
        cfg,
        agent,
        imitation_zip,
        steps,
        eval_env,
        run_dir,
        logger,
        log,
        f"{cfg.name} (RLlib): mean TTLT on {cfg.evaluation.seeds} windows",
    )
    state.phase = "done"
    state.events.append({"event": "evaluated", "num_timesteps": steps})
    state.save(rllib_dir(run_dir))
    return TrainResult(run_dir, table, records, state)
