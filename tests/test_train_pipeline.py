"""``python -m sagerl train`` / ``eval`` end to end on a tiny config: outputs, TensorBoard event
files read back, resume from the saved step, Ctrl-C checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from agents.common.checkpoints import RunState
from sagerl.cli import main

TINY = [
    "workload.num_requests=1500",
    "env.episode_requests=64",
    "env.predictor.name=oracle",
    "env.warmup=null",
    "env.history_prefill=0",
    "imitation.bc_episodes=2",
    "imitation.bc_epochs=2",
    "imitation.dagger_rounds=1",
    "imitation.dagger_episodes=1",
    "imitation.dagger_epochs=1",
    "ppo.n_envs=2",
    "ppo.n_steps=64",
    "ppo.batch_size=64",
    "ppo.n_epochs=1",
    "evaluation.seeds=2",
    "evaluation.episode_requests=64",
    "evaluation.every_steps=128",
    "evaluation.baselines=[sagesched, least-outstanding, random]",
    "checkpoint_every=128",
]


def tiny_args(tmp_path: Path, *extra: str, name: str = "t") -> list[str]:
    return ["--no-progress", *TINY, f"output_dir={tmp_path}", f"name={name}", *extra]


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_train_writes_tensorboard_runs_tables_and_json(tmp_path: Path) -> None:
    out = tmp_path / "train.json"
    assert main(["train", "--json", str(out), *tiny_args(tmp_path, "ppo.total_timesteps=256")]) == 0
    run = tmp_path / "t"
    agent = scalars(run / "agent")
    assert "eval/mean_ttlt" in agent and "rollout/ep_rew_mean" in agent
    assert "imitation/agreement" in agent and "train/approx_kl" in agent
    assert agent["eval/mean_ttlt"][-1][0] == 256
    for policy in ("sagesched", "least-outstanding", "random", "agent-greedy", "agent-imitation"):
        tags = scalars(run / policy)
        assert {"eval/mean_ttlt", "eval/p99_ttlt", "eval/mean_ttft", "eval/throughput"} <= set(
            tags
        ), policy
        assert [s for s, _ in tags["eval/mean_ttlt"]] in ([0, 256], [256]), policy
    table = pd.read_csv(run / "comparison.csv")
    assert set(table["policy"]) == {
        "agent",
        "agent-greedy",
        "agent-imitation",
        "agent-imitation-sampled",
        "sagesched",
        "least-outstanding",
        "random",
    }
    assert (run / "comparison.png").stat().st_size > 1000
    assert (run / "features.json").is_file() and (run / "config.yaml").is_file()
    payload = json.loads(out.read_text())
    assert len(payload["records"]) == 7 * 2
    state = RunState.load(run)
    assert state is not None and state.phase == "done" and state.num_timesteps == 256


def test_resume_continues_from_the_saved_step(tmp_path: Path) -> None:
    assert main(["train", *tiny_args(tmp_path, "ppo.total_timesteps=256")]) == 0
    run = tmp_path / "t"
    first = pd.read_csv(run / "agent" / "progress.csv")["time/total_timesteps"].dropna()
    assert first.max() == 256
    assert main(["train", "--resume", *tiny_args(tmp_path, "ppo.total_timesteps=512")]) == 0
    state = RunState.load(run)
    assert state is not None and state.num_timesteps == 512 and state.dagger_rounds == 1
    resumed = pd.read_csv(run / "agent" / "progress_from_256.csv")["time/total_timesteps"]
    assert resumed.dropna().min() > 256 and resumed.max() == 512  # no step counted twice
    steps = [s for s, _ in scalars(run / "agent")["train/approx_kl"]]
    assert steps == sorted(steps) and steps[-1] == 512  # one run, steps continue
    assert sorted(p.name for p in (run / "checkpoints").glob("ppo_*.zip"))[-1] == "ppo_512.zip"


def test_interrupt_saves_a_checkpoint_then_resume_finishes(tmp_path: Path) -> None:
    from stable_baselines3.common.callbacks import BaseCallback

    from agents.common.config import load_train_config
    from agents.pipeline import train

    class Interrupt(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps >= 200:
                raise KeyboardInterrupt
            return True

    cfg = load_train_config(None, tiny_args(tmp_path, "ppo.total_timesteps=512")[1:])
    with pytest.raises(KeyboardInterrupt):
        train(cfg, log=lambda _: None, extra_callbacks=[Interrupt()])
    state = RunState.load(tmp_path / "t")
    assert state is not None and state.phase == "ppo"
    # Saved at the last rollout boundary (2 envs x 64 steps): the weights' step count.
    assert state.events[-1]["event"] == "interrupted" and state.num_timesteps == 128
    assert (tmp_path / "t" / state.checkpoint).is_file()
    result = train(cfg, resume=True, log=lambda _: None)
    assert result.state.num_timesteps == 512


def test_eval_command_writes_one_record_per_policy_and_seed(tmp_path: Path) -> None:
    assert main(["train", *tiny_args(tmp_path, "ppo.total_timesteps=0")]) == 0
    out = tmp_path / "eval.json"
    assert main(["eval", "--json", str(out), "--run", str(tmp_path / "t"), "--seeds", "3"]) == 0
    records = json.loads(out.read_text())
    assert len(records) == 5 * 3
    assert {r["policy"] for r in records} == {
        "agent",
        "agent-greedy",
        "sagesched",
        "least-outstanding",
        "random",
    }
    assert all(r["mean_ttlt"] > 0 and r["decisions"] == 64 for r in records)


def test_resume_without_a_run_is_a_one_line_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["train", "--resume", *tiny_args(tmp_path, name="missing")]) == 2
    assert "nothing to resume" in capsys.readouterr().err
