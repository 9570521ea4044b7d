"""Prompt embeddings of whole data sets, computed once and cached on disk.

An evaluation, a simulation or an RL environment asks for the same prompts' vectors again and
again; a transformer pass per request would dominate everything. The store keeps one ``.npz``
file per (data set, embedder variant) under ``cache_dir()/embeddings/`` mapping a 16-byte
digest of each prompt text to its vector, so a later run (or a run on a subset) reads them back
and only computes prompts it has never seen. The variant string names the model, backend and
truncation length, because each gives different numbers.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sagerl import paths
from sagerl.predict.embedder import Embedder, text_key

log = logging.getLogger(__name__)

CHUNK = 256
"""Prompts embedded between progress updates (and between partial saves)."""


class EmbeddingStore:
    """On-disk cache of prompt vectors for one data set and one embedder variant.

    Args:
        dataset: Data set label (e.g. ``castillo``); part of the file name.
        variant: :attr:`Embedder.variant`; part of the file name.
        root: Directory of the cache files (default ``cache_dir()/embeddings``).
    """

    def __init__(self, dataset: str, variant: str, root: Path | None = None) -> None:
        self.root = root or paths.cache_dir() / "embeddings"
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{dataset}__{variant}")
        self.path = self.root / f"{safe}.npz"

    def _read(self) -> tuple[dict[bytes, int], np.ndarray]:
        if not self.path.is_file():
            return {}, np.zeros((0, 0), dtype=np.float32)
        try:
            with np.load(self.path) as z:
                keys, vectors = z["keys"], z["vectors"]
        except Exception as exc:  # damaged cache: recompute rather than fail
            log.warning("ignoring unreadable embedding cache %s (%s)", self.path, exc)
            return {}, np.zeros((0, 0), dtype=np.float32)
        if keys.ndim != 2 or keys.shape != (len(vectors), 16):
            log.warning("ignoring malformed embedding cache %s", self.path)
            return {}, np.zeros((0, 0), dtype=np.float32)
        return {k.tobytes(): i for i, k in enumerate(keys)}, vectors

    def _write(self, index: dict[bytes, int], vectors: np.ndarray) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # NOTE: raw uint8 rows, not numpy "S16" strings, which drop trailing zero bytes.
        keys = np.zeros((len(vectors), 16), dtype=np.uint8)
        for k, i in index.items():
            keys[i] = np.frombuffer(k, dtype=np.uint8)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}.npz")
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=keys, vectors=vectors)
        tmp.replace(self.path)

    def ensure(
        self, texts: Sequence[str], embedder: Embedder, progress: bool = False
    ) -> np.ndarray:
        """Vectors for ``texts`` (``(n, dim)`` float32), computing and saving the missing ones.

        Args:
            texts: Prompt texts (duplicates are computed once).
            embedder: Computes what the cache lacks; its variant must match the store's.
            progress: Show a tqdm bar while embedding.
        """
        index, vectors = self._read()
        keys = [text_key(t) for t in texts]
        missing: dict[bytes, str] = {}
        for k, t in zip(keys, texts, strict=True):
            if k not in index and k not in missing:
                missing[k] = t
        if missing:
            new = self._compute(list(missing.values()), embedder, progress)
            base = len(index)
            for j, k in enumerate(missing):
                index[k] = base + j
            vectors = new if vectors.size == 0 else np.concatenate([vectors, new])
            try:
                self._write(index, vectors)
            except OSError as exc:
                log.warning("cannot write embedding cache %s (%s)", self.path, exc)
        rows = np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))
        return np.ascontiguousarray(vectors[rows], dtype=np.float32)

    @staticmethod
    def _compute(texts: list[str], embedder: Embedder, progress: bool) -> np.ndarray:
        from tqdm.auto import tqdm

        out = np.empty((len(texts), embedder.dim), dtype=np.float32)
        bar = tqdm(total=len(texts), desc=f"embedding ({embedder.variant})", disable=not progress)
        for start in range(0, len(texts), CHUNK):
            chunk = texts[start : start + CHUNK]
            out[start : start + len(chunk)] = embedder.embed(chunk, use_cache=False)
            bar.update(len(chunk))
        bar.close()
        return out
