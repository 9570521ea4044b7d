"""``python -m sagerl export``: a trained policy as ONNX plus a JSON sidecar, for the router.

What is exported is the actor alone (:func:`agents.ppo.policies.deployable_actor`): float32
``[batch, encoder.size]`` (the :class:`~sagerl.features.FeatureEncoder` vector) to
``[batch, max_replicas]`` logits; the router masks them and takes the argmax
(:class:`sagerl.live.policy_runtime.OnnxPolicyRuntime`, which needs onnxruntime only). The
sidecar (:func:`sagerl.live.sidecar.make_sidecar`) records the encoder, the teacher whose
estimates are features, the training config, the source checkpoint, a checksum of the ONNX file
and the parity check below.

Parity: ``verify`` observations are recorded by running the agent itself (sampling its masked
softmax, seeded) through held-out evaluation episodes (``make_eval_env``); on each, the masked
argmax of the torch policy's logits must equal the masked argmax of the ONNX model's, run one
observation at a time as the router runs it. A disagreement where the torch logits of the two
actions are equal to float precision is a tie and allowed; any other refuses the export.

Backends: an SB3 run (``runs/<name>/checkpoints``, the default) exports its MaskablePPO policy;
a run with an ``rllib/`` folder is exported through ``agents.rllib.export.rllib_actor``
(imported only then). The parity code takes "a torch module and its input width", so it serves
both.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sagerl.errors import SagerlError

Log = Callable[[str], None]

ONNX_NAME = "policy.onnx"
SIDECAR_NAME = "policy.json"
OPSET = 17
"""ONNX opset of the export (onnxruntime >= 1.14 runs it)."""
TIE_ATOL = 1e-5
TIE_RTOL = 1e-5
"""Two logits within ``TIE_ATOL + TIE_RTOL * |logit|`` are a tie (either action is right)."""


@dataclass
class Parity:
    """Actions of the torch policy and the ONNX model on the same recorded observations.

    Attributes:
        compared: Observations compared.
        agreed: Observations where both chose the same replica.
        ties: Disagreements where the torch logits of the two choices are equal to float
            precision.
        max_abs_logit_diff: Largest ``|torch - onnx|`` logit over available actions.
        episodes: Evaluation episodes the observations come from.
        seed: Seed of the recording.
    """

    compared: int = 0
    agreed: int = 0
    ties: int = 0
    max_abs_logit_diff: float = 0.0
    episodes: int = 0
    seed: int = 0

    @property
    def disagreed(self) -> int:
        """Disagreements beyond ties (an export with any is refused)."""
        return self.compared - self.agreed - self.ties

    def to_dict(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "agreed": self.agreed,
            "ties": self.ties,
            "disagreed": self.disagreed,
            "max_abs_logit_diff": self.max_abs_logit_diff,
            "episodes": self.episodes,
            "seed": self.seed,
            "reference": "the torch policy's masked argmax; ONNX run one observation per call",
        }


@dataclass
class ExportResult:
    """What :func:`export_run` wrote.

    Attributes:
        onnx_path: The ONNX policy.
        sidecar_path: Its JSON sidecar.
        sidecar: The sidecar's content.
        parity: The parity check.
        onnx_bytes: Size of the ONNX file.
        latency_us: p50 of one onnxruntime call on one observation (1 thread), µs.
        timings: Seconds per step (load, env, export, parity).
    """

    onnx_path: Path
    sidecar_path: Path
    sidecar: dict[str, Any]
    parity: Parity
    onnx_bytes: int
    latency_us: float
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Source:
    """A loaded policy: the module to export, the reference torch policy and metadata."""

    actor: Any  # torch module [N, actor_size] -> [N, actions]
    reference: Any  # torch module -> [N, actions] logits (the policy as trained)
    full_obs: bool  # the reference reads the whole observation (else its first actor_size)
    backend: str
    source: dict[str, Any]


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    verify: int = 10_000,
    seed: int = 0,
    log: Log | None = None,
) -> ExportResult:
    """Export the policy of the training run ``run_dir`` into ``out_dir``.

    Args:
        run_dir: ``runs/<name>`` of ``python -m sagerl train`` (or an RLlib run with
            ``rllib/``).
        out_dir: Folder for ``policy.onnx`` and ``policy.json`` (created).
        checkpoint: An SB3 archive instead of the run's latest checkpoint.
        verify: Recorded observations of the parity check (0 skips it).
        seed: Seed of the recording episodes and the agent's sampling.
        log: Progress lines (default: none).

    Raises:
        SagerlError: No run, config or checkpoint; the output folder is not writable; the run's
            features differ from this sagerl's; the ONNX model disagrees with the torch
            policy. Nothing is written then.
    """
    import torch

    from agents.common.config import load_train_config
    from agents.common.envs import make_eval_env
    from sagerl.features import FeatureEncoder
    from sagerl.live.policy_runtime import OnnxPolicyRuntime
    from sagerl.live.sidecar import make_sidecar

    say = log or (lambda _: None)
    timings: dict[str, float] = {}
    run = Path(run_dir)
    if not run.is_dir():
        raise SagerlError(f"run directory {run} does not exist")
    config_path = run / "config.yaml"
    if not config_path.is_file():
        raise SagerlError(f"{run} has no config.yaml: not a training run directory")
    if verify < 0:
        raise SagerlError(f"--verify must be >= 0, got {verify}")
    out = Path(out_dir)
    _check_writable(out)
    cfg = load_train_config(config_path)

    t0 = time.perf_counter()
    rllib = (run / "rllib").is_dir()
    if rllib and checkpoint is not None:
        raise SagerlError(f"{run} is an RLlib run: --checkpoint applies to SB3 runs only")
    src = _load_rllib(run) if rllib else _load_sb3(run, cfg, checkpoint)
    timings["load_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("building the evaluation environment (episode data, predictor)")
    env = make_eval_env(cfg)
    encoder = env.encoder
    features = run / "features.json"
    if features.is_file():
        try:
            trained = FeatureEncoder.from_json(features)
        except (ValueError, KeyError, TypeError) as exc:
            raise SagerlError(
                f"{features}: the run's features do not fit this sagerl ({_one_line(exc)}); "
                "retrain with this version"
            ) from None
        if trained.to_dict() != encoder.to_dict():
            raise SagerlError(
                f"{features} differs from the encoder its config.yaml builds now; "
                "retrain with this version"
            )
    timings["env_s"] = time.perf_counter() - t0

    actor_size = env.actor_size
    ref_width = int(env.observation_space.shape[0]) if src.full_obs else actor_size
    with torch.no_grad():
        try:
            width = int(src.actor(torch.zeros(2, actor_size)).shape[-1])
            ref = int(src.reference(torch.zeros(2, ref_width)).shape[-1])
        except Exception as exc:  # a module of another input width raises a shape error
            raise SagerlError(
                f"{run}: the policy does not take the encoder's {actor_size} features "
                f"({_one_line(exc)})"
            ) from None
    if width != env.num_actions or ref != width:
        raise SagerlError(
            f"{run}: the policy has {width} actions, the environment {env.num_actions}"
        )

    t0 = time.perf_counter()
    tmp = out / f".{ONNX_NAME}.tmp{os.getpid()}"
    try:
        _to_onnx(src.actor, actor_size, tmp)
        session = _session(tmp)
        timings["export_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        parity = Parity(seed=seed)
        if verify > 0:
            say(f"recording {verify} observations of the agent for the parity check")
            obs, masks, episodes = record(src.reference, ref_width, env, verify, seed)
            parity = compare(src.reference, ref_width, session, actor_size, obs, masks)
            parity.episodes, parity.seed = episodes, seed
            if parity.disagreed:
                raise SagerlError(
                    f"the ONNX policy disagrees with the torch policy on {parity.disagreed} of "
                    f"{parity.compared} recorded observations (beyond {parity.ties} ties; "
                    f"max logit difference {parity.max_abs_logit_diff:.3g}); nothing written"
                )
        timings["parity_s"] = time.perf_counter() - t0
        latency = onnx_latency_us(session, actor_size)

        onnx_path, side_path = out / ONNX_NAME, out / SIDECAR_NAME
        tmp.replace(onnx_path)
    finally:
        tmp.unlink(missing_ok=True)
    teacher = cfg.env.teacher if cfg.env.teacher_features else None
    sidecar = make_sidecar(
        onnx_path,
        encoder,
        teacher=teacher,
        teacher_options=cfg.env.teacher_options if teacher else {},
        outputs="logits",
        training_config=cfg.model_dump(mode="json"),
        backend=src.backend,
        source=src.source,
        parity=parity.to_dict(),
    )
    _write_text(side_path, _dumps(sidecar))
    # The loader must accept what was just written (same checks the router runs).
    OnnxPolicyRuntime(onnx_path, env.num_replicas)
    say(f"wrote {onnx_path} and {side_path}")
    return ExportResult(
        onnx_path,
        side_path,
        sidecar,
        parity,
        onnx_path.stat().st_size,
        latency,
        timings,
    )


# ---------------------------------------------------------------------- backends
def _load_sb3(run: Path, cfg: Any, checkpoint: str | Path | None) -> _Source:
    from agents.common.checkpoints import saved_checkpoint
    from agents.ppo import load_model
    from agents.ppo.policies import deployable_actor

    if checkpoint is not None:
        ckpt = Path(checkpoint)
        if not ckpt.is_file():
            raise SagerlError(f"checkpoint {ckpt} does not exist")
    else:
        try:
            found = saved_checkpoint(run)
        except (OSError, ValueError, TypeError) as exc:
            raise SagerlError(
                f"{run}/checkpoints/state.json is unreadable ({_one_line(exc)}); pass "
                "--checkpoint PATH"
            ) from None
        if found is None:
            raise SagerlError(
                f"{run} has no checkpoint (checkpoints/state.json names none); train it first: "
                "python -m sagerl train"
            )
        ckpt = found
    try:
        model = load_model(ckpt, cfg.ppo)
    except Exception as exc:  # a corrupt or foreign archive: SB3 raises many kinds
        raise SagerlError(f"{ckpt}: cannot load the SB3 checkpoint ({_one_line(exc)})") from None
    policy = model.policy
    policy.set_training_mode(False)
    obs_size = int(policy.observation_space.shape[0])
    actor_size = getattr(policy, "actor_size", None) or obs_size
    source = {
        "backend": "sb3",
        "run_dir": str(run),
        "checkpoint": str(ckpt),
        "num_timesteps": int(model.num_timesteps),
        "algorithm": type(model).__name__,
        "policy": type(policy).__name__,
    }
    return _Source(deployable_actor(policy, actor_size), _sb3_logits(policy), True, "sb3", source)


def _sb3_logits(policy: Any) -> Any:
    """The SB3 policy as a module: full observation -> the actor's logits (as it trained)."""
    import torch
    from stable_baselines3.common.policies import BaseModel

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.policy = policy

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            p = self.policy
            # As MaskableActorCriticPolicy.get_distribution: the actor's own extractor.
            features = BaseModel.extract_features(p, obs, p.pi_features_extractor)
            return p.action_net(p.mlp_extractor.forward_actor(features))

    return Logits().eval()


