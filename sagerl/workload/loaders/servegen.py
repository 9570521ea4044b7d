"""ServeGen (Alibaba Bailian, arXiv 2505.09999; Apache-2.0): per-client synthetic workloads.

ServeGen publishes distributions, not requests. Per client and category, ``chunk-<c>-trace.csv``
gives each 600-s window's arrival rate (requests/s) and inter-arrival CV, and
``chunk-<c>-dataset.json`` gives empirical PMFs of input and output tokens per 6-hour window.
This loader replays a slice of that: for each chosen client, arrivals follow the per-window
rate and CV (Gamma gaps, via :func:`sagerl.workload.arrivals.piecewise`), and each arrival draws
its prompt and output lengths from the PMFs of the 6-hour window it falls in (when that one is
empty, the latest earlier non-empty window, else the first later one). Windows fitted as
Weibull are replayed as Gamma with the same rate and CV.

The parsed windows are cached (keyed by archive, clients and slice, not by seed), so a new
seed costs only the sampling. The archives are read as a stream (``tarfile`` mode ``r|xz``):
only the chosen clients' two members are kept in memory, nothing is extracted to disk, and
reading stops once every explicitly chosen client has been seen.

Multimodal (``mm-image``) PMFs have no ``input_tokens``; there the prompt length is the sum of
independent draws of ``text_tokens``, ``image_tokens``, ``audio_tokens`` and ``video_tokens``.
"""

from __future__ import annotations

import ast
import json
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from sagerl.errors import unknown_name
from sagerl.schema import StrictModel
from sagerl.workload.arrivals import piecewise
from sagerl.workload.cache import cached
from sagerl.workload.catalog import dataset
from sagerl.workload.pool import RequestPool
from sagerl.workload.readers import data_error, reading

TRACE_WINDOW_S = 600.0
"""Length of one rate window in ``trace.csv`` (seconds)."""

ARCHIVE_VERSION = 1
"""Bump when :func:`_read_archive`'s output changes (invalidates its cache entries)."""

MEMBER = re.compile(r"chunk-(?P<client>[^/]+?)-(?P<kind>trace\.csv|dataset\.json)$")
PROMPT_FIELDS = ("text_tokens", "image_tokens", "audio_tokens", "video_tokens")

Category = Literal[
    "language-m-large",
    "language-m-mid",
    "language-m-small",
    "multimodal-mm-image",
    "reason-deepseek-r1",
]


class ServeGenOptions(StrictModel):
    """Options of the ``servegen`` loader."""

    category: Category = Field(
        "language-m-large", description="Which archive: servegen/servegen_<category>.tar.xz."
    )
    client: str | int | list[str | int] | None = Field(
        None,
        description="Client id(s) to replay (e.g. 24 or [24, 9]); None replays every client "
        "that has a dataset.json (clients whose PMFs are missing cannot be used).",
    )
    window: int = Field(
        0,
        ge=0,
        description="Index of the first 600-s rate window to replay (window w starts w*600 s "
        "into the trace; language traces have 2,016 windows = 14 days, others 144 = 1 day).",
    )
    duration_s: float = Field(3600.0, gt=0, description="Length of the replayed slice in seconds.")
    seed: int = Field(
        0,
        ge=0,
        description="Seed for arrivals and length draws. The workload builder passes its own "
        "seed unless this is set explicitly.",
    )


@dataclass
class _Client:
    """What one client contributes: rate windows inside the slice and PMFs by window start."""

    trace: list[tuple[float, float, float]] = field(default_factory=list)  # (start, rate, cv)
    pmfs: dict[float, dict[str, tuple[np.ndarray, np.ndarray]]] | None = None


def _files(options: ServeGenOptions) -> tuple[str, ...]:
    return (f"servegen/servegen_{options.category}.tar.xz",)


