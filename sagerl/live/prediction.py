"""Prompt tokens and predicted output lengths for live requests.

Two jobs, both on the request path:

* :class:`TokenCounter` counts prompt tokens with a real tokenizer: a tiktoken vocabulary from
  ``shared/data/tokenizers`` (cl100k_base by default, loaded offline by
  :func:`sagerl.workload.tokens.load_encoding`). Where neither tiktoken nor the vocabulary is
  available it falls back to ~4 characters per token, says so once in the log, and reports
  ``tokenizer="approx"`` in ``/metrics``.
* :class:`BatchedPredictor` runs a length predictor off the event loop, batched across concurrent
  requests: requests that arrive while a batch is being predicted wait for the next batch, so
  under load one ``predict_many`` call (one embedding pass, one search) serves many requests
  and the event loop never blocks on the transformer. Finished requests are fed back
  (``observe_many``) on the same worker thread, in completion order, so the predictor needs no
  lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sagerl.errors import SagerlError
from sagerl.live.config import NO_PREDICTOR, PredictorSpec, TokenizerSpec
from sagerl.workload.request import Request

log = logging.getLogger("sagerl.live.prediction")

APPROX_CHARS_PER_TOKEN = 4.0
"""Characters per token of the fallback count (English text in BPE vocabularies)."""


class RequestError(SagerlError):
    """A client error in a request body; ``status`` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------- tokens
class TokenCounter:
    """Counts prompt tokens (see module docstring).

    Args:
        spec: Tokenizer name and manifest location.
        data_dir: Full-data directory (the manifest is ``tokenizers/manifest.json`` in it).
    """

    def __init__(self, spec: TokenizerSpec, data_dir: str | None = None) -> None:
        self.spec = spec
        self.encoding: Any = None
        self.name = "approx"
        manifest = Path(spec.manifest) if spec.manifest else None
        if manifest is None:
            from sagerl import paths

            manifest = paths.data_dir(data_dir, must_exist=False) / "tokenizers" / "manifest.json"
        try:
            from sagerl.workload.tokens import load_encoding

            if not manifest.is_file():
                raise SagerlError(f"tokenizer manifest {manifest} does not exist")
            self.encoding = load_encoding(manifest, spec.name)
            self.name = spec.name
        except SagerlError as exc:
            log.warning(
                "prompt tokens are approximated (%s chars/token): %s", APPROX_CHARS_PER_TOKEN, exc
            )

    def count(self, text: str) -> int:
        """Tokens of ``text`` (ordinary encoding: special-token strings count as text)."""
        if self.encoding is None:
            return int(len(text) / APPROX_CHARS_PER_TOKEN + 0.999)
        return len(self.encoding.encode_ordinary(text))


def prompt_of(path: str, body: dict[str, Any]) -> tuple[list[str], int]:
    """The prompt texts of an OpenAI request body and any tokens given as ids.

    Args:
        path: ``/v1/completions`` or ``/v1/chat/completions``.
        body: The parsed JSON body.

    Returns:
        ``(texts, pre-tokenised token count)``; chat messages give one text per message.

    Raises:
        RequestError: The prompt or messages field is missing or malformed (400).
    """
    if path.endswith("/chat/completions"):
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("missing field 'messages' (a non-empty list of messages)")
        texts: list[str] = []
        for k, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise RequestError(f"messages[{k}] must be an object with a string 'role'")
            content = m.get("content")
            if content is None or isinstance(content, str):
                texts.append(content or "")
            elif isinstance(content, list):
                parts = [p.get("text", "") for p in content if isinstance(p, dict)]
                texts.append("".join(p for p in parts if isinstance(p, str)))
            else:
                raise RequestError(f"messages[{k}].content must be a string or a list of parts")
        return texts, 0
    if "prompt" not in body:
        raise RequestError("missing field 'prompt'")
    prompt = body["prompt"]
    if isinstance(prompt, str):
        return [prompt], 0
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return list(prompt), 0
        if all(isinstance(p, int) for p in prompt):
            return [], len(prompt)
        if all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompt):
            return [], sum(len(p) for p in prompt)
    raise RequestError("field 'prompt' must be a string, a list of strings, or token ids")


# ---------------------------------------------------------------------------------- predictor
def build_predictor(spec: PredictorSpec, data_dir: str | None = None) -> Any:
    """The configured predictor, fitted on its warm-up pool, history loaded (``None``: none).

    Imports the predictor stack only here, so a router without a predictor never loads it (and
    only embedding predictors load onnxruntime; none needs torch at run time once the MiniLM
    ONNX files are exported).
    """
    if spec.name == NO_PREDICTOR:
        return None
    from sagerl.predict import PredictorConfig, WarmupPool, make_predictor

    predictor = make_predictor(spec.name, PredictorConfig(**{**spec.options, "name": spec.name}))
    if spec.warmup:
        from sagerl.workload.datasets import load_pool

        pools = [
            WarmupPool.from_pool(load_pool(d.name, data_dir, **d.options)) for d in spec.warmup
        ]
        predictor.fit(_merge(pools))
    if spec.history_path and Path(spec.history_path).is_file():
        predictor.load_history(spec.history_path)
        log.info("loaded predictor history from %s", spec.history_path)
    return predictor


