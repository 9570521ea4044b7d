"""Fit and check the step-time model's kernel efficiencies against Vidur's measured tables.

Vidur (Agrawal et al., MLSys 2024) profiled every per-layer operator of several models on A40,
A100 and H100 GPUs, for 1 to 4096 (or 32768) tokens and tensor-parallel degrees 1-8:
``vidur_profiling/compute/<gpu>/<org>/<model>/mlp.csv.xz``, times in milliseconds. We use the
median of each row.

* :func:`fit_calibration` fits, per GPU and pooling all its models and TP degrees, the GEMM
  factors (compute efficiency, memory efficiency, roofline blend exponent, kernel floor) on the
  four GEMMs and one (efficiency, floor) pair per elementwise kernel kind, minimising the mean
  squared relative error with Nelder-Mead (numpy only; a few seconds per GPU). It also fits the
  all-reduce latency/bandwidth constants from ``vidur_profiling/network``. The results are pasted
  into :mod:`sagerl.hardware` (:func:`format_constants` prints them), so the runtime never reads
  the data directory.
* :func:`calibration_report` checks the *stored* constants: for each (GPU, model, TP) it compares
  the model's per-layer linear + elementwise time (the nine per-layer operators of the table) with
  the measured sum and reports the MAPE and the worst point. The target is MAPE <= 15%.

Attention is not in the data (Vidur's ``attention.csv`` tables were too large to ship), so the
attention terms of the step-time model stay analytic and unchecked here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sagerl.errors import DataError
from sagerl.hardware import (
    ELEMENTWISE_KIND,
    ELEMENTWISE_OPS,
    GEMM_OPS,
    GPUS,
    GPUSpec,
    KernelCalibration,
    KernelFit,
    ModelSpec,
    StepTimeModel,
    elementwise_time,
    gemm_time,
    get_gpu,
    layer_elementwise_bytes,
    layer_gemm_shapes,
)
from sagerl.paths import data_dir as resolve_data_dir

MAPE_TARGET = 0.15
"""Largest acceptable mean absolute percentage error of the per-layer time (fraction)."""

PROFILED_GPUS = {"a40": "A40", "a100": "A100-80GB", "h100": "H100"}
"""Vidur's profiling directory name -> our GPU name."""

ALLREDUCE_NODES = {"a100": "a100_dgx", "h100": "h100_dgx"}
"""Vidur network directory whose all_reduce table times each GPU family's TP all-reduce."""

A40_P2P_NODE = "a40_pairwise_nvlink"
"""A40 has only send_recv measurements; its all-reduce is a ring model over them."""

_STAT = "median"
KINDS = ("norm", "rope", "act", "add", "emb")
"""Elementwise kernel kinds fitted per GPU (fields of :class:`KernelCalibration`)."""

# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProfileTable:
    """One Vidur ``mlp.csv`` table: a model's per-layer operator times on one GPU.

    Attributes:
        gpu_dir: Vidur's GPU directory name (``"a100"``).
        model: Vidur's model directory name (``"Llama-2-7b-hf"``).
        path: The file.
        spec: The model shape read from the table's columns.
        frame: The rows; operator times in seconds in columns named after the operator.
    """

    gpu_dir: str
    model: str
    path: Path
    spec: ModelSpec
    frame: pd.DataFrame

    def ops(self) -> list[str]:
        """Per-layer operators this table measured (phi-2 has no post-attention norm)."""
        return [op for op in (*GEMM_OPS, *ELEMENTWISE_OPS) if op in self.frame.columns]


def _profiling_root(data_dir: str | Path | None) -> Path:
    root = resolve_data_dir(data_dir) / "vidur_profiling"
    if not root.is_dir():
        raise DataError(f"{root} does not exist; the Vidur profiling tables are needed")
    return root


def load_profiles(data_dir: str | Path | None = None) -> list[ProfileTable]:
    """Read every ``compute/<gpu>/<org>/<model>/mlp.csv.xz`` under the data directory.

    Raises:
        DataError: The directory or a required column is missing.
    """
    root = _profiling_root(data_dir) / "compute"
    tables = []
    for path in sorted(root.glob("*/*/*/mlp.csv.xz")):
        gpu_dir = path.parts[-4]
        if gpu_dir not in PROFILED_GPUS:
            continue
        tables.append(_read_profile(path, gpu_dir))
    if not tables:
        raise DataError(f"no mlp.csv.xz tables under {root}")
    return tables


