"""Run the comparison matrix: policies × arrival rates × seeds on identical workloads.

1. Saturation (when rates are fractions of it and the config gives none): the largest Poisson
   rate the cluster sustains under FCFS (:func:`estimate_saturation`).
2. Workloads: one per (rate, seed), built once from the config's workload section with that seed
   and rate (the workload builder draws rows, true lengths and arrival gaps from separate
   streams, so a seed fixes the same requests with the same true lengths at every rate).
3. Runs: one simulation per (policy, rate, seed) with a fresh predictor, spread over worker
   processes (forked: the workloads are inherited, not copied through pipes).

A run's record holds its identity (``policy``, ``rate``, ``rate_rps``, ``load``, ``seed``) and its
metrics (:data:`METRICS`), so tables and plots are pure functions of the records.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from sagerl.compare.config import CompareConfig, PolicySpec
from sagerl.compare.predictors import build_predictor
from sagerl.policy import ORDERING, make_ordering, make_placement
from sagerl.sim.build import build_replicas
from sagerl.sim.cluster import Simulation
from sagerl.workload.request import Request

METRICS: dict[str, str] = {
    "mean_ttlt": "ttlt_mean",
    "p50_ttlt": "ttlt_p50",
    "p99_ttlt": "ttlt_p99",
    "mean_ttft": "ttft_mean",
    "p99_ttft": "ttft_p99",
    "mean_tpot": "tpot_mean",
    "throughput_rps": "throughput_rps",
    "throughput_tok_s": "throughput_tok_s",
    "preemptions": "preemptions",
    "kv_use_mean": "kv_use_mean",
    "rejected": "rejected",
}
"""Record field -> :meth:`SimResult.summary` key. Times in s, throughput in req/s and tok/s."""


@dataclass(frozen=True)
class Job:
    """One simulation of the matrix (indices into the config's lists)."""

    policy: int
    rate: int
    seed: int


# Process-wide state of a comparison: set in the parent before the workers fork.
_STATE: dict[str, Any] = {}


def workload_for(cfg: CompareConfig, rate_rps: float, seed: int) -> list[Request]:
    """The workload of the config at ``rate_rps`` requests/s with ``seed``."""
    from sagerl import paths
    from sagerl.workload.build import build_workload

    wl = cfg.workload
    if wl.arrival.kind in ("poisson", "gamma"):
        wl = wl.model_copy(update={"arrival": wl.arrival.model_copy(update={"rate": rate_rps})})
    return build_workload(wl, paths.data_dir(cfg.data_dir, must_exist=False), seed)


def ordering_options(cfg: CompareConfig, spec: PolicySpec) -> dict[str, Any]:
    """The policy's ordering options plus the comparison's cost variant where it takes one."""
    import inspect

    opts = dict(spec.ordering_options)
    cls = ORDERING.get(spec.ordering)
    if "cost" in inspect.signature(cls.__init__).parameters:
        opts.setdefault("cost", cfg.compare.cost)
    return opts


def build_run(
    cfg: CompareConfig,
    spec: PolicySpec,
    seed: int,
    evaluated: Sequence[Request],
    predictor: bool = True,
) -> Simulation:
    """The cluster of ``cfg`` with ``spec``'s policies (one ordering instance per replica)."""
    from sagerl import paths

    replicas = build_replicas(cfg.cluster)
    opts = ordering_options(cfg, spec)
    for r in replicas:
        r.ordering = make_ordering(spec.ordering, **opts)
    placement_name = spec.placement or cfg.cluster.placement
    placement = make_placement(placement_name, seed=seed, **spec.placement_options)
    pred = None
    if predictor:
        pred_spec = spec.predictor or cfg.compare.predictor
        pred = build_predictor(pred_spec, paths.data_dir(cfg.data_dir, must_exist=False), evaluated)
    return Simulation(replicas, placement, pred)


def _summary_record(result: Any) -> dict[str, float]:
    summary = result.summary()
    return {field: float(summary[key]) for field, key in METRICS.items()}


def run_job(job: Job) -> dict[str, Any]:
    """Simulate one (policy, rate, seed) cell of this process's comparison; returns its record.

    What every backend calls per cell: the local pool's workers, the in-process loop and Ray's
    tasks (:mod:`sagerl.compare.ray_backend`), so their records are the same.
    """
    return run_cell(_STATE, job)


def run_cell(state: dict[str, Any], job: Job) -> dict[str, Any]:
    """Simulate one (policy, rate, seed) cell of the comparison ``state`` describes.

    Args:
        state: ``config``, ``rates_rps``, ``workloads`` (per (rate index, seed)),
            ``evaluated`` (every evaluated request, for the predictors' warm-up pools) and
            ``saturation`` (requests/s or None), as :func:`run_matrix` builds them.
        job: The cell.
    """
    cfg: CompareConfig = state["config"]
    spec = cfg.compare.policies[job.policy]
    rate_rps = state["rates_rps"][job.rate]
    requests = state["workloads"][(job.rate, job.seed)]
    sim = build_run(cfg, spec, job.seed, state["evaluated"])
    start = time.perf_counter()
    result = sim.run(requests)
    wall = time.perf_counter() - start
    saturation = state["saturation"]
    return {
        "policy": spec.name,
        "ordering": spec.ordering,
        "placement": spec.placement or cfg.cluster.placement,
        "oracle": bool(ORDERING.get(spec.ordering).oracle),
        "rate": cfg.compare.rates[job.rate],
        "rate_rps": rate_rps,
        "load": rate_rps / saturation if saturation else math.nan,
        "seed": job.seed,
        "requests": len(requests),
        **_summary_record(result),
        "wall_s": wall,
    }


# ----------------------------------------------------------------------------- saturation
def backlog_growth(result: Any) -> float:
    """How fast requests pile up, as a fraction of the arrival rate (about 0 when stable).

    With ``N(t)`` the requests arrived and not finished at time ``t`` and ``T`` the last
    arrival, the growth is ``(mean N over [3T/4, T] - mean N over [T/4, T/2]) / (T/2)``, divided
    by the arrival rate. A stable system's backlog fluctuates around a constant (growth ~ 0); an
    overloaded one grows at ``arrival rate - service rate``.
    """
    rec = result.records
    arrival = np.sort(rec["arrival"].to_numpy())
    finish = np.sort(rec["finish"].to_numpy())
    t_end = float(arrival[-1])
    if t_end <= 0:
        return 0.0

    def backlog(t0: float, t1: float) -> float:
        ts = np.linspace(t0, t1, 64)
        arrived = np.searchsorted(arrival, ts, side="right")
        done = np.searchsorted(finish, ts, side="right")
        return float((arrived - done).mean())

    growth = (backlog(0.75 * t_end, t_end) - backlog(0.25 * t_end, 0.5 * t_end)) / (0.5 * t_end)
    rate = len(arrival) / t_end
    return growth / rate


def estimate_saturation(
    cfg: CompareConfig,
    *,
    seed: int = 0,
    threshold: float = 0.05,
    iterations: int = 7,
    log: Callable[[str], None] | None = None,
) -> float:
    """The largest Poisson rate (requests/s) FCFS sustains on this cluster and workload.

    "Sustains": the backlog grows by less than ``threshold`` of the arrival rate
    (:func:`backlog_growth`). Found by doubling, then bisection (``iterations`` steps), each step
    one FCFS simulation of the seed-``seed`` workload with ``compare.saturation_requests``
    requests (enough that the run spans many times the slowest requests' latency; a short run's
    warm-up transient looks like overload).

    NOTE: a throughput measured *in* overload is lower (vLLM-style admission thrashes the KV
    cache with preemptions once it is full), so "max throughput under overload" would put the
    knee of the latency curve well above 100% load; the sustained rate puts it at 100%.
    """
    fcfs = PolicySpec(name="fcfs", ordering="fcfs")
    probes = cfg.compare.saturation_requests
    if probes is not None:
        cfg = cfg.model_copy(
            update={"workload": cfg.workload.model_copy(update={"num_requests": probes})}
        )

    def sustains(rate: float) -> bool:
        reqs = workload_for(cfg, rate, seed)
        sim = build_run(cfg, fcfs, seed, reqs, predictor=False)
        growth = backlog_growth(sim.run(reqs))
        if log:
            log(f"saturation probe {rate:.3f} req/s: backlog grows at {growth:.3f} x rate")
        return growth < threshold

    lo, hi = 0.0, 1.0
    while sustains(hi):
        lo, hi = hi, hi * 2
        if hi > 1e5:
            raise RuntimeError("saturation search diverged (the cluster sustains any rate)")
    for _ in range(iterations):
        mid = (lo + hi) / 2 if lo > 0 else hi / 2
        if sustains(mid):
            lo = mid
        else:
            hi = mid
        if lo == 0 and hi < 1e-3:
            break
    return lo if lo > 0 else hi


# ----------------------------------------------------------------------------- the matrix
def rates_rps(cfg: CompareConfig, saturation: float | None) -> list[float]:
    """The config's rates in requests/s."""
    c = cfg.compare
    if c.rate_unit == "rps":
        return list(c.rates)
    assert saturation is not None
    return [r * saturation for r in c.rates]


def run_matrix(
    cfg: CompareConfig,
    *,
    saturation: float | None = None,
    progress: bool = True,
    processes: int | None = None,
    log: Callable[[str], None] | None = None,
    backend: str = "local",
    address: str | None = None,
) -> tuple[list[dict[str, Any]], float | None]:
    """Run every (policy, rate, seed); returns the records and the saturation rate used.

    Args:
        cfg: The comparison config.
        saturation: Saturation rate (requests/s); default the config's, else measured.
        progress: Show a progress bar over runs.
        processes: Worker processes (default the config's ``compare.processes``); with the Ray
            backend, the CPUs of the local Ray (ignored with ``address``, where the cluster's
            CPUs decide).
        log: Receives one-line progress messages (saturation probes, workload building).
        backend: ``local`` (this machine's processes) or ``ray`` (one Ray task per cell,
            :mod:`sagerl.compare.ray_backend`); the records are the same, ``wall_s`` aside.
        address: With ``ray``: an existing Ray cluster (``None`` starts a local Ray).

    Raises:
        SagerlError: ``ray`` without Ray installed, or an unknown backend.
    """
    if backend not in ("local", "ray"):
        from sagerl.errors import SagerlError

        raise SagerlError(f"unknown compare backend '{backend}'; valid: local, ray")
    if backend == "ray":
        from sagerl.compare.ray_backend import require_ray

        require_ray()
    c = cfg.compare
    if saturation is None:
        saturation = c.saturation_rps
    if saturation is None and c.rate_unit == "saturation":
        saturation = estimate_saturation(cfg, seed=c.seeds[0], log=log)
        if log:
            log(f"saturation: {saturation:.3f} req/s")
    rps = rates_rps(cfg, saturation)
    workloads: dict[tuple[int, int], list[Request]] = {}
    for i, rate in enumerate(rps):
        for seed in c.seeds:
            workloads[(i, seed)] = workload_for(cfg, rate, seed)
    evaluated = {
        r.prompt_id or f"#{r.id}:{r.prompt_text}": r for w in workloads.values() for r in w
    }
    _STATE.clear()
    _STATE.update(
        config=cfg,
        rates_rps=rps,
        workloads=workloads,
        evaluated=list(evaluated.values()),
        saturation=saturation,
    )
    _warm_shared_state(cfg)
    jobs = [Job(p, i, s) for i in range(len(rps)) for s in c.seeds for p in range(len(c.policies))]
    procs = processes or c.processes
    records: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc=f"compare {cfg.name}", unit="run", disable=not progress)
    if backend == "ray":
        import sagerl
        from sagerl.compare.ray_backend import ray_session, run_cells

        with ray_session(address, num_cpus=procs, ship=[sagerl], log=log):
            for rec in run_cells(dict(_STATE), jobs):
                records.append(rec)
                bar.update(1)
    elif procs <= 1 or len(jobs) == 1:
        for job in jobs:
            records.append(run_job(job))
            bar.update(1)
    else:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        init = None if ctx.get_start_method() == "fork" else (_init_worker, (dict(_STATE),))
        with ctx.Pool(procs, *(init or ())) as pool:
            for rec in pool.imap_unordered(run_job, jobs):
                records.append(rec)
                bar.update(1)
    bar.close()
    order = {(p.name): k for k, p in enumerate(c.policies)}
    records.sort(key=lambda r: (r["rate_rps"], order[r["policy"]], r["seed"]))
    return records, saturation


