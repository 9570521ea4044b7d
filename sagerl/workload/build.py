"""Turn a :class:`WorkloadConfig` into the list of requests a simulation replays.

Steps, each drawing from its own child of ``SeedSequence(seed)`` so that changing one part (say
the arrival rate) leaves the others (which rows, which sampled lengths) unchanged:

1. load each data set's pool (cached) and apply the token filters;
2. arrival times: synthetic (``poisson``/``gamma``/``schedule``, as many as ``num_requests``
   and/or up to ``duration_s``) or the single data set's own timestamps (``trace``: a window
   from ``start_offset_s``, optionally rescaled to a target rate);
3. rows: for synthetic arrivals, each data set gets its weight's share of the requests (largest
   remainder, so shares are exact up to rounding), rows drawn without replacement while the pool
   lasts, then the order is shuffled so sources interleave; for ``trace``, the rows that arrived;
4. true output lengths: one of the row's sampled lengths (CASTILLO's 10) drawn uniformly, all
   of them kept in ``length_samples``; otherwise the data set's length;
5. texts for length-only rows when ``pair_text`` is on (see :mod:`sagerl.workload.pairing`);
6. requests sorted by arrival, ids 0..n-1.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sagerl.errors import ConfigError
from sagerl.workload import arrivals
from sagerl.workload.config import DatasetSpec, WorkloadConfig
from sagerl.workload.datasets import get_dataset, load_pool
from sagerl.workload.pairing import nearest_texts
from sagerl.workload.pool import RequestPool
from sagerl.workload.request import Request

_STREAMS = ("arrivals", "rows", "outputs", "pairing", "shuffle")


@dataclass
class _Picked:
    """The chosen rows, one entry per request (in arrival-slot order).

    Attributes:
        pools: The filtered pools the rows come from.
        which: Index into ``pools`` per request.
        rows: Row of that pool per request.
    """

    pools: list[RequestPool]
    which: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, get: Callable[[RequestPool], np.ndarray]) -> np.ndarray:
        """Gather one numeric column across pools, in request order."""
        out = np.zeros(len(self), dtype=np.int64)
        for k, pool in enumerate(self.pools):
            mask = self.which == k
            out[mask] = get(pool)[self.rows[mask]]
        return out


def build_workload(
    cfg: WorkloadConfig,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> list[Request]:
    """Build the requests of a workload.

    Args:
        cfg: The workload section of the run config.
        data_dir: Full-data directory (``None``: ``SAGERL_DATA`` or ``../shared/data``); not
            needed when every data set is a ``sample_*`` one.
        seed: Seed (>= 0) for every random choice; the same seed gives the same list.

    Returns:
        Requests sorted by arrival time (s), with ids ``0..n-1`` in that order.

    Raises:
        ConfigError: the config cannot be met (e.g. a filter leaves a data set empty, or
            ``trace`` on a data set without timestamps).
        DataError: a data file is missing or malformed.
    """
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    children = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    rng = {name: np.random.default_rng(c) for name, c in zip(_STREAMS, children, strict=True)}
    pools = [_filtered_pool(spec, cfg, data_dir, seed) for spec in cfg.datasets]

    if cfg.arrival.kind == "trace":
        times, picked = _trace(cfg, pools[0])
    else:
        times = _synthetic_times(cfg, rng["arrivals"])
        picked = _mix(pools, [s.weight for s in cfg.datasets], len(times), rng["rows"])
        perm = rng["shuffle"].permutation(len(picked))  # interleave the sources
        picked = _Picked(pools, picked.which[perm], picked.rows[perm])

    paired = _pair(cfg, picked, data_dir, seed, rng["pairing"])
    return _requests(times, picked, paired, rng["outputs"])


def _load(spec: DatasetSpec, data_dir: str | os.PathLike[str] | None, seed: int) -> RequestPool:
    """Load a data set, handing loaders that take a ``seed`` option the workload's seed."""
    options = dict(spec.options)
    if "seed" in get_dataset(spec.name).options.model_fields and "seed" not in options:
        options["seed"] = seed
    return load_pool(spec.name, data_dir, **options)


def _filtered_pool(
    spec: DatasetSpec,
    cfg: WorkloadConfig,
    data_dir: str | os.PathLike[str] | None,
    seed: int,
) -> RequestPool:
    """The data set's pool restricted to rows that pass the token filters."""
    pool = _load(spec, data_dir, seed)
    samples = pool.output_samples
    longest = pool.output_tokens if samples is None else samples.max(1, initial=0)
    shortest = pool.output_tokens if samples is None else samples.min(1, initial=1 << 62)
    keep = (pool.prompt_tokens >= cfg.min_prompt_tokens) & (shortest >= cfg.min_output_tokens)
    if cfg.max_prompt_tokens is not None:
        keep &= pool.prompt_tokens <= cfg.max_prompt_tokens
    if cfg.max_output_tokens is not None:
        keep &= longest <= cfg.max_output_tokens
    if not keep.any():
        raise ConfigError(
            f"data set '{spec.name}' has no requests left after the token filters "
            f"(min/max_prompt_tokens, min/max_output_tokens); it had {len(pool)}"
        )
    return pool if keep.all() else pool.take(np.flatnonzero(keep))


def _synthetic_times(cfg: WorkloadConfig, rng: np.random.Generator) -> np.ndarray:
    """Arrival times (s) of a Poisson, Gamma or scheduled process."""
    arr = cfg.arrival
    cv = 1.0 if arr.kind == "poisson" else arr.cv
    if arr.kind != "schedule" and cfg.duration_s is None and cfg.num_requests is not None:
        return arrivals.gamma(arr.rate, cv, cfg.num_requests, rng)
    schedule = list(arr.schedule or []) if arr.kind == "schedule" else [(0.0, arr.rate)]
    try:
        return arrivals.piecewise(schedule, cfg.num_requests, rng, cv=cv, duration=cfg.duration_s)
    except ValueError as exc:
        raise ConfigError(f"workload.arrival: {exc}") from None


