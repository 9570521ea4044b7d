"""Running ASGI apps on uvicorn: loopback sockets, several servers in one loop, clean stops.

``serve --emulate 4`` runs five servers (four emulated backends and the router) in one process
and one event loop, so uvicorn's own signal capture (one handler per server, restored in LIFO
order) is replaced by :func:`serve_until_stopped`, which stops the router first (draining its
in-flight streams) and the backends after. :class:`ServerThread` runs the same servers in a
background thread for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any

import uvicorn

log = logging.getLogger("sagerl.live")


def new_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop when uvloop is installed (about 2x faster I/O), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (``port`` 0: an ephemeral port, read back with ``getsockname``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class Server(uvicorn.Server):
    """A uvicorn server that leaves signals to its caller (several share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def make_server(app: Any, *, drain_timeout_s: float = 30.0, log_level: str = "warning") -> Server:
    """A quiet uvicorn server for ``app`` (httptools and uvloop when installed, no access log)."""
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(max(drain_timeout_s, 0)) or None,
        timeout_keep_alive=30,
        backlog=2048,
    )
    return Server(config)


async def serve_until_stopped(
    stages: Sequence[Sequence[tuple[Server, socket.socket]]],
    stop: asyncio.Event | None = None,
    on_stop: Callable[[], None] | None = None,
    signals: bool = True,
) -> None:
    """Run every server until SIGINT/SIGTERM (or ``stop``), then stop them stage by stage.

    Args:
        stages: Servers with their sockets, grouped into stop stages: the first group stops
            (and drains) first. The router goes first, its backends after, so in-flight streams
            finish against live backends.
        stop: An event that also triggers the stop (tests).
        on_stop: Called once when the stop begins (e.g. the router starts refusing requests).
        signals: Install SIGINT/SIGTERM handlers (main thread only).
    """
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    if signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
    tasks = [
        [asyncio.ensure_future(server.serve(sockets=[sock])) for server, sock in stage]
        for stage in stages
    ]
    waiter = asyncio.ensure_future(stop.wait())
    everything = [t for stage in tasks for t in stage]
    done, _ = await asyncio.wait([waiter, *everything], return_when=asyncio.FIRST_COMPLETED)
    for t in done:
        if t is not waiter and t.exception() is not None:
            log.error("server stopped with an error: %s", t.exception())
    if on_stop is not None:
        on_stop()
    for stage, stage_tasks in zip(stages, tasks, strict=True):
        for server, _ in stage:
            server.should_exit = True
        await asyncio.gather(*stage_tasks, return_exceptions=True)
    waiter.cancel()


async def wait_started(servers: Sequence[Server], timeout_s: float = 30.0) -> None:
    """Wait until every server accepts connections."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not all(s.started for s in servers):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("servers did not start in time")
        await asyncio.sleep(0.01)


class ServerThread:
    """Runs ``main(stop_event)`` in a background thread with its own event loop.

    Args:
        main: A coroutine function run in the thread's loop; it must return once the given
            ``asyncio.Event`` is set.
        ready: A coroutine run in the loop after ``main`` starts; :meth:`start` returns when it
            completes (e.g. :func:`wait_started`).
    """

    def __init__(
        self,
        main: Callable[[asyncio.Event], Awaitable[None]],
        ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._main = main
        self._ready = ready
        self.loop = new_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="sagerl-servers", daemon=True)
        self._started = threading.Event()
        self.error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._body())
        except BaseException as exc:  # reported to the caller of start()/stop()
            self.error = exc
            self._started.set()
        finally:
            self.loop.close()

    async def _body(self) -> None:
        self._stop = asyncio.Event()
        task = asyncio.ensure_future(self._main(self._stop))
        if self._ready is not None:
            await self._ready()
        self._started.set()
        await task

    def start(self, timeout_s: float = 60.0) -> ServerThread:
        """Start the thread; return once ``ready`` completed."""
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise TimeoutError("server thread did not become ready")
        if self.error is not None:
            raise RuntimeError(f"server thread failed: {self.error}") from self.error
        return self

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the thread's loop and return its result (thread-safe)."""

        async def wrapper() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(30)

    def run(self, coro: Awaitable[Any], timeout_s: float = 60.0) -> Any:
        """Run a coroutine in the thread's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)  # type: ignore[arg-type]

    def stop(self, timeout_s: float = 60.0) -> None:
        """Set the stop event and join the thread."""
        if self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        if self.error is not None:
            raise RuntimeError(f"server thread failed: {self.error}") from self.error
