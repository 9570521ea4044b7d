"""The router: an OpenAI-compatible ASGI app (Starlette on uvicorn) in front of model servers.

Per request (``POST /v1/completions`` or ``/v1/chat/completions``, streamed or not)::

    body (size-capped) -> JSON -> checks (4xx with a message) -> prompt tokens (tiktoken)
      -> [prediction, batched off the loop] -> ledger.accept
      -> views (ledger + fresh scrapes) -> policy.choose -> forward (keep-alive pool: upstream.py)
      -> first byte? no: mark the backend, choose again among the others (retry)
      -> stream the rest back as it comes (bytes passed through, SSE events counted)
      -> ledger.finish -> metrics, predictor history, transition log

Failure rules: a backend that refuses the connection is marked unhealthy and the request goes
to another; one that answers 5xx before the first byte is skipped for this request; a failure
after the first streamed byte ends the client's stream with an error event
(``data: {"error": {...}}``); every accepted request is accounted for in the ledger. Failed
scrapes mark a backend unhealthy only if it answered no request within ``stale_after_s`` (a
router starved of CPU times its own scrapes out). The router connects only to configured
backend URLs, never to anything a request names.

Hot path cost: the router reads no SSE event as JSON; it counts ``data:`` markers in the bytes
it forwards and reads the usage block (when the backend sends one) from the stream's tail. After
the first chunk, a stream is forwarded from the upstream protocol's callback
(:meth:`~sagerl.live.upstream.Response.pipe`, :func:`~sagerl.live.asgi.send_now`): per socket
read one ``send`` and no task wake-up, and the read that completes the stream ends the response
in the same write.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import math
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sagerl.errors import SagerlError
from sagerl.live import metrics as m
from sagerl.live.asgi import send_now
from sagerl.live.backends import BackendRegistry
from sagerl.live.config import ServeConfig
from sagerl.live.ledger import Flight, Ledger
from sagerl.live.policy_runtime import PolicyRuntime, make_runtime
from sagerl.live.prediction import (
    BatchedPredictor,
    RequestError,
    TokenCounter,
    build_predictor,
    prompt_of,
)
from sagerl.live.scrape import FIELDS, Scraper
from sagerl.live.translog import TransitionLog, decision_record, prediction_summary
from sagerl.live.upstream import Pool, UpstreamError, encode_headers
from sagerl.live.upstream import Response as UpstreamResponse
from sagerl.live.views import build_views
from sagerl.workload.request import Request

log = logging.getLogger("sagerl.live.router")

_USAGE_RE = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
_DONE = b"data: [DONE]"
_TAIL = 1024
COMPLETION_PATHS = ("/v1/completions", "/v1/chat/completions")
MAX_PRIORITY = 2**31 - 1
"""vLLM's ``priority`` is an integer; ranks (token²) are rounded and capped to int32."""


def openai_error(status: int, message: str, kind: str | None = None) -> JSONResponse:
    """An error body in OpenAI's shape, which the ``openai`` client turns into an exception."""
    kind = kind or ("invalid_request_error" if status < 500 else "upstream_error")
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": status}},
        status_code=status,
    )


def sse_error(message: str, status: int = 502) -> bytes:
    """A server-sent error event that ends a stream (the ``openai`` client raises on it)."""
    err = {"error": {"message": message, "type": "upstream_error", "param": None, "code": status}}
    return b"data: " + json.dumps(err).encode() + b"\n\n"


def _count_events(chunk: bytes) -> int:
    """SSE data events in ``chunk`` other than ``[DONE]`` (about one per token for vLLM)."""
    n = chunk.count(b"data:")
    if n and _DONE in chunk:
        n -= 1
    return n


