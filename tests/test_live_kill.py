"""Kill a backend under load: every accepted request is accounted for, nothing silently lost.

Two emulated backends run as subprocesses (``python -m sagerl emulate``); the router runs in a
thread. Forty streams start, one backend is SIGKILLed mid-stream, twenty more follow. Each
client ends with a complete stream, an error event in the stream, or an HTTP error; the ledger
balances and matches what the clients saw.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

for _dep in ("starlette", "uvicorn", "httptools"):  # the `serve` extra
    pytest.importorskip(_dep)

aiohttp = pytest.importorskip("aiohttp")

from sagerl.live.config import ServeConfig  # noqa: E402
from sagerl.live.serving import cluster_in_thread  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def spawn_emulator(time_scale: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sagerl", "emulate", "--port", "0", "--time-scale", str(time_scale)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        if match:
            return proc, match.group(0)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("emulator did not start")


@pytest.fixture
def emulators() -> Iterator[list[tuple[subprocess.Popen, str]]]:
    procs = [spawn_emulator(2.0) for _ in range(2)]
    try:
        yield procs
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)


async def stream(session: aiohttp.ClientSession, url: str, k: int, outcome: list[str]) -> None:
    body = {"model": "m", "prompt": f"load {k}", "max_tokens": 300, "ignore_eos": True,
            "stream": True}  # fmt: skip
    try:
        async with session.post(url + "/v1/completions", json=body) as resp:
            if resp.status != 200:
                await resp.read()
                outcome.append(f"http {resp.status}")
                return
            data = b""
            async for chunk in resp.content.iter_any():
                data += chunk
        if b'data: {"error"' in data:
            outcome.append("error event")
        elif data.rstrip().endswith(b"data: [DONE]"):
            outcome.append("ok")
        else:
            outcome.append("truncated")  # would be a silent loss
    except aiohttp.ClientError as exc:
        outcome.append(f"client error {type(exc).__name__}")


def test_killed_backend_loses_nothing(emulators: list[tuple[subprocess.Popen, str]]) -> None:
    cfg = ServeConfig.model_validate(
        {
            "port": 0,
            "backends": [{"url": url, "name": f"b{i}"} for i, (_, url) in enumerate(emulators)],
            "policy": {"name": "round-robin"},
            "transition_log": None,
            "scrape": {"interval_s": 1.0, "unhealthy_after": 3},
        }
    )
    outcomes: list[str] = []
    with cluster_in_thread(cfg) as (cluster, thread):

        async def load() -> None:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
                first = [asyncio.ensure_future(stream(s, cluster.url, k, outcomes))
                         for k in range(40)]  # fmt: skip
                await asyncio.sleep(0.8)  # every stream is running
                emulators[0][0].send_signal(signal.SIGKILL)
                emulators[0][0].wait(10)
                second = [asyncio.ensure_future(stream(s, cluster.url, 40 + k, outcomes))
                          for k in range(20)]  # fmt: skip
                await asyncio.wait_for(asyncio.gather(*first, *second), 60)

        asyncio.run(load())
        ledger = cluster.router.ledger
        totals = thread.call(ledger.totals)
        thread.call(ledger.check)
        healthy = [b.healthy for b in cluster.router.registry.backends]

    assert len(outcomes) == 60
    assert "truncated" not in outcomes and not any(o.startswith("client") for o in outcomes)
    ok = outcomes.count("ok")
    broken = outcomes.count("error event")
    http_errors = sum(o.startswith("http") for o in outcomes)
    assert ok + broken + http_errors == 60
    assert broken >= 1  # streams that were on the killed backend end with an error event
    assert ok >= 20  # everything sent after the kill went to the live backend
    assert totals["accepted"] == 60 and totals["in_flight"] == 0
    assert totals["completed"] == ok and totals["failed"] == broken + http_errors
    assert totals["aborted"] == 0
    assert totals["retries"] >= 1  # a request placed on the dead backend moved to the live one
    assert healthy == [False, True]
