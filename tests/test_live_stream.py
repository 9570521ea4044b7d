"""The router's streaming path: upstream keep-alive, forwarding from the protocol callback,
backpressure from a slow client, the load-test client, and the shared emulator launcher."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

for _dep in ("starlette", "uvicorn", "httptools"):  # the `serve` extra
    pytest.importorskip(_dep)

from sagerl.live.asgi import send_now  # noqa: E402
from sagerl.live.config import ServeConfig  # noqa: E402
from sagerl.live.emulator import WORDS, bind_emulators  # noqa: E402
from sagerl.live.loadgen import LoadClient  # noqa: E402
from sagerl.live.runner import ServerThread  # noqa: E402
from sagerl.live.serving import Cluster, cluster_in_thread  # noqa: E402

MODEL = "llama-3.1-8b"


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Cluster, ServerThread]]:
    cfg = ServeConfig.model_validate(
        {
            "port": 0,
            "emulate": {"count": 2, "time_scale": 40.0, "stream_interval_ms": 2.0},
            "policy": {"name": "round-robin"},
            "transition_log": None,
            "scrape": {"interval_s": 0.2},
        }
    )
    with cluster_in_thread(cfg) as (c, thread):
        yield c, thread


def _payload(client: LoadClient, max_tokens: int, stream: bool = True) -> bytes:
    body = {"model": MODEL, "prompt": "hello " * 30, "max_tokens": max_tokens,
            "ignore_eos": True, "stream": stream}  # fmt: skip
    return client.request_bytes("POST", "/v1/completions", json.dumps(body).encode())


def _texts(body: bytes) -> list[str]:
    """Token texts of an SSE completion stream, in order (checks it ends with [DONE])."""
    events = [e for e in body.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    return [json.loads(e[6:])["choices"][0]["text"] for e in events[:-1]]


def test_streams_reuse_upstream_connections_and_arrive_whole(
    cluster: tuple[Cluster, ServerThread],
) -> None:
    """Sequential waves of streams reuse the router's keep-alive connections to the backends,
    and every stream arrives complete and in order through the load client."""
    c, thread = cluster

    async def go() -> list[Any]:
        client = LoadClient(c.url)
        payload = _payload(client, 40)
        try:
            results = []
            for _ in range(3):
                results += await asyncio.gather(
                    *(client.send(payload, keep_body=True) for _ in range(10))
                )
            return results
        finally:
            client.close()

    before = thread.call(lambda: sum(p.connects for p in c.router.pools))
    results = asyncio.run(go())
    after = thread.call(lambda: sum(p.connects for p in c.router.pools))
    assert all(r.status == 200 and r.done and 0 <= r.ttft_s <= r.ttlt_s for r in results)
    for r in results:
        assert _texts(r.body) == [WORDS[i % len(WORDS)] for i in range(40)]
    assert after - before <= 12, "upstream connections were not reused"
    thread.call(c.router.ledger.check)
    totals = thread.call(c.router.ledger.totals)
    assert totals["in_flight"] == 0 and totals["failed"] == 0


def testsend_now_completes_or_hands_back_the_rest() -> None:
    """``send_now`` runs a send that does not suspend at once, and returns an awaitable that
    finishes one that does (as uvicorn's send does when the client's socket is full)."""
    out: list[bytes] = []

    async def go() -> None:
        gate = asyncio.Event()

        async def send(message: dict[str, Any]) -> None:
            if message["body"] == b"slow":
                await gate.wait()
                await asyncio.sleep(0)
            out.append(message["body"])

        assert send_now(send, {"body": b"fast"}) is None
        rest = send_now(send, {"body": b"slow"})
        assert rest is not None and out == [b"fast"]
        asyncio.get_running_loop().call_later(0.01, gate.set)
        await rest
        assert out == [b"fast", b"slow"]

        async def failing(message: dict[str, Any]) -> None:
            await asyncio.sleep(0.001)
            raise OSError("gone")

        rest = send_now(failing, {"body": b"x"})
        assert rest is not None
        with pytest.raises(OSError):
            await rest

    asyncio.run(go())


def test_slow_client_backpressure_keeps_order(cluster: tuple[Cluster, ServerThread]) -> None:
    """An ASGI ``send`` that stalls now and then (a client reading slowly): reading from the
    backend pauses, nothing is lost or reordered, the request completes in the ledger."""
    c, thread = cluster
    app = c.router.app()
    n_tokens = 300

    async def go() -> tuple[int, bytes]:
        body = json.dumps({"model": MODEL, "prompt": "hi " * 20, "max_tokens": n_tokens,
                           "ignore_eos": True, "stream": True}).encode()  # fmt: skip
        scope = {"type": "http", "path": "/v1/completions", "method": "POST",
                 "headers": [(b"content-type", b"application/json")]}  # fmt: skip
        sent_body = False
        never = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await never.wait()
            return {"type": "http.disconnect"}

        chunks: list[bytes] = []
        status = 0
        calls = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, calls
            if message["type"] == "http.response.start":
                status = message["status"]
                return
            calls += 1
            if calls % 3 == 0:
                await asyncio.sleep(0.01)  # the client's socket is full for a while
            chunks.append(message.get("body", b""))

        await app(scope, receive, send)
        return status, b"".join(chunks)

    status, data = thread.run(go())
    assert status == 200
    assert _texts(data) == [WORDS[i % len(WORDS)] for i in range(n_tokens)]
    thread.call(c.router.ledger.check)
    assert thread.call(c.router.ledger.totals)["in_flight"] == 0


def test_load_client_reports_errors_without_raising() -> None:
    """Refused connections and non-200 answers come back as results, not exceptions."""

    async def go() -> tuple[Any, ...]:
        dead = LoadClient("http://127.0.0.1:9")  # discard port: nothing listens
        r1 = await dead.send(dead.request_bytes("GET", "/"))
        dead.close()
        return (r1,)

    (r1,) = asyncio.run(go())
    assert r1.status == 0 and r1.error.startswith("connect failed")


def test_bind_emulators_consecutive_ports_and_urls() -> None:
    """The launcher ``emulate --count`` and ``serve --emulate`` share: N servers, N sockets."""
    bound = bind_emulators(3, "127.0.0.1", 0, time_scale=10.0)
    try:
        ports = [b.sock.getsockname()[1] for b in bound]
        assert len(set(ports)) == 3
        assert [b.url for b in bound] == [f"http://127.0.0.1:{p}" for p in ports]
        assert " at http://127.0.0.1:" in bound[0].describe()
    finally:
        for b in bound:
            b.sock.close()


def test_emulator_stream_with_a_slow_client_keeps_order() -> None:
    """The emulator writes tokens from the engine's callback; a ``send`` that stalls now and then
    (flow control) delays the stream but loses or reorders nothing (chat, with usage)."""
    from sagerl.live.emulator import build_emulator

    app = build_emulator(time_scale=50.0, stream_interval_s=0.002)
    n_tokens = 120

    async def go() -> bytes:
        asgi = app.app()
        app.engine.start()
        body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                           "max_tokens": n_tokens, "ignore_eos": True, "stream": True,
                           "stream_options": {"include_usage": True}}).encode()  # fmt: skip
        scope = {"type": "http", "path": "/v1/chat/completions", "method": "POST",
                 "headers": [(b"content-type", b"application/json")]}  # fmt: skip
        done = False

        async def receive() -> dict[str, Any]:
            nonlocal done
            if not done:
                done = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()
            return {"type": "http.disconnect"}

        chunks: list[bytes] = []
        calls = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal calls
            if message["type"] != "http.response.body":
                return
            calls += 1
            if calls % 2 == 0:
                await asyncio.sleep(0.005)
            chunks.append(message["body"])
            assert message["more_body"] or chunks[-1].endswith(b"data: [DONE]\n\n")

        await asgi(scope, receive, send)
        await app.engine.stop()
        return b"".join(chunks)

    data = asyncio.run(go())
    events = [e for e in data.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    usage = json.loads(events[-2][6:])["usage"]
    assert usage["completion_tokens"] == n_tokens
    texts = [json.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:-2]]
    assert texts == [WORDS[i % len(WORDS)] for i in range(n_tokens)]


def test_pipe_times_out_when_the_backend_stalls_and_counts_from_the_last_bytes() -> None:
    """``Response.pipe``: the read timeout runs from the last bytes received (one re-armed timer
    per stream), and a stalled backend ends the pipe with an ``UpstreamError``."""
    from sagerl.live.upstream import Pool, UpstreamError

    async def go() -> tuple[list[bytes], float, str]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for _ in range(4):  # a chunk every 0.15 s: each within the 0.3 s timeout
                writer.write(b"6\r\ndata: \r\n")
                await writer.drain()
                await asyncio.sleep(0.15)
            await asyncio.sleep(5)  # then nothing
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = Pool(f"http://127.0.0.1:{port}", read_timeout_s=0.3)
        got: list[bytes] = []
        resp = await pool.request("GET", "/")
        t0 = asyncio.get_running_loop().time()
        error = ""
        try:
            await resp.pipe(lambda data, end: got.append(data))
        except UpstreamError as exc:
            error = str(exc)
        elapsed = asyncio.get_running_loop().time() - t0
        pool.close()
        server.close()
        return got, elapsed, error

    got, elapsed, error = asyncio.run(go())
    assert b"".join(got) == b"data: " * 4
    assert "timeout" in error
    assert 0.6 < elapsed < 2.0  # 4 chunks 0.15 s apart kept it alive, then 0.3 s of silence


def test_failed_scrapes_do_not_mark_down_a_backend_that_answers_requests() -> None:
    """A router starved of CPU times its own scrapes out; a backend that answered a request
    within ``stale_after_s`` stays healthy, one that did not is marked down."""
    import time

    from sagerl.live.app import Router
    from sagerl.live.scrape import ScrapeState

    cfg = ServeConfig.model_validate(
        {
            "port": 0,
            "backends": [
                {"url": "http://127.0.0.1:9", "name": "a"},
                {"url": "http://127.0.0.1:10", "name": "b"},
            ],
            "transition_log": None,
            "scrape": {"unhealthy_after": 2, "stale_after_s": 2.0},
        }
    )
    router = Router(cfg)
    router._answered_at[0] = time.monotonic()
    for i in (0, 1):
        router.scraper.states[i] = ScrapeState(failures=3, error="TimeoutError")
        router._on_scrape(i, False)
    assert router.registry[0].healthy
    assert not router.registry[1].healthy


def test_emulator_timing_comment_passes_through_the_router(tmp_path: Any) -> None:
    """``emulate --timing`` starts each stream with the backend's own TTFT as an SSE comment: the
    load client reads it on both paths (it is at most the TTFT the client saw), and the router
    forwards it untouched without counting it as a token."""
    from sagerl.live.runner import serve_until_stopped, wait_started

    emulator = bind_emulators(
        1, "127.0.0.1", 0, time_scale=40.0, stream_interval_s=0.002, timing=True
    )[0]
    sock = emulator.sock

    async def main(stop: asyncio.Event) -> None:
        await serve_until_stopped([[(emulator.server, sock)]], stop, signals=False)

    async def ready() -> None:
        await wait_started([emulator.server])

    log = tmp_path / "transitions.jsonl"
    backend = ServerThread(main, ready).start()
    try:
        cfg = ServeConfig.model_validate(
            {"port": 0, "backends": [{"url": emulator.url}], "policy": {"name": "round-robin"},
             "transition_log": str(log)}
        )  # fmt: skip
        with cluster_in_thread(cfg) as (c, _):

            async def go(url: str) -> list[Any]:
                client = LoadClient(url)
                try:
                    payload = _payload(client, 25)
                    return [await client.send(payload, keep_body=True) for _ in range(3)]
                finally:
                    client.close()

            results = asyncio.run(go(emulator.url)) + asyncio.run(go(c.url))
    finally:
        backend.stop()
    for r in results:
        assert r.status == 200 and r.done
        assert 0 < r.backend_ttft_s <= r.ttft_s
        comment, rest = r.body.split(b"\n\n", 1)
        assert comment.startswith(b": emulator-ttft-us=")
        assert _texts(rest) == [WORDS[i % len(WORDS)] for i in range(25)]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [rec["outcome"]["output_tokens"] for rec in records] == [25, 25, 25]