def _trace(cfg: WorkloadConfig, pool: RequestPool) -> tuple[np.ndarray, _Picked]:
    """A window of the data set's own arrival times, optionally rescaled."""
    name = cfg.datasets[0].name
    if pool.timestamps is None:
        raise ConfigError(
            f"arrival.kind 'trace' needs a data set with timestamps; '{name}' has none "
            "(azure_conv, azure_code and servegen have them)"
        )
    # Pool timestamps count from the trace start, so filtered-out rows do not move the window.
    order = np.argsort(pool.timestamps, kind="stable")
    times = pool.timestamps[order] - cfg.start_offset_s
    keep = times >= 0
    if cfg.duration_s is not None:
        keep &= times < cfg.duration_s
    order, times = order[keep], times[keep]
    if cfg.num_requests is not None:
        order, times = order[: cfg.num_requests], times[: cfg.num_requests]
    if len(times) == 0:
        raise ConfigError(
            f"the trace window of '{name}' (start_offset_s={cfg.start_offset_s}, "
            f"duration_s={cfg.duration_s}) holds no requests"
        )
    if cfg.arrival.rescale_to_rate is not None:
        if len(times) < 2 or times[-1] <= times[0]:
            raise ConfigError(f"cannot rescale a trace window of {len(times)} request(s)")
        times = arrivals.rescale(times, cfg.arrival.rescale_to_rate)
    return times, _Picked([pool], np.zeros(len(order), dtype=np.int64), order)


def shares(n: int, weights: list[float]) -> np.ndarray:
    """Split ``n`` requests by weight, exact up to rounding (largest-remainder method)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = n * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    short = n - int(counts.sum())
    if short:
        counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


def _mix(
    pools: list[RequestPool], weights: list[float], n: int, rng: np.random.Generator
) -> _Picked:
    """Each pool's share of ``n`` rows, without replacement while the pool lasts."""
    which, rows = [], []
    for k, (pool, count) in enumerate(zip(pools, shares(n, weights), strict=True)):
        rows.append(rng.choice(len(pool), size=int(count), replace=bool(count > len(pool))))
        which.append(np.full(int(count), k, dtype=np.int64))
    return _Picked(pools, np.concatenate(which), np.concatenate(rows).astype(np.int64))


def _pair(
    cfg: WorkloadConfig,
    picked: _Picked,
    data_dir: str | os.PathLike[str] | None,
    seed: int,
    rng: np.random.Generator,
) -> dict[int, tuple[str, str]]:
    """Request slot -> (text, prompt_id) borrowed for length-only requests."""
    lengths_only = [k for k, p in enumerate(picked.pools) if p.texts is None]
    need = np.flatnonzero(np.isin(picked.which, lengths_only))
    if not cfg.pair_text or len(need) == 0:
        return {}
    source = cfg.pair_source
    texts = _load(source, data_dir, seed)
    if texts.texts is None:
        raise ConfigError(f"pair_source '{source.name}' has no prompt text to pair with")
    has_text = np.fromiter((bool(t.strip()) for t in texts.texts), dtype=bool, count=len(texts))
    usable = np.flatnonzero(has_text & (texts.prompt_tokens > 0))
    if len(usable) == 0:
        raise ConfigError(f"pair_source '{source.name}' has no non-empty prompt text")
    prompt = picked.column(lambda p: p.prompt_tokens)[need]
    chosen = usable[nearest_texts(prompt, texts.prompt_tokens[usable], rng, cfg.pair_candidates)]
    ids = texts.prompt_ids or [str(i) for i in range(len(texts))]
    return {
        slot: (texts.texts[row], f"{source.name}:{ids[row]}")
        for slot, row in zip(need.tolist(), chosen.tolist(), strict=True)
    }


def _requests(
    times: np.ndarray,
    picked: _Picked,
    paired: dict[int, tuple[str, str]],
    rng: np.random.Generator,
) -> list[Request]:
    """Assemble Request objects in arrival order with ids 0..n-1."""
    # True output length: a uniform draw among the row's samples where it has several.
    outputs = picked.column(lambda p: p.output_tokens)
    samples: dict[int, tuple[int, ...]] = {}
    for k, pool in enumerate(picked.pools):
        if pool.output_samples is None:
            continue
        slots = np.flatnonzero(picked.which == k)
        rows = pool.output_samples[picked.rows[slots]]
        draw = rng.integers(0, rows.shape[1], size=len(slots))
        outputs[slots] = rows[np.arange(len(slots)), draw]
        samples.update(zip(slots.tolist(), map(tuple, rows.tolist()), strict=True))
    prompts = picked.column(lambda p: p.prompt_tokens)

    requests = []
    order = np.argsort(times, kind="stable")
    for rid, slot in enumerate(order.tolist()):
        pool = picked.pools[int(picked.which[slot])]
        row = int(picked.rows[slot])
        text = None if pool.texts is None else pool.texts[row]
        pid = pool.prompt_ids[row] if pool.prompt_ids is not None else str(row)
        if slot in paired:
            text, pid = paired[slot]
        requests.append(
            Request(
                id=rid,
                arrival=float(times[slot]),
                prompt_tokens=int(prompts[slot]),
                output_tokens=int(outputs[slot]),
                prompt_text=text,
                source=pool.source,
                client=None if pool.clients is None else pool.clients[row],
                prompt_id=pid,
                length_samples=samples.get(slot, ()),
            )
        )
    return requests
