"""Step-time model, specs and calibration (sagerl.hardware, sagerl.calibration)."""

from __future__ import annotations

import json
import math
import random
import time

import pytest

from sagerl.errors import SagerlError, UnknownNameError
from sagerl.hardware import (
    ALLREDUCE_FITS,
    BREAKDOWN_KEYS,
    ELEMENTWISE_KIND,
    GPUS,
    KERNEL_CALIBRATION,
    MODELS,
    StepTimeModel,
    elementwise_time,
    gemm_time,
    get_gpu,
    get_model,
    layer_elementwise_bytes,
    layer_gemm_shapes,
)
from sagerl.paths import data_dir, has_full_data

MS = 1e-3

CASES = [
    ("llama-2-7b", "A100", 1),
    ("llama-3.1-8b", "H100", 1),
    ("mistral-7b", "A40", 1),
    ("qwen2.5-32b", "H200", 2),
    ("qwen3-32b", "H800", 4),
    ("llama-2-70b", "A100", 8),
]


def prefill_pairs(chunk: int, before: int = 0) -> float:
    """Causal (query, key) pairs of one prefill chunk, as the simulator counts them."""
    return chunk * (before + (chunk + 1) / 2)


def random_batches(seed: int, count: int = 200) -> list[tuple[int, int, float, int]]:
    """Mixed batches: a few prefill chunks plus decode sequences with random contexts."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        decodes = rng.randint(0, 256)
        chunks = [rng.randint(1, 2048) for _ in range(rng.randint(0, 3))]
        if not decodes and not chunks:
            decodes = 1
        tokens = decodes + sum(chunks)
        pairs = sum(prefill_pairs(c, rng.randint(0, 8000)) for c in chunks)
        kv = sum(rng.randint(1, 8000) for _ in range(decodes))
        out.append((tokens, decodes + len(chunks), pairs, kv))
    return out


# -- the simulator's contract --------------------------------------------------------------------


@pytest.mark.parametrize(("model", "gpu", "tp"), CASES)
def test_step_time_is_exactly_affine_in_decode_kv_tokens(model: str, gpu: str, tp: int) -> None:
    timer = StepTimeModel(model, gpu, tp)
    for tokens, seqs, pairs, kv in random_batches(seed=1):
        base = timer.step_time(tokens, seqs, pairs, 0)
        assert timer.step_time(tokens, seqs, pairs, kv) == base + timer.kv_coef * kv
        twice = timer.step_time(tokens, seqs, pairs, 2 * kv)
        assert twice - base == pytest.approx(2 * (timer.step_time(tokens, seqs, pairs, kv) - base))


@pytest.mark.parametrize(("model", "gpu", "tp"), CASES)
def test_decode_coefficients_match_step_time(model: str, gpu: str, tp: int) -> None:
    timer = StepTimeModel(model, gpu, tp)
    for seqs in (1, 2, 7, 64, 255, 1024):
        base, per_kv = timer.decode_coefficients(seqs)
        assert per_kv == timer.kv_coef > 0
        for kv in (0, seqs, 1000 * seqs, 123_457):
            assert timer.step_time(seqs, seqs, 0.0, kv) == base + per_kv * kv


def test_decode_run_sums_in_closed_form() -> None:
    """k decode iterations, each adding one token per sequence: the simulator's fast path."""
    timer = StepTimeModel("llama-3.1-8b", "H100")
    seqs, kv0, k = 48, 48 * 700, 300
    stepped = sum(timer.step_time(seqs, seqs, 0.0, kv0 + i * seqs) for i in range(k))
    base, per_kv = timer.decode_coefficients(seqs)
    closed = k * base + per_kv * (k * kv0 + seqs * k * (k - 1) / 2)
    assert closed == pytest.approx(stepped, rel=1e-12)


