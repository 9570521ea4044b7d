"""Pair length-only trace requests with real prompt texts of similar length.

Production traces (Azure, ServeGen, Vidur) give arrival times and true lengths but no text, while
a length predictor needs text. Pairing keeps the trace's lengths and arrivals and borrows the
text of a request from a text data set whose prompt length (tokens) is among the closest:

    trace prompt = 1,020 tokens   ->  candidates: the ``k`` texts nearest 1,020 tokens
                                       -> one of them, uniformly (seeded)

Choosing among ``k`` nearest rather than the single nearest keeps many trace requests of the same
length from all sharing one text. Cost: one sort of the text pool, then O(log N + k) per request.
"""

from __future__ import annotations

import numpy as np


def nearest_texts(
    query_tokens: np.ndarray,
    text_tokens: np.ndarray,
    rng: np.random.Generator,
    k: int = 8,
) -> np.ndarray:
    """For each query prompt length, the index of a text among the ``k`` closest in length.

    Args:
        query_tokens: Prompt lengths (tokens) of the requests that need a text.
        text_tokens: Prompt lengths (tokens) of the candidate texts.
        rng: Source of randomness for the choice among the ``k`` closest.
        k: How many closest candidates to choose from (``k=1``: the closest, ties broken by
            position in the sorted pool).

    Returns:
        int64 indices into ``text_tokens``, one per query.
    """
    queries = np.asarray(query_tokens, dtype=np.int64)
    lengths = np.asarray(text_tokens, dtype=np.int64)
    if len(lengths) == 0:
        raise ValueError("no texts to pair with")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    order = np.argsort(lengths, kind="stable")
    sorted_len = lengths[order]
    n = len(sorted_len)
    width = min(2 * k, n)
    k = min(k, width)
    pos = np.searchsorted(sorted_len, queries)
    start = np.clip(pos - k, 0, n - width)
    window = start[:, None] + np.arange(width)[None, :]  # (m, width) candidate positions
    distance = np.abs(sorted_len[window] - queries[:, None])
    closest = np.argsort(distance, axis=1, kind="stable")[:, :k]
    pick = closest[np.arange(len(queries)), rng.integers(0, k, size=len(queries))]
    return order[window[np.arange(len(queries)), pick]]
