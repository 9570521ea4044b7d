"""Cut the bundled sample (``sagerl/sample_data``) from the full data directory.

Deterministic: the same inputs give byte-identical outputs (fixed row selections, gzip with
mtime 0, xz with a fixed preset), so re-running it shows no diff. Only permissively licensed
sources are copied; see ``sagerl/sample_data/README.md`` for origins and licences.

Usage::

    python scripts/make_sample_data.py [--data-dir ../shared/data] [--out sagerl/sample_data]

The files keep the full data's layout and formats, so the ``sample_*`` loaders run the same code
as the full ones.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import lzma
from pathlib import Path

import pandas as pd

AZURE_ROWS = {"conv": 5000, "code": 2500}
"""First rows of each Azure trace: a contiguous window keeps the burst structure."""

CASTILLO_MODELS = ("meta-llama--Llama-3.1-8B-Instruct", "Qwen--Qwen2.5-7B-Instruct-1M")
CASTILLO_DATASETS = ("Apps", "Mbpp", "BigCodeBench")
"""APPS (MIT), MBPP (CC BY 4.0), BigCodeBench (Apache-2.0); the others are NC/SA/unclear."""

VIDUR_SHAREGPT_ROWS = 3000


def write_gzip(path: Path, data: bytes) -> None:
    """gzip with a zero timestamp and no file name, so the bytes are reproducible."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    path.write_bytes(buf.getvalue())


def write_xz(path: Path, data: bytes) -> None:
    path.write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))


def cut_azure(data: Path, out: Path) -> dict[str, int]:
    (out / "azure_llm_2023").mkdir(parents=True, exist_ok=True)
    counts = {}
    for kind, rows in AZURE_ROWS.items():
        name = f"azure_llm_2023/AzureLLMInferenceTrace_{kind}.csv"
        lines = (data / name).read_text().splitlines(keepends=True)
        (out / name).write_text("".join(lines[: rows + 1]))
        counts[name] = rows
    return counts


def cut_castillo(data: Path, out: Path) -> dict[str, int]:
    (out / "castillo").mkdir(parents=True, exist_ok=True)
    samples = pd.read_csv(data / "castillo/samples.csv.gz", dtype=str, keep_default_na=False)
    keep = samples["model"].isin(CASTILLO_MODELS) & samples["dataset"].isin(CASTILLO_DATASETS)
    samples = samples[keep]
    write_gzip(out / "castillo/samples.csv.gz", samples.to_csv(index=False).encode())
    wanted = set(samples["prompt_id"])
    lines = []
    with lzma.open(data / "castillo/prompts.jsonl.xz", "rt", encoding="utf-8") as fh:
        for line in fh:
            if json.loads(line)["prompt_id"] in wanted:
                lines.append(line)
    write_xz(out / "castillo/prompts.jsonl.xz", "".join(lines).encode())
    return {"castillo/samples.csv.gz": len(samples), "castillo/prompts.jsonl.xz": len(lines)}


def cut_vidur(data: Path, out: Path) -> dict[str, int]:
    name = "vidur_processed_traces/sharegpt_8k_filtered_stats_llama2_tokenizer.csv.gz"
    (out / "vidur_processed_traces").mkdir(parents=True, exist_ok=True)
    with gzip.open(data / name, "rt") as fh:
        lines = fh.read().splitlines(keepends=True)
    write_gzip(out / name, "".join(lines[: VIDUR_SHAREGPT_ROWS + 1]).encode())
    return {name: VIDUR_SHAREGPT_ROWS}


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=root.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=root / "sagerl" / "sample_data")
    args = parser.parse_args()
    counts = {
        **cut_azure(args.data_dir, args.out),
        **cut_castillo(args.data_dir, args.out),
        **cut_vidur(args.data_dir, args.out),
    }
    for name, rows in counts.items():
        size = (args.out / name).stat().st_size
        print(f"{name}: {rows} rows, {size} bytes")


if __name__ == "__main__":
    main()
