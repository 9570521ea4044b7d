"""The JSON sidecar of an exported ONNX policy: what it records, and the checks at load.

:func:`make_sidecar` writes it (``python -m sagerl export``, :mod:`agents.export`);
:func:`read_sidecar` refuses, in one line naming the file, a sidecar that is missing or
malformed, of an unknown format, whose ONNX file does not match its checksum, or whose feature
encoder (version, feature names, sizes, or the router's configured settings) differs from the
running sagerl's. Core module: no torch, no training stack.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sagerl.errors import SagerlError

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
        raise SagerlError(f"{side}: not a policy sidecar ({one_line(exc)})") from None
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
        raise SagerlError(f"{side}: bad encoder spec ({one_line(exc)})") from None
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


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (at most 300 characters), for error messages."""
    return " ".join(str(exc).split())[:300]
