"""The FIFO history of finished requests, searchable by prompt embedding.

SageSched keeps the last 10,000 served requests (prompt embedding, output length) and searches
them by cosine similarity. The history is a ring buffer of preallocated arrays::

    slots  0 1 2 ... capacity-1        next write = n_seen % capacity
           [ vectors: dim x capacity ]  <- filled left to right until full,
                                           then the oldest slot is overwritten in place

so ``add`` costs one column copy (microseconds) and search results are exact for exactly the
last ``capacity`` requests. Slot numbers index the parallel arrays of prompt and output lengths.

Search is an exact scan (:func:`exact_search`): one BLAS matrix product of the queries against
the stored vectors on one thread, then a threshold and a partial selection in numpy. It used to
be a FAISS flat index, but FAISS scans each query separately below 20 queries (its BLAS
threshold) and keeps a top-k heap per query. Over 10,000 vectors (one thread, A/B on the same
vectors) a batch of 16 cost 0.21-0.25 ms per query with FAISS and 0.11-0.12 ms scanned here;
a single query 0.24-0.26 ms against 0.21 ms (reading 15 MB of vectors bounds both). The vectors
are stored transposed (``dim x capacity``), which makes the single-query product (a GEMV) about
15% faster and costs nothing in batches.

With ``dim=None`` the history holds lengths only (for the ``length-history`` and ``global``
predictors) and has no vectors.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from sagerl.errors import DataError

FORMAT = 1
"""Version of the saved file layout."""

_EMPTY_I = np.zeros(0, dtype=np.int64)
_EMPTY_F = np.zeros(0, dtype=np.float32)


class Neighbours(NamedTuple):
    """One query's search result, both parts sorted by similarity (descending), ties by row.

    Attributes:
        ids: Rows with similarity >= the threshold (all of them: a range search).
        sims: Their similarities.
        top_ids: The ``k`` most similar rows whatever their similarity (fewer when fewer rows
            exist); a prefix of ``ids`` when at least ``k`` rows pass the threshold.
        top_sims: Their similarities.
    """

    ids: np.ndarray
    sims: np.ndarray
    top_ids: np.ndarray
    top_sims: np.ndarray


NO_NEIGHBOURS = Neighbours(_EMPTY_I, _EMPTY_F, _EMPTY_I, _EMPTY_F)


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's handle on the loaded BLAS libraries, or ``None`` without threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl ships with the predict extra
        return None
    ctl = ThreadpoolController().select(user_api="blas")
    return ctl if ctl.lib_controllers else None


@functools.cache
def _blas_libs() -> tuple[Any, ...]:
    """The per-library controllers of :func:`_blas_controller` (empty without threadpoolctl)."""
    ctl = _blas_controller()
    return () if ctl is None else tuple(ctl.lib_controllers)


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run numpy's BLAS on the calling thread only, inside the block (a few microseconds).

    OpenBLAS hands a 16 x 384 x 10,000 product to a second thread on its own; the predictor's
    latency is defined on one thread, and a scheduler shares its cores with other work. The
    setting is process-wide, so it is restored on exit (two threads searching at once may
    briefly see each other's setting: only speed changes, never results).

    The same as ``threadpoolctl``'s ``limit(limits=1)`` (each library set to one thread, then
    back to its own count, through the same per-library setters), without building a limiter
    and querying every library's full info on each call: that cost about 25 microseconds, a
    tenth of an RL environment's step. A library already at one thread is left alone.
    """
    libs = _blas_libs()
    before = [lib.get_num_threads() for lib in libs]
    changed = [(lib, n) for lib, n in zip(libs, before, strict=True) if n != 1]
    for lib, _ in changed:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in changed:
            lib.set_num_threads(n)


