"""Reading data files so that every failure is a one-line :class:`~sagerl.errors.DataError`.

Loaders never call ``open``/``pandas.read_csv``/``json.loads`` directly: they go through these
helpers, which know the three compressions used in ``shared/data`` (``.gz``, ``.xz``, plain) and
turn a cut stream, a bad CSV row, a bad JSON line, a missing column or a negative length into
``data error in FILE line N: problem``. Line numbers are 1-based lines of the (decompressed) file,
so for a CSV with a header the first data row is line 2.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import re
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import pandas as pd

from sagerl.errors import DataError

# Everything a cut or corrupt file can raise while being read or decompressed.
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    lzma.LZMAError,
    zlib.error,
    gzip.BadGzipFile,
    UnicodeDecodeError,
    tarfile.TarError,
    pd.errors.ParserError,
    pd.errors.EmptyDataError,
    ValueError,
)

_LINE_IN_MESSAGE = re.compile(r"\bline (\d+)")


def one_line(text: object, limit: int = 200) -> str:
    """Collapse whitespace (pandas and lzma messages carry newlines) and cap the length."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def data_error(path: Path | str, problem: str, line: int | None = None) -> DataError:
    """The standard one-line error: ``data error in PATH[ line N]: problem``."""
    where = f"{path} line {line}" if line is not None else f"{path}"
    return DataError(f"data error in {where}: {one_line(problem)}")


def describe_read_error(exc: BaseException) -> str:
    """A short human reason for a low-level read failure."""
    if isinstance(exc, EOFError | lzma.LZMAError | zlib.error | gzip.BadGzipFile):
        return f"truncated or corrupt compressed stream ({one_line(exc) or type(exc).__name__})"
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, pd.errors.EmptyDataError):
        return "file is empty"
    return one_line(exc) or type(exc).__name__


@contextmanager
def reading(path: Path, line: list[int] | None = None) -> Iterator[None]:
    """Turn any read/parse failure inside the block into a DataError naming ``path``.

    Args:
        path: The file being read (named in the message).
        line: Optional one-item list the caller keeps updated with the current line number,
            so a failure mid-stream names the line where reading stopped.
    """
    try:
        yield
    except DataError:
        raise
    except FileNotFoundError:
        raise data_error(path, "file does not exist") from None
    except READ_ERRORS as exc:
        at = line[0] if line and line[0] > 0 else None
        if at is None and isinstance(exc, pd.errors.ParserError):
            found = _LINE_IN_MESSAGE.search(str(exc))
            at = int(found.group(1)) if found else None
        raise data_error(path, describe_read_error(exc), at) from None


def open_binary(path: Path) -> IO[bytes]:
    """Open ``path`` for reading bytes, decompressing by suffix (``.gz``, ``.xz``, plain)."""
    if not path.is_file():
        raise data_error(path, "file does not exist")
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    if path.suffix == ".xz":
        return cast(IO[bytes], lzma.open(path, "rb"))
    return open(path, "rb")


def read_bytes(path: Path) -> bytes:
    """The whole decompressed content of ``path``."""
    with reading(path), open_binary(path) as fh:
        return fh.read()


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-empty line of a JSON-lines file.

    A line that is not a JSON object, or a stream cut in the middle, is a DataError naming the
    line.
    """
    line = [0]
    with reading(path, line), open_binary(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8")
        for line[0], row in enumerate(text, start=1):
            if not row.strip():
                continue
            try:
                obj = json.loads(row)
            except json.JSONDecodeError as exc:
                raise data_error(path, f"invalid JSON ({exc.msg})", line[0]) from None
            if not isinstance(obj, dict):
                raise data_error(path, "expected a JSON object", line[0])
            yield line[0], obj


def read_json(path: Path) -> Any:
    """Parse a (possibly compressed) JSON document."""
    data = read_bytes(path)
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise data_error(path, f"invalid JSON ({exc.msg})", exc.lineno) from None
    except UnicodeDecodeError as exc:
        raise data_error(path, describe_read_error(exc)) from None


def read_csv(
    path: Path,
    required: Sequence[str],
    *,
    names: Sequence[str] | None = None,
    dtype: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Read a (possibly compressed) CSV and check that the ``required`` columns exist.

    Args:
        path: The CSV file (``.csv``, ``.csv.gz``, ``.csv.xz``).
        required: Column names that must be present.
        names: Column names for a file without a header row.
        dtype: Optional pandas dtypes per column (e.g. ``str`` for id columns).
    """
    if not path.is_file():
        raise data_error(path, "file does not exist")
    with reading(path):
        frame = pd.read_csv(
            path,
            header=None if names is not None else "infer",
            names=list(names) if names is not None else None,
            dtype=dtype,
            keep_default_na=False,
            na_values=[""],
        )
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise data_error(
            path,
            f"missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns))}",
        )
    return frame


def _line_of(i: int, lines: np.ndarray | None, header: bool) -> int:
    """File line of data row ``i`` (``lines`` maps rows of a filtered frame to file lines)."""
    if lines is not None:
        return int(lines[i])
    return i + (2 if header else 1)


def int_column(
    frame: pd.DataFrame,
    column: str,
    path: Path,
    *,
    minimum: int = 0,
    header: bool = True,
    lines: np.ndarray | None = None,
) -> np.ndarray:
    """Column ``column`` as int64, or a DataError naming the first bad row's line.

    Rejects missing values, non-numbers, non-integers and values below ``minimum`` (token
    counts are never negative).

    Args:
        frame: The table.
        column: Column to convert.
        path: The file it came from (named in errors).
        minimum: Smallest allowed value.
        header: Whether the file has a header row (data starts on line 2).
        lines: File line of each row, for a frame that was filtered after reading.
    """
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        what = "missing" if pd.isna(raw.iloc[i]) else f"not a number ({raw.iloc[i]!r})"
        raise data_error(path, f"column {column}: value {what}", _line_of(i, lines, header))
    frac = values != np.floor(values)
    if frac.any():
        i = int(np.argmax(frac))
        raise data_error(
            path, f"column {column}: {values[i]} is not an integer", _line_of(i, lines, header)
        )
    low = values < minimum
    if low.any():
        i = int(np.argmax(low))
        raise data_error(
            path,
            f"column {column}: {int(values[i])} is below {minimum}",
            _line_of(i, lines, header),
        )
    return values.astype(np.int64)


def float_column(
    frame: pd.DataFrame,
    column: str,
    path: Path,
    *,
    header: bool = True,
    lines: np.ndarray | None = None,
) -> np.ndarray:
    """Column ``column`` as float64; a missing or non-numeric value names its line."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        what = "missing" if pd.isna(raw.iloc[i]) else f"not a number ({raw.iloc[i]!r})"
        raise data_error(path, f"column {column}: value {what}", _line_of(i, lines, header))
    return values
