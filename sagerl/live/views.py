"""Fill the simulator's :class:`~sagerl.view.ReplicaView` from the ledger and the scrapes.

The rule per backend, with ``L`` the router's ledger and ``S`` the latest scrape (used only
while fresh, i.e. younger than ``stale_after_s``, and only for the fields it had)::

    running  = S.running                     if fresh, else L.decoding
    waiting  = max(S.waiting, L.in_flight - running)
                                             if fresh, else L.prefilling
    kv_used  = ceil(S.kv_usage * blocks)     if fresh, else ceil(L.kv_tokens / block_size)
    blocks   = config > S.cache_info > the step-time model's vLLM sizing

The ``max`` covers requests the router sent since the scrape (the server has them, the scrape
does not yet). ``healthy`` is the registry's health; ``cost_rate`` and ``decode_tokens_per_s``
the same static hints a simulated replica of that GPU and model has; ``queue_profile`` the
ledger's ranks with prefix sums of expected work (built only if the policy asks).
"""

from __future__ import annotations

import math
import time
from functools import partial

from sagerl.live.backends import BackendRegistry
from sagerl.live.ledger import Ledger
from sagerl.live.scrape import ScrapeState
from sagerl.view import ReplicaView


def build_views(
    registry: BackendRegistry,
    ledger: Ledger,
    scrapes: list[ScrapeState],
    stale_after_s: float,
    now: float | None = None,
    exclude: frozenset[int] | set[int] = frozenset(),
) -> list[ReplicaView]:
    """One view per backend, in index order.

    Args:
        registry: Backends with health and static hints.
        ledger: The router's in-flight requests.
        scrapes: Latest scrape state per backend.
        stale_after_s: Scrapes older than this are ignored, s.
        now: ``time.monotonic()`` (read here when ``None``).
        exclude: Backends to show as unhealthy (already failed for this request).
    """
    t = time.monotonic() if now is None else now
    views: list[ReplicaView] = []
    for b in registry.backends:
        i = b.index
        spec = b.spec
        state = scrapes[i]
        stats = state.stats if state.fresh(t, stale_after_s) else None
        block_size = spec.block_size
        if stats is not None and stats.block_size:
            block_size = stats.block_size
        blocks = spec.kv_blocks_total or (stats.kv_blocks_total if stats else None)
        blocks = blocks or b.hints.kv_blocks_total or 1
        in_flight = ledger.in_flight(i)
        if stats is not None and stats.running is not None:
            running = int(stats.running)
            waiting = max(int(stats.waiting or 0), in_flight - running)
        else:
            running = ledger.decoding[i]
            waiting = ledger.prefilling[i]
        if stats is not None and stats.kv_usage is not None:
            used = math.ceil(stats.kv_usage * blocks - 1e-9)
        else:
            used = -(-ledger.kv_tokens[i] // block_size)
        views.append(
            ReplicaView(
                index=i,
                gpu=b.hints.gpu,
                model=b.hints.model,
                num_running=running,
                num_waiting=waiting,
                kv_blocks_used=min(max(used, 0), blocks),
                kv_blocks_total=blocks,
                block_size=block_size,
                decode_tokens_per_s=b.hints.decode_tokens_per_s,
                healthy=b.healthy and i not in exclude,
                cost_rate=b.hints.cost_rate,
                queue_profile=partial(ledger.queue_profile, i),
            )
        )
    return views
