"""The FIFO history: exact bound, eviction order, exact search after wrap-around, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sagerl.errors import DataError
from sagerl.predict.history import FifoHistory, exact_search


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
        assert hist.vectors().shape == (len(hist), 16)
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
    assert not hist.has_vectors
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


def test_add_after_full_writes_in_place() -> None:
    rng = np.random.default_rng(1)
    hist = FifoHistory(100, dim=16)
    hist.add(np.ones(100), np.arange(100), unit(rng, 100))
    storage = hist._vt
    last = unit(rng, 250)
    for i in range(250):  # far past capacity, one at a time as ``observe`` does
        hist.add([1], [1000 + i], last[i : i + 1])
    assert hist._vt is storage and len(hist) == 100
    assert sorted(hist.output_tokens.tolist()) == list(range(1150, 1250))
    slots = np.argsort(hist.output_tokens)  # oldest surviving entry first
    assert np.array_equal(hist.vectors()[slots], last[150:])


def brute(vectors: np.ndarray, q: np.ndarray, thr: float, k: int) -> tuple[list, list]:
    """Reference: float64 similarities, full sort by (-similarity, row)."""
    sims = vectors.astype(np.float64) @ q.astype(np.float64)
    order = sorted(range(len(sims)), key=lambda r: (-sims[r], r))
    return [r for r in order if sims[r] >= thr], order[:k]


@pytest.mark.parametrize("n", [0, 1, 5, 31, 257, 3000])
@pytest.mark.parametrize("k", [1, 4, 32])
def test_exact_search_matches_brute_force(n: int, k: int) -> None:
    rng = np.random.default_rng(n * 100 + k)
    dim = 24
    vecs = unit(rng, n, dim)
    if n > 10:  # duplicates and near-duplicates: ties and a crowded top list
        vecs[n // 2 : n // 2 + 5] = vecs[3]
        vecs[-3:] = vecs[3] + 1e-3
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    queries = np.concatenate([unit(rng, 5, dim), vecs[3:4] if n > 10 else unit(rng, 1, dim)])
    got = exact_search(np.ascontiguousarray(vecs.T), queries, 0.3, k)
    assert len(got) == len(queries)
    for q, nb in zip(queries, got, strict=True):
        above, top = brute(vecs, q, 0.3, k)
        # float32 BLAS vs float64: only a similarity within rounding of a boundary may differ
        sims64 = vecs.astype(np.float64) @ q.astype(np.float64)
        assert set(nb.ids.tolist()) ^ set(above) <= {
            r for r in range(n) if abs(sims64[r] - 0.3) < 1e-5
        }
        assert nb.top_ids.size == min(k, n)
        assert np.allclose(sims64[nb.top_ids], sims64[top], atol=1e-5)  # same k-th values
        assert np.all(np.diff(nb.sims) <= 0) and np.all(np.diff(nb.top_sims) <= 0)
        assert np.allclose(nb.sims, sims64[nb.ids], atol=1e-5)
        ties = nb.top_sims[1:] == nb.top_sims[:-1]
        assert np.all(np.diff(nb.top_ids)[ties] > 0)  # equal similarity: lower row first
        if nb.ids.size >= k:
            assert np.array_equal(nb.top_ids, nb.ids[:k])


def test_search_is_batch_invariant_and_matches_faiss() -> None:
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(7)
    hist = FifoHistory(500, dim=32)
    hist.add(np.ones(700), np.arange(700), unit(rng, 700, 32))  # wrapped around
    queries = np.concatenate([unit(rng, 19, 32), hist.vectors()[:5]])
    batch = hist.search(queries, 0.25, 16)
    index = faiss.IndexFlatIP(32)
    index.add(hist.vectors())
    lims, _, ids = index.range_search(queries, float(np.nextafter(np.float32(0.25), -1)))
    f_sims, f_ids = index.search(queries, 16)
    for i, q in enumerate(queries):
        (single,) = hist.search(q, 0.25, 16)
        assert np.array_equal(single.ids, batch[i].ids)
        assert np.array_equal(single.top_ids, batch[i].top_ids)
        assert sorted(batch[i].ids.tolist()) == sorted(ids[lims[i] : lims[i + 1]].tolist())
        assert np.array_equal(batch[i].top_ids, f_ids[i])
        assert np.allclose(batch[i].top_sims, f_sims[i], atol=1e-6)
