"""Offline token counting with tiktoken, from the vocabularies in ``shared/data/tokenizers``.

tiktoken normally downloads its vocabularies; here a ``.tiktoken`` rank file (one
``base64-token rank`` pair per line) is read from the data directory, checked against the
sha256 in ``manifest.json``, and combined with the manifest's ``pat_str`` and special tokens.
Nothing touches the network or tiktoken's own file cache.

tiktoken is an optional dependency (the ``predict`` extra); only loaders that count tokens
need it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sagerl.errors import SagerlError
from sagerl.workload.readers import data_error, read_bytes, read_json

if TYPE_CHECKING:
    import tiktoken


@lru_cache(maxsize=4)
def load_encoding(manifest_path: Path, name: str = "cl100k_base") -> tiktoken.Encoding:
    """The tiktoken ``Encoding`` called ``name`` in ``manifest.json`` (files beside it)."""
    try:
        import tiktoken
    except ImportError:
        raise SagerlError(
            "counting tokens needs the tiktoken package: pip install tiktoken"
        ) from None
    manifest = read_json(manifest_path)
    entry = manifest.get(name) if isinstance(manifest, dict) else None
    if not isinstance(entry, dict) or "pat_str" not in entry or "file" not in entry:
        raise data_error(manifest_path, f"no tokenizer entry '{name}' with file and pat_str")
    ranks_path = manifest_path.parent / entry["file"]
    data = read_bytes(ranks_path)
    expected = entry.get("sha256_uncompressed")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise data_error(ranks_path, "sha256 does not match manifest.json (corrupt file?)")
    ranks: dict[bytes, int] = {}
    for line_no, line in enumerate(data.splitlines(), start=1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except (ValueError, binascii.Error):
            raise data_error(ranks_path, "expected 'base64-token rank'", line_no) from None
    return tiktoken.Encoding(
        name,
        pat_str=entry["pat_str"],
        mergeable_ranks=ranks,
        special_tokens=dict(entry.get("special_tokens", {})),
    )


def count_tokens(texts: Sequence[str], encoding: tiktoken.Encoding) -> np.ndarray:
    """Token count (int64) of each text, ordinary encoding (no special tokens, no template)."""
    encoded = encoding.encode_ordinary_batch(list(texts), num_threads=2)
    return np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