@pytest.mark.parametrize(("model", "gpu", "tp"), CASES)
def test_breakdown_sums_to_step_time(model: str, gpu: str, tp: int) -> None:
    timer = StepTimeModel(model, gpu, tp)
    for args in random_batches(seed=2, count=50):
        parts = timer.breakdown(*args)
        assert tuple(parts) == BREAKDOWN_KEYS
        assert all(v >= 0 for v in parts.values())
        assert sum(parts.values()) == pytest.approx(timer.step_time(*args), rel=1e-12)
        assert (parts["all_reduce"] > 0) == (tp > 1)


def test_layer_op_times_use_the_fitted_formulas() -> None:
    """The runtime constants and the calibration fit's vectorised formulas agree."""
    timer = StepTimeModel("qwen3-32b", "H100", tp=2)
    gpu, spec = timer.gpu, timer.model
    for n in (1, 37, 512, 4096):
        ops = timer.layer_op_times(n)
        for op, (d_in, d_out) in layer_gemm_shapes(spec, 2).items():
            want = gemm_time(
                2.0 * n * d_in * d_out, d_in * d_out * 2.0, n * (d_in + d_out) * 2.0, gpu
            )
            assert ops[op] == pytest.approx(want, rel=1e-12)
        for op, per_token in layer_elementwise_bytes(spec, 2).items():
            fit = getattr(gpu.calibration, ELEMENTWISE_KIND[op])
            want = elementwise_time(n * per_token, fit, gpu)
            assert ops[op] == pytest.approx(want, rel=1e-12)


def test_step_time_is_cheap() -> None:
    """~10^5 calls per simulated run: keep a call in the low microseconds."""
    timer = StepTimeModel("llama-3.1-8b", "H100")
    calls = 20_000
    start = time.perf_counter()
    for i in range(calls):
        timer.step_time(256 + (i & 511), 64, 1e5, 64_000)
    per_call = (time.perf_counter() - start) / calls
    assert per_call < 20e-6


# -- physics ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "gpu", "tp"), CASES)
def test_more_work_is_never_faster(model: str, gpu: str, tp: int) -> None:
    timer = StepTimeModel(model, gpu, tp)
    tokens = [1, 2, 3, 8, 31, 64, 100, 128, 129, 255, 256, 512, 1000, 2048, 4096, 8192, 16384]
    for seqs in (1, 32, 256):
        times = [timer.step_time(n, min(seqs, n), 0.0, 0) for n in tokens]
        assert times == sorted(times)
    assert timer.step_time(64, 64, 0.0, 0) < timer.step_time(64, 65, 0.0, 0)
    assert timer.step_time(512, 1, 1e5, 0) < timer.step_time(512, 1, 2e5, 0)
    assert timer.step_time(64, 64, 0.0, 1000) < timer.step_time(64, 64, 0.0, 1001)


def test_llama2_7b_a100_matches_known_figures() -> None:
    """Decode at batch 1 is weight-streaming bound; a 2k-token prefill is compute bound.

    Bounds from first principles: 13.5 GB of weights at 2.04 TB/s is 6.6 ms per decode step at
    100% bandwidth; 2 x 2048 x 6.7e9 FLOPs at 312 TFLOP/s is 88 ms of prefill at 100% MFU.
    Vidur's own A100 measurements of the linear and elementwise kernels at one token sum to
    9.3 ms over 32 layers, and vLLM reports about 7-10 ms per token and 120-150 ms TTFT for a
    2k prompt on this pair.
    """
    timer = StepTimeModel("llama-2-7b", "A100-80GB")
    decode = timer.step_time(1, 1, 0.0, 512)
    assert 6.6 * MS < decode < 10.5 * MS
    prefill = timer.step_time(2048, 1, prefill_pairs(2048), 0)
    assert 88 * MS < prefill < 180 * MS
    parts = timer.breakdown(2048, 1, prefill_pairs(2048), 0)
    assert parts["attn_prefill"] < 0.15 * prefill  # attention is a minor share at 2k


