"""The warm-up pool: public requests searched when the history is too thin, and training data.

The paper adds requests from public data sets to the search set when too few neighbours exist
(start-up). The same pool trains the ``point`` and ``tie`` heads. It must not contain any prompt
that is later evaluated, or near-duplicates inflate the scores; :meth:`WarmupPool.excluding`
drops them and :func:`check_disjoint` proves it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sagerl.errors import DataError
from sagerl.workload.pool import RequestPool


def normalise_text(text: str) -> str:
    """Case- and whitespace-insensitive form of a prompt, for duplicate detection."""
    return " ".join(text.lower().split())


@dataclass
class WarmupPool:
    """Requests with known output lengths, column-wise.

    Attributes:
        prompt_ids: Stable prompt id per row.
        prompt_tokens: Prompt length per row (tokens, int64).
        samples: ``(n, k)`` output lengths per row (tokens, int64): CASTILLO's 10 samples, or
            one column where a data set has a single answer. Each row counts as one request;
            its samples share its weight.
        texts: Prompt text per row, or ``None`` (length-only pools).
        embeddings: ``(n, 384)`` prompt vectors, or ``None`` until computed.
    """

    prompt_ids: list[str]
    prompt_tokens: np.ndarray
    samples: np.ndarray
    texts: list[str] | None = None
    embeddings: np.ndarray | None = None
    _indexes: dict[tuple[Any, int], Any] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        n = len(self.prompt_ids)
        self.prompt_tokens = np.asarray(self.prompt_tokens, dtype=np.int64)
        self.samples = np.asarray(self.samples, dtype=np.int64)
        if self.samples.ndim == 1:
            self.samples = self.samples[:, None]
        if self.prompt_tokens.shape != (n,) or self.samples.shape[0] != n:
            raise ValueError("warm-up pool columns have different lengths")
        if self.texts is not None and len(self.texts) != n:
            raise ValueError("warm-up pool texts have a different length")
        if self.embeddings is not None and self.embeddings.shape[0] != n:
            raise ValueError("warm-up pool embeddings have a different length")

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @classmethod
    def from_pool(cls, pool: RequestPool) -> WarmupPool:
        """Columns of a loaded data set (all sampled lengths where it has several)."""
        ids = pool.prompt_ids or [f"{pool.source}:{i}" for i in range(len(pool))]
        samples = pool.output_samples if pool.output_samples is not None else pool.output_tokens
        return cls(list(ids), pool.prompt_tokens, samples, pool.texts)

    def take(self, index: np.ndarray) -> WarmupPool:
        """Rows ``index`` as a new pool."""
        idx = np.asarray(index, dtype=np.int64)
        return WarmupPool(
            prompt_ids=[self.prompt_ids[i] for i in idx],
            prompt_tokens=self.prompt_tokens[idx],
            samples=self.samples[idx],
            texts=None if self.texts is None else [self.texts[i] for i in idx],
            embeddings=None if self.embeddings is None else self.embeddings[idx],
        )

    def thin(self, max_rows: int | None) -> WarmupPool:
        """At most ``max_rows`` rows, evenly spaced (keeps the mix of a grouped pool)."""
        if max_rows is None or len(self) <= max_rows:
            return self
        return self.take(np.linspace(0, len(self) - 1, max_rows).round().astype(np.int64))

    def with_embeddings(self, embeddings: np.ndarray) -> WarmupPool:
        """The same pool with prompt vectors attached."""
        return replace(self, embeddings=np.ascontiguousarray(embeddings, dtype=np.float32))

    def transposed_embeddings(self) -> np.ndarray:
        """The embeddings as a ``(dim, n)`` float32 matrix for exact search, built once.

        A flat pool is scanned with one BLAS product (:func:`~sagerl.predict.history.
        exact_search`); predictors rebuilt at every episode reset reuse the same matrix.
        """
        if self.embeddings is None:
            raise ValueError("the warm-up pool has no embeddings to search")
        key = ("transposed", 0)
        if key not in self._indexes:
            self._indexes[key] = np.ascontiguousarray(
                np.asarray(self.embeddings, dtype=np.float32).T
            )
        return self._indexes[key]

    def search_memo(self, key: tuple[Any, ...]) -> dict[bytes, Any]:
        """A dict shared by every predictor searching this pool with parameters ``key``.

        The pool never changes once built, so a query's neighbours among its rows are the same
        at every step and in every episode: :class:`~sagerl.predict.predictors.
        SageSchedPredictor` stores them here, keyed by the query vector's bytes, and an RL
        environment (a fresh predictor per episode over the same pool) searches each prompt
        once per process.
        """
        return self._indexes.setdefault(("memo", *key), {})

    def search_index(self, ivf_above: int, nprobe: int) -> Any:
        """A FAISS inner-product index over the embeddings, built once per pool and reused.

        Up to ``ivf_above`` rows the index is flat (exact). Above, it is an IVF index with
        ``2 sqrt(n)`` cells of which ``nprobe`` are scanned: a 45k-row pool then costs about
        0.3 ms per query instead of 3 (the flat scan no longer fits in the CPU cache), and
        near-duplicates at cosine >= 0.8 practically always share a scanned cell. Predictors
        rebuilt at every episode reset reuse the same index (FAISS searches are read-only).
        """
        import faiss

        if self.embeddings is None:
            raise ValueError("the warm-up pool has no embeddings to index")
        key = (ivf_above, nprobe)
        if key not in self._indexes:
            vectors = np.ascontiguousarray(self.embeddings, dtype=np.float32)
            n, dim = vectors.shape
            index: Any
            if n <= ivf_above:
                index = faiss.IndexFlatIP(dim)
            else:
                nlist = max(1, round(2 * math.sqrt(n)))
                index = faiss.IndexIVFFlat(
                    faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT
                )
                index.train(vectors)  # k-means, FAISS's fixed seed: deterministic
                index.nprobe = nprobe
            index.add(vectors)
            self._indexes[key] = index
        return self._indexes[key]

    def excluding(self, prompt_ids: Iterable[str] = (), texts: Iterable[str] = ()) -> WarmupPool:
        """Drop every row whose id, or whose normalised text, is in the given sets."""
        bad_ids = set(prompt_ids)
        bad_texts = {normalise_text(t) for t in texts}
        keep = [
            i
            for i, pid in enumerate(self.prompt_ids)
            if pid not in bad_ids
            and (self.texts is None or normalise_text(self.texts[i]) not in bad_texts)
        ]
        return self.take(np.asarray(keep, dtype=np.int64))


def check_disjoint(
    warmup: WarmupPool, prompt_ids: Iterable[str], texts: Iterable[str | None]
) -> None:
    """Raise :class:`DataError` if an evaluated prompt (by id or text) is in the warm-up pool."""
    ids = set(warmup.prompt_ids)
    clash = next((p for p in prompt_ids if p in ids), None)
    if clash is not None:
        raise DataError(f"evaluated prompt id '{clash}' is also in the warm-up pool")
    if warmup.texts is not None:
        known = {normalise_text(t) for t in warmup.texts}
        for t in texts:
            if t is not None and normalise_text(t) in known:
                raise DataError(f"evaluated prompt text {t[:60]!r} is also in the warm-up pool")
