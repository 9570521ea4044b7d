"""The feature encoder: layout, bounds, JSON round trip, and that it stays torch-free."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sagerl.features import CLIP, FEATURE_VERSION, FeatureEncoder, FeatureSpec, RequestStats
from sagerl.predict.distribution import LengthDistribution
from sagerl.view import ReplicaView
from sagerl.workload.request import Request

REPO = Path(__file__).resolve().parent.parent


def view(i: int, running: int = 3, waiting: int = 1, healthy: bool = True) -> ReplicaView:
    return ReplicaView(
        index=i,
        gpu="H100",
        model="m",
        num_running=running,
        num_waiting=waiting,
        kv_blocks_used=100,
        kv_blocks_total=1000,
        block_size=16,
        decode_tokens_per_s=80.0,
        healthy=healthy,
        cost_rate=1e6 * (i + 1),
    )


def test_layout_names_and_bounds() -> None:
    enc = FeatureEncoder(FeatureSpec(max_replicas=4))
    req = Request(id=0, arrival=0.0, prompt_tokens=300, output_tokens=99)
    pred = LengthDistribution([10, 200, 5000], [0.2, 0.5, 0.3])
    obs = enc.encode(req, [view(0), view(1, healthy=False), view(2)], pred, [1.0, math.inf, 0.5])
    names = enc.feature_names()
    assert obs.shape == (enc.size,) == (len(names),)
    assert obs.dtype == np.float32 and np.isfinite(obs).all() and np.abs(obs).max() <= CLIP
    get = {n: float(v) for n, v in zip(names, obs, strict=True)}
    assert get["replica3.present"] == 0.0 and get["replica2.present"] == 1.0
    assert get["replica1.available"] == 0.0 and get["replica0.available"] == 1.0
    assert get["replica2.teacher_best"] == 1.0 and get["replica0.teacher_best"] == 0.0
    assert get["replica2.speed_rel"] == pytest.approx(1.0)
    hist = [get[n] for n in names if n.startswith("request.hist")]
    assert sum(hist) == pytest.approx(1.0) and hist[0] == pytest.approx(0.2)
    assert get["request.has_prediction"] == 1.0


def test_request_stats_match_cost_and_rank() -> None:
    from sagerl.cost import CostDistribution
    from sagerl.policy.gittins import gittins_rank

    rng = np.random.default_rng(0)
    for n in (1, 3, 30, 200):
        req = Request(id=0, arrival=0.0, prompt_tokens=int(rng.integers(0, 2000)), output_tokens=5)
        pred = LengthDistribution(rng.integers(0, 3000, n), rng.random(n))
        st = RequestStats.of(req, pred)
        dist = CostDistribution.from_length_distribution(pred, req.prompt_tokens)
        assert st.mean_cost == pytest.approx(dist.mean(), rel=1e-12)
        assert st.rank == pytest.approx(gittins_rank(dist), rel=1e-9)
        assert st.mean_length == pytest.approx(float(pred.probs @ np.maximum(pred.support, 1)))
    assert RequestStats.of(req, None).rank == 0.0


def test_json_round_trip(tmp_path: Path) -> None:
    enc = FeatureEncoder(FeatureSpec(max_replicas=6, time_unit=0.1))
    path = tmp_path / "features.json"
    enc.to_json(path)
    data = json.loads(path.read_text())
    assert data["spec"]["version"] == FEATURE_VERSION and data["size"] == enc.size
    again = FeatureEncoder.from_json(path)
    assert again.spec == enc.spec and again.size == enc.size
    req = Request(id=0, arrival=0.0, prompt_tokens=30, output_tokens=5)
    a = enc.encode(req, [view(0), view(1)], None)
    b = again.encode(req, [view(0), view(1)], None)
    np.testing.assert_array_equal(a, b)
    bad = dict(data, spec=dict(data["spec"], version=FEATURE_VERSION + 1))
    with pytest.raises(ValueError, match="version"):
        FeatureEncoder.from_dict(bad)


def test_features_module_imports_no_torch_envs_or_agents() -> None:
    code = (
        "import sys, sagerl.features; "
        "bad = [m for m in ('torch', 'envs', 'agents', 'stable_baselines3') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
