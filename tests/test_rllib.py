"""``python -m sagerl train --backend rllib``: the RLModule and its masking, the weights carried
over from the SB3 imitation, the config mapping and its errors, and a short end-to-end run on a
local Ray with 2 CPUs (outputs, TensorBoard tags shared with SB3, checkpoints, resume, export)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.common.config import load_train_config
from sagerl.cli import main

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "train-rllib-smoke.yaml"

TINY = [
    "workload.num_requests=1500",
    "env.episode_requests=64",
    "env.predictor.name=oracle",
    "env.warmup=null",
    "env.history_prefill=0",
]


def test_without_ray_the_backend_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code = main(["train", "--backend", "rllib", f"output_dir={tmp_path}"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        'error: --backend rllib needs Ray: pip install -e ".[ray]"'
    )
    assert not any(tmp_path.iterdir())  # failed before doing anything


def test_address_needs_the_rllib_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--address", "auto"]) == 2
    assert "--address needs --backend rllib" in capsys.readouterr().err


def test_rllib_config_typo_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--backend", "rllib", "rllib.num_env_runner=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "rllib.num_env_runner" in err and "num_env_runners" in err


def test_config_maps_the_ppo_section() -> None:
    pytest.importorskip("ray.rllib")
    from agents.rllib.config import algorithm_config, envs_per_runner

    cfg = load_train_config(
        SMOKE, ["ppo.n_envs=4", "ppo.n_steps=100", "ppo.batch_size=50", "rllib.num_env_runners=3"]
    )
    algo_cfg = algorithm_config(cfg, actor_size=89)
    assert envs_per_runner(cfg) == 2  # ceil(4 / 3)
    assert algo_cfg.num_env_runners == 3
    assert algo_cfg.train_batch_size_per_learner == 400
    assert algo_cfg.minibatch_size == 50
    assert algo_cfg.num_epochs == cfg.ppo.n_epochs
    assert algo_cfg.lr == cfg.ppo.learning_rate and algo_cfg.clip_param == cfg.ppo.clip_range
    assert algo_cfg.lambda_ == cfg.ppo.gae_lambda and algo_cfg.gamma == cfg.ppo.gamma
    assert algo_cfg.vf_clip_param == float("inf")  # SB3 does not clip the value loss
    assert algo_cfg.seed == cfg.seed


def _module_and_env() -> tuple:
    from agents.common.envs import make_env
    from agents.rllib.env import MaskedObservation
    from agents.rllib.module import MaskedActorCritic

    cfg = load_train_config(SMOKE, TINY)
    env = make_env(cfg)
    masked_env = MaskedObservation(env)
    module = MaskedActorCritic(
        observation_space=masked_env.observation_space,
        action_space=env.action_space,
        model_config={"hidden": [16, 16], "activation": "tanh", "actor_size": env.actor_size},
    )
    return cfg, env, masked_env, module


def test_module_masks_invalid_actions_and_hides_the_tail() -> None:
    pytest.importorskip("ray.rllib")
    from ray.rllib.core.columns import Columns

    _, env, masked_env, module = _module_and_env()
    obs, _ = masked_env.reset(seed=0)
    assert set(obs) == {"observations", "action_mask"}
    assert obs["action_mask"].dtype == np.float32
    batch_obs = {k: torch.as_tensor(np.stack([v, v])) for k, v in obs.items()}
    batch_obs["action_mask"][0, 1] = 0.0  # forbid replica 1 in the first row
    out = module.forward_exploration({Columns.OBS: batch_obs})
    logits = out[Columns.ACTION_DIST_INPUTS]
    probs = torch.softmax(logits, dim=1)
    assert float(probs[0, 1]) == 0.0 and float(probs[1, 1]) > 0.0
    # The actor reads the encoder's features only: changing the critic-only tail changes the
    # value, never the logits.
    changed = {k: v.clone() for k, v in batch_obs.items()}
    changed["observations"][:, env.actor_size :] += 1.0
    assert torch.equal(
        module.forward_inference({Columns.OBS: changed})[Columns.ACTION_DIST_INPUTS], logits
    )
    v0 = module.compute_values({Columns.OBS: batch_obs})
    v1 = module.compute_values({Columns.OBS: changed})
    assert v0.shape == (2,) and not torch.equal(v0, v1)


def test_sb3_weights_carry_over_exactly() -> None:
    pytest.importorskip("ray.rllib")
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents.common.envs import EnvFactory
    from agents.ppo import build_model
    from agents.rllib.nets import load_sb3_weights, masked

    cfg, env, _, _ = _module_and_env()
    cfg = cfg.model_copy(update={"ppo": cfg.ppo.model_copy(update={"net_arch": [32, 16]})})
    model = build_model(cfg.ppo, DummyVecEnv([EnvFactory(cfg)]), seed=3, actor_size=env.actor_size)
    from agents.rllib.env import MaskedObservation
    from agents.rllib.module import MaskedActorCritic

    module = MaskedActorCritic(
        observation_space=MaskedObservation(env).observation_space,
        action_space=env.action_space,
        model_config={"hidden": [32, 16], "activation": "tanh", "actor_size": env.actor_size},
    )
    load_sb3_weights(module, model.policy)
    obs = torch.as_tensor(
        np.random.default_rng(0).uniform(-2, 2, (8, env.observation_space.shape[0])),
        dtype=torch.float32,
    )
    mask = torch.ones(8, env.action_space.n)
    mask[:, 0] = 0
    with torch.no_grad():
        dist = model.policy.get_distribution(obs, action_masks=mask.bool().numpy())
        sb3_probs = dist.distribution.probs
        sb3_values = model.policy.predict_values(obs).squeeze(-1)
        probs = torch.softmax(masked(module.pi(obs[:, : env.actor_size]), mask), dim=1)
        values = module.vf(obs).squeeze(-1)
    assert torch.allclose(probs, sb3_probs, atol=1e-6)
    assert torch.allclose(values, sb3_values, atol=1e-5)


@pytest.mark.slow
def test_rllib_smoke_train_resume_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A few PPO iterations on a local Ray with 2 CPUs (one remote env runner), then resume."""
    pytest.importorskip("ray.rllib")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    base = ["--config", str(SMOKE), "--no-progress", f"output_dir={tmp_path}", "name=s"]
    out = tmp_path / "train.json"
    assert (
        main(["train", "--backend", "rllib", "--json", str(out), *base, "ppo.total_timesteps=512"])
        == 0
    )
    run = tmp_path / "s"
    payload = json.loads(out.read_text())
    assert payload["backend"] == "rllib"
    policies = {row["policy"] for row in payload["table"]}
    assert {"agent", "agent-greedy", "agent-imitation", "sagesched"} <= policies
    results = json.loads((run / "results.json").read_text())
    assert results["backend"] == "rllib" and results["state"]["num_timesteps"] == 512
    assert (run / "comparison.csv").is_file() and (run / "features.json").is_file()
    ckpts = sorted(p.name for p in (run / "rllib" / "checkpoints").glob("ppo_*"))
    assert ckpts == ["ppo_000000512"]

    acc = EventAccumulator(str(run / "agent"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    # The SB3 path's tags, so both backends overlay in TensorBoard.
    assert {
        "rollout/ep_rew_mean",
        "rollout/ep_mean_ttlt",
        "train/value_loss",
        "train/approx_kl",
        "train/clip_fraction",
        "train/entropy_loss",
        "imitation/agreement",
        "eval/mean_ttlt",
    } <= tags
    assert acc.Scalars("eval/mean_ttlt")[-1].step == 512
    clip = [e.value for e in acc.Scalars("train/clip_fraction")]
    assert clip and all(0.0 <= v <= 1.0 for v in clip)
    assert (run / "sagesched").is_dir()

    # The cloned weights reach PPO: the clone's greedy actor equals the teacher here, and the
    # agent's greedy actor after one small update still mostly does.
    table = {row["policy"]: row for row in payload["table"]}
    assert table["agent-imitation"]["mean_ttlt"] == pytest.approx(
        table["sagesched"]["mean_ttlt"], rel=0.02
    )

    # Resume: raise the budget, continue from the checkpoint's step.
    assert main(["train", "--backend", "rllib", "--resume", *base, "ppo.total_timesteps=1024"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["state"]["num_timesteps"] == 1024
    assert (run / "rllib" / "checkpoints" / "ppo_000001024").is_dir()

    # Export contract: encoder features in, logits out; same actor with or without Ray.
    from agents.rllib.export import rllib_actor

    net, meta = rllib_actor(run)
    assert meta["backend"] == "rllib" and meta["checkpoint"].endswith("ppo_000001024")
    encoder = json.loads((run / "features.json").read_text())
    x = torch.randn(5, meta["actor_size"])
    logits = net(x)
    assert logits.shape == (5, meta["num_actions"])
    assert meta["num_actions"] == 3 and encoder
    # ... and through the export command, as an SB3 run is (ONNX + sidecar, parity checked).
    export = tmp_path / "export.json"
    code = main(
        [
            "export",
            str(run),
            "--out",
            str(tmp_path / "onnx"),
            "--verify",
            "300",
            "--json",
            str(export),
        ]
    )
    assert code == 0 and (tmp_path / "onnx" / "policy.onnx").is_file()
    sidecar = json.loads((tmp_path / "onnx" / "policy.json").read_text())
    assert sidecar["backend"] == "rllib"
    # ... and through `eval`, which re-runs the RLlib agent beside the baselines.
    evaluated = tmp_path / "eval.json"
    assert main(["eval", "--run", str(run), "--seeds", "1", "--json", str(evaluated)]) == 0
    records = {r["policy"]: r for r in json.loads(evaluated.read_text())}
    seed = records["agent"]["seed"]
    trained = {r["policy"]: r for r in results["records"] if r["seed"] == seed}
    for policy in ("agent", "agent-greedy", "sagesched"):  # the same weights, the same window
        assert records[policy]["mean_ttlt"] == pytest.approx(trained[policy]["mean_ttlt"])
    monkeypatch.setitem(sys.modules, "ray", None)
    plain, meta_plain = rllib_actor(run)
    assert torch.equal(plain(x), logits) and meta_plain["actor_size"] == meta["actor_size"]
