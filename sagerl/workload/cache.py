"""On-disk cache of parsed data, so a warm ``load_pool`` is a pickle read, not a parse.

Parsing ShareGPT means decompressing 120 MB of JSON lines; CodeAlpaca needs a tokenizer pass.
Both are done once: the resulting :class:`RequestPool` is pickled under
``sagerl.paths.cache_dir()/pools/``. The key is a hash of

* the data set name and its loader ``version`` (bumped when parsing changes),
* each source file's resolved path, size (bytes) and modification time (ns),
* the validated loader options,

so editing or replacing a source file, or asking for other options, misses the cache. Loaders
whose output depends on a seed (ServeGen) cache their parsed intermediate data instead, through
:func:`cached`, so each new seed does not add a file. A cache
file that cannot be read (truncated, from another version of the class, garbage) is ignored,
deleted and rebuilt; a cache directory that cannot be written is not an error.

NOTE: the files are pickles, so only point ``SAGERL_CACHE`` at a directory you trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sagerl import paths
from sagerl.workload.pool import RequestPool

log = logging.getLogger(__name__)

T = TypeVar("T")

CACHE_FORMAT = 1
"""Bump to invalidate every cached pool (e.g. when :class:`RequestPool` gains a field)."""


def cache_key(name: str, version: int, files: Sequence[Path], options: dict[str, Any]) -> str:
    """The canonical JSON text that identifies one parse (hashed into the file name)."""
    stats = []
    for path in files:
        st = path.stat()
        stats.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
    return json.dumps(
        {
            "format": CACHE_FORMAT,
            "dataset": name,
            "version": version,
            "files": stats,
            "options": options,
        },
        sort_keys=True,
        default=str,
    )


def cache_path(name: str, key: str) -> Path:
    """Where the pool for ``key`` is stored."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return paths.cache_dir() / "pools" / f"{name}-{digest}.pkl"


def read_cached(path: Path, key: str, kind: type[T]) -> T | None:
    """The cached object at ``path`` if it is intact, a ``kind``, and stored under ``key``."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as fh:
            stored_key, obj = pickle.load(fh)
        if stored_key == key and isinstance(obj, kind):
            return obj
        log.info("cache entry %s does not match its key; rebuilding", path)
    except Exception as exc:  # any unpickling failure means "not cached"
        log.warning("ignoring unreadable cache file %s (%s); rebuilding", path, exc)
    with contextlib.suppress(OSError):
        path.unlink()
    return None


def write_cached(path: Path, key: str, obj: object) -> None:
    """Store ``obj`` atomically (write a temporary file, then rename); failures only log."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            pickle.dump((key, obj), fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not write cache file %s (%s)", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()


def cached(
    name: str,
    version: int,
    files: Sequence[Path],
    options: dict[str, Any],
    build: Callable[[], T],
    kind: type[T],
) -> T:
    """Return the cached ``kind`` object for these inputs, or ``build()`` and cache it.

    Args:
        name: Prefix of the cache file name (data set name, or a loader's own label).
        version: Bump when ``build`` changes its output.
        files: Source files; their path, size and modification time are part of the key.
        options: Everything else the output depends on (JSON-serialisable).
        build: Computes the object on a miss.
        kind: Expected type; a cached object of another type is treated as a miss.
    """
    key = cache_key(name, version, files, options)
    path = cache_path(name, key)
    obj = read_cached(path, key, kind)
    if obj is None:
        obj = build()
        write_cached(path, key, obj)
    return obj


def cached_pool(
    name: str,
    version: int,
    files: Sequence[Path],
    options: dict[str, Any],
    build: Callable[[], RequestPool],
) -> RequestPool:
    """Return the cached pool for these inputs, or ``build()`` it and cache the result."""
    return cached(name, version, files, options, build, RequestPool)
