"""The bundled sample: small, permissively licensed, and loadable with no data directory."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from sagerl import paths
from sagerl.workload import load_pool


@pytest.fixture(scope="module", autouse=True)
def _no_full_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAGERL_CACHE", str(tmp_path_factory.getbasetemp() / "sagerl-cache"))
        mp.setenv("SAGERL_DATA", str(tmp_path_factory.getbasetemp() / "no-data-here"))
        yield


def test_sample_is_under_two_megabytes() -> None:
    size = sum(p.stat().st_size for p in paths.SAMPLE_DATA_DIR.rglob("*") if p.is_file())
    assert size <= 2 * 1024 * 1024
    assert (paths.SAMPLE_DATA_DIR / "README.md").is_file()


@pytest.mark.parametrize(
    ("name", "rows"),
    [
        ("sample_azure_conv", 5000),
        ("sample_azure_code", 2500),
        ("sample_castillo", 1915),
        ("sample_vidur_sharegpt", 3000),
    ],
)
def test_sample_loaders_match_readme(name: str, rows: int) -> None:
    pool = load_pool(name)
    assert len(pool) == rows and pool.source == name
    assert (pool.prompt_tokens >= 0).all()


def test_sample_castillo_is_permissive_only() -> None:
    for model, rows in [
        ("meta-llama--Llama-3.1-8B-Instruct", 1915),
        ("Qwen--Qwen2.5-7B-Instruct-1M", 2713),
    ]:
        pool = load_pool("sample_castillo", model=model)
        assert len(pool) == rows
        assert set(pool.groups or []) == {"Apps", "Mbpp", "BigCodeBench"}
        assert pool.output_samples is not None and pool.output_samples.shape[1] == 10


def test_sample_azure_timestamps_start_at_zero() -> None:
    pool = load_pool("sample_azure_conv")
    assert pool.timestamps is not None and pool.timestamps[0] == 0.0
    assert np.all(np.diff(pool.timestamps) >= 0)
