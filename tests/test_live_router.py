"""End to end over loopback: the router in front of emulated vLLM servers.

Each cluster runs in a background thread (real uvicorn servers on 127.0.0.1, ephemeral
ports); clients are the ``openai`` package and plain HTTP.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

for _dep in ("starlette", "uvicorn", "httptools"):  # the `serve` extra
    pytest.importorskip(_dep)

from sagerl.live.config import ServeConfig  # noqa: E402
from sagerl.live.emulator import RequestPriority  # noqa: E402
from sagerl.live.runner import ServerThread  # noqa: E402
from sagerl.live.scrape import parse_prometheus  # noqa: E402
from sagerl.live.serving import Cluster, cluster_in_thread  # noqa: E402

MODEL = "llama-3.1-8b"


def request(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; returns (status, headers, body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"content-type": "application/json",
                                                       **(headers or {})})  # fmt: skip
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def post(
    url: str, payload: Any, path: str = "/v1/completions", **kw: Any
) -> tuple[int, dict, bytes]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return request(url, "POST", path, data, **kw)


def wait_until(cond: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def main_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Cluster, ServerThread, Path]]:
    """3 emulated priority-scheduling backends, round-robin, a history predictor, Gittins ranks."""
    log = tmp_path_factory.mktemp("live") / "transitions.jsonl"
    cfg = ServeConfig.model_validate(
        {
            "port": 0,
            "emulate": {"count": 3, "time_scale": 20.0, "priority_scheduling": True},
            "policy": {"name": "round-robin"},
            "predictor": {"name": "length-history"},
            "priority": "gittins",
            "transition_log": str(log),
            "limits": {"max_body_bytes": 4096, "max_prompt_tokens": 300, "max_tokens": 1000},
            "scrape": {"interval_s": 0.2},
        }
    )
    with cluster_in_thread(cfg) as (cluster, thread):
        yield cluster, thread, log


def test_openai_client_streamed_and_not(main_cluster: tuple[Cluster, ServerThread, Path]) -> None:
    openai = pytest.importorskip("openai")
    cluster, thread, _ = main_cluster
    client = openai.OpenAI(base_url=cluster.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == [MODEL]
    r = client.completions.create(model=MODEL, prompt="Say hello", max_tokens=7)
    assert r.usage.completion_tokens == 7 and r.choices[0].text
    chunks = list(
        client.completions.create(model=MODEL, prompt="Count", max_tokens=9, stream=True,
                                  stream_options={"include_usage": True})
    )  # fmt: skip
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens == 9
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5
    )
    assert chat.choices[0].message.content
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=6, stream=True
    )
    assert len([c for c in stream if c.choices and c.choices[0].delta.content]) == 6
    totals = thread.call(lambda: cluster.router.ledger.totals())
    assert totals["in_flight"] == 0 and totals["failed"] == 0


def test_bad_requests_get_4xx_with_a_message(
    main_cluster: tuple[Cluster, ServerThread, Path],
) -> None:
    cluster, thread, _ = main_cluster
    url = cluster.url
    before = thread.call(lambda: cluster.router.ledger.accepted)
    cases: list[tuple[Any, str, int, str]] = [
        (b"{not json", "/v1/completions", 400, "invalid JSON"),
        (b"[1, 2]", "/v1/completions", 400, "JSON object"),
        ({"prompt": "x"}, "/v1/completions", 400, "'model'"),
        ({"model": MODEL}, "/v1/completions", 400, "'prompt'"),
        ({"model": MODEL, "prompt": {"a": 1}}, "/v1/completions", 400, "'prompt'"),
        ({"model": MODEL, "messages": []}, "/v1/chat/completions", 400, "'messages'"),
        ({"model": MODEL, "messages": [{"content": "x"}]}, "/v1/chat/completions", 400, "role"),
        ({"model": MODEL, "prompt": "x", "stream": "yes"}, "/v1/completions", 400, "'stream'"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 0}, "/v1/completions", 400, "max_tokens"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 5000}, "/v1/completions", 400, "limit"),
        ({"model": MODEL, "prompt": "word " * 2000}, "/v1/completions", 413, "exceeds"),
        ({"model": MODEL, "prompt": "word " * 500}, "/v1/completions", 413, "tokens; the limit"),
    ]
    for payload, path, status, needle in cases:
        code, _, body = post(url, payload, path)
        assert code == status, (payload, body)
        message = json.loads(body)["error"]["message"]
        assert needle in message, (needle, message)
    code, _, _ = request(url, "GET", "/v1/completions")
    assert code == 405
    code, _, _ = request(url, "GET", "/nowhere")
    assert code == 404
    assert thread.call(lambda: cluster.router.ledger.accepted) == before


def test_placement_follows_the_policy(main_cluster: tuple[Cluster, ServerThread, Path]) -> None:
    cluster, _, _ = main_cluster
    seen = []
    for k in range(6):
        code, headers, _ = post(cluster.url, {"model": MODEL, "prompt": f"q{k}", "max_tokens": 2})
        assert code == 200
        seen.append(headers["x-sagerl-backend"])
    first = ["emu0", "emu1", "emu2"].index(seen[0])
    assert seen == [f"emu{(first + k) % 3}" for k in range(6)]  # round-robin


def test_gittins_rank_is_sent_as_vllm_priority(
    main_cluster: tuple[Cluster, ServerThread, Path],
) -> None:
    cluster, _, _ = main_cluster
    assert all(isinstance(e.engine.replica.ordering, RequestPriority) for e in cluster.emulators)
    before = sum(e.priority_requests for e in cluster.emulators)
    code, _, _ = post(cluster.url, {"model": MODEL, "prompt": "rank me", "max_tokens": 3})
    assert code == 200
    assert sum(e.priority_requests for e in cluster.emulators) == before + 1


def test_history_and_transition_log_grow(main_cluster: tuple[Cluster, ServerThread, Path]) -> None:
    cluster, thread, log = main_cluster
    router = cluster.router
    assert router.predictor is not None and router.translog is not None
    thread.run(router.translog.flush())
    lines0 = len(log.read_text().splitlines()) if log.exists() else 0
    hist0 = thread.call(router.predictor.history_size)
    for k in range(5):
        code, _, _ = post(cluster.url, {"model": MODEL, "prompt": f"grow {k}", "max_tokens": 4 + k,
                                        "ignore_eos": True, "stream": k % 2 == 0})  # fmt: skip
        assert code == 200
    wait_until(lambda: thread.call(router.predictor.history_size) >= hist0 + 5)
    thread.run(router.translog.flush())
    lines = log.read_text().splitlines()
    assert len(lines) == lines0 + 5
    recs = [json.loads(x) for x in lines[-5:]]
    assert [r["outcome"]["output_tokens"] for r in recs] == [4, 5, 6, 7, 8]
    for r in recs:
        assert r["status"] == "completed" and r["policy"] == "round-robin"
        assert len(r["views"]) == 3 and r["prediction"]["rank"] > 0
        assert r["outcome"]["ttlt_s"] > 0


def test_metrics_endpoint(main_cluster: tuple[Cluster, ServerThread, Path]) -> None:
    cluster, _, _ = main_cluster
    wait_until(lambda: all(s.stats for s in cluster.router.scraper.states))
    code, headers, body = request(cluster.url, "GET", "/metrics")
    assert code == 200 and headers["content-type"].startswith("text/plain")
    m = parse_prometheus(body.decode())
    names = (
        "sagerl_requests_total", "sagerl_ttft_seconds_bucket", "sagerl_ttlt_seconds_count",
        "sagerl_backend_in_flight", "sagerl_decisions_total",
        "sagerl_predictor_latency_seconds_count", "sagerl_backend_scrape_age_seconds",
        "sagerl_backend_metric_missing", "sagerl_router_overhead_seconds_sum",
    )  # fmt: skip
    for name in names:
        assert name in m, name
    assert {dict(lab)["backend"] for lab, _ in m["sagerl_backend_healthy"]} == {
        "emu0",
        "emu1",
        "emu2",
    }
    assert all(v == 0 for _, v in m["sagerl_backend_metric_missing"])
    ledger = {dict(lab)["state"]: v for lab, v in m["sagerl_ledger"]}
    closed = ledger["completed"] + ledger["failed"] + ledger["aborted"]
    assert ledger["accepted"] == closed + ledger["in_flight"]
    code, _, body = request(cluster.url, "GET", "/health")
    assert code == 200 and json.loads(body)["healthy_backends"] == 3


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_dead_backend_is_skipped_auth_and_disconnects() -> None:
    """A configured backend that refuses connections; API keys; clients that go away."""
    dead = f"http://127.0.0.1:{_free_port()}"
    cfg = ServeConfig.model_validate(
        {
            "port": 0,
            "backends": [{"url": dead, "name": "dead"}],
            "emulate": {"count": 2, "time_scale": 1.0},
            "policy": {"name": "least-outstanding"},
            "api_keys": ["sekrit"],
            "transition_log": None,
            "scrape": {"interval_s": 0.2, "unhealthy_after": 2},
        }
    )
    auth = {"authorization": "Bearer sekrit"}
    with cluster_in_thread(cfg) as (cluster, thread):
        url = cluster.url
        assert post(url, {"model": MODEL, "prompt": "x"})[0] == 401
        assert (
            post(url, {"model": MODEL, "prompt": "x"}, headers={"authorization": "Bearer no"})[0]
            == 401
        )
        assert request(url, "GET", "/metrics")[0] == 401
        assert request(url, "GET", "/health")[0] == 200
        # The dead backend is index 0: least-outstanding tries it first, the router retries.
        code, headers, _ = post(url, {"model": MODEL, "prompt": "x", "max_tokens": 2}, headers=auth)
        assert code == 200 and headers["x-sagerl-backend"] in ("emu0", "emu1")
        assert not cluster.router.registry[0].healthy
        # Three long streams at once: least-outstanding spreads them over the live backends,
        # then the clients hang up after the first chunk (aborted, not lost).
        conns = []
        for k in range(2):
            parts = urlsplit(url)
            c = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
            body = {"model": MODEL, "prompt": f"long {k}", "max_tokens": 400, "ignore_eos": True,
                    "stream": True}  # fmt: skip
            c.request("POST", "/v1/completions", json.dumps(body).encode(),
                      {"content-type": "application/json", **auth})  # fmt: skip
            r = c.getresponse()
            assert r.status == 200
            assert r.readline().startswith(b"data: ")
            conns.append((c, r.getheader("x-sagerl-backend")))
        assert sorted(b for _, b in conns) == ["emu0", "emu1"]
        for c, _ in conns:
            c.sock.shutdown(socket.SHUT_RDWR)
            c.close()
        ledger = cluster.router.ledger
        wait_until(lambda: thread.call(lambda: ledger.totals()["in_flight"]) == 0)
        totals = thread.call(ledger.totals)
        assert totals["aborted"] == 2 and totals["completed"] == 1 and totals["retries"] >= 1
        thread.call(ledger.check)
        m = parse_prometheus(request(url, "GET", "/metrics", headers=auth)[2].decode())
        healthy = {dict(lab)["backend"]: v for lab, v in m["sagerl_backend_healthy"]}
        assert healthy == {"dead": 0.0, "emu0": 1.0, "emu1": 1.0}
        fails = {dict(lab)["backend"]: v for lab, v in m["sagerl_backend_scrape_failures_total"]}
        assert fails["dead"] >= 1


def test_shutdown_drains_in_flight_streams() -> None:
    cfg = ServeConfig.model_validate(
        {"port": 0, "emulate": {"count": 1, "time_scale": 4.0}, "transition_log": None}
    )
    got: dict[str, Any] = {}
    first = threading.Event()

    def reader(url: str) -> None:
        parts = urlsplit(url)
        c = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        c.request("POST", "/v1/completions", json.dumps(
            {"model": MODEL, "prompt": "drain", "max_tokens": 120, "ignore_eos": True,
             "stream": True}).encode(), {"content-type": "application/json"})  # fmt: skip
        r = c.getresponse()
        lines = [r.readline()]
        first.set()
        lines += r.read().split(b"\n")
        got["events"] = sum(1 for x in lines if x.startswith(b"data: {"))
        got["done"] = any(b"[DONE]" in x for x in lines)

    with cluster_in_thread(cfg) as (cluster, _):
        t = threading.Thread(target=reader, args=(cluster.url,))
        t.start()
        assert first.wait(20)
        router = cluster.router
    # Leaving the block stopped the router while the stream was still going: it drained.
    t.join(30)
    assert got == {"events": 120, "done": True}
    assert router.ledger.totals()["completed"] == 1 and router.draining
