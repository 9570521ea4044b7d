"""Every loader on the real data: row counts from shared/data/README.md, columns, options.

Skipped where the full data directory is absent. The parsed-pool cache lives in a directory
shared by this test session, so ShareGPT's cold parse (about 1.5 s) happens once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sagerl import paths
from sagerl.errors import UnknownNameError
from sagerl.workload import RequestPool, list_datasets, load_pool

pytestmark = pytest.mark.skipif(not paths.has_full_data(), reason="full data directory absent")

LLAMA = "meta-llama--Llama-3.1-8B-Instruct"


@pytest.fixture(scope="module", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAGERL_CACHE", str(tmp_path_factory.getbasetemp() / "sagerl-cache"))
        yield


@pytest.fixture(scope="module")
def sharegpt() -> RequestPool:
    return load_pool("sharegpt")


def check_pool(pool: RequestPool) -> None:
    """Columns aligned, lengths non-negative int64."""
    n = len(pool)
    assert pool.prompt_tokens.dtype == np.int64 and pool.output_tokens.dtype == np.int64
    assert pool.output_tokens.shape == (n,)
    assert (pool.prompt_tokens >= 0).all() and (pool.output_tokens >= 0).all()
    for col in (pool.texts, pool.prompt_ids, pool.clients, pool.groups, pool.timestamps):
        assert col is None or len(col) == n


def test_registered_names() -> None:
    expected = {
        "sharegpt", "castillo", "codealpaca", "azure_code", "azure_conv", "servegen",
        "vidur_arxiv", "vidur_sharegpt", "sample_azure_conv", "sample_azure_code",
        "sample_castillo", "sample_vidur_sharegpt",
    }  # fmt: skip
    assert expected <= set(list_datasets())


@pytest.mark.parametrize(
    ("name", "rows", "minutes"), [("azure_conv", 19_366, 58), ("azure_code", 8_819, 57)]
)
def test_azure(name: str, rows: int, minutes: float) -> None:
    pool = load_pool(name)
    check_pool(pool)
    assert len(pool) == rows and pool.texts is None
    assert pool.timestamps is not None and pool.timestamps[0] == 0.0
    assert np.all(np.diff(pool.timestamps) >= 0)
    assert pool.timestamps[-1] / 60 == pytest.approx(minutes, abs=1.5)


def test_azure_conv_means_match_readme() -> None:
    pool = load_pool("azure_conv")
    assert pool.prompt_tokens.mean() == pytest.approx(1155, abs=1)
    assert np.median(pool.output_tokens) == 129


@pytest.mark.parametrize(("name", "rows"), [("vidur_arxiv", 28_257), ("vidur_sharegpt", 30_731)])
def test_vidur(name: str, rows: int) -> None:
    pool = load_pool(name)
    check_pool(pool)
    assert len(pool) == rows and pool.texts is None and pool.timestamps is None


def test_sharegpt_every_turn_has_its_text(sharegpt: RequestPool) -> None:
    check_pool(sharegpt)
    assert len(sharegpt) == 61_223
    assert sharegpt.texts is not None and sharegpt.prompt_ids is not None
    assert sum(1 for t in sharegpt.texts if t) == 61_095  # 128 human messages are empty
    assert sharegpt.prompt_ids[:2] == ["QWJhYvA_0:0", "QWJhYvA_0:1"]
    assert sharegpt.texts[0].startswith("Summarize the main ideas of Jeff Walker")
    assert len(set(sharegpt.prompt_ids)) == len(sharegpt)
    assert sharegpt.prompt_tokens[:2].tolist() == [34, 36]


def test_sharegpt_cl100k_option() -> None:
    pool = load_pool("sharegpt", tokenizer="cl100k")
    assert len(pool) == 61_223
    assert pool.output_tokens.mean() == pytest.approx(280, abs=1)


def test_castillo_one_model() -> None:
    pool = load_pool("castillo", model=LLAMA)
    check_pool(pool)
    assert len(pool) == 4_707
    assert pool.output_samples is not None and pool.output_samples.shape == (4_707, 10)
    np.testing.assert_array_equal(pool.output_tokens, pool.output_samples[:, 0])
    assert pool.texts is not None and all(pool.texts)
    assert pool.groups is not None and "Apps" in set(pool.groups)


def test_castillo_filters() -> None:
    pool = load_pool("castillo", model=LLAMA, datasets=["Mbpp"], splits=["test"])
    assert len(pool) == 98 and set(pool.groups or []) == {"Mbpp"}


def test_castillo_unknown_names_list_valid() -> None:
    with pytest.raises(UnknownNameError, match=r"valid: .*meta-llama--Llama-3\.1-8B-Instruct"):
        load_pool("castillo", model="llama-8b")
    with pytest.raises(UnknownNameError, match="did you mean 'Mbpp'"):
        load_pool("castillo", model=LLAMA, datasets=["Mbp"])


def test_codealpaca_counts_tokens() -> None:
    pytest.importorskip("tiktoken")
    pool = load_pool("codealpaca")
    check_pool(pool)
    assert len(pool) == 2_017 and pool.texts is not None
    assert pool.texts[0].startswith("What are the distinct values from the given list?\n")
    assert (pool.prompt_tokens > 0).all() and np.mean(pool.output_tokens > 0) > 0.99


def test_servegen_replays_rate_and_pmfs() -> None:
    pool = load_pool(
        "servegen", category="language-m-small", client=27, window=0, duration_s=600, seed=1
    )
    check_pool(pool)
    assert pool.timestamps is not None and pool.clients is not None
    assert set(pool.clients) == {"27"}
    assert pool.timestamps.min() >= 0 and pool.timestamps.max() < 600
    # trace.csv of client 27, window 0: 88.06 requests/s with CV 1.15.
    assert len(pool) / 600 == pytest.approx(88.06, rel=0.05)
    assert (pool.prompt_tokens > 0).all()
    again = load_pool(
        "servegen", category="language-m-small", client=27, duration_s=600, seed=1, use_cache=False
    )
    np.testing.assert_array_equal(pool.timestamps, again.timestamps)
    other = load_pool("servegen", category="language-m-small", client=27, duration_s=600, seed=2)
    assert not np.array_equal(pool.prompt_tokens[:50], other.prompt_tokens[:50])


def test_servegen_multimodal_and_unknown_client() -> None:
    pool = load_pool("servegen", category="multimodal-mm-image", duration_s=600)
    check_pool(pool)
    assert len(pool) > 0 and len(set(pool.clients or [])) > 1
    with pytest.raises(UnknownNameError, match="ServeGen client"):
        load_pool("servegen", category="multimodal-mm-image", client="999")


def test_warm_cache_is_fast(sharegpt: RequestPool) -> None:
    load_pool("castillo", model=LLAMA)  # make sure both are cached
    start = time.perf_counter()
    load_pool("castillo", model=LLAMA)
    load_pool("sharegpt")
    assert time.perf_counter() - start < 5.0


def test_cache_files_are_written() -> None:
    load_pool("azure_code")
    cache = Path(paths.cache_dir()) / "pools"
    assert any(p.name.startswith("azure_code-") for p in cache.iterdir())
