"""An emulated vLLM server: the simulator's replica model served over the OpenAI API in real time.

Timing comes from a real :class:`~sagerl.sim.replica.Replica` (continuous batching, chunked
prefill, paged KV, preemption) with the :class:`~sagerl.hardware.StepTimeModel` of the chosen
GPU and model, advanced in real time multiplied by ``time_scale`` (10: ten simulated seconds per
real second, for tests). The driver does what :class:`~sagerl.sim.cluster.Simulation` does for
one replica: an arrival catches the replica up to now, queues the sequence and truncates the
fast-path segment in flight; plan ends are processed as their (scaled) time comes. Tokens are
streamed as iterations complete: inside a fast-path segment the iterations finished by time
``t`` are read from the plan's closed form, so streaming is smooth and costs one wake-up per
``stream_interval_s`` per engine, however many sequences run.

What it speaks: ``POST /v1/completions`` and ``/v1/chat/completions`` (streamed or not, with
``stream_options.include_usage``), ``GET /v1/models``, ``GET /health``, and ``GET /metrics``
with vLLM's metric names (``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
``vllm:kv_cache_usage_perc`` or the older ``vllm:gpu_cache_usage_perc``,
``vllm:cache_config_info``). With ``priority_scheduling`` it honours vLLM's ``priority`` field
(lower runs first; a blocked better request preempts a worse running one); without it, a
non-zero ``priority`` is a 400 as in vLLM.

Output length: ``max_tokens`` with ``ignore_eos: true`` (vLLM's extension), else a draw from a
log-normal of mean ``mean_output_tokens`` seeded by the prompt text (the same prompt gives the
same length, so a history predictor has something to learn), capped by ``max_tokens``.

NOTE: a request whose client disconnects runs to completion inside the emulated replica (its
tokens are dropped); the simulator's replica has no abort.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import socket
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sagerl.hardware import StepTimeModel
from sagerl.live.asgi import send_now
from sagerl.policy.ordering import FCFS, OrderingPolicy
from sagerl.sim.config import SchedulerConfig
from sagerl.sim.replica import Replica
from sagerl.sim.sequence import Sequence
from sagerl.workload.request import Request

log = logging.getLogger("sagerl.live.emulator")

WORDS = (
    " the", " model", " answers", " with", " tokens", " at", " simulated", " speed", " and",
    " a", " steady", " rhythm", " of", " words", " for", " testing", ".", "\n",
)  # fmt: skip
"""Token texts the emulator cycles through."""

_WORD_JSON = [json.dumps(w).encode() for w in WORDS]
"""The token texts as JSON strings."""

_END = b"data: [DONE]\n\n"
"""How a stream's last chunk ends."""

TIMING_COMMENT = b"emulator-ttft-us="
"""Name of the SSE comment that carries the emulator's own TTFT (``timing=True``)."""

DEFAULT_MAX_MODEL_LEN = 8192
"""Context length (prompt + output) when a request sets no ``max_tokens``."""


class RequestPriority(OrderingPolicy):
    """vLLM's ``--scheduling-policy priority``: (priority, arrival) order; lower runs first.

    The priority rides in ``Sequence.policy_state`` (set before the sequence is queued). A
    waiting request that cannot be admitted preempts the worst running one if its key is
    smaller, as vLLM's priority scheduler does.
    """

    name = "vllm-priority"
    preempt_for_rank = True

    def key(self, seq: Sequence, now: float) -> tuple[int, float, int]:
        return (int(seq.policy_state or 0), seq.arrival, seq.request.id)


@dataclass(slots=True, eq=False)
class Job:
    """One request inside the emulator and what has been streamed of it.

    Attributes:
        seq: The simulator's sequence.
        ready: Set whenever more tokens are available or the job finished (no listener).
        available: Tokens generated so far (as of the last publish).
        done: True once the replica finished it.
        arrived: Real arrival time (``time.monotonic()``).
        listener: Called instead of setting ``ready`` (a stream writing from the engine's
            callback: no task wake-up per flush).
    """

    seq: Sequence
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    available: int = 0
    done: bool = False
    arrived: float = field(default_factory=time.monotonic)
    listener: Callable[[], None] | None = None

    def wake(self) -> None:
        """More tokens are available, or the job finished."""
        listener = self.listener
        if listener is not None:
            listener()
        else:
            self.ready.set()