def exact_search(
    vectors_t: np.ndarray, queries: np.ndarray, threshold: float, k: int
) -> list[Neighbours]:
    """Exact cosine search of unit ``queries`` against the columns of ``vectors_t``.

    Args:
        vectors_t: ``(dim, n)`` float32, one stored unit vector per column.
        queries: ``(nq, dim)`` float32 unit vectors.
        threshold: Range-search bound: every row with inner product ``>= threshold``
            (inclusive, as the paper's "cosine >= 0.8").
        k: Also return the ``k`` most similar rows (the k-nearest fallback).

    One BLAS product gives every similarity. The range part is a comparison. The top ``k``
    come from a partial selection that never sorts the whole row: split the row into ``k``
    blocks; the smallest of the block maxima is a similarity that at least ``k`` rows reach,
    so only rows at or above it (typically a few hundred of 10,000) are sorted. Ties are
    broken by the lower row number, so the result is deterministic and independent of the
    batch a query arrives in (up to the last bit of the BLAS product, which may differ by
    batch shape; FAISS, which this replaces, also switched kernels at 20 queries).
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q.reshape(1, -1)
    nq, n = len(q), int(vectors_t.shape[1])
    if n == 0 or nq == 0:
        return [NO_NEIGHBOURS] * nq
    with one_blas_thread():
        sims = q @ vectors_t  # (nq, n)
    thr = np.float32(threshold)
    k = max(0, min(int(k), n))
    if k and n >= 4 * k:
        m = n - n % k
        bound = sims[:, :m].reshape(nq, k, m // k).max(axis=2).min(axis=1)
        cut = np.minimum(bound, thr)
    else:  # small n: sorting everything is as cheap
        cut = np.full(nq, -np.inf, dtype=np.float32)
    out = []
    for i in range(nq):  # per row: flatnonzero of a row is ~5x cheaper than a 2-D nonzero
        row = sims[i]
        cand = np.flatnonzero(row >= cut[i])
        s = row[cand]
        order = np.argsort(-s, kind="stable")  # candidates ascend by row: ties keep row order
        ids, vals = cand[order].astype(np.int64, copy=False), s[order]
        above = int(np.count_nonzero(vals >= thr))
        out.append(Neighbours(ids[:above], vals[:above], ids[:k], vals[:k]))
    return out


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
        # NOTE: np.zeros maps untouched pages lazily, so a small history of a big capacity
        # (an RL environment resets its predictor every episode) costs no 15 MB up front.
        self._vt: np.ndarray | None = (
            None if dim is None else np.zeros((int(dim), self.capacity), dtype=np.float32)
        )

    def __len__(self) -> int:
        return min(self.n_seen, self.capacity)

    @property
    def full(self) -> bool:
        return self.n_seen >= self.capacity

    @property
    def has_vectors(self) -> bool:
        """Whether entries are searched by embedding (``dim`` was given)."""
        return self._vt is not None

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
            vectors: ``(n, dim)`` unit vectors (required when the history has vectors).

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
        if self._vt is not None:
            if vectors is None:
                raise ValueError("this history is searched by embedding: pass vectors")
            vecs = np.asarray(vectors, dtype=np.float32).reshape(n, -1)
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
        first = self.n_seen % self.capacity
        slots = (first + np.arange(n)) % self.capacity
        # The j-th new entry evicts an old one once n_seen + j reaches capacity; n <= capacity,
        # so no slot is written twice and reading before writing is safe.
        evicted = self.output_tokens[slots[max(0, self.capacity - self.n_seen) :]].copy()
        self.prompt_tokens[slots] = pt
        self.output_tokens[slots] = ot
        if vecs is not None and self._vt is not None:
            if first + n <= self.capacity:  # contiguous: a slice write, no fancy indexing
                self._vt[:, first : first + n] = vecs.T
            else:
                self._vt[:, slots] = vecs.T
        self.n_seen += n
        return evicted

    # ------------------------------------------------------------------ searching
    def vectors(self) -> np.ndarray:
        """A copy of the stored vectors in slot order, ``(len, dim)``."""
        if self._vt is None or len(self) == 0:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        return np.ascontiguousarray(self._vt[:, : len(self)].T)

    def search(self, queries: np.ndarray, threshold: float, k: int) -> list[Neighbours]:
        """Per query: every entry with similarity >= ``threshold``, and the ``k`` nearest
        (see :func:`exact_search`; ids are slots)."""
        q = _as_queries(queries)
        if self._vt is None or len(self) == 0:
            return [NO_NEIGHBOURS] * len(q)
        return exact_search(self._vt[:, : len(self)], q, threshold, k)

    def range_search(
        self, queries: np.ndarray, threshold: float
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, ``(slots, similarities)`` of all entries with inner product >= threshold
        (inclusive), most similar first."""
        return [(nb.ids, nb.sims) for nb in self.search(queries, threshold, 0)]

    def knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar entries per query: ``(similarities, slots)``, slot -1 = none."""
        q = _as_queries(queries)
        sims = np.full((len(q), k), -np.inf, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        for i, nb in enumerate(self.search(q, np.inf, k)):
            sims[i, : nb.top_ids.size] = nb.top_sims
            ids[i, : nb.top_ids.size] = nb.top_ids
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
                if hist._vt is not None and count:
                    hist._vt[:, :count] = np.asarray(z["vectors"], dtype=np.float32).T
                hist.n_seen = int(z["n_seen"])
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"cannot read history file {p}: {exc}") from None
        return hist


def _as_queries(queries: np.ndarray) -> np.ndarray:
    q = np.ascontiguousarray(queries, dtype=np.float32)
    return q.reshape(1, -1) if q.ndim == 1 else q
