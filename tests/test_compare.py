"""The compare harness: identical workloads, records, tables, outputs, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sagerl.cli import main
from sagerl.compare.config import load_compare_config
from sagerl.compare.report import aggregate, improvement, markdown_tables
from sagerl.compare.runner import run_matrix, workload_for
from sagerl.errors import ConfigError

SMALL = {
    "name": "cmp-test",
    "workload": {
        "num_requests": 120,
        "max_output_tokens": 4096,
        "datasets": [
            {"name": "sample_castillo", "options": {"model": "meta-llama--Llama-3.1-8B-Instruct"}}
        ],
        "arrival": {"kind": "poisson", "rate": 1.0},
    },
    "cluster": {"replicas": [{"gpu": "A40", "model": "llama-3.1-8b", "gpu_memory_gib": 20}]},
    "compare": {
        "rates": [2.0, 6.0],
        "rate_unit": "rps",
        "seeds": [0, 1],
        "processes": 1,
        "predictor": {"name": "oracle"},
        "policies": [
            {"name": "fcfs", "ordering": "fcfs"},
            {"name": "sagesched", "ordering": "sagesched"},
            {"name": "oracle-srpt", "ordering": "oracle-srpt"},
        ],
    },
}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "cmp.yaml"
    data = {**data, "output_dir": str(tmp_path / "runs")}
    path.write_text(yaml.safe_dump(data))
    return path


def test_same_requests_and_true_lengths_at_every_rate(tmp_path: Path) -> None:
    cfg = load_compare_config(write(tmp_path, SMALL))
    slow, fast = workload_for(cfg, 1.0, seed=3), workload_for(cfg, 5.0, seed=3)
    assert [r.prompt_id for r in slow] == [r.prompt_id for r in fast]
    assert [r.output_tokens for r in slow] == [r.output_tokens for r in fast]
    assert fast[-1].arrival < slow[-1].arrival  # only the clock is squeezed
    assert workload_for(cfg, 5.0, seed=4) != fast


def test_matrix_records_and_report(tmp_path: Path) -> None:
    cfg = load_compare_config(write(tmp_path, SMALL))
    records, saturation = run_matrix(cfg, progress=False)
    assert saturation is None and len(records) == 3 * 2 * 2
    for key in ("policy", "rate", "rate_rps", "seed", "mean_ttlt", "p99_ttlt", "mean_ttft"):
        assert key in records[0]
    # Every policy served the same requests at each (rate, seed).
    for rate in (2.0, 6.0):
        for seed in (0, 1):
            cell = [r for r in records if r["rate"] == rate and r["seed"] == seed]
            assert len({r["requests"] for r in cell}) == 1 and len(cell) == 3
    summary = aggregate(records)
    assert set(summary["seeds"]) == {2}
    gains = improvement(summary)
    assert list(gains["rate"]) == [2.0, 6.0]
    assert (gains["best"] != "oracle-srpt").all()  # oracles are bounds, not contenders
    assert "| policy |" in markdown_tables(summary, "rps")


def test_improvement_names_the_rival_headroom_and_paired_seeds() -> None:
    """Hand-built records: SageSched's variant is not its rival, the oracle gives the
    headroom, and the paired count compares the same seeds."""
    ttlt = {  # policy -> mean TTLT per seed 0..2
        "sagesched": [9.0, 11.0, 10.0],
        "sagesched-10buckets": [9.5, 10.5, 10.1],  # the same scheduler, another reading
        "svf": [10.0, 10.5, 12.5],
        "fcfs": [20.0, 20.0, 20.0],
        "oracle-srpt": [8.0, 8.0, 8.0],
    }
    records = [
        {
            "policy": policy,
            "ordering": policy.split("-")[0] if policy != "oracle-srpt" else policy,
            "placement": "round-robin",
            "oracle": policy == "oracle-srpt",
            "rate": 1.0,
            "rate_rps": 3.0,
            "load": 1.0,
            "seed": seed,
            "mean_ttlt": value,
        }
        for policy, values in ttlt.items()
        for seed, value in enumerate(values)
    ]
    for r in records:
        r.update({k: 0.0 for k in ("p50_ttlt", "p99_ttlt", "mean_ttft", "p99_ttft")})
        r.update({k: 0.0 for k in ("mean_tpot", "throughput_rps", "throughput_tok_s")})
        r.update({k: 0.0 for k in ("preemptions", "kv_use_mean", "rejected", "wall_s")})
    g = improvement(aggregate(records), records).iloc[0]
    assert g["best"] == "sagesched" and g["runner_up"] == "sagesched-10buckets"
    assert g["sagesched_vs"] == "svf"  # the best policy that is not a SageSched variant
    assert g["sagesched_gain_pct"] == pytest.approx(100 * (11.0 - 10.0) / 11.0)
    assert g["oracle_mean_ttlt"] == pytest.approx(8.0)
    assert g["sagesched_headroom_pct"] == pytest.approx(100 * (11.0 - 8.0) / 11.0)
    assert g["headroom_pct"] == pytest.approx(100 * (10.0333333 - 8.0) / 10.0333333)
    assert (g["sagesched_seeds_won"], g["sagesched_seeds_lost"], g["sagesched_seeds"]) == (2, 1, 3)
    # Without per-seed records only the name marks a variant, and there is no paired count.
    bare = improvement(aggregate(records)).iloc[0]
    assert bare["sagesched_vs"] == "sagesched-10buckets" and "sagesched_seeds" not in bare


def test_printed_gain_rows_keep_one_column_set(tmp_path: Path) -> None:
    """A rate where only one non-oracle policy ran still prints every column (as ``-``):
    ``print_table`` takes its columns from the first row."""
    from sagerl.commands.compare import gain_rows, sagesched_rows

    cfg = load_compare_config(write(tmp_path, SMALL))
    records, _ = run_matrix(cfg, progress=False)
    records = [r for r in records if r["rate"] == 2.0 or r["policy"] != "fcfs"]
    gains = improvement(aggregate(records), records)
    rows = gain_rows(gains, "rps")
    assert len({tuple(r) for r in rows}) == 1 and len(rows) == 2
    assert rows[1]["runner-up"] == "-" and rows[1]["headroom"] == "-"
    assert rows[0]["headroom"].endswith("%")
    assert [r["rate"] for r in sagesched_rows(gains, "rps")] == [rows[0]["rate"]]


def test_compare_cli_writes_tables_plots_and_json(tmp_path: Path) -> None:
    data = {**SMALL, "compare": {**SMALL["compare"], "processes": 2, "seeds": [0]}}
    out = tmp_path / "records.json"
    code = main(["compare", "-c", str(write(tmp_path, data)), "--no-progress", "--json", str(out)])
    assert code == 0
    records = json.loads(out.read_text())
    assert {r["policy"] for r in records} == {"fcfs", "sagesched", "oracle-srpt"}
    assert all(r["mean_ttlt"] > 0 for r in records)
    run_dir = tmp_path / "runs" / "cmp-test"
    for name in ("runs.csv", "summary.csv", "tables.md", "ttlt_vs_rate.png", "ttft_vs_rate.png"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tb").rglob("events.out.tfevents.*"))
    gains = (run_dir / "improvement.csv").read_text().splitlines()[0].split(",")
    assert {"headroom_pct", "sagesched_vs", "sagesched_seeds_won"} <= set(gains)


def test_saturation_is_measured_when_rates_are_fractions(tmp_path: Path) -> None:
    data = {
        **SMALL,
        "compare": {
            **SMALL["compare"],
            "rate_unit": "saturation",
            "rates": [0.5],
            "seeds": [0],
            "saturation_requests": 200,
        },
    }
    data["compare"]["policies"] = [{"name": "fcfs", "ordering": "fcfs"}]
    records, saturation = run_matrix(load_compare_config(write(tmp_path, data)), progress=False)
    assert saturation is not None and saturation > 0
    assert records[0]["rate_rps"] == pytest.approx(0.5 * saturation)
    assert records[0]["load"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"name": "x", "ordering": "sagesced"}, "unknown ordering policy 'sagesced'"),
        ({"name": "x", "ordering": "fcfs", "placement": "rr"}, "unknown placement policy 'rr'"),
        ({"name": "x", "ordering": "sagesched", "ordering_options": {"hyst": 1}}, "'hyst'"),
    ],
)
def test_unknown_policy_is_a_clear_error(
    tmp_path: Path, policy: dict, message: str, capsys
) -> None:
    data = {**SMALL, "compare": {**SMALL["compare"], "policies": [policy]}}
    path = write(tmp_path, data)
    with pytest.raises(ConfigError, match=message):
        load_compare_config(path)
    assert main(["compare", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config error in") and message in err and err[-1] == "\n"
