"""``compare --backend ray``: the matrix as Ray tasks gives the local run's records, bit for bit;
without Ray the option is a one-line error."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import yaml

from sagerl.cli import main
from sagerl.compare.config import load_compare_config
from sagerl.compare.runner import run_matrix
from sagerl.errors import SagerlError

# Two policies (one with SageSched's semantic predictor, whose embedder and history each Ray
# worker rebuilds) x one rate x two seeds on the bundled sample.
SMALL = {
    "name": "cmp-ray-test",
    "workload": {
        "num_requests": 150,
        "max_output_tokens": 4096,
        "datasets": [
            {"name": "sample_castillo", "options": {"model": "meta-llama--Llama-3.1-8B-Instruct"}}
        ],
        "arrival": {"kind": "poisson", "rate": 1.0},
    },
    "cluster": {
        "replicas": [{"gpu": "A40", "model": "llama-3.1-8b", "gpu_memory_gib": 20, "count": 2}]
    },
    "compare": {
        "rates": [6.0],
        "rate_unit": "rps",
        "seeds": [0, 1],
        "processes": 2,
        "predictor": {"name": "sagesched"},
        "policies": [
            {"name": "fcfs", "ordering": "fcfs"},
            {"name": "sagesched+p2c", "ordering": "sagesched", "placement": "power-of-two"},
        ],
    },
}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump({**data, "output_dir": str(tmp_path / "runs")}))
    return path


def comparable(records: list[dict]) -> list[dict]:
    """Records without the measured ``wall_s``, NaN (``load`` with no saturation rate) as a
    marker so ``==`` compares everything else bit for bit."""
    nan = "nan"
    return [
        {k: nan if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
        for r in ({k: v for k, v in rec.items() if k != "wall_s"} for rec in records)
    ]


@pytest.mark.slow
def test_ray_records_are_identical_to_local(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    cfg = load_compare_config(write(tmp_path, SMALL))
    local, sat_local = run_matrix(cfg, progress=False, processes=1)
    ray_records, sat_ray = run_matrix(cfg, progress=False, processes=2, backend="ray")
    assert sat_local == sat_ray
    assert len(local) == len(ray_records) == 4
    # Every metric, bit for bit (== on floats), in the same order.
    assert comparable(ray_records) == comparable(local)
    assert {r["policy"] for r in local} == {"fcfs", "sagesched+p2c"}


def test_ray_backend_without_ray_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    path = write(tmp_path, SMALL)
    code = main(["compare", "--config", str(path), "--backend", "ray", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == 'error: --backend ray needs Ray: pip install -e ".[ray]"'
    with pytest.raises(SagerlError, match="needs Ray"):
        run_matrix(load_compare_config(path), progress=False, backend="ray")


def test_address_needs_the_ray_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, SMALL)
    assert main(["compare", "--config", str(path), "--address", "auto"]) == 2
    assert "--address needs --backend ray" in capsys.readouterr().err
