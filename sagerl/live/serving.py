"""Start a router (and optionally its emulated backends) inside the running event loop.

``serve`` uses it from the command line; the tests and ``benchmarks/router_load.py`` use it in a
background thread (:class:`~sagerl.live.runner.ServerThread`). Everything binds to the
configured host (loopback by default); emulated backends always bind to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from sagerl.live.app import Router
from sagerl.live.config import BackendSpec, ServeConfig
from sagerl.live.emulator import EmulatorApp, bind_emulators
from sagerl.live.runner import (
    Server,
    ServerThread,
    bind,
    make_server,
    serve_until_stopped,
    wait_started,
)

LOOPBACK = "127.0.0.1"


@dataclass
class Cluster:
    """A running router and its emulated backends.

    Attributes:
        router: The router's state (ledger, registry, metrics).
        url: The router's base URL.
        emulators: Emulated backends started with it.
        emulator_urls: Their base URLs.
        servers: The uvicorn servers (router first).
    """

    router: Router
    url: str
    emulators: list[EmulatorApp] = field(default_factory=list)
    emulator_urls: list[str] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Future[None] | None = None

    async def wait(self) -> None:
        """Until the servers stopped (SIGINT/SIGTERM or :meth:`stop`)."""
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        """Drain the router, then stop the backends."""
        self._stop.set()
        await self.wait()


async def start_emulators(
    cfg: ServeConfig,
) -> tuple[list[EmulatorApp], list[tuple[Server, object]], list[BackendSpec]]:
    """Build ``cfg.emulate.count`` emulated servers on loopback; their backend entries."""
    from sagerl.live.prediction import TokenCounter

    em = cfg.emulate
    if not em.count:
        return [], [], []
    bound = bind_emulators(
        em.count,
        LOOPBACK,
        em.base_port,
        gpu=em.gpu,
        model=em.model,
        time_scale=em.time_scale,
        priority_scheduling=em.priority_scheduling,
        mean_output_tokens=em.mean_output_tokens,
        tokens=TokenCounter(cfg.tokenizer, cfg.data_dir),
        stream_interval_s=em.stream_interval_ms / 1000.0,
    )
    specs = [
        BackendSpec(
            url=b.url,
            engine="vllm",
            gpu=em.gpu,
            model=em.model,
            name=f"emu{i}",
            priority_scheduling=em.priority_scheduling,
        )
        for i, b in enumerate(bound)
    ]
    return [b.emulator for b in bound], [(b.server, b.sock) for b in bound], specs


async def start_cluster(cfg: ServeConfig, *, signals: bool = True) -> Cluster:
    """Start the emulated backends (if any) and the router; return once all accept connections.

    Args:
        cfg: The serve config; emulated backends are appended to its ``backends``.
        signals: Stop on SIGINT/SIGTERM (main thread only).
    """
    apps, pairs, specs = await start_emulators(cfg)
    if specs:
        cfg = cfg.model_copy(update={"backends": [*cfg.backends, *specs]})
    router = Router(cfg)
    rsock = bind(cfg.host, cfg.port)
    host, port = rsock.getsockname()[:2]
    rserver = make_server(router.app(), drain_timeout_s=cfg.drain_timeout_s)
    stop = asyncio.Event()

    def draining() -> None:
        router.draining = True

    stages = [[(rserver, rsock)]] + ([pairs] if pairs else [])
    task = asyncio.ensure_future(
        serve_until_stopped(stages, stop, on_stop=draining, signals=signals)  # type: ignore[arg-type]
    )
    servers = [rserver] + [s for s, _ in pairs]
    started = asyncio.ensure_future(wait_started(servers))
    await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        started.cancel()
        await task
        raise RuntimeError("the servers stopped during start-up")
    started.result()
    shown = f"[{host}]" if ":" in host else host
    return Cluster(
        router=router,
        url=f"http://{shown}:{port}",
        emulators=apps,
        emulator_urls=[s.url for s in specs],
        servers=servers,
        _stop=stop,
        _task=task,
    )


@contextlib.contextmanager
def cluster_in_thread(cfg: ServeConfig) -> Iterator[tuple[Cluster, ServerThread]]:
    """Run :func:`start_cluster` in a background thread (tests, benchmarks); stop on exit.

    Yields:
        The running cluster and its thread (``thread.call(fn)`` runs ``fn`` on the cluster's
        loop, e.g. to read the ledger consistently).
    """
    holder: dict[str, Cluster] = {}

    async def main(stop: asyncio.Event) -> None:
        cluster = await start_cluster(cfg, signals=False)
        holder["cluster"] = cluster
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait(
            [waiter, asyncio.ensure_future(cluster.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        await cluster.stop()
        waiter.cancel()

    async def ready() -> None:
        while "cluster" not in holder:
            await asyncio.sleep(0.01)

    thread = ServerThread(main, ready).start()
    try:
        yield holder["cluster"], thread
    finally:
        thread.stop()
