"""Azure LLM inference trace 2023 (Splitwise, ISCA'24; CC BY 4.0): timestamps and lengths.

Columns ``TIMESTAMP`` (e.g. ``2023-11-16 18:17:03.9799600``), ``ContextTokens`` (prompt tokens)
and ``GeneratedTokens`` (output tokens). Timestamps become seconds after the earliest row (the
files are sorted, so that is the first row). There is no prompt text: pair one with
``WorkloadConfig.pair_text``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sagerl.workload.catalog import NoOptions, dataset
from sagerl.workload.pool import RequestPool
from sagerl.workload.readers import data_error, int_column, read_csv

CODE = "azure_llm_2023/AzureLLMInferenceTrace_code.csv"
CONV = "azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


def parse_timestamps(raw: pd.Series, path: Path) -> np.ndarray:
    """Seconds (float64) after the earliest timestamp; an unparsable one names its line."""
    stamps = pd.to_datetime(raw, format="%Y-%m-%d %H:%M:%S.%f", errors="coerce")
    bad = stamps.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise data_error(path, f"column TIMESTAMP: cannot parse {raw.iloc[i]!r}", i + 2)
    if len(stamps) == 0:
        return np.zeros(0, dtype=np.float64)
    ns = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return (ns - ns.min()).astype(np.float64) / 1e9


@dataset("azure_code", files=(CODE,))
@dataset("azure_conv", files=(CONV,))
@dataset("sample_azure_code", files=(CODE,), sample=True)
@dataset("sample_azure_conv", files=(CONV,), sample=True)
def load_azure(name: str, files: list[Path], options: NoOptions) -> RequestPool:
    """Azure LLM trace 2023 (code or conversation): arrival times, prompt and output tokens."""
    path = files[0]
    frame = read_csv(path, COLUMNS, dtype={"TIMESTAMP": str})
    n = len(frame)
    return RequestPool(
        source=name,
        prompt_tokens=int_column(frame, "ContextTokens", path),
        output_tokens=int_column(frame, "GeneratedTokens", path),
        prompt_ids=[str(i) for i in range(n)],
        timestamps=parse_timestamps(frame["TIMESTAMP"], path),
    )