def _load_rllib(run: Path) -> _Source:
    try:
        from agents.rllib.export import rllib_actor
    except ImportError as exc:
        raise SagerlError(
            f"{run} is an RLlib run (rllib/) but its exporter is unavailable ({_one_line(exc)})"
        ) from None
    try:
        module, extra = rllib_actor(run)
    except SagerlError:
        raise
    except Exception as exc:  # RLlib checkpoints fail in many ways
        raise SagerlError(f"{run}: cannot load the RLlib policy ({_one_line(exc)})") from None
    module.eval()
    source = {"backend": "rllib", "run_dir": str(run), **dict(extra)}
    return _Source(module, module, False, str(source["backend"]), source)


# ---------------------------------------------------------------------- ONNX
def _to_onnx(module: Any, actor_size: int, path: Path) -> None:
    """``torch.onnx.export`` with a dynamic batch axis (TorchScript exporter: the dynamo one
    needs onnxscript, and this is a plain MLP)."""
    import torch

    dummy = torch.zeros(1, actor_size, dtype=torch.float32)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (dummy,),
                str(path),
                input_names=["obs"],
                output_names=["logits"],
                dynamic_axes={"obs": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as exc:  # torch.onnx raises several kinds
        raise SagerlError(f"cannot export the policy to ONNX ({_one_line(exc)})") from None


def _session(path: Path) -> Any:
    """The router's CPU session (:func:`~sagerl.live.policy_runtime.cpu_session`) of ``path``."""
    from sagerl.live.policy_runtime import cpu_session, import_onnxruntime

    import_onnxruntime("export checks the ONNX file with onnxruntime: pip install onnxruntime")
    return cpu_session(path)


def onnx_latency_us(session: Any, actor_size: int, calls: int = 2000) -> float:
    """p50 wall time of one ``session.run`` on one observation, µs."""
    x = np.zeros((1, actor_size), dtype=np.float32)
    feed = {session.get_inputs()[0].name: x}
    names = [session.get_outputs()[0].name]
    for _ in range(200):
        session.run(names, feed)
    samples = []
    for _ in range(calls):
        t = time.perf_counter_ns()
        session.run(names, feed)
        samples.append(time.perf_counter_ns() - t)
    return statistics.median(samples) / 1000.0


# ---------------------------------------------------------------------- parity
def _masked_softmax(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    z = np.where(mask, logits.astype(np.float64), -np.inf)
    z -= z.max()
    p = np.exp(z)
    return p / p.sum()


def record(
    reference: Any,
    width: int,
    env: Any,
    count: int,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """``count`` observations and masks of the agent playing evaluation episodes.

    Args:
        reference: Torch module ``[1, width] -> [1, actions]`` logits; the agent samples from
            its masked softmax (seeded).
        width: Leading observation entries it reads.
        env: A :class:`~envs.placement.PlacementEnv` (evaluation split).
        count: Observations to record.
        seed: Episodes reset with ``seed, seed + 1, ...``; the sampling uses ``seed`` too.

    Returns:
        ``(observations [count, D], masks [count, actions], episodes)``.
    """
    import torch

    rng = np.random.default_rng(seed)
    size = int(env.observation_space.shape[0])
    obs_out = np.zeros((count, size), dtype=np.float32)
    masks = np.zeros((count, env.num_actions), dtype=bool)
    i, episodes = 0, 0
    with torch.no_grad():
        while i < count:
            obs, _ = env.reset(seed=seed + episodes)
            episodes += 1
            done = False
            while not done and i < count:
                mask = env.action_masks()
                obs_out[i], masks[i] = obs, mask
                x = torch.from_numpy(obs[None, :width])
                logits = reference(x)[0].numpy()
                action = int(rng.choice(mask.size, p=_masked_softmax(logits, mask)))
                obs, _, terminated, truncated, _ = env.step(action)
                done = terminated or truncated
                i += 1
    return obs_out, masks, episodes


def compare(
    reference: Any,
    width: int,
    session: Any,
    actor_size: int,
    obs: np.ndarray,
    masks: np.ndarray,
) -> Parity:
    """Masked argmax of the torch ``reference`` (batched, on ``obs[:, :width]``) against the
    ONNX ``session`` run one observation at a time on ``obs[:, :actor_size]``."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(obs[:, :width]))
        ref = reference(x).numpy().astype(np.float64)
    name = session.get_inputs()[0].name
    names = [session.get_outputs()[0].name]
    actor_obs = np.ascontiguousarray(obs[:, :actor_size])
    got = np.zeros_like(ref)
    for i in range(obs.shape[0]):
        got[i] = session.run(names, {name: actor_obs[i : i + 1]})[0][0]
    ref_m = np.where(masks, ref, -np.inf)
    got_m = np.where(masks, got, -np.inf)
    a_ref = ref_m.argmax(axis=1)
    a_got = got_m.argmax(axis=1)
    rows = np.arange(obs.shape[0])
    agree = a_ref == a_got
    top, other = ref[rows, a_ref], ref[rows, a_got]
    tie = ~agree & (np.abs(top - other) <= TIE_ATOL + TIE_RTOL * np.abs(top))
    diff = np.abs(np.where(masks, ref - got, 0.0))
    return Parity(
        compared=int(obs.shape[0]),
        agreed=int(agree.sum()),
        ties=int(tie.sum()),
        max_abs_logit_diff=float(diff.max()) if diff.size else 0.0,
    )


# ---------------------------------------------------------------------- files
def _check_writable(out: Path) -> None:
    """Create ``out`` and prove a file can be written there (before any slow work)."""
    if out.exists() and not out.is_dir():
        raise SagerlError(f"output {out} exists and is not a directory")
    probe = out / f".write-test{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SagerlError(f"cannot write to {out} ({exc.strerror or _one_line(exc)})") from None


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def _dumps(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, indent=2, default=float) + "\n"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