def test_memory_bound_small_batches_compute_bound_large_ones() -> None:
    timer = StepTimeModel("llama-2-7b", "A100")
    one = timer.step_time(1, 1, 0.0, 0)
    # Batching decode tokens is nearly free while the weights dominate the traffic...
    assert timer.step_time(32, 32, 0.0, 0) < 1.15 * one
    # ...and prefill tokens cost in proportion once the GEMMs are compute-bound.
    big, bigger = timer.step_time(4096, 1, 0.0, 0), timer.step_time(8192, 1, 0.0, 0)
    assert 1.85 < bigger / big < 2.05
    # The crossover (linear-layer time doubled vs one token) sits near the A100 ridge point,
    # 312e12 / 2.04e12 = 153 FLOP/byte, i.e. about 150 tokens.
    crossover = next(n for n in range(1, 4096) if timer.step_time(n, 1, 0.0, 0) > 2 * one)
    assert 150 <= crossover <= 600
    # H100 has a higher ridge point in tokens than its bandwidth alone would give.
    assert StepTimeModel("llama-2-7b", "H100").step_time(1, 1, 0.0, 0) < 0.7 * one


def test_decode_attention_reads_the_kv_cache() -> None:
    """kv_coef is the KV bytes of one token over all layers at the decode bandwidth."""
    timer = StepTimeModel("llama-3.1-8b", "H100")
    assert timer.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2
    gpu = timer.gpu
    assert timer.kv_coef == pytest.approx(
        timer.kv_bytes_per_token / (gpu.mem_bw * gpu.attn_decode_eff)
    )
    # GQA (8 KV heads) makes Llama-3.1-8B's KV 4x lighter than Llama-2-7B's.
    assert StepTimeModel("llama-2-7b", "H100").kv_coef == pytest.approx(4 * timer.kv_coef)


def test_tensor_parallelism_speeds_up_70b() -> None:
    times = {}
    for tp in (1, 2, 4, 8):
        timer = StepTimeModel("llama-2-70b", "A100", tp)
        times[tp] = (
            timer.step_time(1, 1, 0.0, 1000),
            timer.step_time(64, 64, 0.0, 64 * 1000),
            timer.step_time(2048, 1, prefill_pairs(2048), 0),
        )
    for small, large in ((1, 2), (2, 4), (4, 8)):
        assert all(b < a for a, b in zip(times[small], times[large], strict=True))
    # Sub-linear: the all-reduces and replicated norms do not shrink with tp.
    assert times[8][0] > times[1][0] / 8
    assert StepTimeModel("llama-2-70b", "A100", 8).breakdown(1, 1, 0.0, 0)["all_reduce"] > 0


@pytest.mark.parametrize("tp", [0, 3, -1])
def test_invalid_tp_is_a_clear_error(tp: int) -> None:
    with pytest.raises(SagerlError, match="tp"):
        StepTimeModel("llama-2-7b", "A100", tp)


def test_kv_heads_are_replicated_beyond_their_count() -> None:
    """8 KV heads: one per GPU at tp=8, still one (replicated) at tp=16, as in vLLM."""
    assert StepTimeModel("llama-2-70b", "H100", 8).kv_bytes_per_token == 2 * 80 * 1 * 128 * 2
    assert StepTimeModel("llama-2-70b", "H100", 16).kv_bytes_per_token == 2 * 80 * 1 * 128 * 2
    assert StepTimeModel("qwen-72b", "H100", 8).kv_bytes_per_token == 2 * 80 * 8 * 128 * 2
    with pytest.raises(SagerlError, match="does not divide the 40 attention heads"):
        StepTimeModel("qwen2.5-32b", "A100", 16)
    with pytest.raises(SagerlError, match="8 KV heads"):
        StepTimeModel("qwen2.5-32b", "A100", 5)  # 40 query heads split 5 ways, 8 KV heads not


# -- memory -------------------------------------------------------------------------------------


