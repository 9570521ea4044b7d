"""Router load benchmark: what the live router adds, measured side by side with direct clients.

Starts emulated vLLM backends (``python -m sagerl emulate --count N``, one process) and the
router (``python -m sagerl serve``, another process) on loopback, then replays a real trace
(ShareGPT prompts with their real response lengths, in order; the bundled CASTILLO sample where
the full data is missing) with streaming clients, twice per load shape: straight to the
backends (round-robin), then through the router, both over the same window of the trace (each
pair its own window, so a router's prediction cache never holds a prompt from an earlier
phase). Nothing but 127.0.0.1 is contacted and every
phase is bounded in time.

Load shapes:

* ``open``: Poisson arrivals at ``--rate`` req/s for ``--phase-s`` seconds; the time scale is
  chosen so about ``--concurrency`` streams are in flight. The router's added latency is the
  difference of the client-observed TTFT/TTLT percentiles at the same offered load.
* ``closed``: ``--concurrency`` clients each send their next request as soon as the last one
  ends, for ``--phase-s`` seconds: the request rate the path sustains.

What the router adds is measured three ways:

* **TTFT**: the difference of the client-observed TTFT percentiles of the two paths at the same
  offered load. By default the router places round-robin, as the direct clients do, so both
  paths put the same load on the backends; another ``--policy`` changes how the backends queue
  as well (least-outstanding sends bursts of arrivals to the backend that just finished most,
  which raises the backends' own TTFT tail), and the difference then mixes both effects.
* **path**: per request, the client's TTFT minus the backend's own (the emulators run with
  ``--timing`` and start each stream with their time from taking the request to writing its
  first token): the time spent on the way, sockets and event loops included, without the
  backends' flush schedule. Reported per path, and the router's minus the direct one.
* the router's own processing time (``sagerl_router_overhead_seconds``: body received to
  upstream request sent, plus first upstream byte to first byte forwarded), read from its
  ``/metrics``: it misses the time a request waits before the router's loop reads it.

By default the router gets the highest-numbered CPU and the clients and emulators the others
(``--router-cpus auto``), as a deployment gives a router cores of its own and runs its clients
and model servers elsewhere; ``--router-cpus 1`` names the router's CPUs, and ``--router-cpus
shared`` lets all three processes share every CPU (on 2 cores the router's CPU then delays the
clients and backends too, which the added latency includes).

Both paths use the same client, :class:`sagerl.live.loadgen.LoadClient` (a raw asyncio protocol
with the httptools parser, request bytes prepared once per trace entry): it costs a few tenths
of a millisecond of CPU per streamed request, where aiohttp cost more than the router itself and
so inflated the latency it measured on a 2-core machine. CPU per request is reported for the
router, the clients (this process) and the emulators; the servers' output goes to log files
(their paths are in the JSON as ``logs``). A phase's requests still running ``--drain-s`` after it
ends are cut off and counted as errors.

Usage::

    python benchmarks/router_load.py                      # round-robin, the router on its own CPU
    python benchmarks/router_load.py --router-cpus shared # router, clients, backends share CPUs
    python benchmarks/router_load.py --predictor sagesched --json runs/bench/router_pred.json

The machine is shared: compare the router and direct columns of one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sagerl.commands.common import print_table, write_json  # noqa: E402
from sagerl.live.loadgen import LoadClient  # noqa: E402
from sagerl.live.runner import new_loop  # noqa: E402
from sagerl.live.scrape import parse_prometheus  # noqa: E402

URL_RE = re.compile(r"http://127\.0\.0\.1:(\d+)")


def cpu_seconds(pid: int | None = None) -> tuple[float, float]:
    """``(user, system)`` CPU time of a process (this one when ``pid`` is None), s; NaN off Linux.

    The split shows how much of a process's cost is the kernel's (socket reads and writes,
    ``epoll``), which no Python-level change removes.
    """
    if pid is None:
        t = os.times()
        return t.user, t.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan"), float("nan")
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", type=int, default=4, help="emulated backends")
    p.add_argument("--concurrency", type=int, default=200, help="target concurrent streams")
    p.add_argument("--rate", type=float, default=500.0, help="open-loop arrival rate, req/s")
    p.add_argument("--phase-s", type=float, default=12.0, help="seconds per phase")
    p.add_argument("--max-output", type=int, default=128, help="cap of output tokens per request")
    p.add_argument("--max-prompt", type=int, default=2048, help="skip longer prompts, tokens")
    p.add_argument(
        "--time-scale", type=float, default=0.0,
        help="emulator speed-up (0: chosen so --concurrency streams are in flight at --rate)",
    )  # fmt: skip
    p.add_argument("--stream-interval-ms", type=float, default=20.0, help="emulator flush period")
    p.add_argument(
        "--policy", default="round-robin",
        help="router placement policy (default: round-robin, as the direct clients place)",
    )  # fmt: skip
    p.add_argument("--predictor", default="none", help="router length predictor (none, ...)")
    p.add_argument(
        "--predictor-options", default="{}", metavar="JSON",
        help='the predictor\'s options, e.g. \'{"embedder": {"max_seq_len": 32}}\'',
    )  # fmt: skip
    p.add_argument("--trace", default="sharegpt", help="data set replayed (its lengths, order)")
    p.add_argument("--shapes", default="open,closed", help="load shapes to run")
    p.add_argument(
        "--drain-s", type=float, default=60.0,
        help="after a phase, longest wait for its requests in flight (then they are cut off)",
    )  # fmt: skip
    p.add_argument(
        "--router-cpus", default="auto",
        help="CPUs of the router (e.g. 1 or 2,3); the clients and emulators get the rest. auto: "
        "the highest-numbered CPU when there are 2 or more; shared: no pinning",
    )  # fmt: skip
    p.add_argument(
        "--repeats", type=int, default=1,
        help="run each shape's direct/router pair this many times, alternating; the summary "
        "adds the median of each figure over the pairs (the machine is shared and noisy)",
    )  # fmt: skip
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    return p.parse_args()


# ---------------------------------------------------------------------------------- trace
def load_trace(name: str, max_prompt: int, max_output: int) -> tuple[str, list[tuple[str, int]]]:
    """``(data set, [(prompt text, output tokens)])`` in trace order."""
    from sagerl.errors import SagerlError
    from sagerl.workload.datasets import load_pool

    try:
        pool = load_pool(name)
    except SagerlError:
        name = "sample_castillo"
        pool = load_pool(name)
    out = []
    for i in range(len(pool)):
        text = pool.texts[i] if pool.texts is not None else None
        pt = int(pool.prompt_tokens[i])
        if pt < 1 or pt > max_prompt:
            continue
        if not text:
            text = " the" * pt
        out.append((text, int(min(max(pool.output_tokens[i], 1), max_output))))
    return name, out


# ---------------------------------------------------------------------------------- processes
def start(
    cmd: list[str],
    count: int,
    log_path: Path,
    timeout_s: float = 60.0,
    cpus: set[int] | None = None,
) -> tuple[subprocess.Popen, list[str]]:
    """Start a server process; wait for ``count`` loopback URLs in its output.

    The output goes to ``log_path``, not a pipe: a pipe nobody reads after start-up fills up
    (64 KiB) and the server blocks forever in its next log write.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = log_path.open("w")
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=pin
    )
    out.close()
    deadline = time.monotonic() + timeout_s
    while True:
        text = log_path.read_text()
        urls = [
            m.group(0)
            for line in text.splitlines()
            if "http://" in line and (" at " in line or " on " in line)
            for m in [URL_RE.search(line)]
            if m
        ]
        if len(urls) >= count:
            return proc, urls[:count]
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            tail = "\n".join(text.splitlines()[-20:])
            raise RuntimeError(f"{' '.join(cmd[:4])} did not start (rc={proc.poll()}):\n{tail}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ---------------------------------------------------------------------------------- clients
class Trace:
    """The replayed requests as prepared request bytes per target (built once, sent many times).

    Serialising the body is done once per trace entry and target, not per request, so the
    clients' CPU goes to the wire and the parser only.
    """

    def __init__(self, items: list[tuple[str, int]]) -> None:
        self.items = items
        self._cache: dict[tuple[int, int], bytes] = {}

    def payload(self, k: int, t: int, client: LoadClient) -> bytes:
        key = (k % len(self.items), t)
        data = self._cache.get(key)
        if data is None:
            text, out_tokens = self.items[key[0]]
            body = {
                "model": "llama-3.1-8b",
                "prompt": text,
                "max_tokens": out_tokens,
                "ignore_eos": True,
                "stream": True,
            }
            data = client.request_bytes("POST", "/v1/completions", json.dumps(body).encode())
            self._cache[key] = data
        return data


async def one(client: LoadClient, payload: bytes, stats: dict) -> None:
    """One streamed completion; appends (ttft, ttlt) or counts a failure."""
    stats["in_flight"] += 1
    try:
        r = await client.send(payload)
    finally:
        stats["in_flight"] -= 1
    if r.status != 200 or not r.done or r.ttft_s < 0:
        stats["errors"] += 1
        if len(stats["error_kinds"]) < 5:
            stats["error_kinds"].add(r.error or f"HTTP {r.status}")
        return
    stats["ttft"].append(r.ttft_s)
    stats["ttlt"].append(r.ttlt_s)
    if r.backend_ttft_s >= 0:
        stats["path"].append(r.ttft_s - r.backend_ttft_s)
        stats["backend"].append(r.backend_ttft_s)


async def phase(
    shape: str, urls: list[str], trace: Trace, args: argparse.Namespace, offset: int = 0
) -> dict:
    """Run one load shape against ``urls`` (round-robin) for ``--phase-s`` seconds.

    Bounded: requests still running ``--drain-s`` after the phase ends are cut off (errors).
    """
    stats: dict = {
        "ttft": [], "ttlt": [], "path": [], "backend": [], "errors": 0, "in_flight": 0,
        "sent": 0, "error_kinds": set(),
    }  # fmt: skip
    samples: list[int] = []
    clients = [LoadClient(u, timeout_s=args.phase_s + args.drain_s) for u in urls]
    rng = np.random.default_rng(0)
    t_start = time.perf_counter()
    end = t_start + args.phase_s
    tasks: set[asyncio.Task] = set()
    k = 0

    def launch() -> asyncio.Task:
        nonlocal k
        t = k % len(clients)
        payload = trace.payload(offset + k, t, clients[t])
        k += 1
        stats["sent"] += 1
        task = asyncio.ensure_future(one(clients[t], payload, stats))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    try:
        if shape == "open":
            next_t = t_start
            while True:
                now = time.perf_counter()
                if now >= end:
                    break
                while next_t <= now:
                    launch()
                    next_t += rng.exponential(1.0 / args.rate)
                samples.append(stats["in_flight"])
                await asyncio.sleep(max(min(next_t - time.perf_counter(), 0.01), 0))
        else:

            async def worker() -> None:
                while time.perf_counter() < end:
                    await launch()

            async def sampler() -> None:
                while time.perf_counter() < end:
                    samples.append(stats["in_flight"])
                    await asyncio.sleep(0.01)

            workers = [asyncio.ensure_future(worker()) for _ in range(args.concurrency)]
            await sampler()
            await asyncio.wait(workers, timeout=args.drain_s)
            for w in workers:
                w.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=args.drain_s)
    finally:
        for c in clients:
            c.close()  # stragglers fail as "connection closed"
        if tasks:
            await asyncio.wait(tasks, timeout=5)
    wall = time.perf_counter() - t_start
    ttft = np.asarray(stats["ttft"]) * 1000
    ttlt = np.asarray(stats["ttlt"]) * 1000
    path = np.asarray(stats["path"]) * 1000
    backend = np.asarray(stats["backend"]) * 1000
    done = len(ttft)
    return {
        "sent": stats["sent"],
        "completed": done,
        "errors": stats["errors"],
        "error_kinds": sorted(stats["error_kinds"]),
        "wall_s": wall,
        "rps": done / wall,
        "concurrency_mean": float(np.mean(samples)) if samples else 0.0,
        "ttft_p50_ms": float(np.percentile(ttft, 50)) if done else float("nan"),
        "ttft_p99_ms": float(np.percentile(ttft, 99)) if done else float("nan"),
        "ttlt_p50_ms": float(np.percentile(ttlt, 50)) if done else float("nan"),
        "ttlt_p99_ms": float(np.percentile(ttlt, 99)) if done else float("nan"),
        "path_p50_ms": float(np.percentile(path, 50)) if len(path) else float("nan"),
        "path_p99_ms": float(np.percentile(path, 99)) if len(path) else float("nan"),
        "backend_ttft_p50_ms": float(np.percentile(backend, 50)) if len(path) else float("nan"),
        "backend_ttft_p99_ms": float(np.percentile(backend, 99)) if len(path) else float("nan"),
    }


