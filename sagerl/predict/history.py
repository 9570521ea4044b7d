"""The FIFO history of finished requests, searchable by prompt embedding.

SageSched keeps the last 10,000 served requests (prompt embedding, output length) and searches
them with a FAISS flat inner-product index. A flat index has no cheap delete (``remove_ids``
shifts the whole array), and rebuilding it per finished request would cost milliseconds, so the
history is a ring buffer *inside* the index::

    slots  0 1 2 ... capacity-1        next write = n_seen % capacity
           [ index.xb: capacity x dim ]  <- grows with index.add() until full,
                                            then the oldest slot is overwritten in place

Until the ring is full, new vectors are appended with ``index.add``; from then on the oldest
slot's vector is overwritten through a numpy view of the index's own storage, so ``add`` costs
one row copy (microseconds) and search results are exact for exactly the last ``capacity``
requests. Slot numbers index the parallel arrays of prompt and output lengths.

With ``dim=None`` the history holds lengths only (for the ``length-history`` and ``global``
predictors) and has no index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from sagerl.errors import DataError

FORMAT = 1
"""Version of the saved file layout."""


class FifoHistory:
    """The last ``capacity`` finished requests: prompt vector, prompt and output lengths.

    Args:
        capacity: Requests kept (the paper's 10,000).
        dim: Embedding width, or ``None`` for a lengths-only history.
    """

    def __init__(self, capacity: int, dim: int | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"history capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.dim = dim
        self.prompt_tokens = np.zeros(self.capacity, dtype=np.int64)
        self.output_tokens = np.zeros(self.capacity, dtype=np.int64)
        self.n_seen = 0
        """Requests ever added; the next write goes to slot ``n_seen % capacity``."""
        self.index: Any = None
        self._view: np.ndarray | None = None
        if dim is not None:
            import faiss

            self.index = faiss.IndexFlatIP(int(dim))

    def __len__(self) -> int:
        return min(self.n_seen, self.capacity)

    @property
    def full(self) -> bool:
        return self.n_seen >= self.capacity

    def filled(self) -> slice:
        """The slots holding data (all of them once full)."""
        return slice(0, len(self))

    # ------------------------------------------------------------------ adding
    def add(
        self,
        prompt_tokens: ArrayLike,
        output_tokens: ArrayLike,
        vectors: np.ndarray | None = None,
    ) -> np.ndarray:
        """Append finished requests in arrival order, evicting the oldest beyond capacity.

        Args:
            prompt_tokens: Prompt length(s) in tokens.
            output_tokens: Output length(s) in tokens.
            vectors: ``(n, dim)`` unit vectors (required when the history has an index).

        Returns:
            The output lengths that were evicted (empty until the ring is full), so callers
            keeping running counts can update them.
        """
        pt = np.atleast_1d(np.asarray(prompt_tokens, dtype=np.int64))
        ot = np.atleast_1d(np.asarray(output_tokens, dtype=np.int64))
        n = pt.size
        if ot.size != n:
            raise ValueError(f"{n} prompt lengths but {ot.size} output lengths")
        vecs = None
        if self.index is not None:
            if vectors is None:
                raise ValueError("this history is searched by embedding: pass vectors")
            vecs = np.ascontiguousarray(vectors, dtype=np.float32).reshape(n, -1)
            if vecs.shape[1] != self.dim:
                raise ValueError(f"vectors have width {vecs.shape[1]}, expected {self.dim}")
        if n > self.capacity:  # rare: split so no chunk overwrites its own rows
            parts = [
                self.add(
                    pt[i : i + self.capacity],
                    ot[i : i + self.capacity],
                    None if vecs is None else vecs[i : i + self.capacity],
                )
                for i in range(0, n, self.capacity)
            ]
            return np.concatenate(parts)
        evicted: list[np.ndarray] = []
        grow = min(n, self.capacity - len(self)) if not self.full else 0
        if grow:
            s = self.n_seen
            self.prompt_tokens[s : s + grow] = pt[:grow]
            self.output_tokens[s : s + grow] = ot[:grow]
            if vecs is not None:
                self.index.add(vecs[:grow])
            self.n_seen += grow
        rest = n - grow
        if rest:
            slots = (self.n_seen + np.arange(rest)) % self.capacity
            evicted.append(self.output_tokens[slots].copy())
            self.prompt_tokens[slots] = pt[grow:]
            self.output_tokens[slots] = ot[grow:]
            if vecs is not None:
                self._storage()[slots] = vecs[grow:]
            self.n_seen += rest
        return np.concatenate(evicted) if evicted else np.zeros(0, dtype=np.int64)

    def _storage(self) -> np.ndarray:
        """A writable ``(capacity, dim)`` view of the full index's vectors (no copy)."""
        if self._view is None:
            import faiss

            assert self.index.ntotal == self.capacity  # no more index.add, so it stays valid
            dim = int(self.index.d)
            flat = faiss.rev_swig_ptr(self.index.get_xb(), self.capacity * dim)
            self._view = flat.reshape(self.capacity, dim)
        return self._view

    # ------------------------------------------------------------------ searching
    def vectors(self) -> np.ndarray:
        """A copy of the stored vectors in slot order, ``(len, dim)``."""
        if self.index is None or len(self) == 0:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        return self.index.reconstruct_n(0, len(self))

    def range_search(
        self, queries: np.ndarray, threshold: float
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, ``(slots, similarities)`` of all entries with inner product >= threshold.

        FAISS's range search keeps results strictly above its radius; the radius is nudged
        down by one float32 ulp so the paper's ">= 0.8" holds exactly.
        """
        q = _as_queries(queries, self.dim)
        if self.index is None or len(self) == 0:
            return [(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in range(len(q))]
        radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
        lims, sims, ids = self.index.range_search(q, radius)
        return [
            (ids[lims[i] : lims[i + 1]].astype(np.int64), sims[lims[i] : lims[i + 1]])
            for i in range(len(q))
        ]

    def knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar entries per query: ``(similarities, slots)``, slot -1 = none."""
        q = _as_queries(queries, self.dim)
        if self.index is None or len(self) == 0:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        sims, ids = self.index.search(q, k)
        return sims, ids

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write the history (vectors, lengths, position in the ring) to an ``.npz`` file."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as fh:
            np.savez(
                fh,
                format=np.int64(FORMAT),
                capacity=np.int64(self.capacity),
                dim=np.int64(-1 if self.dim is None else self.dim),
                n_seen=np.int64(self.n_seen),
                prompt_tokens=self.prompt_tokens[: len(self)],
                output_tokens=self.output_tokens[: len(self)],
                vectors=self.vectors(),
            )

    @classmethod
    def load(cls, path: str | Path) -> FifoHistory:
        """Read a history written by :meth:`save` (same slots, same next write)."""
        p = Path(path)
        try:
            with np.load(p) as z:
                if int(z["format"]) != FORMAT:
                    raise DataError(f"{p}: history format {int(z['format'])}, expected {FORMAT}")
                dim = int(z["dim"])
                hist = cls(int(z["capacity"]), None if dim < 0 else dim)
                count = int(z["prompt_tokens"].shape[0])
                hist.prompt_tokens[:count] = z["prompt_tokens"]
                hist.output_tokens[:count] = z["output_tokens"]
                if hist.index is not None and count:
                    hist.index.add(np.ascontiguousarray(z["vectors"], dtype=np.float32))
                hist.n_seen = int(z["n_seen"])
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"cannot read history file {p}: {exc}") from None
        return hist


def _as_queries(queries: np.ndarray, dim: int | None) -> np.ndarray:
    q = np.ascontiguousarray(queries, dtype=np.float32)
    return q.reshape(1, -1) if q.ndim == 1 else q
