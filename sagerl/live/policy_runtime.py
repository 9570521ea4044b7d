"""The router's placement decision: any registered placement policy, or an exported ONNX policy.

Both implement one small protocol, :class:`PolicyRuntime`, whose ``choose`` has exactly the
signature of :meth:`sagerl.policy.placement.PlacementPolicy.choose`: one decision over
point-in-time :class:`~sagerl.view.ReplicaView` snapshots, no web-framework objects. The
simulator and the router therefore run the same object on the same views and get the same
answer (``tests/test_live_policy.py``).

NOTE: ``choose`` is synchronous. A decision is microseconds of CPU over a handful of views (an
ONNX MLP about 5 to 30 µs); an ``async`` signature would add a task switch per request and
make the simulator's call differ from the router's. Slow work (length prediction) happens
before, off the event loop, in :mod:`sagerl.live.prediction`.

ONNX policies (``python -m sagerl export``, :mod:`agents.export`) are read through the
:class:`~sagerl.features.FeatureEncoder`, so live features equal training features. This
module imports numpy, onnxruntime and sagerl's core only (no torch, no stable-baselines3, no
``agents`` or ``envs``). The file contract, checked at load:

* ``policy.onnx``: input 0 is the float32 observation ``[batch, encoder.size]``; an optional
  input named ``action_mask`` (bool or float ``[batch, max_replicas]``); output 0 is either
  logits or probabilities ``[batch, max_replicas]`` (masked argmax is taken) or an integer
  action ``[batch]``.
* ``policy.json`` beside it (same stem), built and checked by :mod:`sagerl.live.sidecar`:
  ``format``, ``encoder`` (``FeatureEncoder.to_dict()``: feature version and parameters),
  ``feature_names``, ``max_replicas``, ``observation_size``, ``action``, ``outputs``,
  ``teacher`` and ``teacher_options`` (with a teacher, its per-replica estimates are encoded
  as in the environment, ``envs.placement``), ``onnx_sha256``, ``created``,
  ``sagerl_version``; the exporter adds ``training_config``, ``backend``, ``source`` and
  ``parity``.

A file is refused (:class:`~sagerl.errors.SagerlError`, one line naming the file) when the
sidecar is missing or malformed, its format is unknown, the ONNX file does not match its
checksum, the feature version or feature names differ from this sagerl's encoder, the sizes do
not fit, or (``expected``) the router's encoder settings differ from the policy's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from sagerl.errors import ConfigError, SagerlError
from sagerl.live.config import PolicySpec
from sagerl.live.sidecar import one_line, read_sidecar, sidecar_path
from sagerl.view import ReplicaView
from sagerl.workload.request import Request

if TYPE_CHECKING:
    from sagerl.features import FeatureSpec


def import_onnxruntime(missing: str) -> Any:
    """The ``onnxruntime`` module, or a :class:`SagerlError` saying ``missing`` (how to install)."""
    try:
        import onnxruntime
    except ImportError:
        raise SagerlError(missing) from None
    return onnxruntime


def cpu_session(path: str | Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session as the router runs a policy: ``threads`` intra-op threads and
    one inter-op thread. Export checks and times its file through this too, so the latency it
    reports is the router's. Call :func:`import_onnxruntime` first for a clear missing-package
    error; load errors are onnxruntime's own (callers word them)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, ["CPUExecutionProvider"])


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


# ---------------------------------------------------------------------- the runtime
class OnnxPolicyRuntime:
    """An exported policy: FeatureEncoder observation -> onnxruntime -> masked argmax.

    Args:
        path: The ``.onnx`` file; its sidecar ``<stem>.json`` must sit beside it.
        num_backends: Backends the router has (must fit the sidecar's ``max_replicas``).
        expected: The router's encoder settings, if it has any: refuse a policy trained with
            others.
        threads: onnxruntime intra-op threads (1: a decision is one small MLP).

    Raises:
        SagerlError: onnxruntime is missing, a file is missing, malformed or changed, or the
            layout does not fit this sagerl's encoder or the router (the message names the
            file).

    ``choose`` reuses preallocated buffers: the observation and the mask feed are filled in
    place and the onnxruntime feed dict is built once.
    """

    name = "onnx"

    def __init__(
        self,
        path: str | Path,
        num_backends: int,
        *,
        expected: FeatureSpec | None = None,
        threads: int = 1,
    ) -> None:
        self.path = Path(path)
        self.sidecar_path = sidecar_path(self.path)
        side = self.sidecar_path
        meta, self.encoder = read_sidecar(self.path, expected)
        self.meta = meta
        slots = self.encoder.spec.max_replicas
        if num_backends > slots:
            raise SagerlError(
                f"{side}: the policy has {slots} replica slots, the router {num_backends} backends"
            )
        import_onnxruntime(
            "ONNX policies need onnxruntime: pip install 'sagerl[serve]' onnxruntime"
        )
        try:
            self.session = cpu_session(self.path, threads)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise SagerlError(f"{self.path}: cannot load ONNX model ({one_line(exc)})") from None
        inputs = self.session.get_inputs()
        obs_in = inputs[0]
        width = obs_in.shape[-1] if obs_in.shape else None
        if "float" not in obs_in.type or (isinstance(width, int) and width != self.encoder.size):
            raise SagerlError(
                f"{self.path}: input {obs_in.name!r} is {obs_in.type} {obs_in.shape}, its "
                f"sidecar's encoder makes float [batch, {self.encoder.size}]"
            )
        out0 = self.session.get_outputs()[0]
        self._int_out = "int" in out0.type
        out_width = out0.shape[-1] if out0.shape else None
        if not self._int_out and isinstance(out_width, int) and out_width != slots:
            raise SagerlError(
                f"{self.path}: output {out0.name!r} has {out_width} entries, its sidecar "
                f"{slots} replica slots"
            )
        self.obs_name = obs_in.name
        self._out_names = [out0.name]
        self._obs = np.zeros((1, self.encoder.size), dtype=np.float32)
        self._feed: dict[str, np.ndarray] = {self.obs_name: self._obs}
        mask_in = next((i for i in inputs[1:] if i.name == "action_mask"), None)
        self.mask_name = None if mask_in is None else mask_in.name
        self._mask_feed: np.ndarray | None = None
        if mask_in is not None:
            dtype = np.float32 if "float" in mask_in.type else np.bool_
            self._mask_feed = np.zeros((1, slots), dtype=dtype)
            self._feed[mask_in.name] = self._mask_feed
        # The "available" feature of every replica slot is the action mask: a view, no copy.
        rep = self._obs[0, : self.encoder.request_offset].reshape(slots, self.encoder.replica_size)
        self._available = rep[:, 1]
        self._mask = np.zeros(slots, dtype=bool)
        self._logits = np.zeros(slots, dtype=np.float32)
        self.teacher: Any = None
        if meta.get("teacher"):
            from sagerl.policy import make_placement

            seed = (meta.get("training_config") or {}).get("seed", 0)
            try:
                self.teacher = make_placement(
                    meta["teacher"], seed=int(seed), **(meta.get("teacher_options") or {})
                )
            except SagerlError as exc:
                raise SagerlError(f"{side}: teacher: {one_line(exc)}") from None

    def teacher_estimates(
        self, request: Request, views: Sequence[ReplicaView], now: float, prediction: Any = None
    ) -> tuple[Any, Any]:
        """The teacher's per-replica estimates and safety flags, as the environment encodes
        them (``envs.placement.PlacementEnv._teacher_estimates``); ``(None, None)`` without a
        teacher."""
        teacher = self.teacher
        if teacher is None:
            return None, None
        scores_fn = getattr(teacher, "scores", None)
        if scores_fn is not None:
            return scores_fn(request, views, now, prediction), None
        marginal = getattr(teacher, "marginal_costs", None)
        if marginal is not None:
            return marginal(request, views, prediction)
        pick = int(teacher.choose(request, views, now, prediction))
        return [0.0 if i == pick else 1.0 for i in range(len(views))], None

    def observation(
        self, request: Request, views: Sequence[ReplicaView], now: float, prediction: Any = None
    ) -> np.ndarray:
        """Encode the decision into the runtime's observation buffer ``[1, size]`` (returned,
        not copied: the next call overwrites it)."""
        scores, ok = self.teacher_estimates(request, views, now, prediction)
        self.encoder.encode(request, views, prediction, scores, ok, out=self._obs[0])
        return self._obs

    def choose(
        self, request: Request, views: Sequence[ReplicaView], now: float, prediction: Any = None
    ) -> int:
        self.observation(request, views, now, prediction)
        mask = self._mask
        np.greater(self._available, 0.5, out=mask)
        if not mask.any():
            raise SagerlError("no healthy replica to place the request on")
        if self._mask_feed is not None:
            self._mask_feed[0] = mask
        out = self.session.run(self._out_names, self._feed)[0]
        if self._int_out:
            action = int(out.ravel()[0])
            if not (0 <= action < mask.size and mask[action]):
                raise SagerlError(f"ONNX policy {self.path} chose masked replica {action}")
            return action
        logits = self._logits
        logits[:] = out.reshape(-1)[: mask.size]
        logits[~mask] = -np.inf
        return int(np.argmax(logits))


def make_runtime(
    spec: PolicySpec, num_backends: int, expected: FeatureSpec | None = None
) -> PolicyRuntime:
    """The runtime for ``spec``: ``onnx`` loads an exported policy, any other name a placement.

    Raises:
        ConfigError: Unknown policy name or option.
        SagerlError: The ONNX policy cannot be loaded.
    """
    if spec.name == "onnx":
        if spec.path is None:
            raise ConfigError("policy 'onnx' needs policy.path")
        return OnnxPolicyRuntime(spec.path, num_backends, expected=expected)
    return PlacementRuntime(spec.name, spec.options, spec.seed)
