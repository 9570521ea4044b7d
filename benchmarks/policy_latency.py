"""Latency of one placement decision by an exported policy, in microseconds, on one core.

    PYTHONPATH=. python benchmarks/policy_latency.py [--run runs/train-default] [--json PATH]

Exports the run's policy (``agents.export.export_run``, into a temporary folder), then walks
held-out evaluation episodes of its config, the exported policy placing every request, and at
each decision (after ``--warmup`` of them) times once each of, side by side:

* ``onnx session.run``: the ONNX policy alone, one observation (the encoder vector);
* ``OnnxPolicyRuntime.choose``: what the router runs: the teacher's per-replica estimates,
  feature encoding, onnxruntime, masked argmax; also ``without teacher`` (the encoding without
  the teacher's estimates: cost only, a policy trained with them decides differently) and its
  parts (``teacher estimates``, ``feature encoding``);
* ``SB3 model.predict`` (full observation with the action mask, deterministic);
* ``torch actor``: the deployable actor module on one observation (``torch.no_grad``), and the
  SB3 policy called directly as evaluation calls it (``TorchPolicyActor``).

Timed that way, each call finds its caches cooled by the others and by the simulator (as in a
router, which does other work between decisions). The ``back-to-back`` rows time the ONNX
policy, ``choose`` and the torch alternatives in a tight loop on one mid-walk decision (hot
caches: the best case). The targets are checked against the interleaved figures.

Everything runs on one thread (onnxruntime intra/inter-op 1, torch 1); ``--cpu N`` also pins
the process to core N. The replicas' queue profiles are built by the environment before the
timings (a router builds them once per decision from its ledger, whoever asks first), so the
encoding figures are the encoder's own cost. Targets (issue 6): ONNX policy alone p50 <= 50 µs;
feature encoding + policy p50 <= 200 µs.

Without the run (a fresh clone), a freshly built, untrained model of the default training
config's shape is exported instead (same sizes, so the same cost); the output says so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sagerl.commands.common import print_table, write_json

DEFAULT_RUN = "runs/train-default"
TARGETS = {"onnx": 50.0, "choose": 200.0}


def untrained_run(folder: Path) -> Path:
    """A run directory holding an untrained model of the default training config."""
    import yaml
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents.common.checkpoints import Checkpointer, RunState
    from agents.common.config import load_train_config
    from agents.common.envs import make_env
    from agents.ppo import build_model

    cfg = load_train_config(None, [f"output_dir={folder}", "name=untrained"])
    run = folder / "untrained"
    run.mkdir(parents=True)
    env = make_env(cfg)
    venv = DummyVecEnv([lambda: env])
    actor_size = env.actor_size if env.critic is not None else None
    model = build_model(cfg.ppo, venv, seed=cfg.seed, actor_size=actor_size)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    env.encoder.to_json(run / "features.json")
    Checkpointer(run).save(model, RunState(phase="ppo"), "untrained", "built for the benchmark")
    return run


def percentiles(samples: list[int]) -> tuple[float, float]:
    """p50 and p90 of nanosecond samples, µs."""
    a = np.asarray(samples, dtype=np.float64) / 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 90))


def hot_loop(fn: Callable[[], object], calls: int) -> list[int]:
    """Nanoseconds of ``calls`` back-to-back calls (after a warm-up)."""
    for _ in range(min(calls, 300)):
        fn()
    out = []
    for _ in range(calls):
        t = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=DEFAULT_RUN, help=f"training run (default {DEFAULT_RUN})")
    parser.add_argument("--decisions", type=int, default=5000, help="decisions timed")
    parser.add_argument("--warmup", type=int, default=500, help="decisions before timing")
    parser.add_argument("--hot-calls", type=int, default=3000, help="calls per back-to-back row")
    parser.add_argument("--verify", type=int, default=1000, help="parity observations of export")
    parser.add_argument("--cpu", type=int, default=-1, help="core to pin to (-1: no pinning)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    import torch

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="policy-latency-"))
    try:
        measure(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(args: argparse.Namespace, tmp: Path) -> None:
    """Export, walk the evaluation episodes, time, print (see the module docstring)."""
    import torch

    from agents.common.actors import TorchPolicyActor
    from agents.common.config import load_train_config
    from agents.common.envs import make_eval_env
    from agents.export import export_run
    from agents.ppo import load_model
    from agents.ppo.policies import deployable_actor
    from sagerl.live.policy_runtime import OnnxPolicyRuntime

    run = Path(args.run)
    note = f"policy of {run}"
    if not (run / "checkpoints" / "state.json").is_file():
        print(f"{run} has no trained checkpoint: exporting an untrained model of the default "
              "training config's shape instead (same sizes, same cost)")  # fmt: skip
        run = untrained_run(tmp)
        note = "UNTRAINED model of configs/train-default.yaml's shape (no trained run found)"
    result = export_run(run, tmp / "export", verify=args.verify, seed=0, log=print)
    cfg = load_train_config(run / "config.yaml")
    env = make_eval_env(cfg)
    rt = OnnxPolicyRuntime(result.onnx_path, env.num_replicas)
    bare = OnnxPolicyRuntime(result.onnx_path, env.num_replicas)
    bare.teacher = None  # cost of the encoding without the teacher's estimates
    model = load_model(result.sidecar["source"]["checkpoint"], cfg.ppo)
    policy = model.policy
    policy.set_training_mode(False)
    actor = deployable_actor(policy, env.actor_size)
    evaluator = TorchPolicyActor(policy, deterministic=True)
    session = rt.session
    names = [session.get_outputs()[0].name]
    x = np.zeros((1, env.actor_size), dtype=np.float32)
    feed = {rt.obs_name: x}
    enc_out = np.zeros(env.actor_size, dtype=np.float32)

    state: dict[str, Any] = {}

    def onnx_alone() -> object:
        return session.run(names, feed)

    def choose() -> object:
        return rt.choose(*state["decision"])

    def choose_bare() -> object:
        return bare.choose(*state["decision"])

    def teacher() -> object:
        return rt.teacher_estimates(*state["decision"])

    def encode() -> object:
        request, views, _, prediction = state["decision"]
        scores, ok = state["teacher"]
        return rt.encoder.encode(request, views, prediction, scores, ok, out=enc_out)

    def sb3_predict() -> object:
        return model.predict(state["obs"], action_masks=state["mask"], deterministic=True)

    def torch_actor() -> object:
        with torch.no_grad():
            return actor(torch.from_numpy(x))

    def torch_policy() -> object:
        return evaluator.act(state["obs"], state["mask"], env)

    measures: list[tuple[str, str, Callable[[], object]]] = [
        ("onnx session.run (policy alone, 1 observation)", "onnx", onnx_alone),
        ("OnnxPolicyRuntime.choose (teacher + encoding + onnx + argmax)", "choose", choose),
        ("OnnxPolicyRuntime.choose without teacher estimates (cost only)", "", choose_bare),
        ("  part: teacher estimates (SageSched marginal costs)", "", teacher),
        ("  part: feature encoding (estimates given)", "", encode),
        ("torch actor module (no_grad, 1 observation)", "", torch_actor),
        ("SB3 policy called directly (TorchPolicyActor)", "", torch_policy),
        ("SB3 model.predict (full observation + mask)", "", sb3_predict),
    ]
    samples: dict[str, list[int]] = {label: [] for label, _, _ in measures}
    hot_measures = [(f"back-to-back: {label}", key, fn) for label, key, fn in measures
                    if fn in (onnx_alone, choose, torch_actor, sb3_predict)]  # fmt: skip
    hot_at = args.warmup + args.decisions // 2
    agree = decisions = 0
    episode = 0
    obs, _ = env.reset(seed=10_000)
    wall = time.perf_counter()
    while decisions < args.warmup + args.decisions:
        decision = env.decision()
        state.update(decision=decision, obs=obs, mask=env.action_masks())
        state["teacher"] = rt.teacher_estimates(*decision)
        x[0] = obs[: env.actor_size]
        timed = decisions >= args.warmup
        k = decisions % len(measures)
        for label, _, fn in measures[k:] + measures[:k]:  # rotate: no fixed order bias
            t = time.perf_counter_ns()
            fn()
            dt = time.perf_counter_ns() - t
            if timed:
                samples[label].append(dt)
        if decisions == hot_at:
            for label, _, fn in hot_measures:
                samples[label] = hot_loop(fn, args.hot_calls)
        action = rt.choose(*decision)
        agree += action == evaluator.act(obs, state["mask"], env)
        decisions += 1
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=10_000 + episode)
    wall = time.perf_counter() - wall

    rows = []
    figures: dict[str, dict[str, float]] = {}
    for label, target_key, _ in measures + hot_measures:
        p50, p90 = percentiles(samples[label])
        target = TARGETS.get(target_key) if not label.startswith("back-to-back") else None
        rows.append(
            {
                "measure": label,
                "p50 µs": p50,
                "p90 µs": p90,
                "target p50": f"<= {target:g} µs" if target else "",
                "met": ("yes" if p50 <= target else "NO") if target else "",
                "calls": len(samples[label]),
            }
        )
        figures[label] = {"p50_us": p50, "p90_us": p90, "mean_us": statistics.fmean(
            np.asarray(samples[label]) / 1000.0)}  # fmt: skip
    title = (
        f"one decision, one core: {note}; {env.num_replicas} replicas, "
        f"{env.actor_size} features, {args.decisions} decisions"
    )
    print_table(title, rows)
    print(
        f"runtime vs torch greedy action: {agree}/{decisions} agree; export parity "
        f"{result.parity.agreed}/{result.parity.compared}; {wall:.1f} s; the machine may be "
        "shared, so figures vary between runs"
    )
    write_json(
        args.json,
        {
            "run": str(args.run),
            "untrained": "UNTRAINED" in note,
            "replicas": env.num_replicas,
            "features": env.actor_size,
            "decisions": args.decisions,
            "targets_us": TARGETS,
            "figures": figures,
            "agreement": {"agreed": agree, "decisions": decisions},
            "parity": result.parity.to_dict(),
        },
    )


if __name__ == "__main__":
    main()
