"""Where data and caches live.

The full data is found through a data directory: an explicit path (config ``data_dir``) wins,
then the ``SAGERL_DATA`` environment variable, then ``../shared/data`` beside the repository.
A small permissively licensed sample ships inside the package (``sagerl/sample_data``) so tests
and the default run work where the full data does not exist.

Derived files (parsed data sets, embeddings) are cached under ``SAGERL_CACHE`` or
``~/.cache/sagerl``, never inside the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

from sagerl.errors import DataError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
SAMPLE_DATA_DIR = PACKAGE_DIR / "sample_data"
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"


def data_dir(explicit: str | os.PathLike[str] | None = None, *, must_exist: bool = True) -> Path:
    """Resolve the full-data directory.

    Args:
        explicit: A path from the config (``data_dir``); ``None`` to use the environment
            variable or the default.
        must_exist: Raise a clear :class:`DataError` if the directory is missing.
    """
    if explicit:
        path, origin = Path(explicit).expanduser(), "config key data_dir"
    elif os.environ.get("SAGERL_DATA"):
        path, origin = Path(os.environ["SAGERL_DATA"]).expanduser(), "SAGERL_DATA"
    else:
        path, origin = DEFAULT_DATA_DIR, "default"
    if must_exist and not path.is_dir():
        raise DataError(
            f"data directory {path} (from {origin}) does not exist; set data_dir=PATH or "
            "SAGERL_DATA, or use a config on the bundled sample (configs/default.yaml)"
        )
    return path


def has_full_data(explicit: str | os.PathLike[str] | None = None) -> bool:
    """True when the full data directory exists (tests skip full-data cases otherwise)."""
    return data_dir(explicit, must_exist=False).is_dir()


def cache_dir() -> Path:
    """Directory for derived files; created on first use."""
    root = Path(os.environ.get("SAGERL_CACHE", Path.home() / ".cache" / "sagerl")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root
