"""Backend metrics: a pure Prometheus text parser, alias tables per engine, and the scraper.

Kept apart, as in vLLM's production-stack router (``EngineStats.from_vllm_scrape`` vs
``EngineStatsScraper``): :func:`parse_prometheus` and :func:`engine_stats` are pure functions
over text (unit-tested on real exposition samples); :class:`Scraper` does the HTTP on a timer
and replaces an immutable :class:`ScrapeState` per backend, so readers on the event loop always
see one consistent snapshot.

Each field the router needs has an alias table per engine, tried in order. vLLM renamed
``vllm:gpu_cache_usage_perc`` to ``vllm:kv_cache_usage_perc``; a router knowing only one name
reads 0 from the other's servers without a word. Here a field no alias matches is ``None`` and
listed in ``EngineStats.missing``, exported as ``sagerl_backend_metric_missing`` and logged once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("sagerl.live.scrape")

FIELDS = ("running", "waiting", "kv_usage")
"""What a placement view needs from a backend: sequences running, queued, KV fraction used."""

ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "vllm": {
        "running": ("vllm:num_requests_running",),
        "waiting": ("vllm:num_requests_waiting",),
        # NOTE: vLLM >= 0.10 (V1) exports kv_cache_usage_perc; older servers gpu_cache_usage_perc.
        "kv_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    },
    "sglang": {
        "running": ("sglang:num_running_reqs",),
        "waiting": ("sglang:num_queue_reqs",),
        "kv_usage": ("sglang:token_usage",),
    },
}
"""Metric names per engine and field, newest first."""

CACHE_INFO = {"vllm": "vllm:cache_config_info"}
"""Info metric whose labels carry the KV-cache size (``num_gpu_blocks``, ``block_size``)."""

Labels = tuple[tuple[str, str], ...]
Samples = dict[str, list[tuple[Labels, float]]]


# ---------------------------------------------------------------------------------- parsing
def parse_prometheus(text: str) -> Samples:
    """Parse Prometheus text exposition (version 0.0.4) into ``{name: [(labels, value)]}``.

    Comments (``# HELP``, ``# TYPE``) and blank lines are skipped; a trailing timestamp is
    ignored; ``NaN``, ``+Inf`` and ``-Inf`` parse as floats. Label values may contain escaped
    quotes, backslashes and newlines. A malformed line is skipped (one bad exporter line must not
    blind the router), so callers see only what parsed.

    Args:
        text: The body of a ``GET /metrics`` response.

    Returns:
        Samples by metric name, each a list of ``(sorted label pairs, value)``.
    """
    out: Samples = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] == "#":
            continue
        try:
            name, labels, rest = _split_sample(line)
            value = float(rest.split()[0])
        except (ValueError, IndexError):
            continue
        out.setdefault(name, []).append((labels, value))
    return out


def _split_sample(line: str) -> tuple[str, Labels, str]:
    """``name{labels} value [ts]`` -> ``(name, labels, "value [ts]")``."""
    brace = line.find("{")
    space = line.find(" ")
    if brace < 0 or (0 <= space < brace):
        if space < 0:
            raise ValueError("no value")
        return line[:space], (), line[space + 1 :]
    name = line[:brace]
    pairs: list[tuple[str, str]] = []
    i = brace + 1
    n = len(line)
    while True:
        while i < n and line[i] in " ,":
            i += 1
        if i >= n:
            raise ValueError("unterminated labels")
        if line[i] == "}":
            i += 1
            break
        eq = line.index("=", i)
        key = line[i:eq].strip()
        if eq + 1 >= n or line[eq + 1] != '"':
            raise ValueError("label value not quoted")
        j = eq + 2
        chars: list[str] = []
        while True:
            c = line[j]
            if c == "\\":
                nxt = line[j + 1]
                chars.append("\n" if nxt == "n" else nxt)
                j += 2
            elif c == '"':
                break
            else:
                chars.append(c)
                j += 1
        pairs.append((key, "".join(chars)))
        i = j + 1
    return name, tuple(sorted(pairs)), line[i:].strip()


@dataclass(frozen=True, slots=True)
class EngineStats:
    """What one scrape says about a backend (``None``: the metric was absent).

    Attributes:
        running: Sequences in the running batch (summed over the server's models).
        waiting: Sequences queued.
        kv_usage: Fraction of the KV cache in use, in [0, 1] (mean over models).
        kv_blocks_total: KV-cache capacity in blocks, where the server announces it.
        block_size: Tokens per KV block, where announced.
        sources: The metric name each field was read from (the alias that matched).
        missing: Fields no alias matched: visible, never silently zero.
    """

    running: float | None = None
    waiting: float | None = None
    kv_usage: float | None = None
    kv_blocks_total: int | None = None
    block_size: int | None = None
    sources: Mapping[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] = ()


def engine_stats(samples: Samples, engine: str) -> EngineStats:
    """Read the router's fields from parsed samples with ``engine``'s alias table.

    Counts are summed over label sets (a server may serve several models); the KV fraction is
    averaged; SGLang's ``token_usage`` and vLLM's percentages are both fractions in [0, 1].

    Raises:
        KeyError: ``engine`` has no alias table.
    """
    table = ALIASES[engine]
    values: dict[str, float | None] = {}
    sources: dict[str, str] = {}
    for fld in FIELDS:
        values[fld] = None
        for name in table[fld]:
            series = samples.get(name)
            if not series:
                continue
            vals = [v for _, v in series if not math.isnan(v)]
            if not vals:
                continue
            values[fld] = sum(vals) / len(vals) if fld == "kv_usage" else sum(vals)
            sources[fld] = name
            break
    blocks: int | None = None
    block_size: int | None = None
    info = CACHE_INFO.get(engine)
    if info and samples.get(info):
        labels = dict(samples[info][0][0])
        blocks = _int_or_none(labels.get("num_gpu_blocks"))
        block_size = _int_or_none(labels.get("block_size"))
    kv = values["kv_usage"]
    if kv is not None:
        kv = min(max(kv, 0.0), 1.0)
    return EngineStats(
        running=values["running"],
        waiting=values["waiting"],
        kv_usage=kv,
        kv_blocks_total=blocks,
        block_size=block_size,
        sources=sources,
        missing=tuple(f for f in FIELDS if values[f] is None),
    )


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(float(text)) if text not in (None, "", "None") else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------------- scraping
@dataclass(frozen=True, slots=True)
class ScrapeState:
    """The latest scrape outcome of one backend (replaced whole, never mutated).

    Attributes:
        stats: The last successful scrape's figures (``None`` before the first success).
        ok_at: ``time.monotonic()`` of the last success (``-inf`` if none).
        attempt_at: Time of the last attempt.
        failures: Consecutive failed attempts (0 after a success).
        error: The last failure's message ("" after a success).
        sent: What of the router's own the successful scrape can hold, from its ledger:
            ``(requests, KV tokens)``, the requests in flight on this backend when the scrape
            was sent plus those dispatched to it before the answer came (the server may
            count them), and the KV tokens at sending. The views subtract it to tell the
            router's requests from other clients' and correct the scrape for what changed
            since (see :mod:`sagerl.live.views`).
    """

    stats: EngineStats | None = None
    ok_at: float = -math.inf
    attempt_at: float = -math.inf
    failures: int = 0
    error: str = ""
    sent: tuple[int, int] = (0, 0)

    def age(self, now: float) -> float:
        """Seconds since the last successful scrape (``inf`` if none)."""
        return now - self.ok_at

    def fresh(self, now: float, stale_after_s: float) -> bool:
        """Whether the last success is recent enough to trust."""
        return self.stats is not None and now - self.ok_at <= stale_after_s


Fetch = Callable[[str, float], Any]
"""``await fetch(url, timeout_s) -> text``; raises on a failure (injected for tests)."""


class Scraper:
    """Polls every backend's ``/metrics`` and keeps one :class:`ScrapeState` per backend.

    Args:
        urls: Base URL per backend (index order).
        engines: Engine per backend (alias table to use).
        labels: Backend labels for the log.
        fetch: Coroutine function fetching a URL's text.
        interval_s: Time between scrapes of one backend, s.
        timeout_s: Time allowed per scrape, s.
        on_result: Called with ``(index, ok)`` after each attempt (health tracking).
        snapshot: ``snapshot(index) -> (requests in flight, KV tokens, requests dispatched
            ever)`` of the router's own ledger for that backend, read as each scrape is sent
            and when it is answered (kept as :attr:`ScrapeState.sent`).
    """

    def __init__(
        self,
        urls: list[str],
        engines: list[str],
        labels: list[str],
        fetch: Fetch,
        interval_s: float,
        timeout_s: float,
        on_result: Callable[[int, bool], None] | None = None,
        snapshot: Callable[[int], tuple[int, int, int]] | None = None,
    ) -> None:
        self.urls = urls
        self.snapshot = snapshot
        self.engines = engines
        self.labels = labels
        self.fetch = fetch
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.on_result = on_result
        self.states: list[ScrapeState] = [ScrapeState() for _ in urls]
        self.scrapes_total = [0] * len(urls)
        self.failures_total = [0] * len(urls)
        self._warned_missing: list[set[str]] = [set() for _ in urls]
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self) -> None:
        """Start one polling task per backend (staggered so scrapes do not align)."""
        self._stopping = False
        n = max(len(self.urls), 1)
        for i in range(len(self.urls)):
            delay = self.interval_s * i / n
            self._tasks.append(asyncio.ensure_future(self._loop(i, delay)))

    async def stop(self) -> None:
        """Cancel the polling tasks and wait for them."""
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _loop(self, i: int, delay: float) -> None:
        # NOTE: the flag, not only the cancel, ends the loop: Python 3.11's asyncio.wait_for can
        # swallow a cancellation that lands as the scrape completes; the loop then went on and
        # stop() (the router's shutdown) waited forever.
        await asyncio.sleep(delay)
        while not self._stopping:
            await self.scrape_once(i)
            if self._stopping:
                break
            await asyncio.sleep(self.interval_s)

    async def scrape_once(self, i: int) -> ScrapeState:
        """Scrape backend ``i`` now; update and return its state."""
        now = time.monotonic()
        prev = self.states[i]
        before = self.snapshot(i) if self.snapshot is not None else (0, 0, 0)
        self.scrapes_total[i] += 1
        try:
            text = await asyncio.wait_for(
                self.fetch(self.urls[i] + "/metrics", self.timeout_s), self.timeout_s
            )
            stats = engine_stats(parse_prometheus(text), self.engines[i])
        except Exception as exc:  # NOTE: any failure (refused, timeout, 5xx) counts the same
            self.failures_total[i] += 1
            msg = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
            state = ScrapeState(prev.stats, prev.ok_at, now, prev.failures + 1, msg, prev.sent)
            if prev.failures == 0:
                log.warning("scrape of %s failed: %s", self.labels[i], msg)
            self.states[i] = state
            if self.on_result:
                self.on_result(i, False)
            return state
        new_missing = set(stats.missing) - self._warned_missing[i]
        if new_missing:
            log.warning(
                "backend %s (%s) exports no metric for %s; tried %s",
                self.labels[i],
                self.engines[i],
                ", ".join(sorted(new_missing)),
                "; ".join(
                    f"{f}: {', '.join(ALIASES[self.engines[i]][f])}" for f in sorted(new_missing)
                ),
            )
            self._warned_missing[i] |= new_missing
        if prev.failures:
            log.info("scrape of %s recovered after %d failure(s)", self.labels[i], prev.failures)
        after = self.snapshot(i) if self.snapshot is not None else before
        sent = (before[0] + after[2] - before[2], before[1])
        state = ScrapeState(stats, now, now, 0, "", sent)
        self.states[i] = state
        if self.on_result:
            self.on_result(i, True)
        return state
