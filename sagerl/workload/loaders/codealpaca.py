"""Code Alpaca 2k (text-davinci-003 answers; data CC BY-NC 4.0): code instructions with answers.

The prompt is ``instruction`` followed by ``input`` on a new line when ``input`` is not empty.
The file has no token counts, so prompt and answer are counted with tiktoken cl100k_base (the
GPT-3.5/4 tokenizer, closest to text-davinci-003's p50k) from the offline vocabulary in
``tokenizers/``; the pool cache keeps the counts, so this runs once.
"""

from __future__ import annotations

from pathlib import Path

from sagerl.workload.catalog import NoOptions, dataset
from sagerl.workload.pool import RequestPool
from sagerl.workload.readers import data_error, read_json
from sagerl.workload.tokens import count_tokens, load_encoding

DATA = "codealpaca/code_alpaca_2k.json.gz"
FIELDS = ("instruction", "input", "output")


@dataset(
    "codealpaca",
    files=(DATA, "tokenizers/manifest.json", "tokenizers/cl100k_base.tiktoken"),
)
def load_codealpaca(name: str, files: list[Path], options: NoOptions) -> RequestPool:
    """Code Alpaca 2k: instruction (+ input) text, cl100k prompt and answer tokens."""
    path, manifest, _ranks = files
    records = read_json(path)
    if not isinstance(records, list):
        raise data_error(path, "expected a JSON list of records")
    prompts: list[str] = []
    answers: list[str] = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not all(isinstance(rec.get(f), str) for f in FIELDS):
            raise data_error(path, f"record {i}: expected string fields {', '.join(FIELDS)}")
        text = rec["instruction"] if not rec["input"] else f"{rec['instruction']}\n{rec['input']}"
        prompts.append(text)
        answers.append(rec["output"])
    encoding = load_encoding(manifest, "cl100k_base")
    return RequestPool(
        source=name,
        prompt_tokens=count_tokens(prompts, encoding),
        output_tokens=count_tokens(answers, encoding),
        texts=prompts,
        prompt_ids=[str(i) for i in range(len(prompts))],
    )