@dataset("servegen", files=_files, options=ServeGenOptions, cache=False)
def load_servegen(name: str, files: list[Path], options: ServeGenOptions) -> RequestPool:
    """ServeGen: per-client rate/CV windows and length PMFs, sampled with a seed."""
    path = files[0]
    wanted = _wanted_clients(options.client)
    t0 = options.window * TRACE_WINDOW_S
    t1 = t0 + options.duration_s
    # The stream read is the slow part (seconds for language-m-large) and does not depend on
    # the seed, so it is cached on its own; sampling from it per seed is fast.
    clients = cached(
        "servegen-parsed",
        ARCHIVE_VERSION,
        files,
        {"client": wanted, "t0": t0, "t1": t1},
        lambda: _read_archive(path, wanted, t0, t1),
        dict,
    )

    usable = sorted((c for c, v in clients.items() if v.pmfs is not None), key=_client_order)
    if wanted is not None:
        for c in wanted:
            if c not in clients or clients[c].pmfs is None:
                raise unknown_name(f"ServeGen client in {path.name}", c, usable)
        usable = [c for c in usable if c in wanted]

    prompt: list[np.ndarray] = []
    output: list[np.ndarray] = []
    times: list[np.ndarray] = []
    owner: list[str] = []
    for c in usable:
        rng = np.random.default_rng([options.seed, zlib.crc32(c.encode())])
        t, p, o = _simulate(clients[c], t0, options.duration_s, rng)
        times.append(t)
        prompt.append(p)
        output.append(o)
        owner.extend([c] * len(t))
    if not times:
        raise data_error(path, "no client with both trace.csv and dataset.json")
    all_t = np.concatenate(times)
    order = np.argsort(all_t, kind="stable")
    per_client: dict[str, int] = {}
    ids = []
    for c in owner:
        ids.append(f"{c}:{per_client.get(c, 0)}")
        per_client[c] = per_client.get(c, 0) + 1
    return RequestPool(
        source=name,
        prompt_tokens=np.concatenate(prompt)[order],
        output_tokens=np.concatenate(output)[order],
        prompt_ids=[ids[i] for i in order],
        clients=[owner[i] for i in order],
        timestamps=all_t[order],
    )


def _client_order(c: str) -> tuple[int, str]:
    return (int(c), c) if c.isdigit() else (1 << 30, c)


def _wanted_clients(client: str | int | list[str | int] | None) -> list[str] | None:
    if client is None:
        return None
    items = client if isinstance(client, list) else [client]
    return [str(c) for c in items]


def _read_archive(path: Path, wanted: list[str] | None, t0: float, t1: float) -> dict[str, _Client]:
    """Stream the archive once, keeping the wanted clients' windows inside [t0, t1)."""
    clients: dict[str, _Client] = {}
    remaining = None if wanted is None else {(c, k) for c in wanted for k in ("t", "d")}
    with reading(path), tarfile.open(path, mode="r|xz") as tar:
        for member in tar:
            found = MEMBER.search(member.name) if member.isfile() else None
            if found is None:
                continue
            c, kind = found["client"], found["kind"]
            if wanted is not None and c not in wanted:
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            raw = handle.read()
            where = f"{path} member {member.name}"
            entry = clients.setdefault(c, _Client())
            if kind == "trace.csv":
                entry.trace = _parse_trace(raw, where, t0, t1)
            else:
                entry.pmfs = _parse_pmfs(raw, where, t0, t1)
            if remaining is not None:
                remaining.discard((c, kind[0]))
                if not remaining:
                    break
    return clients


def _parse_trace(raw: bytes, where: str, t0: float, t1: float) -> list[tuple[float, float, float]]:
    """Rows ``start, rate, cv, pattern, shape, scale`` whose window overlaps [t0, t1)."""
    rows = []
    for line_no, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        cells = line.split(",")
        if len(cells) != 6:
            raise data_error(where, f"expected 6 fields, got {len(cells)}", line_no)
        try:
            start, rate, cv = float(cells[0]), float(cells[1]), float(cells[2])
        except ValueError:
            raise data_error(where, "start, rate and cv must be numbers", line_no) from None
        if not (np.isfinite(rate) and np.isfinite(cv)) or rate < 0 or cv < 0:
            raise data_error(where, f"rate {rate} and cv {cv} must be >= 0", line_no)
        if start + TRACE_WINDOW_S > t0 and start < t1:
            if not cells[3].strip():
                rate = 0.0  # no fitted distribution: no traffic in this window
            rows.append((start, rate, cv))
    return rows