def sched_seconds(pid: int) -> tuple[float, float]:
    """``(on CPU, runnable but waiting for a CPU)`` seconds over all threads; NaN off Linux.

    On a shared machine the second number shows how much of a slow-down is other jobs' doing.
    """
    run = wait = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            a, b, _ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
            run, wait = run + int(a), wait + int(b)
    except (OSError, ValueError):
        return float("nan"), float("nan")
    return run / 1e9, wait / 1e9


HISTOGRAMS = (
    ("sagerl_router_overhead_seconds", "overhead"),
    ("sagerl_predictor_latency_seconds", "predictor_wait"),
)


async def scrape(url: str) -> dict:
    """The router's parsed ``/metrics``."""
    client = LoadClient(url, timeout_s=30.0)
    try:
        r = await client.get("/metrics")
    finally:
        client.close()
    if r.status != 200:
        raise RuntimeError(f"GET {url}/metrics: {r.error or r.status}")
    return parse_prometheus(r.body.decode("utf-8", "replace"))


def buckets_of(samples: dict, name: str) -> list[tuple[float, float]]:
    return sorted((float(dict(lab)["le"]), v) for lab, v in samples.get(name + "_bucket", []))


def router_metrics(before: dict, after: dict) -> dict:
    """Quantiles (ms, interpolated in buckets) of the router's histograms between two scrapes."""
    out: dict = {}
    for name, key in HISTOGRAMS:
        b0 = dict(buckets_of(before, name))
        buckets = [(le, c - b0.get(le, 0.0)) for le, c in buckets_of(after, name)]
        if not buckets or buckets[-1][1] <= 0:
            continue
        total = buckets[-1][1]
        for q in (0.5, 0.99):
            prev_b, prev_c = 0.0, 0.0
            for b, c in buckets:
                if c >= q * total:
                    frac = (q * total - prev_c) / max(c - prev_c, 1e-9)
                    hi = b if b != float("inf") else prev_b
                    out[f"{key}_p{int(q * 100)}_ms"] = 1000 * (prev_b + frac * (hi - prev_b))
                    break
                prev_b, prev_c = b, c
    out["ledger"] = {dict(lab)["state"]: v for lab, v in after.get("sagerl_ledger", [])}

    def total(samples: dict, name: str) -> float:
        return sum(v for _, v in samples.get(name, []))

    batches = total(after, "sagerl_predictor_batch_seconds_count") - total(
        before, "sagerl_predictor_batch_seconds_count"
    )
    predicted = total(after, "sagerl_predictor_latency_seconds_count") - total(
        before, "sagerl_predictor_latency_seconds_count"
    )
    if batches > 0:
        out["predictor_batches"] = batches
        out["predictor_batch_mean"] = predicted / batches
    return out


