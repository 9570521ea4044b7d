"""Prompt tokens and the batched, off-loop length predictor of the router."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from sagerl.live.config import TokenizerSpec
from sagerl.live.prediction import BatchedPredictor, RequestError, TokenCounter, prompt_of
from sagerl.paths import has_full_data
from sagerl.predict.distribution import LengthDistribution
from sagerl.workload.request import Request


class SlowPredictor:
    """Records its batches and the thread it runs on; 20 ms per batch."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.threads: set[str] = set()
        self.observed: list[int] = []
        self.history = self.observed

    def predict_many(self, requests: Sequence[Request]) -> list[LengthDistribution]:
        self.threads.add(threading.current_thread().name)
        self.batches.append(len(requests))
        time.sleep(0.02)
        return [LengthDistribution.point(r.prompt_tokens) for r in requests]

    def observe_many(self, requests: Sequence[Request], output_tokens: Sequence[int]) -> None:
        self.observed.extend(output_tokens)


def test_predictions_are_batched_off_the_event_loop() -> None:
    inner = SlowPredictor()

    async def go() -> tuple[list[float], float]:
        bp = BatchedPredictor(inner, max_batch=16)
        loop_blocked = 0.0

        async def ticker() -> None:
            nonlocal loop_blocked
            last = time.perf_counter()
            for _ in range(20):
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                loop_blocked = max(loop_blocked, now - last - 0.005)
                last = now

        tick = asyncio.ensure_future(ticker())
        preds = await asyncio.gather(*(bp.predict(Request(k, 0.0, 10 + k, 0)) for k in range(40)))
        await tick
        bp.observe(Request(0, 0.0, 10, 0), 77)
        await bp.drain()
        bp.close()
        return [float(p.support[0]) for p in preds], loop_blocked

    means, blocked = asyncio.run(go())
    assert means == [10.0 + k for k in range(40)]  # each request gets its own prediction
    assert sum(inner.batches) == 40 and len(inner.batches) <= 5  # 1 + 16 + 16 + 7, roughly
    assert max(inner.batches) > 1
    assert all(t.startswith("sagerl-predict") for t in inner.threads)
    assert blocked < 0.015  # the 20 ms batches never ran on the loop
    assert inner.observed == [77]


def test_a_failing_batch_places_without_prediction() -> None:
    class Broken(SlowPredictor):
        def predict_many(self, requests: Sequence[Request]) -> list[LengthDistribution]:
            raise RuntimeError("boom")

    async def go() -> object:
        bp = BatchedPredictor(Broken())
        out = await bp.predict(Request(0, 0.0, 5, 0))
        bp.close()
        return (out, bp.errors)

    assert asyncio.run(go()) == (None, 1)


def test_prompt_extraction() -> None:
    assert prompt_of("/v1/completions", {"prompt": "hi"}) == (["hi"], 0)
    assert prompt_of("/v1/completions", {"prompt": ["a", "b"]}) == (["a", "b"], 0)
    assert prompt_of("/v1/completions", {"prompt": [1, 2, 3]}) == ([], 3)
    assert prompt_of("/v1/completions", {"prompt": [[1, 2], [3]]}) == ([], 3)
    parts = [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {}}]
    chat = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": parts},
        ]
    }
    assert prompt_of("/v1/chat/completions", chat) == (["be brief", "hi"], 0)
    for bad in ({}, {"prompt": 3}, {"prompt": []}, {"prompt": [1, "a"]}):
        with pytest.raises(RequestError):
            prompt_of("/v1/completions", bad)
    with pytest.raises(RequestError, match="messages"):
        prompt_of("/v1/chat/completions", {"messages": "hi"})


@pytest.mark.skipif(not has_full_data(), reason="needs shared/data/tokenizers")
def test_token_counter_uses_the_real_tokenizer() -> None:
    pytest.importorskip("tiktoken")
    tc = TokenCounter(TokenizerSpec())
    assert tc.name == "cl100k_base"
    assert tc.count("hello world") == 2  # [15339, 1917] in data/README.md's test vectors


def test_token_counter_falls_back_visibly(tmp_path: Path) -> None:
    tc = TokenCounter(TokenizerSpec(manifest=str(tmp_path / "missing.json")))
    assert tc.name == "approx" and tc.count("a" * 40) == 10
