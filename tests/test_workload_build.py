"""build_workload on the bundled sample: ordering, determinism, mixing, pairing, traces, config.

Needs no data directory (only ``sample_*`` data sets), except the last ServeGen test.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import yaml

from sagerl import paths
from sagerl.errors import ConfigError
from sagerl.schema import validate
from sagerl.workload import Request, WorkloadConfig, build_workload, load_pool
from sagerl.workload import config as config_module
from sagerl.workload.build import shares
from sagerl.workload.pairing import nearest_texts


@pytest.fixture(scope="module", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAGERL_CACHE", str(tmp_path_factory.getbasetemp() / "sagerl-cache"))
        mp.setenv("SAGERL_DATA", str(tmp_path_factory.getbasetemp() / "no-data-here"))
        yield


def cfg(**data: Any) -> WorkloadConfig:
    return validate(WorkloadConfig, data, "<test>")


def as_tuples(requests: list[Request]) -> list[tuple]:
    return [
        (r.id, r.arrival, r.prompt_tokens, r.output_tokens, r.prompt_id, r.length_samples)
        for r in requests
    ]


def test_default_config_builds_from_the_sample_without_data_dir() -> None:
    requests = build_workload(WorkloadConfig(), seed=0)
    assert len(requests) == 1000
    assert [r.id for r in requests] == list(range(1000))
    arrivals = [r.arrival for r in requests]
    assert arrivals == sorted(arrivals) and arrivals[0] > 0
    for r in requests:
        assert r.source == "sample_castillo" and r.prompt_text
        assert len(r.length_samples) == 10 and r.output_tokens in r.length_samples


def test_same_seed_same_list_other_seed_other_draw() -> None:
    c = cfg(num_requests=300, arrival={"kind": "gamma", "rate": 2.0, "cv": 2.0})
    a, b, other = build_workload(c, seed=5), build_workload(c, seed=5), build_workload(c, seed=6)
    assert a == b
    assert as_tuples(a) != as_tuples(other)
    assert [r.prompt_id for r in a] != [r.prompt_id for r in other]


def test_output_draws_cover_the_samples() -> None:
    requests = build_workload(cfg(num_requests=1500), seed=1)
    positions = Counter(r.length_samples.index(r.output_tokens) for r in requests)
    # Drawn uniformly among 10 samples: the first sample is not always the one used.
    assert len(positions) >= 8


def test_mix_follows_weights_exactly() -> None:
    c = cfg(
        num_requests=1000,
        datasets=[
            {"name": "sample_castillo", "weight": 3},
            {"name": "sample_azure_conv", "weight": 1},
            {"name": "sample_vidur_sharegpt", "weight": 1},
        ],
    )
    counts = Counter(r.source for r in build_workload(c, seed=0))
    assert counts == {
        "sample_castillo": 600,
        "sample_azure_conv": 200,
        "sample_vidur_sharegpt": 200,
    }
    assert shares(10, [1, 1, 1]).tolist() == [4, 3, 3]


def test_mix_interleaves_sources() -> None:
    c = cfg(
        num_requests=400,
        datasets=[{"name": "sample_castillo"}, {"name": "sample_azure_conv"}],
    )
    sources = [r.source for r in build_workload(c, seed=0)]
    assert sources[:200].count("sample_castillo") == pytest.approx(100, abs=30)


def test_filters_apply_to_every_sample() -> None:
    c = cfg(num_requests=500, max_output_tokens=400, max_prompt_tokens=300)
    for r in build_workload(c, seed=0):
        assert max(r.length_samples) <= 400 and r.prompt_tokens <= 300


def test_filter_leaving_nothing_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no requests left"):
        build_workload(cfg(max_prompt_tokens=1, min_prompt_tokens=1), seed=0)


def test_pairing_gives_text_of_close_length() -> None:
    c = cfg(
        num_requests=300,
        datasets=[{"name": "sample_azure_conv"}],
        pair_text=True,
        pair_source={"name": "sample_castillo"},
        pair_candidates=1,
    )
    text_pool = load_pool("sample_castillo")
    length_of = dict(zip(text_pool.prompt_ids or [], text_pool.prompt_tokens.tolist(), strict=True))
    lengths = np.array(sorted(set(length_of.values())))
    for r in build_workload(c, seed=0):
        assert r.prompt_text and r.prompt_id.startswith("sample_castillo:")
        paired = length_of[r.prompt_id.split(":", 1)[1]]
        best = np.abs(lengths - r.prompt_tokens).min()
        assert abs(paired - r.prompt_tokens) == best
        assert r.source == "sample_azure_conv"  # lengths stay the trace's


def test_nearest_texts_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    texts = rng.integers(1, 5000, size=700)
    queries = rng.integers(0, 6000, size=2000)
    for k in (1, 5):
        picks = nearest_texts(queries, texts, np.random.default_rng(1), k=k)
        dist = np.abs(texts[picks] - queries)
        kth = np.sort(np.abs(texts[None, :] - queries[:, None]), axis=1)[:, k - 1]
        assert np.all(dist <= kth)


def test_trace_window_and_rescale() -> None:
    pool = load_pool("sample_azure_conv")
    ts = pool.timestamps
    assert ts is not None
    c = cfg(
        num_requests=None,
        start_offset_s=120.0,
        duration_s=300.0,
        datasets=[{"name": "sample_azure_conv"}],
        arrival={"kind": "trace"},
    )
    requests = build_workload(c, seed=0)
    assert len(requests) == int(np.sum((ts >= 120) & (ts < 420)))
    assert requests[0].arrival >= 0 and requests[-1].arrival < 300
    expected = np.sort(ts[(ts >= 120) & (ts < 420)]) - 120
    np.testing.assert_allclose([r.arrival for r in requests], expected)

    c.arrival.rescale_to_rate = 20.0
    fast = build_workload(c, seed=0)
    times = np.array([r.arrival for r in fast])
    assert (len(times) - 1) / (times[-1] - times[0]) == pytest.approx(20.0)
    assert [r.prompt_tokens for r in fast] == [r.prompt_tokens for r in requests]


def test_trace_needs_timestamps() -> None:
    with pytest.raises(ConfigError, match="needs a data set with timestamps"):
        build_workload(cfg(datasets=[{"name": "sample_castillo"}], arrival={"kind": "trace"}))


def test_schedule_arrivals_with_duration() -> None:
    c = cfg(
        num_requests=None,
        duration_s=200.0,
        arrival={"kind": "schedule", "schedule": [[0, 10.0], [100, 0.0]]},
    )
    times = np.array([r.arrival for r in build_workload(c, seed=0)])
    assert times.max() < 100 and len(times) == pytest.approx(1000, abs=130)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"datasets": [{"name": "azure_cnv"}]}, r"datasets\.0\.name: .*did you mean 'azure_conv'"),
        ({"datasets": [{"name": "sample_castillo", "options": {"modle": "x"}}]}, "options.modle"),
        ({"datasets": [{"name": "sample_castillo", "wieght": 2}]}, "did you mean 'weight'"),
        (
            {"arrival": {"kind": "trace"}, "datasets": [{"name": "a"}, {"name": "b"}]},
            "unknown data set",
        ),
        (
            {
                "arrival": {"kind": "trace"},
                "datasets": [{"name": "sample_azure_conv"}, {"name": "sample_azure_code"}],
            },
            "exactly one data set",
        ),
        ({"arrival": {"kind": "schedule"}}, "needs a schedule"),
        ({"arrival": {"rescale_to_rate": 3.0}}, "only applies to kind 'trace'"),
        ({"num_requests": None}, "set num_requests or duration_s"),
    ],
)
def test_config_errors_name_the_key(data: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        cfg(**data)
    assert "\n" not in str(info.value)


def test_docstring_yaml_examples_validate() -> None:
    doc = config_module.__doc__ or ""
    block = doc.split("Example (YAML)::", 1)[1]
    first, second = block.split("# replay a real trace", 1)
    for text in (first, second.split("\n", 1)[1]):
        data = yaml.safe_load(textwrap.dedent(text))
        validate(WorkloadConfig, data["workload"], "<docstring>")


FULL_DATA = paths.data_dir(must_exist=False)
"""The data directory the user configured (read before the module fixture hides it)."""


@pytest.mark.skipif(not FULL_DATA.is_dir(), reason="full data directory absent")
def test_servegen_trace_gets_the_build_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGERL_DATA", str(FULL_DATA))
    c = cfg(
        num_requests=500,
        datasets=[
            {
                "name": "servegen",
                "options": {"category": "multimodal-mm-image", "duration_s": 600},
            }
        ],
        arrival={"kind": "trace"},
    )
    a, b, other = build_workload(c, seed=1), build_workload(c, seed=1), build_workload(c, seed=2)
    assert a == b and len(a) == 500 and a[0].client is not None
    assert as_tuples(a) != as_tuples(other)
