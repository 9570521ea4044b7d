"""The parsed-pool cache: hits skip parsing, key changes miss, corrupt files are rebuilt."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sagerl.workload import load_pool
from sagerl.workload.catalog import DATASETS

AZURE = "azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
ROWS = "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n"


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "data"
    (root / AZURE).parent.mkdir(parents=True)
    (root / AZURE).write_text(HEAD + ROWS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAGERL_CACHE", str(tmp_path / "cache"))
        yield root


def cache_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir.parent / "cache" / "pools").glob("azure_conv-*.pkl"))


def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Wrap the azure_conv parse function to count calls."""
    spec = DATASETS.get("azure_conv")
    calls = [0]

    def counting(*args: object) -> object:
        calls[0] += 1
        return spec.parse(*args)  # type: ignore[arg-type]

    monkeypatch.setitem(DATASETS._table, "azure_conv", dataclasses.replace(spec, parse=counting))
    return calls


def test_second_load_is_a_cache_hit(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_parses(monkeypatch)
    first = load_pool("azure_conv", data_dir)
    second = load_pool("azure_conv", data_dir)
    assert calls == [1] and len(cache_files(data_dir)) == 1
    np.testing.assert_array_equal(first.prompt_tokens, second.prompt_tokens)
    np.testing.assert_array_equal(first.timestamps, second.timestamps)


def test_changed_source_file_misses(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_parses(monkeypatch)
    load_pool("azure_conv", data_dir)
    path = data_dir / AZURE
    path.write_text(HEAD + ROWS + "2023-11-16 18:15:52.0,10,20\n")
    os.utime(path, ns=(1, 1))
    pool = load_pool("azure_conv", data_dir)
    assert calls == [2] and len(pool) == 3


def test_corrupt_cache_file_is_rebuilt(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_pool("azure_conv", data_dir)
    (cached,) = cache_files(data_dir)
    cached.write_bytes(b"\x80\x05garbage")
    calls = count_parses(monkeypatch)
    pool = load_pool("azure_conv", data_dir)
    assert calls == [1] and len(pool) == 2
    load_pool("azure_conv", data_dir)
    assert calls == [1]  # rebuilt entry is readable again


def test_options_are_part_of_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGERL_CACHE", str(tmp_path))
    llama = load_pool("sample_castillo")
    qwen = load_pool("sample_castillo", model="Qwen--Qwen2.5-7B-Instruct-1M")
    assert len(llama) == 1915 and len(qwen) == 2713
    assert len(list((tmp_path / "pools").glob("sample_castillo-*.pkl"))) == 2


def test_use_cache_false_writes_nothing(data_dir: Path) -> None:
    load_pool("azure_conv", data_dir, use_cache=False)
    assert cache_files(data_dir) == []