class EmulatedEngine:
    """One emulated replica driven in scaled real time (see module docstring).

    Args:
        gpu: GPU kind (``A100``, ``H100``, ...).
        model: Model name (``llama-3.1-8b``, ...).
        tp: Tensor-parallel degree.
        time_scale: Simulated seconds per real second.
        priority_scheduling: Honour ``priority`` (vLLM ``--scheduling-policy priority``).
        scheduler: Engine settings (vLLM's names); defaults as the simulator's.
        stream_interval_s: Real seconds between token flushes while decoding.
        kv_blocks: Override the KV-cache size in blocks (default: as vLLM sizes it).
    """

    def __init__(
        self,
        gpu: str = "A100",
        model: str = "llama-3.1-8b",
        tp: int = 1,
        time_scale: float = 1.0,
        priority_scheduling: bool = False,
        scheduler: SchedulerConfig | None = None,
        stream_interval_s: float = 0.005,
        kv_blocks: int | None = None,
    ) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.scheduler = scheduler or SchedulerConfig()
        self.timer = StepTimeModel(model, gpu, tp=tp)
        blocks = kv_blocks or self.timer.kv_cache_blocks(
            self.scheduler.block_size, self.scheduler.gpu_memory_utilization
        )
        ordering: OrderingPolicy = RequestPriority() if priority_scheduling else FCFS()
        self.replica = Replica(
            0, self.timer, blocks, self.scheduler, ordering,
            gpu=self.timer.gpu.name, model=self.timer.model.name,
            kv_bytes_per_block=self.timer.kv_bytes_per_token * self.scheduler.block_size,
        )  # fmt: skip
        self.priority_scheduling = priority_scheduling
        self.time_scale = float(time_scale)
        self.stream_interval_s = stream_interval_s
        self.t0 = time.monotonic()
        self.plan_end: float | None = None
        self.jobs: dict[int, Job] = {}
        self._ids = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.finished = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0

    # ------------------------------------------------------------------ clock
    def now(self) -> float:
        """Simulated time, s."""
        return (time.monotonic() - self.t0) * self.time_scale

    def start(self) -> None:
        """Start the driver task (in the running loop)."""
        self._wake = asyncio.Event()
        self._task = asyncio.ensure_future(self._drive())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # ------------------------------------------------------------------ requests
    def max_tokens_total(self) -> int:
        """KV capacity in tokens: the longest prompt + output the replica can hold."""
        return self.replica.max_tokens

    def submit(self, prompt_tokens: int, output_tokens: int, priority: int = 0) -> Job:
        """Queue a request now; returns its job (tokens appear on ``job.ready``)."""
        self._ids += 1
        req = Request(self._ids, self.now(), max(prompt_tokens, 1), max(output_tokens, 1))
        seq = Sequence(req)
        seq.policy_state = priority
        now = req.arrival
        self._advance(now)
        self.replica.add(seq, now)
        if self.replica.idle:
            self.plan_end = self.replica.schedule(now)
        else:
            new_end = self.replica.truncate(now)
            if new_end is not None:
                self.plan_end = new_end
        job = Job(seq)
        self.jobs[req.id] = job
        self.prompt_tokens_total += req.prompt_tokens
        self._wake.set()
        return job

    # ------------------------------------------------------------------ driver
    def _advance(self, now: float) -> None:
        """Apply every plan that ended by ``now`` (as ``Simulation.advance_to``)."""
        r = self.replica
        while r.plan is not None and self.plan_end is not None and self.plan_end <= now:
            end = self.plan_end
            for seq in r.complete(end):
                job = self.jobs.pop(seq.request.id, None)
                if job is not None:
                    job.available = seq.num_generated
                    job.done = True
                    job.wake()
                    self.finished += 1
                    self.generation_tokens_total += seq.num_generated
            self.plan_end = r.schedule(end)

    def _publish(self, now: float) -> None:
        """Make the tokens generated by ``now`` available to their streams."""
        r = self.replica
        plan = r.plan
        extra = 0
        if plan is not None and plan.segment and plan.k > 1:
            extra = max(plan.starts_before(now) - 1, 0)  # iterations already finished
        seg = {id(s) for s, _ in plan.scheduled} if extra and plan is not None else ()
        for seq in r.running:
            job = self.jobs.get(seq.request.id)
            if job is None:
                continue
            n = seq.num_generated + (extra if id(seq) in seg else 0)
            if n > job.available:
                job.available = n
                job.wake()

    async def _drive(self) -> None:
        while True:
            now = self.now()
            self._advance(now)
            self._publish(now)
            if self.replica.plan is None or self.plan_end is None:
                timeout = None
            else:
                timeout = max((self.plan_end - now) / self.time_scale, 0.0)
                if self.replica.plan.segment:
                    timeout = min(timeout, self.stream_interval_s)
            self._wake.clear()
            if timeout is None:
                await self._wake.wait()
            elif timeout > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            else:
                await asyncio.sleep(0)

    # ------------------------------------------------------------------ metrics
    def metrics_text(self, model_name: str, kv_metric: str = "vllm:kv_cache_usage_perc") -> str:
        """vLLM-named Prometheus metrics as of now."""
        now = self.now()
        self._advance(now)
        r = self.replica
        lab = f'{{model_name="{model_name}"}}'
        kv = r.blocks_used_at(now) / r.kv_blocks_total
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{lab} {len(r.running)}",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{lab} {len(r.waiting)}",
            f"# HELP {kv_metric} KV-cache usage. 1 means 100 percent usage.",
            f"# TYPE {kv_metric} gauge",
            f"{kv_metric}{lab} {kv!r}",
            "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig",
            "# TYPE vllm:cache_config_info gauge",
            f'vllm:cache_config_info{{block_size="{r.block_size}",'
            f'num_gpu_blocks="{r.kv_blocks_total}"}} 1.0',
            "# TYPE vllm:request_success_total counter",
            f"vllm:request_success_total{lab} {self.finished}",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total{lab} {self.prompt_tokens_total}",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{lab} {self.generation_tokens_total}",
            "# TYPE vllm:num_preemptions_total counter",
            f"vllm:num_preemptions_total{lab} {r.num_preemptions}",
        ]
        return "\n".join(lines) + "\n"


