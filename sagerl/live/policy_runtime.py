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
* ``policy.json`` beside it (same stem), format :data:`SIDECAR_FORMAT`, built by
  :func:`make_sidecar`: ``format``, ``encoder`` (``FeatureEncoder.to_dict()``: feature version
  and parameters), ``feature_names``, ``max_replicas``, ``observation_size``, ``action``,
  ``outputs``, ``teacher`` and ``teacher_options`` (with a teacher, its per-replica estimates
  are encoded as in the environment, ``envs.placement``), ``onnx_sha256``, ``created``,
  ``sagerl_version``; the exporter adds ``training_config``, ``backend``, ``source`` and
  ``parity``.

A file is refused (:class:`~sagerl.errors.SagerlError`, one line naming the file) when the
sidecar is missing or malformed, its format is unknown, the ONNX file does not match its
checksum, the feature version or feature names differ from this sagerl's encoder, the sizes do
not fit, or (``expected``) the router's encoder settings differ from the policy's.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from sagerl.errors import ConfigError, SagerlError
from sagerl.live.config import PolicySpec
from sagerl.view import ReplicaView
from sagerl.workload.request import Request

if TYPE_CHECKING:
    from sagerl.features import FeatureEncoder, FeatureSpec

SIDECAR_FORMAT = 1
"""Version of the sidecar layout written by :func:`make_sidecar` (bumped when it changes)."""

KNOWN_FORMATS = (1,)
"""Sidecar formats this loader reads."""

ACTION_MEANING = (
    "action i places the request on replica i of the router's backend list (index order, "
    "i < max_replicas); the decision is the argmax of the logits over the available replicas "
    "(FeatureEncoder.action_mask)"
)


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


# ---------------------------------------------------------------------- the sidecar
def sidecar_path(onnx_path: str | Path) -> Path:
    """The sidecar of an ONNX policy: same folder and stem, ``.json``."""
    return Path(onnx_path).with_suffix(".json")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_sidecar(
    onnx_path: str | Path,
    encoder: FeatureEncoder,
    *,
    teacher: str | None = None,
    teacher_options: dict[str, Any] | None = None,
    outputs: str = "logits",
    **extra: Any,
) -> dict[str, Any]:
    """The sidecar of the (already written) ``onnx_path``, in the current format.

    Args:
        onnx_path: The ONNX file (its checksum goes into the sidecar).
        encoder: The feature encoder the policy was trained with.
        teacher: Placement policy whose per-replica estimates are features (``None``: none).
        teacher_options: Its constructor options.
        outputs: What output 0 holds: ``logits``, ``probabilities`` or ``action``.
        **extra: More fields (the exporter's ``training_config``, ``backend``, ``source``,
            ``parity``).
    """
    from sagerl import __version__

    data: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "encoder": encoder.to_dict(),
        "feature_names": encoder.feature_names(),
        "max_replicas": encoder.spec.max_replicas,
        "observation_size": encoder.size,
        "action": ACTION_MEANING,
        "outputs": outputs,
        "teacher": teacher,
        "teacher_options": dict(teacher_options or {}),
    }
    data.update(extra)
    data["onnx_sha256"] = file_sha256(onnx_path)
    data["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    data["sagerl_version"] = __version__
    return data


def read_sidecar(
    path: str | Path, expected: FeatureSpec | None = None
) -> tuple[dict[str, Any], FeatureEncoder]:
    """Read and check the sidecar of the ONNX policy ``path`` against this sagerl's encoder.

    Returns the sidecar and the :class:`~sagerl.features.FeatureEncoder` it describes.

    Raises:
        SagerlError: The message names the file and what to do (see module docstring).
    """
    from sagerl.features import FEATURE_VERSION, FeatureEncoder

    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        raise SagerlError(f"ONNX policy {path} does not exist")
    if not side.is_file():
        raise SagerlError(f"ONNX policy {path} has no sidecar {side} (encoder spec)")
    try:
        meta = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SagerlError(f"{side}: not a policy sidecar ({_one_line(exc)})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("encoder"), dict):
        raise SagerlError(f"{side}: not a policy sidecar (no 'encoder' object)")
    fmt = meta.get("format")
    if fmt is None:
        raise SagerlError(
            f"{side}: no 'format' field, not written by `python -m sagerl export`; re-export "
            "the policy"
        )
    if fmt not in KNOWN_FORMATS:
        raise SagerlError(
            f"{side}: sidecar format {fmt!r}, this sagerl reads format(s) "
            f"{', '.join(map(str, KNOWN_FORMATS))}; re-export the policy with this sagerl version"
        )
    digest = meta.get("onnx_sha256")
    if not isinstance(digest, str):
        raise SagerlError(f"{side}: no 'onnx_sha256' checksum; re-export the policy")
    if file_sha256(path) != digest:
        raise SagerlError(
            f"{path} does not match the checksum in its sidecar {side} (file changed after "
            "export?); re-export the policy"
        )
    spec = meta["encoder"].get("spec")
    version = spec.get("version") if isinstance(spec, dict) else None
    if version != FEATURE_VERSION:
        raise SagerlError(
            f"{side}: the policy was exported for feature encoder version {version}, this "
            f"sagerl runs version {FEATURE_VERSION}; re-export (retrain if the features "
            "changed) with this sagerl version"
        )
    try:
        encoder = FeatureEncoder.from_dict(meta["encoder"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SagerlError(f"{side}: bad encoder spec ({_one_line(exc)})") from None
    names = meta.get("feature_names")
    ours = encoder.feature_names()
    if not isinstance(names, list):
        raise SagerlError(f"{side}: no 'feature_names' list; re-export the policy")
    if names != ours:
        at = next((i for i, (a, b) in enumerate(zip(names, ours, strict=False)) if a != b), None)
        what = (
            f"feature {at} is {names[at]!r} in the sidecar but {ours[at]!r} in this sagerl's "
            f"encoder"
            if at is not None
            else f"the sidecar lists {len(names)} features, this sagerl's encoder {len(ours)}"
        )
        raise SagerlError(
            f"{side}: {what} (both version {FEATURE_VERSION}); re-export the policy with this "
            "sagerl version"
        )
    size = meta.get("observation_size")
    if size != encoder.size:
        raise SagerlError(
            f"{side}: observation_size {size} but its encoder makes {encoder.size} features"
        )
    slots = meta.get("max_replicas")
    if slots != encoder.spec.max_replicas:
        raise SagerlError(
            f"{side}: max_replicas {slots} but its encoder has {encoder.spec.max_replicas} "
            "replica slots"
        )
    if expected is not None and asdict(expected) != asdict(encoder.spec):
        mine, theirs = asdict(expected), asdict(encoder.spec)
        diff = [k for k in mine if mine[k] != theirs.get(k)]
        k = diff[0]
        raise SagerlError(
            f"{side}: the policy's encoder has {k}={theirs.get(k)!r}, the router's {mine[k]!r}"
            f"{f' (and {len(diff) - 1} more)' if len(diff) > 1 else ''}; use a policy exported "
            "with these feature settings"
        )
    return meta, encoder


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


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
        try:
            import onnxruntime as ort
        except ImportError:
            raise SagerlError(
                "ONNX policies need onnxruntime: pip install 'sagerl[serve]' onnxruntime"
            ) from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), opts, ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise SagerlError(f"{self.path}: cannot load ONNX model ({_one_line(exc)})") from None
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
                raise SagerlError(f"{side}: teacher: {_one_line(exc)}") from None

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
