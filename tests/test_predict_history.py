"""The FIFO history: exact bound, eviction order, exact search after wrap-around, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sagerl.errors import DataError
from sagerl.predict.history import FifoHistory


def unit(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class Mirror:
    """Brute-force model of the history: a plain list of the last ``capacity`` entries."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.rows: list[tuple[int, int, np.ndarray]] = []

    def add(self, pt: np.ndarray, ot: np.ndarray, vecs: np.ndarray) -> list[int]:
        evicted = []
        for a, b, v in zip(pt, ot, vecs, strict=True):
            self.rows.append((int(a), int(b), v))
            if len(self.rows) > self.capacity:
                evicted.append(self.rows.pop(0)[1])
        return evicted


@pytest.mark.parametrize("capacity", [1, 7, 50])
def test_fifo_bound_and_exact_search(capacity: int) -> None:
    rng = np.random.default_rng(capacity)
    hist, mirror = FifoHistory(capacity, dim=16), Mirror(capacity)
    out_counter = 0
    for batch in [1, 3, 1, 2 * capacity + 1, 5, 1, 1, capacity, 4]:
        vecs = unit(rng, batch)
        pt = rng.integers(1, 500, batch)
        ot = np.arange(out_counter, out_counter + batch)  # unique output = identity
        out_counter += batch
        evicted = hist.add(pt, ot, vecs)
        assert sorted(evicted.tolist()) == sorted(mirror.add(pt, ot, vecs))
        assert len(hist) == len(mirror.rows) == min(out_counter, capacity)
        assert hist.index.ntotal == len(hist)
        # Range search returns exactly the mirror's entries above the threshold.
        queries = unit(rng, 3)
        for q, (slots, sims) in zip(queries, hist.range_search(queries, 0.1), strict=True):
            got = sorted(hist.output_tokens[slots].tolist())
            want = sorted(o for _, o, v in mirror.rows if float(v @ q) >= np.float32(0.1))
            assert got == want
            assert np.allclose(sims, hist.vectors()[slots] @ q, atol=1e-6)
        # The stored lengths are exactly the last `capacity` outputs.
        assert sorted(hist.output_tokens[hist.filled()].tolist()) == sorted(
            o for _, o, _ in mirror.rows
        )


def test_range_search_threshold_is_inclusive() -> None:
    hist = FifoHistory(4, dim=2)
    v = np.array([[1.0, 0.0], [0.8, 0.6]], dtype=np.float32)
    hist.add([1, 1], [10, 20], v)
    ((slots, _sims),) = hist.range_search(np.array([[1.0, 0.0]], dtype=np.float32), float(v[1, 0]))
    assert sorted(hist.output_tokens[slots].tolist()) == [10, 20]


def test_knn_and_empty_history() -> None:
    hist = FifoHistory(5, dim=4)
    _, slots = hist.knn(np.ones((2, 4), np.float32) / 2, 3)
    assert (slots == -1).all()
    assert hist.range_search(np.ones(4, np.float32) / 2, 0.0)[0][0].size == 0
    hist.add([1, 2], [3, 4], np.eye(4, dtype=np.float32)[:2])
    _sims, slots = hist.knn(np.eye(4, dtype=np.float32)[:1], 3)
    assert slots[0, 0] == 0 and slots[0, 2] == -1


def test_lengths_only_history_needs_no_vectors() -> None:
    hist = FifoHistory(3)
    assert hist.index is None
    assert hist.add([1, 2, 3, 4], [10, 20, 30, 40]).tolist() == [10]
    assert sorted(hist.output_tokens.tolist()) == [20, 30, 40]
    with pytest.raises(ValueError):
        FifoHistory(0)


def test_vectors_required_and_shapes_checked() -> None:
    hist = FifoHistory(3, dim=4)
    with pytest.raises(ValueError):
        hist.add([1], [2])
    with pytest.raises(ValueError):
        hist.add([1, 2], [2], np.zeros((2, 4), np.float32))


def test_save_load_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    hist = FifoHistory(10, dim=8)
    hist.add(rng.integers(1, 9, 23), np.arange(23), unit(rng, 23, 8))
    path = tmp_path / "h.npz"
    hist.save(path)
    back = FifoHistory.load(path)
    assert (back.capacity, back.dim, back.n_seen, len(back)) == (10, 8, 23, 10)
    assert np.array_equal(back.output_tokens, hist.output_tokens)
    assert np.array_equal(back.vectors(), hist.vectors())
    # Both continue identically: the next write evicts the same (oldest) entry.
    v = unit(rng, 1, 8)
    assert np.array_equal(hist.add([1], [99], v), back.add([1], [99], v))
    q = unit(rng, 2, 8)
    a, b = hist.range_search(q, 0.0), back.range_search(q, 0.0)
    for (sa, _), (sb, _) in zip(a, b, strict=True):
        assert sorted(hist.output_tokens[sa]) == sorted(back.output_tokens[sb])


def test_load_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read history"):
        FifoHistory.load(bad)


def test_add_after_full_does_not_touch_the_index_size() -> None:
    rng = np.random.default_rng(1)
    hist = FifoHistory(100, dim=16)
    hist.add(np.ones(100), np.arange(100), unit(rng, 100))
    storage = hist._storage()
    for i in range(250):  # far past capacity, one at a time as ``observe`` does
        hist.add([1], [1000 + i], unit(rng, 1))
    assert hist.index.ntotal == 100 and hist._storage() is storage
    assert sorted(hist.output_tokens.tolist()) == list(range(1150, 1250))