def _init_worker(state: dict[str, Any]) -> None:
    _STATE.clear()
    _STATE.update(state)
    _warm_shared_state(state["config"])


def _warm_shared_state(cfg: CompareConfig) -> None:
    """Build the shared predictor parts (warm-up pools, embedder caches) before forking."""
    from sagerl import paths
    from sagerl.compare.predictors import needs_embedding, shared_embedder, warmup_pool

    data_dir = paths.data_dir(cfg.data_dir, must_exist=False)
    specs = [cfg.compare.predictor] + [p.predictor for p in cfg.compare.policies if p.predictor]
    texts: dict[str, tuple[Any, set[str]]] = {}
    for spec in specs:
        pool = warmup_pool(spec, data_dir, _STATE["evaluated"])
        if needs_embedding(spec):
            key = spec.options.get("embedder", {}).__repr__()
            _, bag = texts.setdefault(key, (spec, set()))
            bag.update(r.prompt_text for r in _STATE["evaluated"] if r.prompt_text)
            if pool is not None and pool.texts is not None:
                bag.update(pool.texts)
    for spec, bag in texts.values():
        shared_embedder(spec, bag)


def seeds_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


__all__ = [
    "METRICS",
    "Job",
    "backlog_growth",
    "build_run",
    "estimate_saturation",
    "rates_rps",
    "run_cell",
    "run_job",
    "run_matrix",
    "seeds_spread",
    "workload_for",
]
