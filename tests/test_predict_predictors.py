"""The predictors on small hand-made embeddings (no model, no data directory)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from sagerl.errors import SagerlError, UnknownNameError
from sagerl.predict import PredictorConfig, WarmupPool, make_predictor, predictor_names
from sagerl.predict.config import TrainConfig
from sagerl.predict.distribution import LengthDistribution
from sagerl.predict.embedder import Embedder
from sagerl.predict.heads import train_head
from sagerl.workload.request import Request

DIM = 8


class FakeEmbedder(Embedder):
    """Text ``"<topic> <words>"`` -> the topic's axis plus a little text-seeded noise."""

    dim = DIM

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def _compute(self, texts: list[str]) -> np.ndarray:
        self.calls += len(texts)
        return np.stack([fake_vector(t) for t in texts])


def fake_vector(text: str) -> np.ndarray:
    topic = int(text.split()[0]) % DIM
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    v = np.eye(DIM, dtype=np.float32)[topic] + 0.05 * np.random.default_rng(seed).standard_normal(
        DIM
    ).astype(np.float32)
    return v / np.linalg.norm(v)


def axis(i: int, tilt: float = 0.0, j: int | None = None) -> np.ndarray:
    """Unit vector on axis i, tilted towards axis j (cosine to axis i = 1/sqrt(1+tilt^2))."""
    v = np.eye(DIM, dtype=np.float32)[i].copy()
    if j is not None:
        v[j] = tilt
    return v / np.linalg.norm(v)


def request(i: int, text: str | None, prompt: int = 50, out: int = 100, samples=()) -> Request:
    return Request(
        id=i,
        arrival=float(i),
        prompt_tokens=prompt,
        output_tokens=out,
        prompt_text=text,
        prompt_id=f"p{i}",
        length_samples=tuple(samples),
    )


def cfg(**kw: object) -> PredictorConfig:
    base: dict[str, object] = {"similarity": 0.8, "min_neighbors": 2, "k_fallback": 3}
    base.update(kw)
    return PredictorConfig(**base)


def warm_pool(vectors: np.ndarray, samples: np.ndarray, prompt_tokens=None) -> WarmupPool:
    n = len(vectors)
    pt = np.full(n, 50) if prompt_tokens is None else np.asarray(prompt_tokens)
    return WarmupPool([f"w{i}" for i in range(n)], pt, samples, None, vectors)


# ---------------------------------------------------------------------- registry
def test_names_and_unknown_name() -> None:
    assert set(predictor_names()) == {
        "sagesched",
        "length-history",
        "point",
        "tie",
        "global",
        "oracle",
    }
    with pytest.raises(UnknownNameError, match=r"unknown predictor 'sagesced'.*sagesched"):
        make_predictor("sagesced")


# ---------------------------------------------------------------------- sagesched
def test_sagesched_uses_history_neighbours_when_enough() -> None:
    p = make_predictor("sagesched", cfg(), FakeEmbedder())
    near = np.stack([axis(0, 0.1, 1), axis(0, 0.2, 2), axis(0, 0.3, 3)])
    far = np.stack([axis(4), axis(5)])
    p.observe_embeddings(np.vstack([near, far]), np.full(5, 10), np.array([100, 110, 120, 7, 8]))
    p.fit(warm_pool(np.stack([axis(0)]), np.array([[999, 999]])))
    d = p.predict_from_embedding(axis(0), 10)
    assert d.support.tolist() == [100, 110, 120]  # warm-up not consulted: 3 >= min_neighbors
    assert np.allclose(d.probs, 1 / 3)


def test_sagesched_adds_warmup_below_min_neighbours() -> None:
    p = make_predictor("sagesched", cfg(min_neighbors=3), FakeEmbedder())
    p.observe_embeddings(axis(0, 0.1, 1)[None], np.array([10]), np.array([100]))
    warm = np.stack([axis(0, 0.2, 2), axis(0, 0.3, 3), axis(6)])
    p.fit(warm_pool(warm, np.array([[200, 300], [400, 400], [5, 5]])))
    d = p.predict_from_embedding(axis(0), 10)
    # One history neighbour (weight 1) plus two warm-up rows spreading weight 1 over 2 samples.
    assert d.support.tolist() == [100, 200, 300, 400]
    assert np.allclose(d.probs, np.array([1, 0.5, 0.5, 1]) / 3)