def test_kv_capacity_llama2_7b_a100() -> None:
    """72 GiB usable - 12.6 GiB weights - ~2 GiB reserve, at 8 MiB per 16-token block.

    vLLM logs about 7,300-7,500 GPU blocks for this pair at gpu_memory_utilization=0.9.
    (Half that, 3,500-4,000, would be the 40 GB A100.)
    """
    timer = StepTimeModel("llama-2-7b", "A100-80GB")
    assert timer.kv_bytes_per_token == 512 * 1024
    blocks = timer.kv_cache_blocks(16, 0.9)
    assert 7000 <= blocks <= 7800
    assert timer.kv_cache_blocks(32, 0.9) == pytest.approx(blocks / 2, abs=1)
    assert timer.kv_cache_blocks(16, 0.5) < blocks
    upper = (80 * 0.9 * 2**30 - MODELS["llama-2-7b"].weight_bytes) / (16 * 512 * 1024)
    assert blocks < upper


def test_kv_capacity_grows_with_memory_and_tp() -> None:
    h800 = StepTimeModel("qwen3-32b", "H800").kv_cache_blocks()
    assert StepTimeModel("qwen3-32b", get_gpu("H800", memory_gib=96)).kv_cache_blocks() > h800
    assert StepTimeModel("qwen3-32b", "H200").kv_cache_blocks() > 2 * h800
    tp2 = StepTimeModel("llama-2-70b", "H100", 2).kv_cache_blocks()
    tp4 = StepTimeModel("llama-2-70b", "H100", 4).kv_cache_blocks()
    assert tp4 > 4 * tp2  # each GPU holds half the KV heads and a quarter of the weights


def test_model_that_does_not_fit_is_a_clear_error() -> None:
    with pytest.raises(SagerlError, match=r"does not fit.*raise tp"):
        StepTimeModel("llama-2-70b", "A100", 1).kv_cache_blocks()
    with pytest.raises(SagerlError, match="gpu_memory_utilization"):
        StepTimeModel("llama-2-7b", "A100").kv_cache_blocks(16, 1.5)


# -- specs and names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_published_parameter_counts_match_the_architecture(name: str) -> None:
    spec = MODELS[name]
    # Qwen2.5 QKV biases, Qwen3 QK norms and phi-2 biases / LayerNorm are not in the formula.
    assert spec.architecture_params == pytest.approx(spec.num_params, rel=0.002)


def test_specs_have_the_published_shapes() -> None:
    qwen3 = get_model("qwen3-32b")
    assert (qwen3.q_size, qwen3.hidden_size, qwen3.kv_size) == (8192, 5120, 1024)
    llama = get_model("llama-3.1-8b")
    assert (llama.num_layers, llama.num_kv_heads, llama.vocab_size) == (32, 8, 128256)
    assert get_gpu("A40").memory_gib == pytest.approx(45.0, abs=0.1)
    assert get_gpu("A100").memory_gib == 80.0
    assert get_gpu("H200").memory_gib == pytest.approx(140.4, abs=0.1)
    assert get_gpu("H800", memory_gib=96).memory_gib == 96.0
    assert get_gpu("H800").memory_gib == get_gpu("H100").memory_gib  # the table is untouched


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("A100", "A100-80GB"),
        ("a100-80gb", "A100-80GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("h100", "H100"),
        ("H100-SXM", "H100"),
        ("nvidia h200", "H200"),
        ("a40", "A40"),
        ("H800", "H800"),
    ],
)
def test_gpu_aliases(alias: str, name: str) -> None:
    assert get_gpu(alias).name == name


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("Llama-3.1-8B", "llama-3.1-8b"),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", "llama-3.1-8b"),
        ("llama3.1-8b", "llama-3.1-8b"),
        ("meta-llama/Llama-2-7b-chat-hf", "llama-2-7b"),
        ("Llama-2-70B", "llama-2-70b"),
        ("mistralai/Mistral-7B-Instruct-v0.2", "mistral-7b"),
        ("Qwen/Qwen2.5-32B-Instruct", "qwen2.5-32b"),
        ("Qwen/Qwen3-32B", "qwen3-32b"),
        ("codellama/CodeLlama-34b-Instruct-hf", "codellama-34b"),
    ],
)
def test_model_aliases(alias: str, name: str) -> None:
    assert get_model(alias).name == name


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError) as gpu_err:
        get_gpu("B200")
    assert "unknown GPU 'B200'" in str(gpu_err.value)
    assert "valid: " + ", ".join(sorted(GPUS)) in str(gpu_err.value)
    with pytest.raises(SagerlError) as model_err:
        get_model("llama-3.1-9b")
    message = str(model_err.value)
    assert "did you mean 'llama-3.1-8b'" in message
    assert all(name in message for name in MODELS)
    with pytest.raises(UnknownNameError):
        StepTimeModel("llama-2-7b", "TPUv5")


