"""Load a named data set into a :class:`~sagerl.workload.pool.RequestPool`.

Names and what they read (paths relative to the data directory; ``sample_*`` names read the same
layout inside ``sagerl/sample_data`` and need no data directory):

================================  ==========================================================
name                              source
================================  ==========================================================
``sharegpt``                      ShareGPT turns + human message text (prompt_id ``id:turn``)
``castillo``                      CASTILLO: prompt text + 10 sampled output lengths per model
``codealpaca``                    Code Alpaca 2k, lengths counted with tiktoken cl100k
``azure_code`` / ``azure_conv``   Azure LLM inference trace 2023 (timestamps + lengths)
``servegen``                      ServeGen per-client PMFs + rate trace, sampled with a seed
``vidur_arxiv`` / ``vidur_sharegpt``  Vidur's length-only tables
``sample_azure_conv`` ...         bundled sample, see ``sagerl/sample_data/README.md``
================================  ==========================================================

Parsed pools are cached (see :mod:`sagerl.workload.cache`), so only the first load of a data set
pays for decompression and parsing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sagerl import paths
from sagerl.errors import ConfigError
from sagerl.schema import StrictModel, format_validation_error
from sagerl.workload import loaders as _loaders  # noqa: F401  (fills the DATASETS table)
from sagerl.workload.cache import cached_pool
from sagerl.workload.catalog import DATASETS, DatasetDef
from sagerl.workload.pool import RequestPool
from sagerl.workload.readers import data_error


def list_datasets() -> list[str]:
    """All registered data set names, sorted."""
    return DATASETS.names()


def describe_datasets() -> dict[str, str]:
    """Name -> one-line description, for CLI help."""
    return {name: DATASETS.get(name).description for name in DATASETS.names()}


def get_dataset(name: str) -> DatasetDef:
    """The registration of ``name``; an unknown name lists the valid ones."""
    return DATASETS.get(name)


def options_problem(name: str, options: dict[str, Any]) -> str | None:
    """``"key: problem"`` for the first bad loader option of data set ``name``, or None."""
    spec = DATASETS.get(name)
    try:
        spec.options.model_validate(options)
    except ValidationError as err:
        prefix = "config error in : "
        return format_validation_error(spec.options, err, "").removeprefix(prefix)
    return None


def validate_options(name: str, options: dict[str, Any]) -> StrictModel:
    """Validate loader options for data set ``name``; a bad key is a one-line ConfigError."""
    spec = DATASETS.get(name)
    try:
        return spec.options.model_validate(options)
    except ValidationError as err:
        raise ConfigError(
            format_validation_error(spec.options, err, f"options of data set '{name}'")
        ) from None


def source_files(
    name: str, data_dir: str | os.PathLike[str] | None, options: StrictModel
) -> list[Path]:
    """Absolute paths of the files data set ``name`` reads, checked to exist."""
    spec = DATASETS.get(name)
    root = paths.SAMPLE_DATA_DIR if spec.sample else paths.data_dir(data_dir)
    files = [root / rel for rel in spec.files(options)]
    for path in files:
        if not path.is_file():
            raise data_error(path, f"file does not exist (needed by data set '{name}')")
    return files


def load_pool(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    use_cache: bool = True,
    **options: Any,
) -> RequestPool:
    """Load data set ``name`` as a pool of requests without arrival times.

    Args:
        name: A registered name (see :func:`list_datasets`).
        data_dir: The full-data directory; ``None`` resolves it through
            :func:`sagerl.paths.data_dir` (``SAGERL_DATA``, then ``../shared/data``). Ignored by
            ``sample_*`` names.
        use_cache: Read and write the parsed-pool cache (default True). Seeded loaders
            (``servegen``) always cache only their parsed archive, never the sampled pool.
        **options: Loader options (e.g. ``model=...`` for ``castillo``); unknown keys are a
            ConfigError naming the key.

    Returns:
        The parsed pool; its ``source`` is ``name``.

    Raises:
        UnknownNameError: ``name`` (or a name inside the options, such as a CASTILLO model) is
            not known; the message lists the valid names.
        ConfigError: an option is unknown or has a bad value.
        DataError: the data directory or a file is missing, malformed or truncated.
    """
    spec = DATASETS.get(name)
    opts = validate_options(name, options)
    files = source_files(name, data_dir, opts)
    if not use_cache or not spec.cache:
        return spec.parse(name, files, opts)
    return cached_pool(
        name,
        spec.version,
        files,
        opts.model_dump(mode="json"),
        lambda: spec.parse(name, files, opts),
    )