async def main_async(args: argparse.Namespace) -> dict:
    source, items = load_trace(args.trace, args.max_prompt, args.max_output)
    mean_out = float(np.mean([o for _, o in items[:5000]]))
    trace = Trace(items)
    if args.time_scale <= 0:
        # Little's law: streams in flight = rate x duration; a decode step of ~15 ms at the
        # per-backend batch this gives, so duration ~ mean_out x 15 ms / scale.
        args.time_scale = max(mean_out * 0.015 * args.rate / args.concurrency, 1.0)
    py = sys.executable
    emu_cmd = [
        py, "-m", "sagerl", "emulate", "--count", str(args.backends), "--port", "0",
        "--time-scale", str(args.time_scale), "--stream-interval-ms",
        str(args.stream_interval_ms), "--timing",
    ]  # fmt: skip
    try:
        predictor_options = json.loads(args.predictor_options)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--predictor-options is not JSON: {exc}") from None
    procs = []
    tmp = Path(tempfile.mkdtemp(prefix="sagerl-bench-"))
    router_cpus = others = None
    available = set(os.sched_getaffinity(0))
    if args.router_cpus == "auto" and len(available) >= 2:
        router_cpus = {max(available)}
    elif args.router_cpus not in ("auto", "shared"):
        try:
            router_cpus = {int(c) for c in args.router_cpus.split(",")}
        except ValueError:
            msg = "--router-cpus wants auto, shared or CPU numbers like 1 or 2,3: "
            raise SystemExit(msg + repr(args.router_cpus)) from None
    if router_cpus is not None:
        if not router_cpus <= available:
            raise SystemExit(f"--router-cpus {args.router_cpus}: this process may use {available}")
        others = available - router_cpus
        if not others:
            raise SystemExit(f"--router-cpus {args.router_cpus} leaves no CPU for the rest")
        os.sched_setaffinity(0, others)  # this process: the clients
    try:
        emu, urls = start(emu_cmd, args.backends, tmp / "emulators.log", cpus=others)
        procs.append(emu)
        cfg = {
            "port": 0,
            "backends": [
                {"url": u, "engine": "vllm", "gpu": "A100", "model": "llama-3.1-8b"} for u in urls
            ],
            "policy": {"name": args.policy},
            "predictor": {"name": args.predictor, "options": predictor_options},
            "transition_log": str(tmp / "transitions.jsonl"),
            "log_level": "warning",
            "scrape": {"interval_s": 0.5},
        }
        (tmp / "serve.yaml").write_text(json.dumps(cfg))
        router, rurls = start(
            [py, "-m", "sagerl", "serve", "--config", str(tmp / "serve.yaml")],
            1,
            tmp / "router.log",
            cpus=router_cpus,
        )
        procs.append(router)
        router_url = rurls[0]
        # Warm-up: connections, tokenizer, predictor.
        warm = argparse.Namespace(**{**vars(args), "phase_s": 2.0, "rate": 50.0})
        # Each direct/router pair replays its own window of the trace, and the warm-up one
        # after them: a router with a predictor would otherwise find the prompts it embedded
        # in an earlier phase in its cache.
        pairs = [(rep, shape) for rep in range(args.repeats) for shape in args.shapes.split(",")]
        window = len(items) // (len(pairs) + 1)
        await phase("open", urls, trace, warm, window * len(pairs))
        await phase("open", [router_url], trace, warm, window * len(pairs))
        results = []
        pids = {"router": router.pid, "emulators": emu.pid, "clients": None}
        for j, (rep, shape) in enumerate(pairs):
            for name, target in (("direct", urls), ("router", [router_url])):
                before = await scrape(router_url)
                cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
                s0 = sched_seconds(router.pid)
                r = await phase(shape, target, trace, args, window * j)
                s1 = sched_seconds(router.pid)
                cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
                r["router_on_cpu_share"] = (s1[0] - s0[0]) / r["wall_s"]
                r["router_cpu_wait_share"] = (s1[1] - s0[1]) / r["wall_s"]
                after = await scrape(router_url)
                n = max(r["completed"], 1)
                for k in pids:
                    user = cpu1[k][0] - cpu0[k][0]
                    system = cpu1[k][1] - cpu0[k][1]
                    r[f"cpu_ms_per_req_{k}"] = 1000 * (user + system) / n
                    r[f"sys_share_{k}"] = system / (user + system) if user + system > 0 else 0.0
                results.append({"shape": shape, "repeat": rep, "path": name, **r})
                if name == "router":
                    results[-1]["router_metrics"] = router_metrics(before, after)
        return {
            "trace": source,
            "requests_in_trace": len(items),
            "logs": str(tmp),
            "mean_output_tokens": mean_out,
            "time_scale": args.time_scale,
            "policy": args.policy,
            "predictor": args.predictor,
            "predictor_options": predictor_options,
            "backends": args.backends,
            "router_cpus": sorted(router_cpus) if router_cpus else "shared",
            "trace_window": window,
            "trace_window_overrun": any(r["sent"] > window for r in results),
            "results": results,
        }
    finally:
        for p in reversed(procs):
            stop(p)