def output_length(text: str, mean: float, cap: int) -> int:
    """A log-normal length (sigma 1) of mean ``mean``, seeded by ``text``, within [1, cap]."""
    rng = random.Random(zlib.crc32(text.encode("utf-8", "replace")))
    mu = math.log(mean) - 0.5
    return max(1, min(cap, int(rng.lognormvariate(mu, 1.0))))


class EmulatorApp:
    """The OpenAI-compatible HTTP face of an :class:`EmulatedEngine`.

    Args:
        engine: The emulated replica.
        served_model: Model id reported by ``/v1/models`` and in responses.
        mean_output_tokens: Mean of the output-length draw (see module docstring).
        kv_metric: Name of the KV-usage metric (``vllm:gpu_cache_usage_perc`` emulates an
            older vLLM).
        tokens: Prompt-token counter (a :class:`sagerl.live.prediction.TokenCounter`).
        timing: Start every stream with the SSE comment ``: emulator-ttft-us=N`` (N: this
            server's own time from taking the request to writing its first token, in
            microseconds). A load benchmark subtracts it from the TTFT its client saw, which
            leaves the time spent on the way (router, sockets, event loops) without the
            backend's flush schedule; SSE clients ignore comment lines.
    """

    def __init__(
        self,
        engine: EmulatedEngine,
        served_model: str,
        mean_output_tokens: float = 128.0,
        kv_metric: str = "vllm:kv_cache_usage_perc",
        tokens: Any = None,
        timing: bool = False,
    ) -> None:
        self.engine = engine
        self.timing = timing
        self.served_model = served_model
        self.mean_output_tokens = mean_output_tokens
        self.kv_metric = kv_metric
        self.tokens = tokens
        self._n = 0
        self.priority_requests = 0
        """Requests that carried a non-zero ``priority`` (tests check the router sends it)."""

    def app(self) -> Any:
        """The ASGI application.

        ``POST`` to the completion routes skips Starlette's router and middleware (whose
        wrappers around ``send`` cost a few coroutine calls per streamed chunk: the emulator
        shares the machine with the router in benchmarks); everything else goes through it.
        """

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            self.engine.start()
            try:
                yield
            finally:
                await self.engine.stop()

        starlette = Starlette(
            routes=[
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/chat/completions", self.completions, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
            ],
            lifespan=lifespan,
        )
        hot = frozenset(("/v1/completions", "/v1/chat/completions"))
        completions = self.completions

        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"] in hot and scope["method"] == "POST":
                response = await completions(HttpRequest(scope, receive))
                await response(scope, receive, send)
            else:
                await starlette(scope, receive, send)

        return asgi

    async def health(self, request: HttpRequest) -> Response:
        return Response(status_code=200)

    async def models(self, request: HttpRequest) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": self.served_model, "object": "model",
                                         "owned_by": "sagerl-emulator"}]}
        )  # fmt: skip

    async def metrics(self, request: HttpRequest) -> Response:
        return PlainTextResponse(self.engine.metrics_text(self.served_model, self.kv_metric))

    def _count(self, text: str) -> int:
        if self.tokens is not None:
            return int(self.tokens.count(text))
        return max(1, len(text) // 4)

    async def completions(self, request: HttpRequest) -> Response:
        chat = request.scope["path"].endswith("/chat/completions")
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as exc:
            return _error(400, f"invalid JSON: {exc}")
        if chat:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                return _error(400, "messages must be a non-empty list")
            text = "\n".join(str(mm.get("content") or "") for mm in msgs if isinstance(mm, dict))
            prompt_tokens = self._count(text) + 4 * len(msgs)
        else:
            prompt = body.get("prompt")
            if isinstance(prompt, str):
                text, prompt_tokens = prompt, self._count(prompt)
            elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
                text, prompt_tokens = " ".join(map(str, prompt[:64])), len(prompt)
            elif isinstance(prompt, list) and prompt and all(isinstance(t, str) for t in prompt):
                text = "\n".join(prompt)
                prompt_tokens = sum(self._count(t) for t in prompt)
            else:
                return _error(400, "prompt must be a string or a list of token ids")
        priority = body.get("priority", 0)
        if not isinstance(priority, int):
            return _error(400, "priority must be an integer")
        if priority and not self.engine.priority_scheduling:
            return _error(400, f"Got priority {priority} but priority scheduling is not enabled.")
        capacity = self.engine.max_tokens_total()
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if max_tokens is None:
            max_tokens = 16 if not chat else max(1, DEFAULT_MAX_MODEL_LEN - prompt_tokens)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return _error(400, "max_tokens must be a positive integer")
        if prompt_tokens + max_tokens > min(capacity, 1 << 20):
            return _error(
                400,
                f"This model's maximum context length is {capacity} tokens. However, you "
                f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the "
                f"messages, {max_tokens} in the completion).",
            )
        if body.get("ignore_eos"):
            n_out = max_tokens
        else:
            n_out = output_length(text, self.mean_output_tokens, max_tokens)
        self.priority_requests += 1 if priority else 0
        job = self.engine.submit(prompt_tokens, n_out, priority)
        self._n += 1
        rid = f"{'chatcmpl' if chat else 'cmpl'}-emu{self._n}"
        finish = "length" if n_out >= max_tokens else "stop"
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": n_out,
            "total_tokens": prompt_tokens + n_out,
        }
        if body.get("stream"):
            opts = body.get("stream_options") or {}
            include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
            render = self._renderer(job, rid, chat, finish, usage if include_usage else None)
            return _EventStream(job, render)
        while not job.done:
            await job.ready.wait()
            job.ready.clear()
        text_out = "".join(WORDS[i % len(WORDS)] for i in range(n_out))
        created = int(time.time())
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text_out},
                      "logprobs": None, "finish_reason": finish}  # fmt: skip
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text_out, "logprobs": None, "finish_reason": finish}
            obj = "text_completion"
        return JSONResponse(
            {"id": rid, "object": obj, "created": created, "model": self.served_model,
             "choices": [choice], "usage": usage}
        )  # fmt: skip

    def _renderer(
        self, job: Job, rid: str, chat: bool, finish: str, usage: dict[str, int] | None
    ) -> Callable[[], bytes]:
        """A function returning the SSE events of the tokens published since its last call
        (one event per token; the usage event and ``[DONE]`` once the job is done)."""
        created = int(time.time())
        model = json.dumps(self.served_model)
        if chat:
            head = (
                f'data: {{"id":"{rid}","object":"chat.completion.chunk","created":{created},'
                f'"model":{model},"choices":[{{"index":0,"delta":{{"content":'
            ).encode()
            tail_mid = b'},"logprobs":null,"finish_reason":'
        else:
            head = (
                f'data: {{"id":"{rid}","object":"text_completion","created":{created},'
                f'"model":{model},"choices":[{{"index":0,"text":'
            ).encode()
            tail_mid = b',"logprobs":null,"finish_reason":'
        # Every event but the last, built once per stream and picked per token (a burst of
        # tokens is then a list lookup each, not five concatenations).
        events = [head + w + tail_mid + b"null}]}\n\n" for w in _WORD_JSON]
        n_words = len(events)
        total = job.seq.output_tokens
        sent = 0
        timing = self.timing

        def render() -> bytes:
            nonlocal sent
            upto = job.available
            if upto <= sent and not job.done:
                return b""
            parts = [events[i % n_words] for i in range(sent, min(upto, total - 1))]
            if timing and sent == 0:
                us = int((time.monotonic() - job.arrived) * 1e6)
                parts.insert(0, b": %s%d\n\n" % (TIMING_COMMENT, us))
            if upto >= total > sent:
                word = _WORD_JSON[(total - 1) % n_words]
                parts.append(head + word + tail_mid + f'"{finish}"}}]}}\n\n'.encode())
            sent = max(sent, upto)
            if job.done and sent >= total:
                if usage is not None:
                    parts.append(
                        f'data: {{"id":"{rid}","object":"{"chat.completion.chunk" if chat else "text_completion"}",'  # noqa: E501
                        f'"created":{created},"model":{model},"choices":[],'
                        f'"usage":{json.dumps(usage)}}}\n\n'.encode()
                    )
                parts.append(_END)
            return b"".join(parts)

        return render


