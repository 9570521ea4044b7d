"""The command line: help, the default run, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sagerl.cli import main
from sagerl.paths import has_full_data

REPO = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, cwd: Path = REPO, env_cache: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sagerl`` in a subprocess (optionally with its own parse cache)."""
    env = dict(os.environ)
    if env_cache is not None:
        env["SAGERL_CACHE"] = str(env_cache)
    return subprocess.run(
        [sys.executable, "-m", "sagerl", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_help_lists_subcommands() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("simulate", "calibrate"):
        assert command in out.stdout


def test_default_simulate_writes_outputs(tmp_path: Path) -> None:
    summary = tmp_path / "s.json"
    code = main(
        [
            "simulate",
            "--no-progress",
            "--json",
            str(summary),
            "name=t",
            f"output_dir={tmp_path}",
            "workload.num_requests=300",
        ]
    )
    assert code == 0
    figures = json.loads(summary.read_text())["summary"]
    assert figures["requests"] == 300 and figures["rejected"] == 0
    assert 0 < figures["ttft_mean"] < figures["ttlt_mean"]
    run_dir = tmp_path / "t"
    for name in ("requests.csv", "replicas.csv", "summary.json", "config.yaml"):
        assert (run_dir / name).is_file()
    assert len((run_dir / "requests.csv").read_text().splitlines()) == 301


def test_seed_changes_the_workload_and_repeats(tmp_path: Path) -> None:
    def ttlt(seed: int) -> float:
        path = tmp_path / f"{seed}.json"
        main(
            [
                "simulate",
                "--no-progress",
                "--seed",
                str(seed),
                "--json",
                str(path),
                f"output_dir={tmp_path}",
                "workload.num_requests=200",
            ]
        )
        return json.loads(path.read_text())["summary"]["ttlt_mean"]

    assert ttlt(1) == ttlt(1)
    assert ttlt(1) != ttlt(2)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("cluster.replcas=1", "cluster.replcas: unknown key (did you mean 'replicas'?)"),
        ("cluster.placement=foo", "cluster.placement: unknown placement policy 'foo'"),
        ("cluster.ordering=sjfx", "cluster.ordering: unknown ordering policy 'sjfx'"),
        ("cluster.replicas.0.gpu=B200", "unknown GPU 'B200' (did you mean 'H200'?)"),
        ("cluster.replicas.0.model=llama-9b", "cluster.replicas.0.model: unknown model"),
        ("cluster.scheduler.block_size=abc", "cluster.scheduler.block_size:"),
        ("workload.datasets.0.name=sharegp", "did you mean 'sharegpt'?"),
        ("workload.arrival.rate=-1", "workload.arrival.rate: Input should be greater than 0"),
        ("seed", "override 'seed' is not of the form key=value"),
    ],
)
def test_config_errors_are_one_line_exit_2(override: str, expected: str) -> None:
    out = run_cli("simulate", "--no-progress", override)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1]
    assert "Traceback" not in out.stderr


def test_missing_config_file() -> None:
    out = run_cli("simulate", "--config", "nope.yaml")
    assert out.returncode == 2 and "config file nope.yaml does not exist" in out.stderr


def test_missing_data_dir_names_it(tmp_path: Path) -> None:
    out = run_cli("simulate", "--config", "configs/azure-conv.yaml", f"data_dir={tmp_path}/none")
    assert out.returncode == 2
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncluster: [unclosed\n")
    out = run_cli("simulate", "--config", str(bad))
    assert out.returncode == 2 and "line" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.skipif(not has_full_data(), reason="needs the full data directory")
def test_azure_conv_config_replays_the_trace(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    code = main(
        [
            "simulate",
            "--config",
            "configs/azure-conv.yaml",
            "--no-progress",
            "--json",
            str(path),
            f"output_dir={tmp_path}",
            "workload.num_requests=2000",
        ]
    )
    assert code == 0
    figures = json.loads(path.read_text())["summary"]
    # The trace runs at ~5.5 req/s: 2,000 requests span about six minutes.
    assert 250 < figures["makespan_s"] < 600


def test_malformed_trace_names_file_and_line(tmp_path: Path) -> None:
    trace = tmp_path / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv"
    trace.parent.mkdir()
    trace.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,-3,109\n"
    )
    out = run_cli(
        "simulate",
        "--config",
        "configs/azure-conv.yaml",
        f"data_dir={tmp_path}",
        "workload.num_requests=2",
        env_cache=tmp_path / "cache",
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "AzureLLMInferenceTrace_conv.csv" in last and "line 3" in last
