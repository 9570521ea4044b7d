"""The emulated backend: simulator timing in real time, vLLM's metric names, ``priority``."""

from __future__ import annotations

import asyncio
import http.client
import json

import pytest

for _dep in ("starlette", "uvicorn", "httptools"):  # the `serve` extra
    pytest.importorskip(_dep)

from sagerl.live.emulator import EmulatedEngine, EmulatorApp, RequestPriority, output_length  # noqa: E402
from sagerl.live.runner import (  # noqa: E402
    ServerThread,
    bind,
    make_server,
    serve_until_stopped,
    wait_started,
)
from sagerl.live.scrape import engine_stats, parse_prometheus  # noqa: E402
from sagerl.policy import make_placement  # noqa: E402
from sagerl.sim import SchedulerConfig, Simulation  # noqa: E402
from sagerl.sim.replica import Replica  # noqa: E402
from sagerl.workload.request import Request  # noqa: E402


def test_emulated_timing_equals_the_simulated_replica() -> None:
    """Requests submitted in scaled real time finish when the simulator says they do."""
    scale = 100.0
    engine = EmulatedEngine("A100", "llama-3.1-8b", time_scale=scale, stream_interval_s=0.002)
    shapes = [(900, 60), (50, 120), (2000, 30), (300, 90), (10, 200)]
    jobs = []

    async def go() -> float:
        engine.start()
        t0 = asyncio.get_running_loop().time()
        for k, (i, o) in enumerate(shapes):
            jobs.append(engine.submit(i, o))
            await asyncio.sleep(0.003 * (k % 2))
        while not all(j.done for j in jobs):
            await asyncio.sleep(0.005)
        wall = asyncio.get_running_loop().time() - t0
        await engine.stop()
        return wall

    wall = asyncio.run(go())
    # The same requests at the same (simulated) arrival times through the simulator.
    timer = engine.timer
    replica = Replica(0, timer, engine.replica.kv_blocks_total, SchedulerConfig(),
                      engine.replica.ordering)  # fmt: skip
    sim = Simulation([replica], make_placement("round-robin"))
    reqs = [Request(k, j.seq.arrival, j.seq.prompt_tokens, j.seq.output_tokens)
            for k, j in enumerate(jobs)]  # fmt: skip
    sim.reset()
    for r in reqs:
        sim.advance_to(r.arrival)
        sim.place(r, 0)
    sim.drain()
    for job, seq in zip(jobs, sim.sequences, strict=True):
        assert job.seq.finish_time == pytest.approx(seq.finish_time, rel=1e-9, abs=1e-9)
        assert job.seq.first_token_time == pytest.approx(seq.first_token_time, rel=1e-9)
        assert job.available == job.seq.output_tokens
    makespan = max(j.seq.finish_time for j in jobs)
    assert wall >= makespan / scale * 0.9  # real time follows simulated time / scale


def test_priority_scheduling_runs_lower_priority_values_first() -> None:
    sched = SchedulerConfig(max_num_seqs=1)
    engine = EmulatedEngine(time_scale=200.0, priority_scheduling=True, scheduler=sched)
    assert isinstance(engine.replica.ordering, RequestPriority)

    async def go() -> list[float]:
        engine.start()
        engine.submit(100, 150, priority=10)
        await asyncio.sleep(0.005)
        late = engine.submit(100, 20, priority=5)
        urgent = engine.submit(100, 20, priority=1)
        while not (late.done and urgent.done):
            await asyncio.sleep(0.005)
        await engine.stop()
        return [urgent.seq.finish_time, late.seq.finish_time]

    urgent_t, late_t = asyncio.run(go())
    assert urgent_t < late_t


def test_metrics_use_vllm_names_and_the_old_alias() -> None:
    engine = EmulatedEngine(time_scale=10.0)
    text = engine.metrics_text("m")
    s = engine_stats(parse_prometheus(text), "vllm")
    assert (
        s.missing == () and s.running == 0 and s.kv_blocks_total == engine.replica.kv_blocks_total
    )
    old = parse_prometheus(engine.metrics_text("m", "vllm:gpu_cache_usage_perc"))
    assert "vllm:kv_cache_usage_perc" not in old
    assert engine_stats(old, "vllm").sources["kv_usage"] == "vllm:gpu_cache_usage_perc"


def test_output_length_is_deterministic_per_prompt_and_capped() -> None:
    a = output_length("same prompt", 128.0, 10_000)
    assert a == output_length("same prompt", 128.0, 10_000)
    assert output_length("same prompt", 128.0, 5) <= 5
    lengths = [output_length(f"p{k}", 100.0, 100_000) for k in range(2000)]
    assert 70 < sum(lengths) / len(lengths) < 130


def _post(port: int, body: dict | bytes, path: str = "/v1/completions") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, data, {"content-type": "application/json"})
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


def test_http_api_and_priority_without_priority_scheduling_is_a_400() -> None:
    app = EmulatorApp(EmulatedEngine(time_scale=100.0), "m")
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = make_server(app.app())

    async def main(stop: asyncio.Event) -> None:
        await serve_until_stopped([[(server, sock)]], stop, signals=False)

    async def ready() -> None:
        await wait_started([server])

    thread = ServerThread(main, ready).start()
    try:
        code, body = _post(port, {"model": "m", "prompt": "x", "priority": 3})
        assert code == 400 and b"priority" in body
        code, body = _post(port, {"model": "m", "prompt": "x", "max_tokens": 3})
        assert code == 200 and json.loads(body)["usage"]["completion_tokens"] <= 3
        assert _post(port, b"{bad")[0] == 400
        code, body = _post(port, {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                  "max_tokens": 4, "stream": True, "ignore_eos": True},
                           "/v1/chat/completions")  # fmt: skip
        events = [x for x in body.decode().split("\n\n") if x.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        reasons = [json.loads(e[6:])["choices"][0]["finish_reason"] for e in events[:-1]]
        assert reasons == [None, None, None, "length"]
    finally:
        thread.stop()