class _EventStream(Response):
    """Server-sent events written from the engine's callback as tokens are published.

    No disconnect-listener task (unlike Starlette's ``StreamingResponse``) and no task wake-up
    per flush: the emulator shares a 2-core machine with the router it serves in benchmarks, so
    its per-chunk cost matters. A write that has to wait for the client (flow control) is
    finished in a task; what was published meanwhile follows it.
    """

    def __init__(self, job: Job, render: Callable[[], bytes]) -> None:
        self.job = job
        self.render = render
        self.status_code = 200
        self.background = None
        self._send: Any = None
        self._finished: asyncio.Future[None] | None = None
        self._blocked: asyncio.Future[None] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]}
        )  # fmt: skip
        self._send = send
        finished = self._finished = asyncio.get_running_loop().create_future()
        self.job.listener = self._on_ready
        try:
            self._on_ready()
            await finished
        finally:
            self.job.listener = None
            if self._blocked is not None:
                self._blocked.cancel()

    def _on_ready(self) -> None:
        finished = self._finished
        if self._blocked is not None or finished is None or finished.done():
            return
        try:
            chunk = self.render()
            if not chunk:
                return
            last = chunk.endswith(_END)  # the last chunk ends the response in the same write
            rest = send_now(
                self._send, {"type": "http.response.body", "body": chunk, "more_body": not last}
            )
        except Exception as exc:  # NOTE: called from the engine: never raise into it
            finished.set_exception(exc)
            return
        if rest is not None:
            self._blocked = asyncio.ensure_future(self._unblock(rest, last))
        elif last:
            finished.set_result(None)

    async def _unblock(self, rest: Awaitable[None], last: bool) -> None:
        finished = self._finished
        assert finished is not None
        try:
            await rest
        except Exception as exc:
            if not finished.done():
                finished.set_exception(exc)
            return
        finally:
            self._blocked = None
        if last:
            if not finished.done():
                finished.set_result(None)
        else:
            self._on_ready()  # what the engine published while the client was slow


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"object": "error", "message": message, "type": "BadRequestError", "param": None,
         "code": status}, status_code=status,
    )  # fmt: skip