class RouterMetrics:
    """The router's Prometheus metrics (names prefixed ``sagerl_``)."""

    def __init__(self) -> None:
        self.requests = m.Counter(
            "sagerl_requests_total", "HTTP requests answered, by endpoint and status.",
            ("endpoint", "status"),
        )  # fmt: skip
        self.outcomes = m.Counter(
            "sagerl_request_outcomes_total", "Accepted requests by final state.", ("outcome",)
        )
        self.decisions = m.Counter(
            "sagerl_decisions_total", "Placement decisions by policy and backend.",
            ("policy", "backend"),
        )  # fmt: skip
        self.retries = m.Counter(
            "sagerl_retries_total", "Requests moved off a backend that failed before the first "
            "byte.", ("backend",),
        )  # fmt: skip
        self.ttft = m.Histogram(
            "sagerl_ttft_seconds", "Time to first byte from the backend, as the router sees it.",
            m.LATENCY_BUCKETS,
        )  # fmt: skip
        self.ttlt = m.Histogram(
            "sagerl_ttlt_seconds", "Time to last byte of completed requests.", m.LATENCY_BUCKETS
        )
        self.overhead = m.Histogram(
            "sagerl_router_overhead_seconds",
            "Router processing per request: body received to upstream request sent, plus first "
            "upstream byte to first byte forwarded (excludes prediction wait).",
            m.FAST_BUCKETS,
        )
        self.predict_batch = m.Histogram(
            "sagerl_predictor_batch_seconds", "Compute time of one predict_many batch.",
            m.FAST_BUCKETS,
        )  # fmt: skip
        self.predict_wait = m.Histogram(
            "sagerl_predictor_latency_seconds",
            "Time a request waited for its prediction (queue + batch).", m.FAST_BUCKETS,
        )  # fmt: skip


