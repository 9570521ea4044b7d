"""``python -m sagerl export``: a trained policy as ONNX + sidecar, loaded by the router's runtime.

A tiny run is trained once (module fixture, a few seconds); it is exported for real, loaded with
:class:`~sagerl.live.policy_runtime.OnnxPolicyRuntime` and held against the torch policy on
recorded observations, on environment decisions and on hand-built simulator views. Sidecars
that do not match this sagerl's encoder, and changed ONNX files, are refused with a message.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("sb3_contrib")

from test_live_policy import _sim_replicas, prediction

from agents.common.actors import TorchPolicyActor
from agents.common.config import load_train_config
from agents.common.envs import make_eval_env
from agents.export import ExportResult, compare, export_run, record
from sagerl.errors import SagerlError
from sagerl.features import FEATURE_VERSION, FeatureSpec
from sagerl.live.policy_runtime import OnnxPolicyRuntime
from sagerl.workload.request import Request

REPO = Path(__file__).resolve().parent.parent

TINY = [
    "workload.num_requests=1500",
    "env.episode_requests=64",
    # Three equal replicas: the teacher (and so the clone) spreads requests over all of them.
    "cluster.replicas=[{gpu: A100-80GB, model: llama-3.1-8b, count: 3}]",
    "env.predictor.name=oracle",
    "env.warmup=null",
    "env.history_prefill=0",
    "imitation.bc_episodes=3",
    "imitation.bc_epochs=20",  # enough for the clone to spread requests as the teacher does
    "imitation.dagger_rounds=0",
    "ppo.n_envs=1",
    "ppo.n_steps=64",
    "ppo.batch_size=64",
    "ppo.n_epochs=1",
    "ppo.total_timesteps=64",
    "evaluation.seeds=1",
    "evaluation.episode_requests=128",
    "evaluation.every_steps=100000",
    "evaluation.baselines=[sagesched]",
    "checkpoint_every=100000",
]
VERIFY = 1500


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained run (imitation of SageSched, a few PPO steps): ``<tmp>/t``."""
    from agents.pipeline import train

    root = tmp_path_factory.mktemp("export-run")
    cfg = load_train_config(None, [*TINY, f"output_dir={root}", "name=t"])
    train(cfg, log=lambda _: None)
    return root / "t"


