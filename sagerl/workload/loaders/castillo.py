"""CASTILLO (arXiv 2505.16881): prompt text plus 10 sampled response lengths per (prompt, model).

``samples.csv.gz`` holds one row per (prompt, model) with ``input_size`` (prompt tokens after
the model's chat template, in its own tokenizer) and ``output_sizes`` (10 space-separated
response lengths from 10 independent samples); ``prompts.jsonl.xz`` holds the text by
``prompt_id``. One pool is one model, optionally narrowed to some source data sets and splits.

The 10 samples are the per-prompt length distribution: ``output_samples`` keeps all of them and
the builder draws the request's true length from them with the run's seed.

NOTE: the data is CASTILLO's raw "preprocessed" set (before its sanitisation): 438 rows hold a
sample at the 15k-token cap, and a few prompts appear in two splits (same ``prompt_id``, separate
rows). Use ``max_output_tokens`` in the workload config to drop capped rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from sagerl.errors import unknown_name
from sagerl.schema import StrictModel
from sagerl.workload.catalog import dataset
from sagerl.workload.pool import RequestPool
from sagerl.workload.readers import data_error, int_column, iter_jsonl, read_csv

SAMPLES = "castillo/samples.csv.gz"
PROMPTS = "castillo/prompts.jsonl.xz"
COLUMNS = ("split", "dataset", "model", "prompt_id", "input_size", "output_sizes")
DEFAULT_MODEL = "meta-llama--Llama-3.1-8B-Instruct"


class CastilloOptions(StrictModel):
    """Options of the ``castillo`` loaders."""

    model: str = Field(
        DEFAULT_MODEL,
        description="Model whose sampled lengths to load, in CASTILLO's spelling "
        "(org--name, e.g. 'meta-llama--Llama-3.1-8B-Instruct'); an unknown one lists the valid.",
    )
    datasets: list[str] | None = Field(
        None,
        description="Keep only prompts from these source data sets (e.g. ['Apps', 'Mbpp']); "
        "None keeps all.",
    )
    splits: list[Literal["train", "validate", "test"]] | None = Field(
        None, description="Keep only these CASTILLO splits; None keeps all."
    )


@dataset("castillo", files=(SAMPLES, PROMPTS), options=CastilloOptions)
@dataset("sample_castillo", files=(SAMPLES, PROMPTS), options=CastilloOptions, sample=True)
def load_castillo(name: str, files: list[Path], options: CastilloOptions) -> RequestPool:
    """CASTILLO: prompt text, prompt tokens and 10 sampled output lengths for one model."""
    samples_path, prompts_path = files
    frame = read_csv(samples_path, COLUMNS, dtype={c: str for c in COLUMNS[:4]})
    frame = frame.reset_index(names="row")  # keep the file row for line numbers

    models = frame["model"].dropna().unique().tolist()
    if options.model not in models:
        raise unknown_name("CASTILLO model", options.model, models)
    frame = frame[frame["model"] == options.model]
    if options.datasets is not None:
        known = frame["dataset"].dropna().unique().tolist()
        for wanted in options.datasets:
            if wanted not in known:
                raise unknown_name(f"CASTILLO data set for {options.model}", wanted, known)
        frame = frame[frame["dataset"].isin(options.datasets)]
    if options.splits is not None:
        frame = frame[frame["split"].isin(options.splits)]

    lines = frame["row"].to_numpy() + 2
    prompt_tokens = int_column(frame, "input_size", samples_path, lines=lines)
    samples = _parse_samples(frame["output_sizes"].tolist(), lines, samples_path)
    if "n_outputs" in frame.columns and len(frame):
        declared = int_column(frame, "n_outputs", samples_path, lines=lines)
        wrong = np.flatnonzero(declared != samples.shape[1])
        if len(wrong):
            i = int(wrong[0])
            raise data_error(
                samples_path,
                f"column output_sizes: {samples.shape[1]} samples but n_outputs is {declared[i]}",
                int(lines[i]),
            )
    prompt_ids = frame["prompt_id"].tolist()
    texts = _read_texts(prompts_path, set(prompt_ids))
    missing = [i for i, pid in enumerate(prompt_ids) if pid not in texts]
    if missing:
        i = missing[0]
        raise data_error(
            samples_path,
            f"prompt_id {prompt_ids[i]!r} has no text in {prompts_path.name}",
            lines[i],
        )
    return RequestPool(
        source=name,
        prompt_tokens=prompt_tokens,
        output_tokens=samples[:, 0].copy(),
        output_samples=samples,
        texts=[texts[pid] for pid in prompt_ids],
        prompt_ids=prompt_ids,
        groups=frame["dataset"].tolist(),
    )


def _parse_samples(cells: list[object], lines: np.ndarray, path: Path) -> np.ndarray:
    """``output_sizes`` cells ("795 902 ...") -> (n, k) int64; every row must have k values."""
    rows: list[list[int]] = []
    width = None
    for cell, line in zip(cells, lines.tolist(), strict=True):
        parts = str(cell).split() if isinstance(cell, str) else []
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise data_error(path, f"column output_sizes: not integers ({cell!r})", line) from None
        if not values:
            raise data_error(path, "column output_sizes: value missing", line)
        if width is None:
            width = len(values)
        if len(values) != width:
            raise data_error(
                path, f"column output_sizes: {len(values)} samples, expected {width}", line
            )
        if min(values) < 0:
            raise data_error(path, f"column output_sizes: negative length {min(values)}", line)
        rows.append(values)
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), width or 0)


def _read_texts(path: Path, wanted: set[str]) -> dict[str, str]:
    """prompt_id -> prompt_text for the ids in ``wanted``."""
    texts: dict[str, str] = {}
    for line, obj in iter_jsonl(path):
        pid, text = obj.get("prompt_id"), obj.get("prompt_text")
        if not isinstance(pid, str) or not isinstance(text, str):
            raise data_error(path, "expected string fields prompt_id and prompt_text", line)
        if pid in wanted:
            texts[pid] = text
    return texts
