"""A small name -> class registry used by every pluggable family (policies, predictors, data sets).

One table per family, filled by a decorator placed beside the class, keyed by the user-facing
name. Duplicates are refused; an unknown name is an :class:`~sagerl.errors.UnknownNameError` that
lists the valid names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from sagerl.errors import unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps user-facing names to classes (or factories) of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._table: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name``."""

        def deco(obj: T) -> T:
            if name in self._table:
                raise ValueError(f"duplicate {self.kind} name '{name}'")
            self._table[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the object registered as ``name`` or raise a clear error."""
        try:
            return self._table[name]
        except KeyError:
            raise unknown_name(self.kind, name, self._table) from None

    def names(self) -> list[str]:
        return sorted(self._table)

    def __contains__(self, name: object) -> bool:
        return name in self._table

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
