"""ShareGPT V3 (partial, 17,671 records): one request per human->gpt turn, with prompt text.

``sharegpt_turns.csv.gz`` has one row per human message followed by a gpt answer, with token
counts in two tokenizers; ``sharegpt_v3_partial_conversations.jsonl.xz`` has the text. The loader
joins them on (``record_index`` = 0-based jsonl line, ``message_index``) and checks that the
record id matches and that the message is a human one. Every one of the 61,223 turns has its
text (128 of them are empty strings, with 0 prompt tokens; the builder's ``min_prompt_tokens``
drops those).

Licence: unclear (scraped ShareGPT); research use only. Not part of the bundled sample.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Literal

from pydantic import Field

from sagerl.schema import StrictModel
from sagerl.workload.catalog import dataset
from sagerl.workload.pool import RequestPool
from sagerl.workload.readers import data_error, int_column, iter_jsonl, read_csv

TURNS = "sharegpt/sharegpt_turns.csv.gz"
TEXTS = "sharegpt/sharegpt_v3_partial_conversations.jsonl.xz"


class ShareGPTOptions(StrictModel):
    """Options of the ``sharegpt`` loader."""

    tokenizer: Literal["llama3", "cl100k"] = Field(
        "llama3",
        description="Which token counts to use for prompt and output lengths (tokens): "
        "'llama3' (Meta Llama 3) or 'cl100k' (GPT-3.5/4).",
    )


@dataset("sharegpt", files=(TURNS, TEXTS), options=ShareGPTOptions)
def load_sharegpt(name: str, files: list[Path], options: ShareGPTOptions) -> RequestPool:
    """ShareGPT V3 turns: human prompt text, prompt and response tokens (llama3 or cl100k)."""
    turns_path, texts_path = files
    tok = options.tokenizer
    prompt_col, output_col = f"prompt_tokens_{tok}", f"response_tokens_{tok}"
    frame = read_csv(
        turns_path,
        ("id", "record_index", "turn", "message_index", prompt_col, output_col),
        dtype={"id": str},
    )
    records = int_column(frame, "record_index", turns_path)
    messages = int_column(frame, "message_index", turns_path)
    turn = int_column(frame, "turn", turns_path)
    ids = frame["id"].tolist()

    # Which (row, message) each jsonl line must supply: line = record_index + 1.
    wanted: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for row, (rec, msg) in enumerate(zip(records.tolist(), messages.tolist(), strict=True)):
        wanted[rec + 1].append((row, msg))

    texts: list[str | None] = [None] * len(frame)
    for line, obj in iter_jsonl(texts_path):
        for row, msg in wanted.pop(line, ()):
            texts[row] = _human_text(obj, msg, ids[row], texts_path, line)
    if wanted:
        line = min(wanted)
        row = wanted[line][0][0]
        raise data_error(
            turns_path,
            f"record_index {line - 1} points past the end of {texts_path.name} "
            "(truncated conversations file?)",
            row + 2,
        )

    return RequestPool(
        source=name,
        prompt_tokens=int_column(frame, prompt_col, turns_path),
        output_tokens=int_column(frame, output_col, turns_path),
        texts=[t or "" for t in texts],
        prompt_ids=[f"{i}:{t}" for i, t in zip(ids, turn.tolist(), strict=True)],
    )


def _human_text(obj: dict, msg: int, expected_id: str, path: Path, line: int) -> str:
    """The text of message ``msg`` of one conversation record, checked to be a human turn."""
    if obj.get("id") != expected_id:
        raise data_error(
            path, f"record id {obj.get('id')!r}, turns table says {expected_id!r}", line
        )
    conv = obj.get("conversations")
    if not isinstance(conv, list) or not 0 <= msg < len(conv) or not isinstance(conv[msg], dict):
        raise data_error(path, f"record has no message {msg}", line)
    message = conv[msg]
    value = message.get("value")
    if message.get("from") != "human" or not isinstance(value, str):
        raise data_error(path, f"message {msg} is not a human text message", line)
    return value
