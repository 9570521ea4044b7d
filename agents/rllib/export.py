"""The actor of an RLlib run as a plain torch module, for ``python -m sagerl export``.

:func:`rllib_actor` reads the newest PPO checkpoint of ``runs/<name>/rllib/`` and returns the
same kind of module the stable-baselines3 path exports: ``[N, actor_size]`` float32 encoder
features (:class:`~sagerl.features.FeatureEncoder`'s vector; no privileged tail, no mask) to
``[N, num_actions]`` logits, to be masked before the softmax or argmax. The RLModule's actor
reads only those features (:mod:`agents.rllib.module`), so the module is its actor network
unchanged, and the exported ONNX model cannot tell which backend trained it.

With Ray installed the checkpoint is read through RLlib's own
``RLModule.from_checkpoint``; without it (a deployment machine) the module's saved weights (a
pickled dict of numpy arrays in the checkpoint) are read directly.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.rllib.nets import ActorNet, mlp
from sagerl.errors import SagerlError

MODULE_PATH = ("learner_group", "learner", "rl_module", "default_policy")
"""Where an algorithm checkpoint keeps the (single-agent) RLModule."""


def rllib_actor(run_dir: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained actor of an RLlib run and what describes it.

    Args:
        run_dir: The run directory (``runs/<name>``), its ``rllib/`` folder, or one PPO
            checkpoint folder (``.../rllib/checkpoints/ppo_<steps>``).

    Returns:
        ``(module, metadata)``: the actor in eval mode, mapping float32 ``[N, actor_size]`` to
        ``[N, num_actions]`` logits; metadata with ``backend`` (``"rllib"``), ``checkpoint``
        (the checkpoint folder read), ``num_timesteps`` (PPO env steps; None when unknown),
        ``actor_size``, ``num_actions``, ``hidden``, ``activation`` and ``ray_version``.

    Raises:
        SagerlError: no RLlib checkpoint there, or one this code cannot read.
    """
    from agents.rllib.train import latest_checkpoint

    p = Path(run_dir)
    ckpt = p if (p / Path(*MODULE_PATH)).is_dir() else latest_checkpoint(p)
    if ckpt is None:
        raise SagerlError(f"no RLlib checkpoint in {p}/ (train with --backend rllib first)")
    module_dir = ckpt / Path(*MODULE_PATH)
    if not module_dir.is_dir():
        raise SagerlError(f"{ckpt} is not an RLlib algorithm checkpoint (no {module_dir})")
    try:
        net, version = _from_rllib(module_dir)
    except ImportError:
        net, version = _from_weights(module_dir, _activation(ckpt))
    linears = [m for m in net.net if isinstance(m, torch.nn.Linear)]
    acts = [m for m in net.net if not isinstance(m, torch.nn.Linear)]
    meta: dict[str, Any] = {
        "backend": "rllib",
        "checkpoint": str(ckpt),
        "num_timesteps": _steps(ckpt),
        "actor_size": int(net.actor_size),
        "num_actions": int(linears[-1].out_features),
        "hidden": [int(m.out_features) for m in linears[:-1]],
        "activation": "relu" if acts and isinstance(acts[0], torch.nn.ReLU) else "tanh",
        "ray_version": version,
    }
    return net.eval(), meta


def _from_rllib(module_dir: Path) -> tuple[ActorNet, str]:
    """Through RLlib's checkpoint API (raises ImportError without Ray)."""
    import ray
    from ray.rllib.core.rl_module.rl_module import RLModule

    # RLlib's own deprecation notices on building a module (RLlib calls its deprecated API).
    noisy = logging.getLogger("ray._common.deprecation")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        module = RLModule.from_checkpoint(str(module_dir.resolve()))
    finally:
        noisy.setLevel(level)
    pi = getattr(module, "pi", None)
    if pi is None:
        raise SagerlError(f"{module_dir}: not a sagerl RLModule ({type(module).__name__})")
    import copy

    return ActorNet(copy.deepcopy(pi).cpu(), int(module.actor_size)), ray.__version__


def _from_weights(module_dir: Path, activation: str) -> tuple[ActorNet, str]:
    """From the pickled state dict (numpy arrays), without importing Ray."""
    import json

    state_file = module_dir / "module_state.pkl"
    if not state_file.is_file():
        raise SagerlError(f"{module_dir}: no module_state.pkl (install Ray to read it)")
    with open(state_file, "rb") as fh:
        weights = pickle.load(fh)
    pi_keys = sorted(
        (int(k.split(".")[1]), k) for k in weights if k.startswith("pi.") and k.endswith(".weight")
    )
    shapes = [np.asarray(weights[k]).shape for _, k in pi_keys]
    if not shapes:
        raise SagerlError(f"{state_file}: no actor weights (pi.*) in this module")
    net = mlp(shapes[0][1], [s[0] for s in shapes[:-1]], shapes[-1][0], activation, 1.0)
    net.load_state_dict(
        {k[3:]: torch.as_tensor(np.asarray(v)) for k, v in weights.items() if k.startswith("pi.")}
    )
    meta_file = module_dir / "metadata.json"
    version = json.loads(meta_file.read_text()).get("ray_version", "") if meta_file.exists() else ""
    return ActorNet(net, int(shapes[0][1])), version


def _activation(ckpt: Path) -> str:
    """The hidden activation of the run that wrote ``ckpt`` (its ``config.yaml``)."""
    import yaml

    for folder in ckpt.parents:
        cfg = folder / "config.yaml"
        if cfg.is_file():
            data = yaml.safe_load(cfg.read_text()) or {}
            return str((data.get("ppo") or {}).get("activation", "tanh"))
    return "tanh"


def _steps(ckpt: Path) -> int | None:
    name = ckpt.name
    return int(name[4:]) if name.startswith("ppo_") and name[4:].isdigit() else None


__all__ = ["rllib_actor"]
