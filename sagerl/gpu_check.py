"""Check the step-time model against timings measured on a real GPU (a lent H200).

``benchmarks/gpu_profile.py`` runs model-shaped networks (random bf16 weights cost the same as
trained ones) on a GPU and times (a) whole decoder layers as an engine iteration runs them:
decode replayed from a CUDA graph (as vLLM does) for batch sizes x context lengths, and prefill
chunks; (b) single operators, eagerly. Its output for an NVIDIA H200 ships in
``sagerl/calibration_data/h200_measured.json``.

Vidur's profiling covers A40, A100 and H100 and no attention kernels, so this is the only measured
check of the H200 figures (which reuse the H100's fitted GEMM and elementwise factors) and of the
analytic attention terms. The whole-layer groups are the ones that matter: eager single-operator
timings carry ~15-20 µs of launch latency per kernel that a graph-captured engine does not pay,
so the ``op_*`` groups are shown for information only. The H200's decode-attention efficiency
(``attn_decode_eff``) is fitted to the whole-layer decode group by :func:`fit_decode_efficiency`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from sagerl.hardware import GPUSpec, StepTimeModel, get_gpu

MEASURED = Path(__file__).resolve().parent / "calibration_data" / "h200_measured.json"
GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")


def layer_decode_s(timer: StepTimeModel, batch: int, context: int) -> float:
    """Model time of one decoder layer for ``batch`` decode sequences of ``context`` tokens, s."""
    layers = timer.model.num_layers
    ops = timer.layer_op_times(batch)
    return sum(ops.values()) + timer._attn_launch + timer.kv_coef / layers * batch * context


def layer_prefill_s(timer: StepTimeModel, chunk: int) -> float:
    """Model time of one decoder layer for a prefill chunk with no prior context, s."""
    layers = timer.model.num_layers
    ops = timer.layer_op_times(chunk)
    pairs = chunk * (chunk + 1) / 2
    return sum(ops.values()) + timer._attn_launch + timer._prefill_coef / layers * pairs


def _errors(data: dict[str, Any], gpu: GPUSpec) -> dict[tuple[str, str], list[float]]:
    out: dict[tuple[str, str], list[float]] = {}
    for entry in data["models"]:
        timer = StepTimeModel(entry["model"], gpu)
        layers = timer.model.num_layers
        name = entry["model"]

        def add(group: str, model_s: float, measured_ms: float, name: str = name) -> None:
            out.setdefault((name, group), []).append(abs(model_s * 1e3 / measured_ms - 1.0))

        for p in entry.get("layer_decode_ms_graph") or []:
            add("layer_decode", layer_decode_s(timer, p["batch"], p["context"]), p["ms"])
        for p in entry.get("layer_prefill_ms") or []:
            add("layer_prefill", layer_prefill_s(timer, p["chunk"]), p["ms"])
        for p in entry["linear_ms_per_layer"]:
            ops = timer.layer_op_times(p["num_tokens"])
            add("op_linear", sum(ops[op] for op in GEMM_OPS), sum(p[op] for op in GEMM_OPS))
        for p in entry["prefill_attn_ms_per_layer"]:
            c = p["chunk"]
            t = timer._attn_launch + timer._prefill_coef / layers * c * (c + 1) / 2
            add("op_prefill_attn", t, p["ms"])
        for p in entry["decode_attn_ms_per_layer"]:
            t = timer._attn_launch + timer.kv_coef / layers * p["batch"] * p["context"]
            add("op_decode_attn", t, p["ms"])
    return out


def check_measured(path: str | Path = MEASURED, gpu: str = "H200") -> list[dict[str, Any]]:
    """One row per (model, group): number of points, MAPE and worst error of the model."""
    data = json.loads(Path(path).read_text())
    return [
        {
            "gpu": data.get("gpu", gpu),
            "model": model,
            "group": group,
            "n_points": len(errs),
            "mape": float(np.mean(errs)),
            "max_ape": float(np.max(errs)),
        }
        for (model, group), errs in _errors(data, get_gpu(gpu)).items()
    ]


def fit_decode_efficiency(path: str | Path = MEASURED, gpu: str = "H200") -> float:
    """The ``attn_decode_eff`` (0-1] minimising the whole-layer decode MAPE (grid of 0.01)."""
    data = json.loads(Path(path).read_text())
    spec = get_gpu(gpu)

    def mape(eff: float) -> float:
        errs = _errors(data, dataclasses.replace(spec, attn_decode_eff=eff))
        return float(np.mean([e for (_, g), v in errs.items() if g == "layer_decode" for e in v]))

    grid = np.round(np.arange(0.5, 1.0001, 0.01), 2)
    return float(min(grid, key=mape))
