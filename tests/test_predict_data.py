"""Evaluation splits: the warm-up pool never contains an evaluated prompt (id or text)."""

from __future__ import annotations

import numpy as np
import pytest

from sagerl.errors import DataError, UnknownNameError
from sagerl.paths import has_full_data
from sagerl.predict.data import castillo_eval, conversation_id, load_eval, sharegpt_eval
from sagerl.predict.warmup import WarmupPool, check_disjoint, normalise_text
from sagerl.workload.pool import RequestPool

MODEL = "meta-llama--Llama-3.1-8B-Instruct"


def assert_disjoint(data) -> None:  # type: ignore[no-untyped-def]
    warm_ids = set(data.warmup.prompt_ids)
    warm_texts = {normalise_text(t) for t in data.warmup.texts or []}
    for r in data.requests:
        assert r.prompt_id not in warm_ids
        assert normalise_text(r.prompt_text or "") not in warm_texts


def test_conversation_id() -> None:
    assert conversation_id("QWJhYvA_0:2") == "QWJhYvA"
    assert conversation_id("a_b_12:0") == "a_b"
    assert conversation_id("plain:3") == "plain"


def sharegpt_like() -> RequestPool:
    """12 conversations of 1-3 segments x 2 turns; one prompt text repeats across them."""
    ids, texts = [], []
    for c in range(12):
        for seg in range(1 + c % 3):
            for turn in range(2):
                ids.append(f"conv{c}_{seg * 2}:{turn}")
                texts.append("continue" if turn == 1 else f"question {c} {seg}")
    n = len(ids)
    return RequestPool(
        source="sharegpt",
        prompt_tokens=np.arange(1, n + 1),
        output_tokens=np.arange(100, 100 + n),
        texts=texts,
        prompt_ids=ids,
    )


def test_sharegpt_splits_by_conversation_and_drops_repeats() -> None:
    pool = sharegpt_like()
    data = sharegpt_eval(pool=pool, eval_fraction=0.25, seed=3)
    eval_convs = {conversation_id(r.prompt_id) for r in data.requests}
    warm_convs = {conversation_id(p) for p in data.warmup.prompt_ids}
    assert len(eval_convs) == 3 and not eval_convs & warm_convs
    assert "continue" not in (data.warmup.texts or [])  # evaluated text, so dropped from pool
    assert_disjoint(data)
    # Turns arrive in file order and the truth is the single observed length.
    ids = [r.prompt_id for r in data.requests]
    assert ids == [p for p in pool.prompt_ids if p in set(ids)]
    assert all(
        t.tolist() == [r.output_tokens] for r, t in zip(data.requests, data.truths, strict=True)
    )
    again = sharegpt_eval(pool=pool, eval_fraction=0.25, seed=3)
    assert [r.prompt_id for r in again.requests] == ids
    assert len(sharegpt_eval(pool=pool, eval_fraction=0.25, seed=3, limit=2).requests) == 2


def test_check_disjoint_names_the_clash() -> None:
    warm = WarmupPool(["a", "b"], np.array([1, 2]), np.array([3, 4]), ["Hello  World", "x"])
    check_disjoint(warm, ["c"], ["other"])
    with pytest.raises(DataError, match="prompt id 'a'"):
        check_disjoint(warm, ["a"], ["other"])
    with pytest.raises(DataError, match="prompt text"):
        check_disjoint(warm, ["c"], ["hello world"])
    assert len(warm.excluding(["a"], ["X"])) == 0


def test_castillo_sample_is_disjoint_and_seeded() -> None:
    data = castillo_eval(MODEL, name="sample_castillo", seed=1)
    assert data.requests and len(data.warmup) > 0
    assert_disjoint(data)
    assert all(len(r.length_samples) == 10 for r in data.requests)
    assert all(r.output_tokens == r.length_samples[0] for r in data.requests)
    same = castillo_eval(MODEL, name="sample_castillo", seed=1)
    other = castillo_eval(MODEL, name="sample_castillo", seed=2)
    ids = [r.prompt_id for r in data.requests]
    assert ids == [r.prompt_id for r in same.requests]
    assert ids != [r.prompt_id for r in other.requests]
    assert sorted(ids) == sorted(r.prompt_id for r in other.requests)


def test_unknown_model_and_data_set_are_clear() -> None:
    with pytest.raises(UnknownNameError, match=r"Llama-3\.1-8B-Instruct"):
        castillo_eval("meta-llama--Llama-3.1-8B", name="sample_castillo")
    with pytest.raises(UnknownNameError, match="castillo"):
        load_eval("castilo", model=MODEL)


@pytest.mark.skipif(not has_full_data(), reason="full data directory missing")
def test_full_castillo_warmup_is_disjoint() -> None:
    data = castillo_eval(MODEL)
    assert len(data.requests) == 1110
    assert len(data.warmup) > 3000
    assert_disjoint(data)