def test_sagesched_falls_back_to_k_nearest() -> None:
    p = make_predictor("sagesched", cfg(min_neighbors=2, k_fallback=3), FakeEmbedder())
    # Nothing reaches cosine 0.8; similarity to axis 0 decreases with the tilt.
    hist = np.stack([axis(0, 1.2, 1), axis(0, 3.0, 2), axis(5)])
    p.observe_embeddings(hist, np.full(3, 10), np.array([11, 33, 55]))
    p.fit(warm_pool(np.stack([axis(0, 1.0, 3), axis(0, 2.0, 4)]), np.array([[22], [44]])))
    d = p.predict_from_embedding(axis(0), 10)
    assert d.support.tolist() == [11, 22, 44]  # the 3 most similar across history and pool


def test_sagesched_prior_without_any_data_and_caps() -> None:
    p = make_predictor("sagesched", cfg(prior_length=321), FakeEmbedder())
    assert p.predict_from_embedding(axis(0), 10) == LengthDistribution.point(321)
    capped = make_predictor("sagesched", cfg(max_neighbors=2, min_neighbors=0), FakeEmbedder())
    vecs = np.stack([axis(0, 0.1, 1), axis(0, 0.5, 2), axis(0, 0.05, 3)])
    capped.observe_embeddings(vecs, np.full(3, 5), np.array([1, 2, 3]))
    assert capped.predict_from_embedding(axis(0), 5).support.tolist() == [1, 3]
    weighted = make_predictor("sagesched", cfg(weighting="similarity"), FakeEmbedder())
    weighted.observe_embeddings(vecs, np.full(3, 5), np.array([1, 2, 3]))
    d = weighted.predict_from_embedding(axis(0), 5)
    sims = vecs @ axis(0)
    assert np.allclose(d.probs, sims / sims.sum(), atol=1e-6)


def test_sagesched_online_fifo_and_text_path() -> None:
    emb = FakeEmbedder()
    p = make_predictor("sagesched", cfg(history_size=4, min_neighbors=1), emb)
    reqs = [request(i, f"1 prompt number {i}", out=100 + i) for i in range(10)]
    for r in reqs:
        p.predict(r)
        p.observe(r, r.output_tokens)
    assert len(p.history) == 4
    assert sorted(p.history.output_tokens.tolist()) == [106, 107, 108, 109]
    assert emb.calls == 10  # observe reuses the vector computed by predict (LRU cache)
    d = p.predict(request(11, "1 a new prompt"))
    assert d.support.tolist() == [106, 107, 108, 109]
    with pytest.raises(SagerlError, match="needs prompt text"):
        p.predict(request(12, None))