class Router:
    """State of one router process: backends, ledger, scrapes, policy, predictor, logs.

    Args:
        config: The validated serve config (its ``backends`` are the only upstreams).

    Build the ASGI app with :meth:`app`; the app's lifespan starts and stops the scraper, the
    HTTP client pool and the transition log.
    """

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.registry = BackendRegistry(config.backends)
        n = len(self.registry)
        self.ledger = Ledger(n)
        self.policy: PolicyRuntime = make_runtime(config.policy, n)
        self.tokens = TokenCounter(config.tokenizer, config.data_dir)
        predictor = build_predictor(config.predictor, config.data_dir)
        self.predictor = (
            None if predictor is None else BatchedPredictor(predictor, config.predictor.max_batch)
        )
        self.translog = TransitionLog(config.transition_log) if config.transition_log else None
        keys = list(config.api_keys)
        keys += [k for k in os.environ.get("SAGERL_API_KEYS", "").split(",") if k.strip()]
        self.api_keys = [k.strip().encode() for k in keys]
        self.metrics = RouterMetrics()
        limits = config.limits
        self.pools = [
            Pool(b.url, limits.connect_timeout_s, limits.upstream_timeout_s)
            for b in self.registry.backends
        ]
        self.scraper = Scraper(
            [b.url for b in self.registry.backends],
            [b.spec.engine for b in self.registry.backends],
            [b.label for b in self.registry.backends],
            self._fetch_text,
            config.scrape.interval_s,
            config.scrape.timeout_s,
            self._on_scrape,
            lambda i: (
                self.ledger.in_flight(i),
                self.ledger.kv_tokens[i],
                self.ledger.dispatched[i],
            ),
        )
        self.draining = False
        self._ids = itertools.count()
        self._labels = [b.label for b in self.registry.backends]
        self._by_url = {b.url: b.index for b in self.registry.backends}
        self._answered_at = [-math.inf] * n
        """When each backend last answered a request (a status line), ``time.monotonic()``."""
        self._stream_tasks: set[asyncio.Task[Any]] = set()
        self.started_at = time.time()
        models = config.served_models or sorted({b.spec.model for b in self.registry.backends})
        self.models = models

    # ------------------------------------------------------------------ lifecycle
    async def startup(self) -> None:
        """Start scraping and the transition log (connections open on first use)."""
        self.scraper.start()
        if self.translog is not None:
            self.translog.start()
        log.info(
            "router: %d backend(s), policy %s, predictor %s, tokenizer %s",
            len(self.registry), self.policy.name, self.config.predictor.name, self.tokens.name,
        )  # fmt: skip

    async def shutdown(self) -> None:
        """Stop scraping, flush the transition log, save the predictor history, close the pool."""
        self.draining = True
        await self.scraper.stop()
        if self.predictor is not None:
            await self.predictor.drain()
        if self.translog is not None:
            await self.translog.close()
        if self.predictor is not None:
            await asyncio.to_thread(self.predictor.close, self.config.predictor.history_path)
        for pool in self.pools:
            pool.close()
        t = self.ledger.totals()
        log.info("router stopped: %s", t)

    async def _fetch_text(self, url: str, timeout_s: float) -> str:
        """GET a backend's ``/metrics`` over its pool (the scraper's transport)."""
        pool = self.pools[self._by_url[url.removesuffix("/metrics")]]
        resp = await pool.request("GET", "/metrics")
        text = (await resp.read()).decode("utf-8", "replace")
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
        return text

    def _on_scrape(self, i: int, ok: bool) -> None:
        state = self.scraper.states[i]
        if ok:
            self.registry.mark_up(i)
        elif state.failures >= self.config.scrape.unhealthy_after:
            # NOTE: a backend that answered a request within stale_after_s is alive whatever its
            # /metrics says. Under CPU starvation the router's own loop lags past the scrape
            # timeout, and marking every backend down then failed all traffic with 503s.
            if time.monotonic() - self._answered_at[i] <= self.config.scrape.stale_after_s:
                return
            self.registry.mark_down(i, f"{state.failures} failed scrapes ({state.error})")

    # ------------------------------------------------------------------ app
    def app(self) -> Any:
        """The ASGI application.

        The two completion routes are served by :meth:`handle_completion` directly (raw ASGI:
        no Request object, no middleware wrapper around every streamed chunk); everything else
        (models, metrics, health, lifespan, 404/405) by a Starlette app.
        """

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            await self.startup()
            try:
                yield
            finally:
                await self.shutdown()

        async def completion_route(request: HttpRequest) -> Response:
            # Reached only by non-POST methods (405): POSTs take the raw path below.
            return await self.completion(request.scope, request.receive)

        routes = [
            *(Route(p, completion_route, methods=["POST"]) for p in COMPLETION_PATHS),
            Route("/v1/models", self._guard(self.models_route), methods=["GET"]),
            Route("/metrics", self._guard(self.metrics_route), methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
        ]
        starlette = Starlette(routes=routes, lifespan=lifespan)
        hot = frozenset(COMPLETION_PATHS)
        handle = self.handle_completion

        async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"] in hot and scope["method"] == "POST":
                await handle(scope, receive, send)
            else:
                await starlette(scope, receive, send)

        return asgi

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether the request carries one of the API keys (always true without keys)."""
        if not self.api_keys:
            return True
        token = b""
        for k, v in headers:
            if k == b"authorization":
                if v[:7].lower() == b"bearer ":
                    token = v[7:].strip()
                break
        ok = False
        for key in self.api_keys:  # NOTE: compare against every key, constant time each
            ok |= hmac.compare_digest(token, key)
        return ok

    def _guard(
        self, handler: Callable[[HttpRequest], Awaitable[Response]]
    ) -> Callable[[HttpRequest], Awaitable[Response]]:
        """Wrap a handler with the API-key check (when keys are configured)."""
        if not self.api_keys:
            return handler

        async def guarded(request: HttpRequest) -> Response:
            if not self._authorized(request.scope["headers"]):
                self.metrics.requests.inc(request.scope["path"], 401)
                return openai_error(401, "missing or invalid API key", "authentication_error")
            return await handler(request)

        return guarded

    async def health(self, request: HttpRequest) -> Response:
        healthy = self.registry.healthy_count()
        status = 200 if healthy and not self.draining else 503
        return JSONResponse(
            {
                "status": "ok" if status == 200 else ("draining" if self.draining else "down"),
                "healthy_backends": healthy,
                "backends": len(self.registry),
            },
            status_code=status,
        )

    async def models_route(self, request: HttpRequest) -> Response:
        created = int(self.started_at)
        data = [{"id": n, "object": "model", "created": created, "owned_by": "sagerl"}
                for n in self.models]  # fmt: skip
        return JSONResponse({"object": "list", "data": data})

    # ------------------------------------------------------------------ completions
    async def handle_completion(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry of the completion routes: answer with what :meth:`completion` returns."""
        response = await self.completion(scope, receive)
        await response(scope, receive, send)

    async def completion(self, scope: Scope, receive: Receive) -> Response:
        """Validate, predict, place, forward (see module docstring)."""
        t_recv = time.perf_counter()
        path = scope["path"]
        if not self._authorized(scope["headers"]):
            self.metrics.requests.inc(path, 401)
            return openai_error(401, "missing or invalid API key", "authentication_error")
        try:
            body_bytes, body = await self._read_body(scope, receive)
            req, stream = self._parse(path, body)
        except RequestError as exc:
            self.metrics.requests.inc(path, exc.status)
            return openai_error(exc.status, str(exc))
        if self.draining:
            self.metrics.requests.inc(path, 503)
            return openai_error(503, "the router is shutting down")
        rid = f"sagerl-{req.id}"
        flight = self.ledger.accept(Flight(req, rid, stream))
        try:
            if self.predictor is not None:
                t_pred = time.perf_counter()
                flight.prediction = await self.predictor.predict(req)
                t_recv += time.perf_counter() - t_pred  # overhead excludes the prediction wait
                self._drain_predictor_metrics()
                if flight.prediction is not None:
                    from sagerl.features import RequestStats

                    st = RequestStats.of(req, flight.prediction)
                    flight.rank, flight.work = st.rank, st.mean_cost
            return await self._dispatch(path, flight, body_bytes, body, t_recv)
        except BaseException as exc:
            if flight.status == "in_flight":
                status = "aborted" if isinstance(exc, asyncio.CancelledError) else "failed"
                self._finish(flight, status, f"{type(exc).__name__}: {exc}")
            raise

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes, dict[str, Any]]:
        limit = self.config.limits.max_body_bytes
        for k, v in scope["headers"]:
            if k == b"content-length":
                if v.isdigit() and int(v) > limit:
                    raise RequestError(
                        f"request body of {v.decode()} bytes exceeds {limit} bytes", 413
                    )
                break
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError("client disconnected while sending the body", 400)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestError(f"request body exceeds {limit} bytes", 413)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(f"invalid JSON body: {exc}") from None
        if not isinstance(body, dict):
            raise RequestError("request body must be a JSON object")
        return raw, body

    def _parse(self, path: str, body: dict[str, Any]) -> tuple[Request, bool]:
        """Check the fields the router relies on; count prompt tokens."""
        limits = self.config.limits
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise RequestError("missing field 'model' (a string)")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise RequestError("field 'stream' must be true or false")
        for key in ("max_tokens", "max_completion_tokens"):
            v = body.get(key)
            if v is None:
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise RequestError(f"field '{key}' must be a positive integer")
            if v > limits.max_tokens:
                raise RequestError(f"field '{key}' = {v} exceeds the limit {limits.max_tokens}")
        texts, tokens = prompt_of(path, body)
        for t in texts:
            tokens += self.tokens.count(t)
        if path.endswith("/chat/completions"):
            tokens += self.config.tokenizer.chat_overhead_tokens * len(texts)
        if tokens > limits.max_prompt_tokens:
            raise RequestError(
                f"prompt has {tokens} tokens; the limit is {limits.max_prompt_tokens}", 413
            )
        req = Request(
            id=next(self._ids),
            arrival=time.monotonic(),
            prompt_tokens=max(tokens, 1),
            output_tokens=0,
            prompt_text="\n".join(texts) if texts else None,
            source="live",
        )
        return req, stream

    async def _dispatch(
        self, path: str, flight: Flight, raw: bytes, body: dict[str, Any], t_recv: float
    ) -> Response:
        """Place and forward; retry on another backend until the first byte arrives."""
        cfg = self.config
        exclude: set[int] = set()
        last_error = ""
        for _ in range(cfg.limits.max_retries + 1):
            now = time.monotonic()
            views = build_views(
                self.registry, self.ledger, self.scraper.states, cfg.scrape.stale_after_s,
                now, exclude,
            )  # fmt: skip
            try:
                idx = self.policy.choose(flight.request, views, now, flight.prediction)
            except SagerlError as exc:
                last_error = last_error or str(exc)
                break
            backend = self.registry[idx]
            label = self._labels[idx]
            self.metrics.decisions.inc(self.policy.name, label)
            if self.translog is not None:
                scores_fn = getattr(self.policy, "scores", None)
                scores = (
                    scores_fn(flight.request, views, flight.prediction)
                    if scores_fn is not None and flight.prediction is not None
                    else None
                )
                flight.decision = decision_record(views, flight.rank, flight.prediction, scores)
            if flight.backend >= 0:
                self.metrics.retries.inc(self.registry[flight.backend].label)
            self.ledger.assign(flight, idx)
            flight.decided_at = now
            payload = raw
            if cfg.priority == "gittins" and backend.spec.priority_scheduling:
                body["priority"] = int(min(round(flight.rank), MAX_PRIORITY))
                payload = json.dumps(body).encode()
            t_sent = time.perf_counter()
            try:
                resp = await self.pools[idx].request("POST", path, payload, _UPSTREAM_HEADERS)
            except UpstreamError as exc:
                last_error = f"backend {backend.label}: {exc}"
                if "connect" in str(exc):
                    self.registry.mark_down(idx, last_error)
                exclude.add(idx)
                continue
            self._answered_at[idx] = time.monotonic()
            if resp.status >= 500:
                text = await _read_text(resp)
                last_error = f"backend {backend.label}: HTTP {resp.status} {text[:200]}"
                exclude.add(idx)
                continue
            overhead = t_sent - t_recv
            if resp.status >= 400 or not flight.stream:
                try:
                    data = await resp.read()
                except UpstreamError as exc:
                    last_error = f"backend {backend.label}: {exc}"
                    exclude.add(idx)
                    continue
                self.ledger.first_byte(flight)
                self.metrics.overhead.observe(overhead)
                return self._whole(path, flight, resp.status, data, resp.content_type)
            try:
                first = await resp.readany()
            except UpstreamError as exc:
                last_error = f"backend {backend.label}: {exc}"
                exclude.add(idx)
                continue
            if not first:
                last_error = f"backend {backend.label}: ended the stream before any byte"
                exclude.add(idx)
                continue
            self.ledger.first_byte(flight)
            overhead -= time.perf_counter()  # plus the time until the first byte is forwarded
            return StreamProxy(self, path, flight, resp, first, overhead)
        status = 503 if not exclude else 502
        msg = last_error or "no healthy backend"
        self._finish(flight, "failed", msg)
        self.metrics.requests.inc(path, status)
        return openai_error(status, f"no backend could serve the request: {msg}")

    def _whole(
        self, path: str, flight: Flight, status: int, data: bytes, content_type: str
    ) -> Response:
        """A non-streamed answer (or a backend's 4xx): pass it through, account for it."""
        if status < 400:
            match = _USAGE_RE.search(data)
            if match:
                self.ledger.tokens(flight, int(match.group(1)))
            self._finish(flight, "completed")
        else:
            self._finish(flight, "failed", f"backend HTTP {status}")
        self.metrics.requests.inc(path, status)
        headers = {
            "x-sagerl-backend": self._labels[flight.backend],
            "x-sagerl-request-id": flight.rid,
        }
        return Response(data, status_code=status, media_type=content_type, headers=headers)

    # ------------------------------------------------------------------ accounting
    def _finish(self, flight: Flight, status: str, error: str = "") -> None:
        """The request leaves the ledger: metrics, predictor history, transition log."""
        if flight.status != "in_flight":
            return
        self.ledger.finish(flight, status, error)
        self.metrics.outcomes.inc(status)
        if status == "failed" and error:
            log.warning("request %s failed: %s", flight.rid, error)
        if flight.first_byte_at >= 0:
            self.metrics.ttft.observe(flight.first_byte_at - flight.accepted_at)
        if status == "completed":
            self.metrics.ttlt.observe(flight.finished_at - flight.accepted_at)
            if self.predictor is not None and flight.output_tokens > 0:
                self.predictor.observe(flight.request, flight.output_tokens)
        if self.translog is not None and flight.decision is not None:
            self.translog.append(self._record(flight))

    def _record(self, flight: Flight) -> dict[str, Any]:
        rec = dict(flight.decision or {})
        req = flight.request
        rec.update(
            rid=flight.rid,
            policy=self.policy.name,
            backend=flight.backend,
            tried=flight.tried,
            status=flight.status,
            request={"prompt_tokens": req.prompt_tokens, "stream": flight.stream},
            prediction=prediction_summary(flight.prediction, flight.rank, flight.work),
            outcome={
                "output_tokens": flight.output_tokens,
                "ttft_s": (flight.first_byte_at - flight.decided_at)
                if flight.first_byte_at >= 0
                else None,
                "ttlt_s": flight.finished_at - flight.accepted_at,
                "error": flight.error,
            },
        )
        return rec

    def _drain_predictor_metrics(self) -> None:
        p = self.predictor
        if p is None:
            return
        if p.batch_seconds:
            for s in p.batch_seconds:
                self.metrics.predict_batch.observe(s)
            p.batch_seconds.clear()
        if p.wait_seconds:
            for s in p.wait_seconds:
                self.metrics.predict_wait.observe(s)
            p.wait_seconds.clear()

    # ------------------------------------------------------------------ /metrics
    async def metrics_route(self, request: HttpRequest) -> Response:
        return PlainTextResponse(
            self.render_metrics(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    def render_metrics(self) -> str:
        """Prometheus exposition of the router's metrics and its view of every backend."""
        self._drain_predictor_metrics()
        now = time.monotonic()
        mt = self.metrics
        lab = ("backend",)
        in_flight = m.Gauge("sagerl_backend_in_flight", "Requests in flight per backend.", lab)
        prefill = m.Gauge(
            "sagerl_backend_waiting_first_byte",
            "In-flight requests without a first byte yet, per backend.", lab,
        )  # fmt: skip
        healthy = m.Gauge("sagerl_backend_healthy", "1 if placement may choose the backend.", lab)
        age = m.Gauge(
            "sagerl_backend_scrape_age_seconds",
            "Seconds since the last successful /metrics scrape (+Inf: never).", lab,
        )  # fmt: skip
        stale = m.Gauge(
            "sagerl_backend_scrape_stale",
            "1 if the last good scrape is older than stale_after_s (views use the ledger).", lab,
        )  # fmt: skip
        failures = m.Counter(
            "sagerl_backend_scrape_failures_total", "Failed scrapes per backend.", lab
        )
        missing = m.Gauge(
            "sagerl_backend_metric_missing",
            "1 if no alias of the field was found in the backend's last scrape.",
            ("backend", "field"),
        )
        scraped = m.Gauge(
            "sagerl_backend_scraped", "Last scraped value per field.", ("backend", "field")
        )
        dispatched = m.Counter(
            "sagerl_backend_dispatched_total", "Attempts sent to each backend.", lab
        )
        stale_after = self.config.scrape.stale_after_s
        for b in self.registry.backends:
            i, label = b.index, b.label
            in_flight.set(self.ledger.in_flight(i), label)
            prefill.set(self.ledger.prefilling[i], label)
            healthy.set(1.0 if b.healthy else 0.0, label)
            st = self.scraper.states[i]
            age.set(st.age(now), label)
            stale.set(0.0 if st.fresh(now, stale_after) else 1.0, label)
            failures.inc(label, by=self.scraper.failures_total[i])
            dispatched.inc(label, by=self.ledger.dispatched[i])
            for f in FIELDS:
                gone = st.stats is None or f in st.stats.missing
                missing.set(1.0 if gone else 0.0, label, f)
                if st.stats is not None and not gone:
                    scraped.set(float(getattr(st.stats, f)), label, f)
        totals = self.ledger.totals()
        ledger = m.Gauge(
            "sagerl_ledger", "Request accounting: accepted = completed + failed + aborted + "
            "in_flight.", ("state",),
        )  # fmt: skip
        for k, v in totals.items():
            ledger.set(v, k)
        info = m.Gauge("sagerl_router_info", "Static router settings.", ("policy", "tokenizer",
                       "predictor", "priority"))  # fmt: skip
        info.set(1.0, self.policy.name, self.tokens.name, self.config.predictor.name,
                 self.config.priority)  # fmt: skip
        extra: list[m.Counter | m.Histogram] = []
        if self.predictor is not None:
            hist = m.Gauge("sagerl_predictor_history", "Entries in the predictor's history.")
            hist.set(self.predictor.history_size())
            batches = m.Counter("sagerl_predictor_batches_total", "predict_many calls.")
            batches.inc(by=self.predictor.batches)
            observed = m.Counter(
                "sagerl_predictor_observed_total", "Finished requests fed to the predictor."
            )
            observed.inc(by=self.predictor.observed)
            extra += [hist, batches, observed, mt.predict_batch, mt.predict_wait]
        if self.translog is not None:
            recs = m.Counter("sagerl_transitions_total", "Records in the transition log.")
            recs.inc(by=self.translog.records)
            extra.append(recs)
        return m.render(
            [
                info, mt.requests, mt.outcomes, ledger, mt.decisions, mt.retries, mt.ttft,
                mt.ttlt, mt.overhead, in_flight, prefill, healthy, dispatched, age, stale,
                failures, missing, scraped, *extra,
            ]
        )  # fmt: skip


_UPSTREAM_HEADERS = encode_headers({"content-type": "application/json"})


async def _read_text(resp: UpstreamResponse) -> str:
    try:
        return (await resp.read()).decode("utf-8", "replace")
    except UpstreamError:
        return ""


class StreamProxy(Response):
    """Streams a backend's server-sent events to the client as they arrive.

    Headers and the first chunk are sent at once (the backend already answered, so no retry is
    possible past this point); then each read from the backend is written unchanged, from the
    upstream protocol's callback (:meth:`~sagerl.live.upstream.Response.pipe`). If the client
    reads slower than the backend writes, reading from the backend pauses until the client
    drained (the bytes stay in order). A failure of the backend mid-stream ends the stream with
    :func:`sse_error`; a client that goes away closes the upstream request (the backend sees a
    disconnect and aborts).
    """

    def __init__(
        self,
        router: Router,
        path: str,
        flight: Flight,
        resp: UpstreamResponse,
        first: bytes,
        overhead: float,
    ) -> None:
        self.router = router
        self.path = path
        self.flight = flight
        self.resp = resp
        self.first = first
        self.overhead = overhead
        self.status_code = 200
        self.background = None
        self._send: Send | None = None
        self._prev = b""
        self._last = first
        self._blocked: asyncio.Future[None] | None = None
        self._backlog: list[bytes] = []
        self._ended = False

    def _forward(self, data: bytes, end: bool) -> None:
        """Count, remember the tail, write to the client (called from the protocol callback).

        When these bytes complete the backend's message and the stream's ``[DONE]``, they go
        out with the end of the response in one write (one syscall less per request).
        """
        self.router.ledger.tokens(self.flight, _count_events(data))
        self._prev, self._last = self._last, data
        if self._blocked is not None:
            self._backlog.append(data)
            return
        last = end and _DONE in (self._prev[-_TAIL:] + data)[-_TAIL:]
        assert self._send is not None
        rest = send_now(
            self._send, {"type": "http.response.body", "body": data, "more_body": not last}
        )
        self._ended = last
        if rest is not None:
            self.resp.pause_reading()
            self._blocked = asyncio.ensure_future(self._unblock(rest))

    async def _unblock(self, rest: Awaitable[None]) -> None:
        """Finish a send that waits for the client, then what queued behind it; read again."""
        try:
            await rest
            while self._backlog:
                data = b"".join(self._backlog)
                self._backlog = []
                assert self._send is not None
                await self._send({"type": "http.response.body", "body": data, "more_body": True})
        finally:
            self._blocked = None
            self.resp.resume_reading()

    async def _drained(self) -> None:
        """Until every forwarded byte was handed to the server."""
        while self._blocked is not None:
            await asyncio.shield(self._blocked)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        router, flight, resp = self.router, self.flight, self.resp
        ledger = router.ledger
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-sagerl-backend", router._labels[flight.backend].encode()),
            (b"x-sagerl-request-id", flight.rid.encode()),
        ]
        disconnect = asyncio.ensure_future(receive())
        status = "completed"
        error = ""
        tail = b""
        self._send = send
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            ledger.tokens(flight, _count_events(self.first))
            await send({"type": "http.response.body", "body": self.first, "more_body": True})
            router.metrics.overhead.observe(self.overhead + time.perf_counter())
            try:
                if not await resp.pipe(self._forward, disconnect):
                    status, error = "aborted", "client disconnected"
                await self._drained()
                tail = (self._prev[-_TAIL:] + self._last)[-_TAIL:]
                if status == "completed" and _DONE not in tail:
                    raise UpstreamError("stream ended without [DONE]", before_response=False)
            except UpstreamError as exc:
                label = router._labels[flight.backend]
                status = "failed"
                error = f"backend {label} failed mid-stream: {exc}"
                await self._drained()
                if not disconnect.done():
                    await send(
                        {"type": "http.response.body", "body": sse_error(error), "more_body": True}
                    )
            if status == "completed":
                found = _USAGE_RE.findall(tail)
                if found:
                    ledger.tokens(flight, int(found[-1]) - flight.output_tokens)
            if not self._ended:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            status, error = "aborted", "cancelled (shutdown or client gone)"
            raise
        finally:
            disconnect.cancel()
            if self._blocked is not None:
                self._blocked.cancel()
            if status == "completed":
                resp.release()  # the connection goes back to the keep-alive pool
            else:
                resp.close()  # the backend sees the disconnect and aborts the request
            router._finish(flight, status, error)
            router.metrics.requests.inc(self.path, 200)