def test_unprofiled_gpus_borrow_h100_factors() -> None:
    for name in ("H800", "H200"):
        cal = get_gpu(name).calibration
        assert "derived from h100" in cal.source
        assert cal.gemm_compute_eff == KERNEL_CALIBRATION["h100"].gemm_compute_eff
    # Same factors, faster HBM: H200 decodes faster than H100; H800's slower NVLink hurts TP.
    h100, h200 = StepTimeModel("qwen3-32b", "H100"), StepTimeModel("qwen3-32b", "H200")
    assert h200.step_time(8, 8, 0.0, 8000) < 0.8 * h100.step_time(8, 8, 0.0, 8000)
    assert StepTimeModel("llama-2-70b", "H800", 4).all_reduce_time(2**24) > StepTimeModel(
        "llama-2-70b", "H100", 4
    ).all_reduce_time(2**24)


# -- calibration against Vidur's measurements (full data only) -------------------------------------

needs_profiling = pytest.mark.skipif(
    not has_full_data() or not (data_dir(must_exist=False) / "vidur_profiling").is_dir(),
    reason="full data (vidur_profiling) not available",
)


@needs_profiling
def test_calibration_mape_within_target() -> None:
    from sagerl.calibration import MAPE_TARGET, calibration_report

    rows = calibration_report()
    assert {r["gpu"] for r in rows} == {"A40", "A100-80GB", "H100"}
    assert len(rows) >= 60
    bad = [r for r in rows if not r["mape"] <= MAPE_TARGET]
    assert not bad, f"MAPE above {MAPE_TARGET:.0%}: {bad}"
    # Per (GPU, model), pooling its TP degrees.
    by_pair: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        by_pair.setdefault((r["gpu"], r["model"]), []).append(r["mape"])
    assert all(sum(v) / len(v) <= MAPE_TARGET for v in by_pair.values())


@needs_profiling
def test_refit_reproduces_the_stored_constants() -> None:
    from sagerl.calibration import fit_calibration

    fits = fit_calibration()
    for key, fitted in fits["kernels"].items():
        stored = KERNEL_CALIBRATION[key]
        assert fitted.gemm_compute_eff == pytest.approx(stored.gemm_compute_eff, abs=0.02)
        assert fitted.gemm_memory_eff == pytest.approx(stored.gemm_memory_eff, abs=0.02)
        assert fitted.norm.eff == pytest.approx(stored.norm.eff, abs=0.02)
    for key, table in fits["allreduce"].items():
        for n, (lat, bw) in table.items():
            stored_lat, stored_bw = ALLREDUCE_FITS[key][n]
            assert math.isclose(lat, stored_lat, rel_tol=0.05)
            assert math.isclose(bw, stored_bw, rel_tol=0.05)


@needs_profiling
def test_calibrate_cli_writes_json(tmp_path, capsys) -> None:
    from sagerl.calibration import run_calibrate_cli

    out = tmp_path / "report" / "calibration.json"
    assert run_calibrate_cli(None, str(out), plain=True) == 0
    rows = json.loads(out.read_text())
    assert {"gpu", "model", "tp", "n_points", "mape", "max_ape"} <= set(rows[0])
    assert "MAPE" in capsys.readouterr().out


def test_calibration_without_data_is_a_clear_error(tmp_path) -> None:
    from sagerl.calibration import calibration_report
    from sagerl.errors import DataError

    with pytest.raises(DataError, match="vidur_profiling"):
        calibration_report(tmp_path)
