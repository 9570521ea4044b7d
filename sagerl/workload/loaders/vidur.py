"""Vidur's length-only request tables (Llama-2 tokenizer): prefill and decode tokens per row.

``vidur_arxiv``: arXiv-summarization article and reference-summary lengths (MIT; the summary is
not a model output). ``vidur_sharegpt``: ShareGPT request/response lengths filtered to 8k total
tokens (Apache-2.0). No text and no timestamps.
"""

from __future__ import annotations

from pathlib import Path

from sagerl.workload.catalog import NoOptions, dataset
from sagerl.workload.pool import RequestPool
from sagerl.workload.readers import int_column, read_csv

ARXIV = "vidur_processed_traces/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv.gz"
SHAREGPT = "vidur_processed_traces/sharegpt_8k_filtered_stats_llama2_tokenizer.csv.gz"
COLUMNS = ("num_prefill_tokens", "num_decode_tokens")


@dataset("vidur_arxiv", files=(ARXIV,))
@dataset("vidur_sharegpt", files=(SHAREGPT,))
@dataset("sample_vidur_sharegpt", files=(SHAREGPT,), sample=True)
def load_vidur(name: str, files: list[Path], options: NoOptions) -> RequestPool:
    """Vidur processed trace: num_prefill_tokens -> prompt, num_decode_tokens -> output."""
    path = files[0]
    frame = read_csv(path, COLUMNS)
    return RequestPool(
        source=name,
        prompt_tokens=int_column(frame, "num_prefill_tokens", path),
        output_tokens=int_column(frame, "num_decode_tokens", path),
        prompt_ids=[str(i) for i in range(len(frame))],
    )
