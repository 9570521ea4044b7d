"""The router's placement decision: any registered placement policy, or an exported ONNX policy.

Both implement one small protocol, :class:`PolicyRuntime`, whose ``choose`` has exactly the
signature of :meth:`sagerl.policy.placement.PlacementPolicy.choose`: one decision over
point-in-time :class:`~sagerl.view.ReplicaView` snapshots, no web-framework objects. The
simulator and the router therefore run the same object on the same views and get the same
answer (``tests/test_live_policy.py``).

NOTE: ``choose`` is synchronous. A decision is microseconds of CPU over a handful of views (an
ONNX MLP about 30 µs); an ``async`` signature would add a task switch per request and make
the simulator's call differ from the router's. Slow work (length prediction) happens before,
off the event loop, in :mod:`sagerl.live.prediction`.

ONNX policies (the export issue writes them) are read through the
:class:`~sagerl.features.FeatureEncoder`, so live features equal training features. The file
contract, checked at load:

* ``policy.onnx``: input 0 is the float32 observation ``[1, encoder.size]``; an optional input
  named ``action_mask`` (bool or float ``[1, max_replicas]``); output 0 is either logits or
  probabilities ``[1, max_replicas]`` (masked argmax is taken) or an integer action ``[1]``.
* ``policy.json`` beside it (same stem): ``{"encoder": FeatureEncoder.to_dict(),
  "teacher": "sagesched" | null, "teacher_options": {...}}``; with a teacher, its per-replica
  estimates are encoded as in the environment (``envs.placement``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from sagerl.errors import ConfigError, SagerlError
from sagerl.live.config import PolicySpec
from sagerl.view import ReplicaView
from sagerl.workload.request import Request


@runtime_checkable
class PolicyRuntime(Protocol):
    """What the router asks for a decision (see module docstring)."""

    name: str
    """Label of the policy in ``/metrics`` and the transition log."""

    def choose(
        self, request: Request, views: Sequence[ReplicaView], now: float, prediction: Any = None
    ) -> int:
        """Index of the backend for ``request``; never an unhealthy one.

        Raises:
            SagerlError: No healthy backend.
        """
        ...


class PlacementRuntime:
    """A registered placement policy (``sagerl.policy.PLACEMENT``), run as the simulator runs it.

    Args:
        name: Registered placement policy name.
        options: Its constructor options.
        seed: Seed of randomised policies.
    """

    def __init__(self, name: str, options: dict[str, Any] | None = None, seed: int = 0) -> None:
        from sagerl.policy import make_placement

        self.name = name
        self.policy = make_placement(name, seed=seed, **(options or {}))

    def choose(
        self, request: Request, views: Sequence[ReplicaView], now: float, prediction: Any = None
    ) -> int:
        return int(self.policy.choose(request, views, now, prediction))

    def scores(
        self, request: Request, views: Sequence[ReplicaView], prediction: Any = None
    ) -> list[float] | None:
        """Per-backend estimates where the policy has them (SageSched's marginal costs)."""
        marginal = getattr(self.policy, "marginal_costs", None)
        return None if marginal is None else list(marginal(request, views, prediction)[0])


class OnnxPolicyRuntime:
    """An exported policy: FeatureEncoder observation -> onnxruntime -> masked argmax.

    Args:
        path: The ``.onnx`` file; its sidecar ``<stem>.json`` must sit beside it.
        num_backends: Backends the router has (must fit the encoder's ``max_replicas``).

    Raises:
        SagerlError: onnxruntime is missing, a file is missing or malformed, or the layout
            does not fit (the message names the file).
    """

    name = "onnx"

    def __init__(self, path: str | Path, num_backends: int) -> None:
        from sagerl.features import FeatureEncoder

        self.path = Path(path)
        sidecar = self.path.with_suffix(".json")
        if not self.path.is_file():
            raise SagerlError(f"ONNX policy {self.path} does not exist")
        if not sidecar.is_file():
            raise SagerlError(f"ONNX policy {self.path} has no sidecar {sidecar} (encoder spec)")
        try:
            meta = json.loads(sidecar.read_text())
            self.encoder = FeatureEncoder.from_dict(meta["encoder"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SagerlError(f"{sidecar}: not a policy sidecar ({exc})") from None
        if num_backends > self.encoder.spec.max_replicas:
            raise SagerlError(
                f"{sidecar}: the policy has {self.encoder.spec.max_replicas} replica slots, "
                f"the router {num_backends} backends"
            )
        try:
            import onnxruntime as ort
        except ImportError:
            raise SagerlError(
                "ONNX policies need onnxruntime: pip install 'sagerl[serve]' onnxruntime"
            ) from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), opts, ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise SagerlError(f"{self.path}: cannot load ONNX model ({exc})") from None
        inputs = self.session.get_inputs()
        self.obs_name = inputs[0].name
        self.mask_name = next((i.name for i in inputs[1:] if i.name == "action_mask"), None)
        self.mask_float = self.mask_name is not None and "float" in inputs[1].type
        self.teacher = None
        if meta.get("teacher"):
            from sagerl.policy import make_placement

            self.teacher = make_placement(meta["teacher"], **meta.get("teacher_options", {}))
        self._obs = np.zeros((1, self.encoder.size), dtype=np.float32)

    def choose(
        self, request: Request, views: Sequence[ReplicaView], now: float, prediction: Any = None
    ) -> int:
        scores, ok = None, None
        if self.teacher is not None:
            marginal = getattr(self.teacher, "marginal_costs", None)
            if marginal is not None:
                scores, ok = marginal(request, views, prediction)
        mask = self.encoder.action_mask(request, views)
        if not mask.any():
            raise SagerlError("no healthy replica to place the request on")
        self.encoder.encode(request, views, prediction, scores, ok, out=self._obs[0])
        feed: dict[str, Any] = {self.obs_name: self._obs}
        if self.mask_name is not None:
            m = mask[None, :]
            feed[self.mask_name] = m.astype(np.float32) if self.mask_float else m
        out = np.asarray(self.session.run(None, feed)[0])
        if out.size == 1 and np.issubdtype(out.dtype, np.integer):
            action = int(out.ravel()[0])
            if not (0 <= action < mask.size and mask[action]):
                raise SagerlError(f"ONNX policy chose masked replica {action}")
            return action
        logits = out.reshape(-1)[: mask.size].astype(np.float64)
        logits[~mask] = -np.inf
        return int(np.argmax(logits))


def make_runtime(spec: PolicySpec, num_backends: int) -> PolicyRuntime:
    """The runtime for ``spec``: ``onnx`` loads an exported policy, any other name a placement.

    Raises:
        ConfigError: Unknown policy name or option.
        SagerlError: The ONNX policy cannot be loaded.
    """
    if spec.name == "onnx":
        if spec.path is None:
            raise ConfigError("policy 'onnx' needs policy.path")
        return OnnxPolicyRuntime(spec.path, num_backends)
    return PlacementRuntime(spec.name, spec.options, spec.seed)
