"""The pure Prometheus parser, the alias tables, and the scraper's failure and health handling."""

from __future__ import annotations

import asyncio
import math

import pytest

from sagerl.live.metrics import Counter, Histogram, render
from sagerl.live.scrape import Scraper, engine_stats, parse_prometheus

VLLM_NEW = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.4375
vllm:cache_config_info{block_size="16",cache_dtype="auto",num_gpu_blocks="27000"} 1.0
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="m"} 12.0
"""

VLLM_OLD = """\
vllm:num_requests_running{model_name="m"} 2
vllm:num_requests_waiting{model_name="m"} 0
vllm:gpu_cache_usage_perc{model_name="m"} 0.25 1712345678000
"""

SGLANG = """\
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="qwen",tp_rank="0"} 11.0
sglang:num_queue_reqs{model_name="qwen",tp_rank="0"} 4.0
sglang:token_usage{model_name="qwen",tp_rank="0"} 0.62
"""


def test_parse_vllm_current_names() -> None:
    s = engine_stats(parse_prometheus(VLLM_NEW), "vllm")
    assert (s.running, s.waiting, s.kv_usage) == (7.0, 3.0, 0.4375)
    assert s.kv_blocks_total == 27000 and s.block_size == 16
    assert s.sources["kv_usage"] == "vllm:kv_cache_usage_perc"
    assert s.missing == ()


def test_older_vllm_kv_name_is_an_alias_not_a_silent_zero() -> None:
    s = engine_stats(parse_prometheus(VLLM_OLD), "vllm")
    assert s.kv_usage == 0.25
    assert s.sources["kv_usage"] == "vllm:gpu_cache_usage_perc"
    assert s.kv_blocks_total is None


def test_sglang_names() -> None:
    s = engine_stats(parse_prometheus(SGLANG), "sglang")
    assert (s.running, s.waiting, s.kv_usage) == (11.0, 4.0, 0.62)


def test_missing_fields_are_visible() -> None:
    s = engine_stats(parse_prometheus('vllm:num_requests_running{a="b"} 1\n'), "vllm")
    assert s.running == 1.0 and s.waiting is None and s.kv_usage is None
    assert s.missing == ("waiting", "kv_usage")
    # The wrong engine's table finds nothing at all.
    assert engine_stats(parse_prometheus(SGLANG), "vllm").missing == (
        "running",
        "waiting",
        "kv_usage",
    )


def test_parser_edge_cases() -> None:
    text = (
        'a{x="q\\"uote",y="back\\\\slash",z="new\\nline"} 1.5\n'
        "b NaN\n"
        "c +Inf\n"
        "d{} 2 123\n"
        "garbage line without value\n"
        'e{unterminated="x 3\n'
        "  \n# comment\n"
    )
    p = parse_prometheus(text)
    labels, value = p["a"][0]
    assert dict(labels) == {"x": 'q"uote', "y": "back\\slash", "z": "new\nline"}
    assert value == 1.5
    assert math.isnan(p["b"][0][1]) and p["c"][0][1] == math.inf
    assert p["d"] == [((), 2.0)]
    assert "e" not in p and "garbage" not in p


def test_counts_sum_over_models_and_kv_averages() -> None:
    text = (
        'vllm:num_requests_running{model_name="a"} 2\n'
        'vllm:num_requests_running{model_name="b"} 3\n'
        'vllm:num_requests_waiting{model_name="a"} 1\n'
        'vllm:kv_cache_usage_perc{model_name="a"} 0.2\n'
        'vllm:kv_cache_usage_perc{model_name="b"} 0.4\n'
    )
    s = engine_stats(parse_prometheus(text), "vllm")
    assert s.running == 5 and s.waiting == 1 and s.kv_usage == pytest.approx(0.3)


def test_router_exposition_round_trips_through_the_parser() -> None:
    h = Histogram("lat_seconds", "latency", (0.1, 1.0), ("backend",))
    h.observe(0.05, 'b"0')
    h.observe(0.5, 'b"0')
    c = Counter("reqs_total", "requests", ("code",))
    c.inc("200", by=3)
    p = parse_prometheus(render([h, c]))
    buckets = {dict(lab)["le"]: v for lab, v in p["lat_seconds_bucket"]}
    assert buckets == {"0.1": 1.0, "1": 2.0, "+Inf": 2.0}
    assert dict(p["lat_seconds_count"][0][0]) == {"backend": 'b"0'}
    assert p["reqs_total"] == [((("code", "200"),), 3.0)]


def test_scraper_tracks_failures_and_recovery() -> None:
    replies: list[object] = [OSError("connection refused"), OSError("refused"), VLLM_NEW]
    health: list[tuple[int, bool]] = []

    async def fetch(url: str, timeout: float) -> str:
        assert url == "http://b:1/metrics"
        r = replies.pop(0)
        if isinstance(r, Exception):
            raise r
        return str(r)

    async def go() -> None:
        s = Scraper(
            ["http://b:1"], ["vllm"], ["b"], fetch, 0.1, 1.0, lambda i, ok: health.append((i, ok))
        )
        st = await s.scrape_once(0)
        assert st.stats is None and st.failures == 1 and "refused" in st.error
        st = await s.scrape_once(0)
        assert st.failures == 2 and not st.fresh(st.attempt_at, 10.0)
        st = await s.scrape_once(0)
        assert st.failures == 0 and st.stats is not None and st.stats.running == 7.0
        assert st.fresh(st.ok_at + 1.0, 2.0) and not st.fresh(st.ok_at + 3.0, 2.0)
        assert s.failures_total == [2] and s.scrapes_total == [3]

    asyncio.run(go())
    assert health == [(0, False), (0, False), (0, True)]


def test_scraper_notes_what_the_router_had_there() -> None:
    """The scrape keeps the router's in-flight count at sending plus what it dispatched while
    waiting for the answer (the server may count those), and the KV tokens at sending."""
    ledger = {"in_flight": 4, "kv": 900, "dispatched": 10}

    async def fetch(url: str, timeout: float) -> str:
        # While the scrape is in flight the router sends two more and one finishes.
        ledger.update(in_flight=5, kv=1200, dispatched=12)
        return VLLM_NEW

    async def go() -> None:
        s = Scraper(
            ["http://b:1"], ["vllm"], ["b"], fetch, 0.1, 1.0,
            snapshot=lambda i: (ledger["in_flight"], ledger["kv"], ledger["dispatched"]),
        )  # fmt: skip
        st = await s.scrape_once(0)
        assert st.sent == (4 + 2, 900)

    asyncio.run(go())