def test_sagesched_is_deterministic_and_batch_equals_single() -> None:
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((60, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    outs = rng.integers(1, 900, 60)
    runs = []
    for _ in range(2):
        p = make_predictor("sagesched", cfg(similarity=0.5), FakeEmbedder())
        p.fit(warm_pool(vecs[40:], outs[40:, None]))
        p.observe_embeddings(vecs[:30], np.full(30, 9), outs[:30])
        runs.append(p.predict_from_embeddings(vecs[30:40], np.full(10, 9)))
        single = [p.predict_from_embedding(v, 9) for v in vecs[30:40]]
        assert all(a == b for a, b in zip(runs[-1], single, strict=True))
    assert all(a == b for a, b in zip(*runs, strict=True))


def test_history_save_load(tmp_path: Path) -> None:
    p = make_predictor("sagesched", cfg(), FakeEmbedder())
    p.observe_embeddings(np.stack([axis(0), axis(1)]), np.array([5, 6]), np.array([50, 60]))
    p.save_history(tmp_path / "h.npz")
    q = make_predictor("sagesched", cfg(), FakeEmbedder())
    q.load_history(tmp_path / "h.npz")
    assert q.predict_from_embedding(axis(0), 5) == p.predict_from_embedding(axis(0), 5)
    with pytest.raises(SagerlError, match="keeps no history"):
        make_predictor("oracle").save_history(tmp_path / "x.npz")
    g = make_predictor("length-history", cfg())
    with pytest.raises(SagerlError, match="width"):
        g.load_history(tmp_path / "h.npz")


# ---------------------------------------------------------------------- length-history
def test_length_history_window_warmup_and_nearest() -> None:
    p = make_predictor("length-history", cfg(min_neighbors=2, k_fallback=2, length_tolerance=0.1))
    p.fit(warm_pool(np.zeros((3, DIM)), np.array([[1], [2], [3]]), prompt_tokens=[100, 105, 500]))
    p.observe_many([request(0, None, prompt=98), request(1, None, prompt=300)], [7, 8])
    # 98 is within 10% of 100: one history neighbour, so the pool's 100 and 105 are added.
    assert p.predict(request(2, None, prompt=100)).support.tolist() == [1, 2, 7]
    # Nothing within 10% of 1000: the two nearest in log length (500 and 300).
    assert p.predict(request(3, None, prompt=1000)).support.tolist() == [3, 8]
    p.observe_many([request(4, None, prompt=1010), request(5, None, prompt=990)], [40, 41])
    assert p.predict(request(6, None, prompt=1000)).support.tolist() == [40, 41]


# ---------------------------------------------------------------------- global
def test_global_counts_match_the_last_outputs() -> None:
    p = make_predictor("global", cfg(history_size=5, global_min_history=3))
    p.fit(warm_pool(np.zeros((2, DIM)), np.array([[1000, 2000], [3000, 3000]])))
    d = p.predict(request(0, None))
    assert d.support.tolist() == [1000, 2000, 3000]
    assert np.allclose(d.probs, [0.25, 0.25, 0.5])
    outs = [5, 5, 7, 9, 11, 13, 5, 2]
    for i, o in enumerate(outs):
        p.observe(request(i, None), o)
    last = np.array(outs[-5:], dtype=float)
    assert p.predict(request(9, None)) == LengthDistribution(last)


# ---------------------------------------------------------------------- oracle
def test_oracle_reads_the_truth() -> None:
    p = make_predictor("oracle")
    assert p.predict(request(0, None, out=42)) == LengthDistribution.point(42)
    d = p.predict(request(1, None, out=1, samples=(3, 3, 9)))
    assert d.support.tolist() == [3, 9] and np.allclose(d.probs, [2 / 3, 1 / 3])


# ---------------------------------------------------------------------- trained heads
def head_data(seed: int = 0, n: int = 240) -> WarmupPool:
    """Topic t has outputs around 50 * 2**t: the heads must learn the topic."""
    rng = np.random.default_rng(seed)
    topics = rng.integers(0, 4, n)
    vecs = np.stack([fake_vector(f"{t} row {i}") for i, t in enumerate(topics)])
    base = 50.0 * 2.0 ** topics[:, None]
    samples = np.round(base * np.exp(0.2 * rng.standard_normal((n, 3)))).astype(np.int64)
    return warm_pool(vecs, samples)


FAST = TrainConfig(steps=300, hidden=32, lr=3e-3)


@pytest.mark.parametrize("kind", ["point", "tie"])
def test_heads_are_deterministic_and_learn(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGERL_CACHE", str(tmp_path))  # fit() caches the head
    data = head_data()
    a = train_head(kind, data.embeddings, data.prompt_tokens, data.samples, FAST, use_cache=False)
    b = train_head(kind, data.embeddings, data.prompt_tokens, data.samples, FAST, use_cache=False)
    assert np.array_equal(a.w1, b.w1) and np.array_equal(a.w2, b.w2)
    other = FAST.model_copy(update={"seed": 1})
    c = train_head(kind, data.embeddings, data.prompt_tokens, data.samples, other, use_cache=False)
    assert not np.array_equal(a.w1, c.w1)
    p = make_predictor(kind, PredictorConfig(train=FAST), FakeEmbedder())
    p.fit(data)
    means = [p.predict_from_embedding(fake_vector(f"{t} new"), 50).mean() for t in range(4)]
    assert list((tmp_path / "heads").glob(f"{kind}-*.npz"))
    assert means == sorted(means) and means[3] > 4 * means[0]
    if kind == "tie":
        d = p.predict_from_embedding(fake_vector("2 new"), 50)
        assert len(d) == PredictorConfig().train.tie_points and d.quantile(0.1) < d.quantile(0.9)


def test_heads_must_be_fit_first() -> None:
    p = make_predictor("point", PredictorConfig(), FakeEmbedder())
    with pytest.raises(SagerlError, match="must be fit"):
        p.predict_from_embedding(axis(0), 5)


def test_large_pools_get_a_reused_ivf_index() -> None:
    rng = np.random.default_rng(5)
    centers = rng.standard_normal((20, DIM)).astype(np.float32)
    vecs = np.repeat(centers, 30, axis=0) + 0.02 * rng.standard_normal((600, DIM)).astype(
        np.float32
    )
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    pool = warm_pool(vecs, np.repeat(np.arange(20) * 100 + 50, 30)[:, None])
    flat, ivf = pool.search_index(10_000, 4), pool.search_index(100, 4)
    assert type(flat).__name__ == "IndexFlatIP" and type(ivf).__name__ == "IndexIVFFlat"
    assert pool.search_index(100, 4) is ivf  # built once, reused by every fit
    exact = make_predictor("sagesched", cfg(min_neighbors=5), FakeEmbedder())
    approx = make_predictor(
        "sagesched", cfg(min_neighbors=5, warmup_ivf_above=100, warmup_nprobe=4), FakeEmbedder()
    )
    exact.fit(pool)
    approx.fit(pool)
    queries = centers / np.linalg.norm(centers, axis=1, keepdims=True)
    a = exact.predict_from_embeddings(queries, np.full(20, 5))
    b = approx.predict_from_embeddings(queries, np.full(20, 5))
    assert all(x == y for x, y in zip(a, b, strict=True))
    assert all(i * 100 + 50 in d.support for i, d in enumerate(a))


SAGESCHED_STREAM_DIGEST = "9d6773639b16fb22c81b1db74ee0f7d22e3d7a952e89257e2f8101209a947720"
"""sha256 of :func:`sagesched_stream_digest`, recorded before the per-step speed-ups of the
SageSched predictor (memoised pool search, trusted distribution constructor). They must not change
a single bit of a prediction."""


def sagesched_stream_digest() -> str:
    """Hash of every prediction (support and probabilities, bit for bit) of a streaming run:
    clustered prompts hit the history's range search, the warm-up pool's, and the k-nearest
    fallback; three configurations (equal weights, similarity weights, a neighbour cap), each
    run twice by fresh predictors over the same pool (an environment's episodes), single
    queries plus a batch every 25 steps."""
    rng = np.random.default_rng(11)
    centers = rng.standard_normal((12, DIM)).astype(np.float32)
    topic = rng.integers(0, 12, 460)
    vecs = centers[topic] + rng.uniform(0.05, 0.6, (460, 1)).astype(np.float32) * (
        rng.standard_normal((460, DIM)).astype(np.float32)
    )
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    outs = rng.integers(1, 60, 460) * 7 + topic * 40  # integer lengths with many duplicates
    samples = np.stack([outs[:100] + j * 3 for j in range(3)], axis=1)
    pool = warm_pool(vecs[:100], samples)
    h = hashlib.sha256()

    def update(d: LengthDistribution) -> None:
        h.update(d.support.tobytes())
        h.update(d.probs.tobytes())
        h.update(f"{d.support.dtype}{d.probs.dtype}".encode())

    configs = (
        cfg(min_neighbors=6, k_fallback=8, history_size=120),
        cfg(min_neighbors=6, k_fallback=8, history_size=120, weighting="similarity"),
        cfg(min_neighbors=3, k_fallback=5, history_size=120, max_neighbors=7),
    )
    for config in configs:
        for _ in range(2):
            p = make_predictor("sagesched", config, FakeEmbedder())
            p.fit(pool)
            for i in range(100, 460):
                update(p.predict_from_embedding(vecs[i], 9))
                if i % 25 == 0:
                    for d in p.predict_from_embeddings(vecs[i : i + 6], np.full(6, 9)):
                        update(d)
                p.observe_embeddings(vecs[i : i + 1], np.array([9]), outs[i : i + 1])
    return h.hexdigest()


def test_sagesched_stream_digest_is_unchanged() -> None:
    assert sagesched_stream_digest() == SAGESCHED_STREAM_DIGEST


def test_pool_search_is_memoised_per_pool_and_equals_a_fresh_search() -> None:
    """Predictors fitted to one pool share its memo of single-query searches; a hit is
    read-only and equals the search it replaces; batches neither read nor fill it."""
    rng = np.random.default_rng(4)
    vecs = rng.standard_normal((50, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    pool = warm_pool(vecs[:40], rng.integers(1, 500, (40, 2)))
    a = make_predictor("sagesched", cfg(similarity=0.5, min_neighbors=4), FakeEmbedder())
    b = make_predictor("sagesched", cfg(similarity=0.5, min_neighbors=4), FakeEmbedder())
    other = make_predictor("sagesched", cfg(similarity=0.6, min_neighbors=4), FakeEmbedder())
    for p in (a, b, other):
        p.fit(pool)
    assert a._warm_memo is b._warm_memo and a._warm_memo is not other._warm_memo
    batch = a.predict_from_embeddings(vecs[40:], np.full(10, 9))
    assert not a._warm_memo  # batches are searched as before
    first = [a.predict_from_embedding(v, 9) for v in vecs[40:]]
    assert len(a._warm_memo) == 10
    hit = next(iter(a._warm_memo.values()))
    assert not any(arr.flags.writeable for arr in hit)
    again = [b.predict_from_embedding(v, 9) for v in vecs[40:]]  # every pool search a hit
    assert len(a._warm_memo) == 10
    for x, y, z in zip(first, again, batch, strict=True):
        assert x.support.tobytes() == y.support.tobytes()
        assert x.probs.tobytes() == y.probs.tobytes()
        assert x == z
    q = vecs[41:42]
    fresh = b._warm_search_many(q)[0]
    memo = b._warm_search(q)[0]
    assert all(np.array_equal(f, m) for f, m in zip(fresh, memo, strict=True))