def main() -> None:
    args = parse_args()
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    loop = new_loop()
    asyncio.set_event_loop(loop)
    out = loop.run_until_complete(main_async(args))
    rows = []
    for r in out["results"]:
        rows.append({k: v for k, v in r.items() if k != "router_metrics"})
    print_table(
        f"router load: {out['trace']}, {out['backends']} emulated A100 backends "
        f"(time x{out['time_scale']:.3g}), policy {out['policy']}, predictor {out['predictor']}, "
        f"router CPUs {out['router_cpus']}",
        rows,
    )
    summary = []
    res = out["results"]
    for i in range(0, len(res) - 1, 2):
        d, r = res[i], res[i + 1]
        m = r.get("router_metrics", {})
        summary.append(
            {
                "shape": d["shape"],
                "repeat": d["repeat"],
                "added TTFT p50 ms": r["ttft_p50_ms"] - d["ttft_p50_ms"],
                "added TTFT p99 ms": r["ttft_p99_ms"] - d["ttft_p99_ms"],
                "added path p50 ms": r["path_p50_ms"] - d["path_p50_ms"],
                "added path p99 ms": r["path_p99_ms"] - d["path_p99_ms"],
                "backend TTFT p99 ms direct / router": (
                    f"{d['backend_ttft_p99_ms']:.1f} / {r['backend_ttft_p99_ms']:.1f}"
                ),
                "added TTLT p50 ms": r["ttlt_p50_ms"] - d["ttlt_p50_ms"],
                "rps direct": d["rps"],
                "rps router": r["rps"],
                "router CPU ms/req": r["cpu_ms_per_req_router"],
                "client CPU ms/req": r["cpu_ms_per_req_clients"],
                "emulator CPU ms/req": r["cpu_ms_per_req_emulators"],
                "router waits for CPU": r["router_cpu_wait_share"],
                "router overhead p50 ms": m.get("overhead_p50_ms", float("nan")),
                "router overhead p99 ms": m.get("overhead_p99_ms", float("nan")),
                "predictor wait p50 ms": m.get("predictor_wait_p50_ms", float("nan")),
                "predictor batch mean": m.get("predictor_batch_mean", float("nan")),
            }
        )
    if args.repeats > 1:
        for shape in args.shapes.split(","):
            rows_of = [row for row in summary if row["shape"] == shape]
            median = {"shape": shape, "repeat": "median"}
            for key, value in rows_of[0].items():
                if key not in median and isinstance(value, float):
                    median[key] = float(np.median([row[key] for row in rows_of]))
            summary.append(median)
    print_table("router-added latency (router minus direct, same run)", summary)
    if out["trace_window_overrun"]:
        print(
            f"note: a phase sent more than its trace window ({out['trace_window']} requests), so "
            "later phases replayed some of its prompts (a predictor's cache may hold them); use "
            "fewer --repeats or a shorter --phase-s"
        )
    out["summary"] = summary
    write_json(args.json, out)


if __name__ == "__main__":
    main()
