"""``python -m sagerl serve`` and ``emulate`` from the command line, and the serve configs."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from sagerl.live.config import ServeConfig
from sagerl.schema import load_config

REPO = Path(__file__).resolve().parents[1]
SERVE_DEPS = all(importlib.util.find_spec(m) for m in ("starlette", "uvicorn", "httptools"))
needs_serve = pytest.mark.skipif(not SERVE_DEPS, reason="needs the serve extra")


@pytest.mark.parametrize("path", sorted(REPO.glob("configs/serve-*.yaml")), ids=lambda p: p.stem)
def test_serve_configs_validate(path: Path) -> None:
    cfg = load_config(ServeConfig, path)
    assert cfg.backends or cfg.emulate.count
    assert cfg.host == "127.0.0.1"


@needs_serve
def test_serve_imports_no_torch() -> None:
    code = (
        "import sys; import sagerl.commands.serve, sagerl.live.serving, sagerl.live.app; "
        "from sagerl.live.prediction import build_predictor; "
        "from sagerl.live.config import PredictorSpec; "
        "build_predictor(PredictorSpec(name='length-history')); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@needs_serve
def test_config_errors_are_one_line_with_exit_2() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sagerl", "serve", "--emulate", "1", "policy.name=nope"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        line for line in out.stderr.strip().splitlines() if line.startswith("error: ")
    ]
    assert "policy.name: unknown placement policy 'nope'" in out.stderr


@needs_serve
def test_serve_emulate_from_the_command_line(tmp_path: Path) -> None:
    """The demo: `serve --emulate 2` answers a completion, then stops cleanly on SIGINT."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sagerl", "serve", "--emulate", "2", "--port", "0",
         "--time-scale", "10", f"transition_log={tmp_path / 't.jsonl'}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = None
        for _ in range(50):
            line = proc.stdout.readline()
            match = re.search(r"router on (http://127\.0\.0\.1:\d+)", line)
            if match:
                url = match.group(1)
                break
        assert url, "router did not start"
        body = json.dumps({"model": "llama-3.1-8b", "prompt": "hi", "max_tokens": 3}).encode()
        req = urllib.request.Request(
            url + "/v1/completions", body, {"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert json.loads(resp.read())["usage"]["completion_tokens"] == 3
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 1
