"""A cheap streaming HTTP/1.1 client for load tests: one callback per chunk, no task per chunk.

Why not aiohttp (or :class:`sagerl.live.upstream.Pool`): ``benchmarks/router_load.py`` runs its
clients, the router and the emulated backends on one 2-core machine, so every CPU-millisecond the
load generator spends is queueing delay it adds to the latency it measures. With aiohttp the
clients cost about 1.4 ms of CPU per streamed request, more than the router itself. A load client
needs only: send a prepared request, note when the first body byte arrives and when the message
ends, and check the stream ended with ``data: [DONE]``. Here that is an ``asyncio.Protocol`` with
the ``httptools`` parser; a streamed chunk costs one parser callback (no future, no coroutine
wake-up), and a request one future.

Used the same way against the backends and against the router, so the two paths are measured by
the same client.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

_DONE = b"data: [DONE]"
_TIMING = b": emulator-ttft-us="
"""The emulator's timing comment (:data:`sagerl.live.emulator.TIMING_COMMENT`)."""


@dataclass(slots=True)
class Result:
    """One response as the client saw it.

    Attributes:
        status: HTTP status (0 when the connection failed before a status line).
        ttft_s: Request sent to first body byte, s (-1: no body byte).
        ttlt_s: Request sent to the end of the message (or the failure), s.
        done: Whether the body's tail held ``data: [DONE]`` (a complete SSE stream).
        error: Why the request failed on the wire ("" when a whole message arrived).
        body: The whole body, kept only when asked for (``keep_body``).
        backend_ttft_s: The backend's own TTFT when the stream starts with the emulator's
            timing comment (``emulate --timing``), s; -1 otherwise.
    """

    status: int
    ttft_s: float
    ttlt_s: float
    done: bool
    error: str = ""
    body: bytes = b""
    backend_ttft_s: float = -1.0


class _Conn(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight."""

    __slots__ = (
        "backend_ttft",
        "first_at",
        "fut",
        "idle",
        "keep_alive",
        "keep_body",
        "last",
        "parser",
        "parts",
        "prev",
        "sent_at",
        "status",
        "transport",
    )

    def __init__(self, idle: collections.deque[_Conn]) -> None:
        self.idle = idle
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.fut: asyncio.Future[Result] | None = None
        self.sent_at = 0.0
        self.first_at = -1.0
        self.backend_ttft = -1.0
        self.status = 0
        self.prev = b""
        self.last = b""
        self.keep_body = False
        self.keep_alive = False
        self.parts: list[bytes] = []

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"bad HTTP: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(f"connection lost: {exc}" if exc else "connection closed")

    # ---- httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # NOTE: False once the message ends

    def on_body(self, body: bytes) -> None:
        if self.first_at < 0:
            self.first_at = time.perf_counter()
            if body.startswith(_TIMING):
                end = body.find(b"\n", len(_TIMING))
                with contextlib.suppress(ValueError):
                    self.backend_ttft = int(body[len(_TIMING) : end]) / 1e6
        if self.keep_body:
            self.parts.append(body)
        self.prev = self.last
        self.last = body

    def on_message_complete(self) -> None:
        fut, self.fut = self.fut, None
        if fut is None or fut.done():
            return
        now = time.perf_counter()
        tail = self.prev[-64:] + self.last
        ttft = self.first_at - self.sent_at if self.first_at >= 0 else -1.0
        body = b"".join(self.parts) if self.keep_body else b""
        result = Result(
            self.status, ttft, now - self.sent_at, _DONE in tail, "", body, self.backend_ttft
        )
        if self.transport is not None and self.keep_alive:
            self.idle.append(self)
        elif self.transport is not None:
            self.transport.close()
        fut.set_result(result)

    # ----
    def send(self, payload: bytes, keep_body: bool) -> asyncio.Future[Result]:
        """Write one request; the future resolves when its response ends (or fails)."""
        assert self.transport is not None
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.fut = fut
        self.first_at = -1.0
        self.backend_ttft = -1.0
        self.status = 0
        self.keep_alive = False
        self.prev = self.last = b""
        self.keep_body = keep_body
        self.parts = []
        self.sent_at = time.perf_counter()
        self.transport.write(payload)
        return fut

    def _fail(self, error: str) -> None:
        fut, self.fut = self.fut, None
        if self.transport is not None:
            self.transport.close()
        if fut is not None and not fut.done():
            now = time.perf_counter()
            ttft = self.first_at - self.sent_at if self.first_at >= 0 else -1.0
            fut.set_result(Result(self.status, ttft, now - self.sent_at, False, error))

    def abort(self) -> None:
        """Give up on the request in flight (timeout)."""
        self._fail("timed out")


class LoadClient:
    """Keep-alive connections to one ``http://host:port`` server, for load generation.

    Args:
        base_url: The server's base URL.
        timeout_s: Longest a request may take end to end; then it fails as ``timed out``.
    """

    def __init__(self, base_url: str, timeout_s: float = 120.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"plain http only: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self._host_header = f"host: {self.host}:{self.port}\r\n".encode()
        self.timeout_s = timeout_s
        self._idle: collections.deque[_Conn] = collections.deque()
        self._all: list[_Conn] = []

    def request_bytes(self, method: str, path: str, body: bytes = b"") -> bytes:
        """The whole request as written on the wire (prepare once, send many times)."""
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._host_header
        if body:
            head += b"content-type: application/json\r\n"
        return head + b"content-length: %d\r\n\r\n" % len(body) + body

    async def send(self, payload: bytes, keep_body: bool = False) -> Result:
        """Send a prepared request (:meth:`request_bytes`); never raises for wire failures.

        A reused connection that the server closed while idle is retried once on a new one.
        """
        loop = asyncio.get_running_loop()
        for _ in range(2):
            reused = False
            conn = None
            while self._idle:
                c = self._idle.pop()
                if c.transport is not None and not c.transport.is_closing():
                    conn, reused = c, True
                    break
            if conn is None:
                try:
                    _, conn = await loop.create_connection(
                        lambda: _Conn(self._idle), self.host, self.port
                    )
                except OSError as exc:
                    return Result(0, -1.0, 0.0, False, f"connect failed: {exc}")
                self._all.append(conn)
            fut = conn.send(payload, keep_body)
            timer = loop.call_later(self.timeout_s, conn.abort)
            try:
                result = await fut
            finally:
                timer.cancel()
            if not (reused and result.status == 0 and result.error):
                return result
        return result

    async def get(self, path: str) -> Result:
        """``GET path`` with the body kept (e.g. ``/metrics``)."""
        return await self.send(self.request_bytes("GET", path), keep_body=True)

    def close(self) -> None:
        """Close every connection (requests in flight fail as ``connection closed``)."""
        for c in self._all:
            if c.transport is not None:
                c.transport.close()
        self._all.clear()
        self._idle.clear()
