"""The table of data set names: which files each reads, its options and its parse function.

A loader is a plain function ``parse(name, files, options) -> RequestPool`` registered under one
or more user-facing names with the :func:`dataset` decorator placed beside it::

    @dataset("azure_conv", files=("azure_llm_2023/AzureLLMInferenceTrace_conv.csv",))
    @dataset("sample_azure_conv", files=(...,), sample=True)
    def load_azure(name: str, files: list[Path], options: NoOptions) -> RequestPool: ...

``sample=True`` names read the bundled ``sagerl/sample_data`` (same layout, same code path) and
never need a data directory. This module only holds the table; ``sagerl.workload.datasets``
imports the loader modules (which fills it) and implements ``load_pool``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagerl.registry import Registry
from sagerl.schema import StrictModel
from sagerl.workload.pool import RequestPool


class NoOptions(StrictModel):
    """Options of a loader that takes none (any key is an error)."""


ParseFn = Callable[[str, list[Path], Any], RequestPool]
FilesFn = Callable[[Any], tuple[str, ...]]


@dataclass(frozen=True)
class DatasetDef:
    """One registered data set name.

    Attributes:
        name: The user-facing name (``"castillo"``, ``"sample_azure_conv"``).
        parse: Builds the pool from the resolved files and validated options.
        options: The pydantic model that validates this loader's options.
        files: Paths relative to the data root that the loader reads, as a function of the
            options (ServeGen picks its archive by category). They key the cache.
        sample: True when the files come from the bundled sample, not the data directory.
        version: Bump when ``parse`` output changes, so stale cache entries are not reused.
        cache: Whether ``load_pool`` caches the parsed pool. Off for loaders whose pool
            depends on a seed (they cache their parsed inputs themselves).
        description: One line for ``list_datasets``/CLI help.
    """

    name: str
    parse: ParseFn
    options: type[StrictModel]
    files: FilesFn
    sample: bool
    version: int
    cache: bool
    description: str


DATASETS: Registry[DatasetDef] = Registry("data set")


def _constant(files: tuple[str, ...]) -> FilesFn:
    """A files function that ignores the options."""

    def files_fn(_options: Any) -> tuple[str, ...]:
        return files

    return files_fn


def dataset(
    name: str,
    *,
    files: tuple[str, ...] | FilesFn,
    options: type[StrictModel] = NoOptions,
    sample: bool = False,
    version: int = 1,
    cache: bool = True,
) -> Callable[[ParseFn], ParseFn]:
    """Register the decorated parse function as data set ``name`` (stackable)."""

    def deco(fn: ParseFn) -> ParseFn:
        files_fn: FilesFn = files if callable(files) else _constant(files)
        doc = (fn.__doc__ or "").strip().splitlines()
        DATASETS.register(name)(
            DatasetDef(
                name=name,
                parse=fn,
                options=options,
                files=files_fn,
                sample=sample,
                version=version,
                cache=cache,
                description=doc[0] if doc else "",
            )
        )
        return fn

    return deco