def _read_profile(path: Path, gpu_dir: str) -> ProfileTable:
    raw = pd.read_csv(path)
    shape_cols = ["n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size"]
    needed = [*shape_cols, "use_gated_mlp", "num_tokens", "num_tensor_parallel_workers"]
    missing = [c for c in needed if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: missing columns {', '.join(missing)}")
    first = raw.iloc[0]
    hidden, heads = int(first["n_embd"]), int(first["n_head"])
    spec = ModelSpec(
        name=path.parts[-2].lower(),
        num_layers=1,  # per-layer times only
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=int(first["n_kv_head"]),
        head_dim=hidden // heads,
        intermediate_size=int(first["n_expanded_embd"]),
        gated_mlp=bool(first["use_gated_mlp"]),
        vocab_size=int(first["vocab_size"]),
    )
    frame = pd.DataFrame(
        {
            "num_tokens": raw["num_tokens"].astype(int),
            "tp": raw["num_tensor_parallel_workers"].astype(int),
        }
    )
    for op in (*GEMM_OPS, *ELEMENTWISE_OPS, "emb"):
        col = f"time_stats.{op}.{_STAT}"
        if col in raw.columns:
            frame[op] = raw[col].astype(float) * 1e-3  # ms -> s
    return ProfileTable(gpu_dir, path.parts[-2], path, spec, frame)


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------


def _nelder_mead(
    f: Callable[[np.ndarray], float],
    x0: np.ndarray,
    step: float = 0.5,
    max_iter: int = 3000,
    tol: float = 1e-10,
) -> tuple[np.ndarray, float]:
    """Minimise ``f`` from ``x0`` by the Nelder-Mead simplex (standard coefficients).

    NOTE: written out to keep scipy out of the dependencies; the problems here have 2-4
    unconstrained parameters (constraints are handled by reparametrisation).
    """
    n = len(x0)
    simplex = [np.asarray(x0, float)]
    for i in range(n):
        x = np.array(x0, float)
        x[i] += step
        simplex.append(x)
    values = [f(x) for x in simplex]
    for _ in range(max_iter):
        order = np.argsort(values)
        simplex = [simplex[i] for i in order]
        values = [values[i] for i in order]
        if abs(values[-1] - values[0]) <= tol * (abs(values[0]) + tol):
            break
        centroid = np.mean(simplex[:-1], axis=0)
        reflected = centroid + (centroid - simplex[-1])
        fr = f(reflected)
        if values[0] <= fr < values[-2]:
            simplex[-1], values[-1] = reflected, fr
        elif fr < values[0]:
            expanded = centroid + 2.0 * (centroid - simplex[-1])
            fe = f(expanded)
            if fe < fr:
                simplex[-1], values[-1] = expanded, fe
            else:
                simplex[-1], values[-1] = reflected, fr
        else:
            contracted = centroid + 0.5 * (simplex[-1] - centroid)
            fc = f(contracted)
            if fc < values[-1]:
                simplex[-1], values[-1] = contracted, fc
            else:
                best = simplex[0]
                simplex = [best + 0.5 * (x - best) for x in simplex]
                values = [values[0]] + [f(x) for x in simplex[1:]]
    i = int(np.argmin(values))
    return simplex[i], float(values[i])


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _logit(x: float) -> float:
    return math.log(x / (1.0 - x))


def _gemm_points(tables: list[ProfileTable]) -> tuple[np.ndarray, ...]:
    """(flops, weight bytes, activation bytes, measured s) of every measured GEMM."""
    flops, weights, acts, times = [], [], [], []
    for table in tables:
        b = table.spec.dtype_bytes
        for tp, rows in table.frame.groupby("tp"):
            n = rows["num_tokens"].to_numpy(float)
            for op, (d_in, d_out) in layer_gemm_shapes(table.spec, int(tp)).items():
                flops.append(2.0 * n * d_in * d_out)
                weights.append(np.full_like(n, float(d_in) * d_out * b))
                acts.append(n * (d_in + d_out) * b)
                times.append(rows[op].to_numpy(float))
    return tuple(np.concatenate(a) for a in (flops, weights, acts, times))


def _elementwise_points(tables: list[ProfileTable], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, measured s) of every measured kernel of one kind (``"norm"``, ..., ``"emb"``)."""
    nbytes, times = [], []
    for table in tables:
        for tp, rows in table.frame.groupby("tp"):
            n = rows["num_tokens"].to_numpy(float)
            if kind == "emb":
                per_token = {"emb": 2.0 * table.spec.hidden_size * table.spec.dtype_bytes}
            else:
                per_token = layer_elementwise_bytes(table.spec, int(tp))
            for op, per in per_token.items():
                if (op == "emb" or ELEMENTWISE_KIND[op] == kind) and op in rows.columns:
                    nbytes.append(n * per)
                    times.append(rows[op].to_numpy(float))
    return np.concatenate(nbytes), np.concatenate(times)


def _fit_gemm(gpu: GPUSpec, points: tuple[np.ndarray, ...]) -> dict[str, float]:
    flops, weights, acts, measured = points

    def unpack(x: np.ndarray) -> dict[str, float]:
        return {
            "gemm_compute_eff": _sigmoid(x[0]),
            "gemm_memory_eff": _sigmoid(x[1]),
            "gemm_floor_s": math.exp(x[2]) * 1e-6,
            "gemm_blend_p": 1.0 + math.exp(x[3]),
        }

    def loss(x: np.ndarray) -> float:
        cal = dataclasses.replace(gpu.calibration, **unpack(x))
        pred = gemm_time(flops, weights, acts, dataclasses.replace(gpu, calibration=cal))
        return float(np.mean((pred / measured - 1.0) ** 2))

    best_x, best_f = None, math.inf
    # NOTE: restarts from several blend exponents: the loss is flat along p near the optimum.
    for p0 in (1.5, 2.0, 4.0):
        x0 = np.array([_logit(0.7), _logit(0.8), math.log(5.0), math.log(p0 - 1.0)])
        x, fx = _nelder_mead(loss, x0)
        x, fx = _nelder_mead(loss, x, step=0.1)  # restart to escape a collapsed simplex
        if fx < best_f:
            best_x, best_f = x, fx
    assert best_x is not None
    return unpack(best_x)


def _fit_elementwise(gpu: GPUSpec, nbytes: np.ndarray, measured: np.ndarray) -> KernelFit:
    def unpack(x: np.ndarray) -> KernelFit:
        return KernelFit(eff=_sigmoid(x[0]), floor_s=math.exp(x[1]) * 1e-6)

    def loss(x: np.ndarray) -> float:
        pred = elementwise_time(nbytes, unpack(x), gpu)
        return float(np.mean((pred / measured - 1.0) ** 2))

    x, _ = _nelder_mead(loss, np.array([_logit(0.5), math.log(2.0)]))
    x, _ = _nelder_mead(loss, x, step=0.1)
    return unpack(x)


def fit_kernels(tables: list[ProfileTable], gpu_dir: str) -> KernelCalibration:
    """Fit one GPU's :class:`~sagerl.hardware.KernelCalibration` to its profiling tables."""
    gpu = get_gpu(PROFILED_GPUS[gpu_dir])
    mine = [t for t in tables if t.gpu_dir == gpu_dir]
    if not mine:
        raise DataError(f"no profiling tables for GPU directory '{gpu_dir}'")
    gemm = _fit_gemm(gpu, _gemm_points(mine))
    kinds = {kind: _fit_elementwise(gpu, *_elementwise_points(mine, kind)) for kind in KINDS}
    return KernelCalibration(source=f"vidur {gpu_dir} profiling", **gemm, **kinds)


def _fit_latency_bandwidth(sizes: np.ndarray, times: np.ndarray) -> tuple[float, float]:
    """(latency s, bandwidth bytes/s) of ``t = lat + size / bw`` by least relative error."""
    a = np.stack([1.0 / times, sizes / times], axis=1)
    (lat, inv_bw), *_ = np.linalg.lstsq(a, np.ones_like(times), rcond=None)
    if lat < 0:  # NOTE: a negative intercept is noise at small sizes; pin it at zero
        inv_bw = float(np.sum(sizes / times) / np.sum((sizes / times) ** 2))
        lat = 0.0
    return float(lat), float(1.0 / inv_bw)


def _median_by_size(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    grouped = frame.groupby("size")[column].median()
    return grouped.index.to_numpy(float), grouped.to_numpy(float) * 1e-3


def fit_allreduce(data_dir: str | Path | None = None) -> dict[str, dict[int, tuple[float, float]]]:
    """Fit all-reduce (latency s, algorithm bandwidth bytes/s) per GPU family and TP degree.

    A100 and H100 use single-node DGX measurements (``devices_per_node == num_workers``). A40 has
    only point-to-point measurements: a ring all-reduce of B bytes over n GPUs sends
    ``2 (n - 1) / n * B`` bytes per GPU, so its bandwidth is the pairwise one times
    ``n / (2 (n - 1))``; its latency is A100's NCCL latency at the same n.
    """
    root = _profiling_root(data_dir) / "network"
    out: dict[str, dict[int, tuple[float, float]]] = {}
    for family, node in ALLREDUCE_NODES.items():
        path = root / node / "all_reduce.csv.xz"
        if not path.is_file():
            raise DataError(f"{path} is missing")
        frame = pd.read_csv(path)
        frame = frame[frame["num_workers"] == frame["devices_per_node"]]
        out[family] = {
            int(n): _fit_latency_bandwidth(*_median_by_size(rows, "time_stats.all_reduce.median"))
            for n, rows in frame.groupby("num_workers")
        }
    path = root / A40_P2P_NODE / "send_recv.csv.xz"
    if not path.is_file():
        raise DataError(f"{path} is missing")
    frame = pd.read_csv(path)
    frame = frame[frame["devices_per_node"] == 2]
    _, p2p_bw = _fit_latency_bandwidth(*_median_by_size(frame, "time_stats.send_recv.median"))
    out["a40"] = {n: (lat, p2p_bw * n / (2.0 * (n - 1))) for n, (lat, _) in out["a100"].items()}
    return out


def fit_calibration(data_dir: str | Path | None = None) -> dict[str, Any]:
    """Refit every constant the step-time model takes from the data.

    Args:
        data_dir: The data directory (``None``: ``SAGERL_DATA`` or the default).

    Returns:
        ``{"kernels": {gpu_dir: KernelCalibration}, "allreduce": {gpu_dir: {tp: (lat_s,
        algbw_bytes_per_s)}}}``; :func:`format_constants` renders it as the source of
        :data:`sagerl.hardware.KERNEL_CALIBRATION` and :data:`sagerl.hardware.ALLREDUCE_FITS`.
    """
    tables = load_profiles(data_dir)
    kernels = {gpu_dir: fit_kernels(tables, gpu_dir) for gpu_dir in sorted(PROFILED_GPUS)}
    return {"kernels": kernels, "allreduce": fit_allreduce(data_dir)}


def format_constants(fits: dict[str, Any]) -> str:
    """Python source of the two generated tables in :mod:`sagerl.hardware`, ready to paste."""

    def fit(k: KernelFit) -> str:
        return f"KernelFit(eff={k.eff:.3f}, floor_s={k.floor_s:.3g})"

    lines = ["KERNEL_CALIBRATION: dict[str, KernelCalibration] = {"]
    for key, cal in fits["kernels"].items():
        lines += [
            f'    "{key}": KernelCalibration(',
            f'        source="{cal.source}",',
            f"        gemm_compute_eff={cal.gemm_compute_eff:.3f},",
            f"        gemm_memory_eff={cal.gemm_memory_eff:.3f},",
            f"        gemm_blend_p={cal.gemm_blend_p:.3f},",
            f"        gemm_floor_s={cal.gemm_floor_s:.3g},",
        ]
        lines += [f"        {kind}={fit(getattr(cal, kind))}," for kind in KINDS]
        lines.append("    ),")
    lines += ["}", "", "ALLREDUCE_FITS: dict[str, dict[int, tuple[float, float]]] = {"]
    for key, table in fits["allreduce"].items():
        entries = ", ".join(f"{n}: ({lat:.3g}, {bw:.4g})" for n, (lat, bw) in table.items())
        lines.append(f'    "{key}": {{{entries}}},')
    lines.append("}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _groups(tables: list[ProfileTable]) -> Iterator[tuple[ProfileTable, int, pd.DataFrame]]:
    for table in tables:
        for tp, rows in table.frame.groupby("tp"):
            yield table, int(tp), rows


def calibration_report(
    data_dir: str | Path | None = None,
    *,
    kernels: dict[str, KernelCalibration] | None = None,
) -> list[dict[str, Any]]:
    """Compare the model's per-layer time with every measured (GPU, model, TP) table.

    The per-layer time is the sum of the operators the table measured (QKV, O, gate/up and
    down projections, both norms, RoPE, activation, residual add); attention is not measured.

    Args:
        data_dir: The data directory (``None``: ``SAGERL_DATA`` or the default).
        kernels: Calibrations to check instead of the stored ones (e.g. a fresh
            :func:`fit_calibration`), keyed by Vidur GPU directory.

    Returns:
        One row per (GPU, model, TP): ``gpu``, ``model``, ``tp``, ``n_points``, ``mape`` and
        ``max_ape`` (fractions), ``min_tokens``, ``max_tokens``, sorted by GPU, model, TP.

    Raises:
        DataError: The profiling tables are missing or malformed.
    """
    rows = []
    for table, tp, frame in _groups(load_profiles(data_dir)):
        gpu = GPUS[PROFILED_GPUS[table.gpu_dir]]
        if kernels is not None:
            gpu = dataclasses.replace(gpu, calibration=kernels[table.gpu_dir])
        model = StepTimeModel(table.spec, gpu, tp)
        ops = table.ops()
        measured = frame[ops].sum(axis=1).to_numpy(float)
        predicted = np.array(
            [sum(model.layer_op_times(int(n))[op] for op in ops) for n in frame["num_tokens"]]
        )
        ape = np.abs(predicted / measured - 1.0)
        rows.append(
            {
                "gpu": gpu.name,
                "model": table.model,
                "tp": tp,
                "n_points": len(frame),
                "mape": float(ape.mean()),
                "max_ape": float(ape.max()),
                "min_tokens": int(frame["num_tokens"].min()),
                "max_tokens": int(frame["num_tokens"].max()),
            }
        )
    rows.sort(key=lambda r: (r["gpu"], r["model"], r["tp"]))
    return rows


def format_report(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of :func:`calibration_report` rows (MAPE in percent)."""
    header = (
        f"{'gpu':<10} {'model':<28} {'tp':>2} {'points':>6} {'tokens':>11} {'MAPE%':>6} {'max%':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        flag = "" if r["mape"] <= MAPE_TARGET else "  > target"
        tokens = f"{r['min_tokens']}-{r['max_tokens']}"
        lines.append(
            f"{r['gpu']:<10} {r['model']:<28} {r['tp']:>2} {r['n_points']:>6} {tokens:>11} "
            f"{100 * r['mape']:>6.1f} {100 * r['max_ape']:>6.1f}{flag}"
        )
    return "\n".join(lines)


def _print_rich(rows: list[dict[str, Any]]) -> bool:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency, but keep plain output working
        return False
    table = Table(
        title=f"Step-time calibration vs Vidur profiling (target MAPE <= {MAPE_TARGET:.0%})"
    )
    for col in ("GPU", "model"):
        table.add_column(col)
    for col in ("TP", "points", "tokens", "MAPE %", "max APE %"):
        table.add_column(col, justify="right")
    for r in rows:
        style = None if r["mape"] <= MAPE_TARGET else "red"
        table.add_row(
            r["gpu"],
            r["model"],
            str(r["tp"]),
            str(r["n_points"]),
            f"{r['min_tokens']}-{r['max_tokens']}",
            f"{100 * r['mape']:.1f}",
            f"{100 * r['max_ape']:.1f}",
            style=style,
        )
    # NOTE: rich assumes 80 columns when piped, which would truncate the model names.
    Console(width=None if sys.stdout.isatty() else 110).print(table)
    return True


def run_calibrate_cli(data_dir: str | None, json_path: str | None, *, plain: bool = False) -> int:
    """Print the calibration table and optionally write it as JSON (``python -m sagerl calibrate``).

    Args:
        data_dir: The data directory (``None``: ``SAGERL_DATA`` or the default).
        json_path: Where to write the rows as a JSON list; ``None`` to skip.
        plain: Print a plain-text table instead of a rich one.

    Returns:
        0 when every (GPU, model, TP) meets the MAPE target, 1 otherwise.

    Raises:
        DataError: The profiling tables are missing or malformed (the CLI prints it, exits 2).
    """
    rows = calibration_report(data_dir)
    if plain or not _print_rich(rows):
        print(format_report(rows))
    worst = max(rows, key=lambda r: r["mape"])
    print(
        f"{len(rows)} tables; mean MAPE {100 * np.mean([r['mape'] for r in rows]):.1f}%, "
        f"worst {100 * worst['mape']:.1f}% ({worst['gpu']} {worst['model']} tp={worst['tp']})"
    )
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {path}")
    return 0 if all(r["mape"] <= MAPE_TARGET for r in rows) else 1