def build_emulator(
    gpu: str = "A100",
    model: str = "llama-3.1-8b",
    *,
    time_scale: float = 1.0,
    priority_scheduling: bool = False,
    mean_output_tokens: float = 128.0,
    served_model: str | None = None,
    kv_metric: str = "vllm:kv_cache_usage_perc",
    tokens: Any = None,
    tp: int = 1,
    stream_interval_s: float = 0.005,
    timing: bool = False,
) -> EmulatorApp:
    """An emulated server (engine + app) ready to hand to :func:`sagerl.live.runner.make_server`."""
    engine = EmulatedEngine(
        gpu,
        model,
        tp=tp,
        time_scale=time_scale,
        priority_scheduling=priority_scheduling,
        stream_interval_s=stream_interval_s,
    )
    return EmulatorApp(
        engine, served_model or model, mean_output_tokens, kv_metric, tokens, timing=timing
    )


@dataclass(slots=True)
class BoundEmulator:
    """An emulated server ready to run: its app, its uvicorn server and its listening socket.

    Attributes:
        emulator: The emulated backend (engine + OpenAI app).
        server: Its uvicorn server (run with :func:`sagerl.live.runner.serve_until_stopped`).
        sock: The bound, listening socket the server will accept on.
        url: Its base URL (``http://host:port``).
    """

    emulator: EmulatorApp
    server: Any
    sock: socket.socket
    url: str

    def describe(self) -> str:
        """One line for the console: model, GPU, URL, KV blocks, time scale."""
        eng = self.emulator.engine
        prio = ", priority scheduling" if eng.priority_scheduling else ""
        return (
            f"emulated {eng.timer.model.name} on {eng.timer.gpu.name} at {self.url} "
            f"({eng.replica.kv_blocks_total} KV blocks, time x{eng.time_scale:g}{prio})"
        )


def bind_emulators(
    count: int, host: str = "127.0.0.1", base_port: int = 0, **options: Any
) -> list[BoundEmulator]:
    """Build ``count`` emulated servers and bind their sockets (``emulate --count`` and
    ``serve --emulate`` both start their backends here).

    Args:
        count: Servers to build.
        host: Address to bind.
        base_port: First port; server ``i`` gets ``base_port + i`` (0: ephemeral ports).
        options: Keyword arguments of :func:`build_emulator` (GPU, model, time scale, ...).

    Raises:
        OSError: A port could not be bound (sockets bound so far are closed).
    """
    from sagerl.live.runner import bind, make_server

    out: list[BoundEmulator] = []
    try:
        for i in range(count):
            emulator = build_emulator(**options)
            sock = bind(host, base_port + i if base_port else 0)
            port = sock.getsockname()[1]
            shown = f"[{host}]" if ":" in host else host
            server = make_server(emulator.app(), drain_timeout_s=5.0)
            out.append(BoundEmulator(emulator, server, sock, f"http://{shown}:{port}"))
    except BaseException:
        for b in out:
            b.sock.close()
        raise
    return out