def _merge(pools: list[Any]) -> Any:
    """One warm-up pool from several (single-answer sets repeated to the widest sample count)."""
    import numpy as np

    from sagerl.predict import WarmupPool

    if len(pools) == 1:
        return pools[0]
    width = max(p.samples.shape[1] for p in pools)
    samples = [
        np.repeat(p.samples, -(-width // p.samples.shape[1]), axis=1)[:, :width] for p in pools
    ]
    texts = None if any(p.texts is None for p in pools) else [t for p in pools for t in p.texts]
    return WarmupPool(
        prompt_ids=[i for p in pools for i in p.prompt_ids],
        prompt_tokens=np.concatenate([p.prompt_tokens for p in pools]),
        samples=np.concatenate(samples),
        texts=texts,
    )


class BatchedPredictor:
    """Predictions off the event loop, batched across concurrent requests.

    Args:
        predictor: Anything with ``predict_many(requests)`` and ``observe_many(requests,
            output_tokens)`` (a :class:`sagerl.predict.Predictor`).
        max_batch: Most requests per ``predict_many`` call.

    One worker thread runs one batch at a time; while it runs, new requests queue, and the next
    batch takes them all (up to ``max_batch``). Observations queue too and are applied before
    the next batch. Counters (batches, requests, latencies) feed ``/metrics``.
    """

    def __init__(self, predictor: Any, max_batch: int = 64) -> None:
        self.predictor = predictor
        self.max_batch = max_batch
        self._pending: list[tuple[Request, asyncio.Future[Any], float]] = []
        self._observed: list[tuple[Request, int]] = []
        self._busy = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sagerl-predict")
        self.batches = 0
        self.predicted = 0
        self.observed = 0
        self.errors = 0
        self.batch_seconds: list[float] = []  # drained by the metrics histogram
        self.wait_seconds: list[float] = []

    async def predict(self, request: Request) -> Any:
        """The length distribution of ``request`` (awaits its batch)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((request, fut, time.perf_counter()))
        self._kick()
        return await fut

    def observe(self, request: Request, output_tokens: int) -> None:
        """Queue a finished request for the predictor's history (applied on the worker)."""
        self._observed.append((request, output_tokens))
        self._kick()

    def _kick(self) -> None:
        if self._busy or not (self._pending or self._observed):
            return
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        observed, self._observed = self._observed, []
        self._busy = True
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self._executor, self._work, [b[0] for b in batch], observed)
        job.add_done_callback(lambda f: self._done(batch, f))

    def _work(
        self, requests: Sequence[Request], observed: Sequence[tuple[Request, int]]
    ) -> tuple[list[Any], float]:
        if observed:
            try:
                self.predictor.observe_many([o[0] for o in observed], [o[1] for o in observed])
                self.observed += len(observed)
            except Exception:  # NOTE: a bad observation must not stop predictions
                log.exception("predictor observe failed")
        if not requests:
            return [], 0.0
        t0 = time.perf_counter()
        out = self.predictor.predict_many(requests)
        return list(out), time.perf_counter() - t0

    def _done(self, batch: list[tuple[Request, asyncio.Future[Any], float]], job: Any) -> None:
        self._busy = False
        now = time.perf_counter()
        exc = job.exception()
        if exc is not None:
            self.errors += 1
            log.error("prediction batch of %d failed: %s", len(batch), exc)
            for _, fut, _ in batch:
                if not fut.done():
                    fut.set_result(None)  # NOTE: place without a prediction rather than fail
        else:
            preds, seconds = job.result()
            if batch:
                self.batches += 1
                self.predicted += len(batch)
                self.batch_seconds.append(seconds)
            for (_, fut, t0), pred in zip(batch, preds, strict=True):
                self.wait_seconds.append(now - t0)
                if not fut.done():
                    fut.set_result(pred)
        self._kick()

    def history_size(self) -> int:
        """Entries in the predictor's online history (0 if it keeps none)."""
        history = getattr(self.predictor, "history", None)
        return len(history) if history is not None else 0

    async def drain(self) -> None:
        """Wait until queued predictions and observations are applied."""
        while self._busy or self._pending or self._observed:
            await asyncio.sleep(0.005)

    def close(self, history_path: str | None = None) -> None:
        """Stop the worker; save the history when a path is given."""
        self._executor.shutdown(wait=True)
        if history_path and getattr(self.predictor, "history", None) is not None:
            Path(history_path).parent.mkdir(parents=True, exist_ok=True)
            self.predictor.save_history(history_path)
            log.info("saved predictor history to %s", history_path)