def _parse_pmfs(
    raw: bytes, where: str, t0: float, t1: float
) -> dict[float, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Non-empty PMFs per 6-hour window start, only for windows the slice may use."""
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise data_error(where, f"invalid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise data_error(where, "expected a JSON object keyed by window start")
    starts = sorted(float(k) for k in doc)
    out: dict[float, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    # Parse windows overlapping the slice first; fall back to all windows if they are empty.
    overlap = [s for i, s in enumerate(starts) if s < t1 and _next(starts, i) > t0]
    for group in (overlap, starts):
        for s in group:
            if s in out:
                continue
            fields = doc[_key(doc, s)]
            pmf = {k: _parse_pmf(v, f"{where} window {s:g} field {k}") for k, v in fields.items()}
            if all(len(v[0]) > 0 for v in pmf.values()) and pmf:
                out[s] = pmf
        if out:
            break
    return out


def _next(starts: list[float], i: int) -> float:
    return starts[i + 1] if i + 1 < len(starts) else np.inf


def _key(doc: dict, start: float) -> str:
    for k in doc:
        if float(k) == start:
            return k
    raise KeyError(start)


def _parse_pmf(text: object, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``"{value: prob, ...}"`` (a Python literal) -> values and normalised probabilities."""
    try:
        pmf = ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise data_error(where, "not a Python dict literal of {value: probability}") from None
    if not isinstance(pmf, dict):
        raise data_error(where, "not a dict of {value: probability}")
    if not pmf:
        return np.zeros(0), np.zeros(0)
    values = np.array(list(pmf.keys()), dtype=np.float64)
    probs = np.array(list(pmf.values()), dtype=np.float64)
    if np.any(~np.isfinite(probs)) or np.any(probs < 0) or probs.sum() <= 0:
        raise data_error(where, "probabilities must be >= 0 and sum to more than 0")
    if np.any(~np.isfinite(values)) or np.any(values < 0):
        raise data_error(where, "values must be finite and >= 0")
    return values, probs / probs.sum()


def _simulate(
    client: _Client, t0: float, duration: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrival times (s from t0), prompt tokens and output tokens for one client."""
    empty = np.zeros(0, dtype=np.int64)
    if not client.trace or not client.pmfs:
        return np.zeros(0), empty, empty
    schedule = [(max(s - t0, 0.0), r, cv) for s, r, cv in client.trace]
    schedule = _merge_first(schedule)
    times = piecewise(schedule, None, rng, duration=duration)
    if len(times) == 0:
        return times, empty, empty
    starts = np.array(sorted(client.pmfs))
    # PMF window of each arrival: the latest non-empty window starting at or before it, or the
    # first non-empty one for arrivals before any.
    idx = np.clip(np.searchsorted(starts, times + t0, side="right") - 1, 0, len(starts) - 1)
    prompt = np.zeros(len(times), dtype=np.int64)
    output = np.zeros(len(times), dtype=np.int64)
    for w in np.unique(idx):
        rows = np.flatnonzero(idx == w)
        pmf = client.pmfs[float(starts[w])]
        output[rows] = _draw(pmf, ("output_tokens",), len(rows), rng)
        in_fields = ("input_tokens",) if "input_tokens" in pmf else PROMPT_FIELDS
        prompt[rows] = _draw(pmf, in_fields, len(rows), rng)
    return times, prompt, output


def _merge_first(schedule: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    """Windows that started before the slice all map to 0 s; keep only the last of them."""
    firsts = [i for i, row in enumerate(schedule) if row[0] == 0.0]
    return schedule[firsts[-1] :] if firsts else [(0.0, 0.0, 1.0), *schedule]


def _draw(
    pmf: dict[str, tuple[np.ndarray, np.ndarray]],
    names: tuple[str, ...],
    size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Sum of independent draws of the named PMFs (missing ones count 0), rounded to tokens."""
    total = np.zeros(size)
    for name in names:
        if name in pmf and len(pmf[name][0]):
            values, probs = pmf[name]
            total += rng.choice(values, size=size, p=probs)
    return np.rint(total).astype(np.int64)