@pytest.fixture(scope="module")
def exported(run: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    return export_run(run, tmp_path_factory.mktemp("export") / "out", verify=VERIFY, seed=3)


@pytest.fixture(scope="module")
def model(run: Path) -> Any:
    from agents.common.checkpoints import RunState
    from agents.ppo import load_model

    cfg = load_train_config(run / "config.yaml")
    state = RunState.load(run)
    assert state is not None and state.checkpoint is not None
    return load_model(run / state.checkpoint, cfg.ppo)


def _copy(exported: ExportResult, tmp_path: Path, name: str = "copy") -> Path:
    """A private copy of the exported files (to change them); returns the ONNX path."""
    out = tmp_path / name
    out.mkdir()
    shutil.copy(exported.onnx_path, out / "policy.onnx")
    shutil.copy(exported.sidecar_path, out / "policy.json")
    return out / "policy.onnx"


def _edit_sidecar(onnx: Path, **changes: Any) -> None:
    side = onnx.with_suffix(".json")
    data = json.loads(side.read_text())
    for key, value in changes.items():
        if callable(value):
            value(data)
        else:
            data[key] = value
    side.write_text(json.dumps(data))


# ---------------------------------------------------------------------- round trip
def test_export_writes_onnx_and_sidecar_with_parity(exported: ExportResult, run: Path) -> None:
    side = json.loads(exported.sidecar_path.read_text())
    assert side == exported.sidecar
    assert side["format"] == 1 and side["backend"] == "sb3" and side["outputs"] == "logits"
    assert side["encoder"]["spec"]["version"] == FEATURE_VERSION
    assert side["max_replicas"] == 3 and side["observation_size"] == len(side["feature_names"])
    assert side["teacher"] == "sagesched" and side["training_config"]["name"] == "t"
    assert side["source"]["checkpoint"].endswith(".zip") and side["source"]["num_timesteps"] == 64
    assert "replica i" in side["action"]
    parity = side["parity"]
    assert parity["compared"] == VERIFY and parity["disagreed"] == 0
    assert parity["agreed"] + parity["ties"] == VERIFY and parity["episodes"] >= 2
    assert parity["max_abs_logit_diff"] < 1e-4
    assert 0 < exported.latency_us < 10_000
    import hashlib

    digest = hashlib.sha256(exported.onnx_path.read_bytes()).hexdigest()
    assert side["onnx_sha256"] == digest


def test_onnx_matches_torch_on_recorded_observations(
    exported: ExportResult, run: Path, model: Any
) -> None:
    """Fresh recordings (another seed): ONNX's masked argmax equals the SB3 policy's."""
    cfg = load_train_config(run / "config.yaml")
    env = make_eval_env(cfg)
    rt = OnnxPolicyRuntime(exported.onnx_path, num_backends=3)
    actor = TorchPolicyActor(model.policy, deterministic=True)
    width = env.observation_space.shape[0]
    obs, masks, episodes = record(_full_logits(model), width, env, 1000, seed=11)
    assert obs.shape == (1000, width) and episodes >= 1
    torch_actions = actor.probabilities(obs, masks).argmax(axis=1)
    logits = rt.session.run(None, {rt.obs_name: obs[:, : env.actor_size]})[0]
    onnx_actions = np.where(masks, logits, -np.inf).argmax(axis=1)
    assert (torch_actions == onnx_actions).all()
    assert len(set(torch_actions.tolist())) > 1  # a policy that places on several replicas
    parity = compare(_full_logits(model), width, rt.session, env.actor_size, obs, masks)
    assert parity.disagreed == 0 and parity.agreed + parity.ties == 1000


def _full_logits(model: Any) -> Any:
    from agents.export import _sb3_logits

    return _sb3_logits(model.policy)


def test_choose_equals_torch_on_environment_decisions(
    exported: ExportResult, run: Path, model: Any
) -> None:
    """The runtime encodes the env's views (teacher estimates included) to the env's
    observation and picks the torch policy's greedy action."""
    cfg = load_train_config(run / "config.yaml")
    env = make_eval_env(cfg)
    rt = OnnxPolicyRuntime(exported.onnx_path, num_backends=env.num_replicas)
    actor = TorchPolicyActor(model.policy, deterministic=True)
    obs, _ = env.reset(seed=5)
    chosen = []
    for _ in range(128):
        request, views, now, pred = env.decision()
        mask = env.action_masks()
        live = rt.observation(request, views, now, pred)[0]
        np.testing.assert_allclose(live, obs[: env.actor_size], atol=1e-6)
        a = rt.choose(request, views, now, pred)
        assert a == actor.act(obs, mask, env)
        chosen.append(a)
        obs, _, terminated, _, _ = env.step(a)
        if terminated:
            obs, _ = env.reset(seed=6)
    assert len(set(chosen)) > 1


def test_choose_equals_torch_on_simulator_views(exported: ExportResult, model: Any) -> None:
    rt = OnnxPolicyRuntime(exported.onnx_path, num_backends=3)
    actor = TorchPolicyActor(model.policy, deterministic=True)
    full = model.policy.observation_space.shape[0]
    rng = np.random.default_rng(0)
    for k in range(20):
        loads = [(int(rng.integers(0, 8)), int(rng.integers(0, 6))) for _ in range(3)]
        views = [r.view(1.0) for r in _sim_replicas(loads)]
        req = Request(1000 + k, 1.0, int(rng.integers(50, 3000)), int(rng.integers(10, 900)))
        pred = prediction(req)
        a = rt.choose(req, views, 1.0, pred)
        obs = np.zeros(full, dtype=np.float32)  # critic-only features: zeros (the actor's
        obs[: rt.encoder.size] = rt.observation(req, views, 1.0, pred)[0]  # are hidden)
        mask = rt.encoder.action_mask(req, views)
        assert a == int(actor.probabilities(obs[None], mask[None])[0].argmax())


# ---------------------------------------------------------------------- refusals
def test_changed_onnx_file_is_refused(exported: ExportResult, tmp_path: Path) -> None:
    onnx = _copy(exported, tmp_path)
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(SagerlError, match="does not match the checksum") as err:
        OnnxPolicyRuntime(onnx, 3)
    assert str(onnx) in str(err.value) and "\n" not in str(err.value)


def test_other_feature_version_is_refused(exported: ExportResult, tmp_path: Path) -> None:
    onnx = _copy(exported, tmp_path)
    _edit_sidecar(onnx, encoder=lambda d: d["encoder"]["spec"].update(version=99))
    with pytest.raises(SagerlError, match=rf"version 99.*version {FEATURE_VERSION}") as err:
        OnnxPolicyRuntime(onnx, 3)
    assert "policy.json" in str(err.value) and "re-export" in str(err.value)


def test_renamed_feature_is_refused(exported: ExportResult, tmp_path: Path) -> None:
    onnx = _copy(exported, tmp_path)
    _edit_sidecar(onnx, feature_names=lambda d: d["feature_names"].__setitem__(5, "replica0.kv"))
    with pytest.raises(SagerlError, match=r"feature 5 is 'replica0.kv'.*'replica0.kv_usage'"):
        OnnxPolicyRuntime(onnx, 3)


def test_wrong_sizes_are_refused(exported: ExportResult, tmp_path: Path) -> None:
    from sagerl.features import FeatureEncoder

    onnx = _copy(exported, tmp_path)
    size = exported.sidecar["observation_size"]
    _edit_sidecar(onnx, observation_size=size + 1)
    with pytest.raises(SagerlError, match=f"observation_size {size + 1}"):
        OnnxPolicyRuntime(onnx, 3)
    # A consistent sidecar for 4 replica slots: the ONNX input (3 slots' features) is refused.
    enc = FeatureEncoder(FeatureSpec(**{**exported.sidecar["encoder"]["spec"], "max_replicas": 4}))
    _edit_sidecar(
        onnx,
        encoder=enc.to_dict(),
        feature_names=enc.feature_names(),
        observation_size=enc.size,
        max_replicas=4,
    )
    with pytest.raises(SagerlError, match=rf"policy.onnx: input 'obs'.*\[batch, {enc.size}\]"):
        OnnxPolicyRuntime(onnx, 3)
    onnx2 = _copy(exported, tmp_path, "intact")
    with pytest.raises(SagerlError, match="3 replica slots, the router 4 backends"):
        OnnxPolicyRuntime(onnx2, 4)


def test_unknown_format_and_other_encoder_settings_are_refused(
    exported: ExportResult, tmp_path: Path
) -> None:
    onnx = _copy(exported, tmp_path)
    spec = FeatureSpec(**exported.sidecar["encoder"]["spec"])
    assert OnnxPolicyRuntime(onnx, 3, expected=spec).encoder.spec == spec
    other = FeatureSpec(**{**exported.sidecar["encoder"]["spec"], "time_unit": 0.5})
    with pytest.raises(SagerlError, match=re.escape("time_unit=0.05, the router's 0.5")):
        OnnxPolicyRuntime(onnx, 3, expected=other)
    _edit_sidecar(onnx, format=7)
    with pytest.raises(SagerlError, match="sidecar format 7"):
        OnnxPolicyRuntime(onnx, 3)
    _edit_sidecar(onnx, format=lambda d: d.pop("format"))
    with pytest.raises(SagerlError, match="no 'format' field"):
        OnnxPolicyRuntime(onnx, 3)
    onnx.with_suffix(".json").write_text("{not json")
    with pytest.raises(SagerlError, match="not a policy sidecar"):
        OnnxPolicyRuntime(onnx, 3)


def test_export_refuses_a_disagreeing_onnx_model(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parity is enforced: an ONNX model of the negated logits is not written."""
    import torch

    import agents.export as ex

    real = ex._to_onnx

    def negated(module: Any, actor_size: int, path: Path) -> None:
        real(torch.nn.Sequential(module, _Neg()), actor_size, path)

    monkeypatch.setattr(ex, "_to_onnx", negated)
    with pytest.raises(SagerlError, match=r"disagrees with the torch policy on \d+ of 300"):
        export_run(run, tmp_path / "bad", verify=300)
    assert list((tmp_path / "bad").iterdir()) == []


class _Neg:
    """Module factory used above (a class so torch is imported lazily)."""

    def __new__(cls) -> Any:
        import torch

        class Neg(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return -x

        return Neg()


def test_rllib_runs_dispatch_to_the_rllib_exporter(
    run: Path, model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run with ``rllib/`` goes through ``agents.rllib.export.rllib_actor`` (stubbed here
    with the SB3 actor); parity runs on its module."""
    from agents.ppo.policies import deployable_actor

    rl = tmp_path / "rl"
    rl.mkdir()
    for name in ("config.yaml", "features.json"):
        shutil.copy(run / name, rl / name)
    (rl / "rllib").mkdir()
    actor = deployable_actor(model.policy, model.policy.actor_size)
    stub = types.ModuleType("agents.rllib.export")
    stub.rllib_actor = lambda d: (actor, {"backend": "rllib", "checkpoint": str(d / "rllib")})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "agents.rllib", types.ModuleType("agents.rllib"))
    monkeypatch.setitem(sys.modules, "agents.rllib.export", stub)
    result = export_run(rl, tmp_path / "out", verify=300)
    assert result.sidecar["backend"] == "rllib"
    assert result.sidecar["source"]["checkpoint"] == str(rl / "rllib")
    assert result.parity.compared == 300 and result.parity.disagreed == 0
    with pytest.raises(SagerlError, match="SB3 runs only"):
        export_run(rl, tmp_path / "out2", checkpoint=run / "x.zip")
    monkeypatch.setitem(sys.modules, "agents.rllib.export", None)  # import fails
    with pytest.raises(SagerlError, match=r"RLlib run.*exporter is unavailable"):
        export_run(rl, tmp_path / "out3", verify=0)


# ---------------------------------------------------------------------- no training stack
def test_loading_and_choosing_imports_no_training_stack(exported: ExportResult) -> None:
    code = f"""
import json, sys
from sagerl.live.policy_runtime import OnnxPolicyRuntime
from sagerl.predict.distribution import LengthDistribution
from sagerl.sim.build import build_replicas
from sagerl.sim.config import ClusterConfig
from sagerl.workload.request import Request

cfg = ClusterConfig.model_validate(
    {{"replicas": [{{"gpu": "A100", "model": "llama-3.1-8b", "count": 3}}]}})
views = [r.view(0.0) for r in build_replicas(cfg)]
rt = OnnxPolicyRuntime({str(exported.onnx_path)!r}, 3)
a = rt.choose(Request(1, 0.0, 500, 0), views, 0.0, LengthDistribution([50, 200, 400]))
stack = ("torch", "stable_baselines3", "sb3_contrib", "agents", "envs", "gymnasium")
bad = sorted(m for m in sys.modules if m.split(".")[0] in stack)
print(json.dumps({{"action": a, "bad": bad}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["bad"] == [] and 0 <= result["action"] < 3


# ---------------------------------------------------------------------- command line
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "sagerl", "export", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_cli_errors_are_one_line_with_status_2(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _cli(str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert out.returncode == 2
    missing = f"error: run directory {tmp_path / 'missing'} does not exist"
    assert _error_lines(out.stderr) == [missing]
    from sagerl.cli import main

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run / "config.yaml", bare / "config.yaml")
    blocker = tmp_path / "file"
    blocker.write_text("")
    for args, words in (
        ([str(bare), "--out", str(tmp_path / "o")], "has no checkpoint"),
        ([str(run), "--out", str(blocker / "sub")], "cannot write to"),
        ([str(run), "--out", str(tmp_path / "o"), "--checkpoint", str(bare)], "does not exist"),
    ):
        capsys.readouterr()
        assert main(["export", *args]) == 2
        (line,) = _error_lines(capsys.readouterr().err)
        assert words in line, line


def test_cli_export_prints_the_serve_config(run: Path, tmp_path: Path) -> None:
    from sagerl.cli import main

    out = tmp_path / "cli"
    summary = tmp_path / "export.json"
    code = main(["export", str(run), "--out", str(out), "--verify", "200", "--json", str(summary)])
    assert code == 0
    payload = json.loads(summary.read_text())
    assert payload["parity"]["compared"] == 200 and payload["parity"]["disagreed"] == 0
    assert (out / "policy.onnx").is_file() and (out / "policy.json").is_file()
