"""``python -m sagerl predict eval``: clear one-line errors, and a small run on the sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sagerl.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["predict", "eval", "--no-progress", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--predictors", "sagesched,sagesced"], "unknown predictor 'sagesced'"),
        (["--predictors", "global", "--dataset", "castilo"], "unknown evaluation data set"),
        (
            ["--predictors", "global", "--dataset", "sample_castillo", "--model", "llama"],
            "unknown CASTILLO model 'llama'",
        ),
        (["--predictors", "global", "simlarity=0.7"], "unknown key (did you mean 'similarity'?)"),
        (["--predictors", "global", "--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = run(capsys, *args)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_eval_on_the_bundled_sample(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    code, out, _ = run(
        capsys,
        "--dataset",
        "sample_castillo",
        "--predictors",
        "global,length-history,oracle",
        "--limit",
        "40",
        "--latency-requests",
        "10",
        "--json",
        str(path),
    )
    assert code == 0
    assert "accuracy" in out and "latency" in out
    figures = json.loads(path.read_text())
    assert list(figures) == ["global", "length-history", "oracle"]
    for fig in figures.values():
        for key in ("crps", "pinball_q50", "coverage_80", "kendall_tau", "bucket_accuracy"):
            assert isinstance(fig[key], float)
        assert fig["n"] == 40 and fig["latency_p50_ms"] >= 0
    assert figures["oracle"]["crps"] < figures["global"]["crps"]
    # Same seed, same figures (latency aside).
    path2 = tmp_path / "again.json"
    args = ["--dataset", "sample_castillo", "--predictors", "global,length-history,oracle"]
    run(capsys, *args, "--limit", "40", "--latency-requests", "0", "--json", str(path2))
    again = json.loads(path2.read_text())
    for name in figures:
        assert again[name]["crps"] == figures[name]["crps"]
