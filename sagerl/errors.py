"""User-facing errors.

Anything a user can cause (a malformed trace, an unknown name, a config typo, a missing data
directory) raises :class:`SagerlError` with a one-line message that names the file and line or the
key. The CLI prints that line and exits with status 2; it never shows a traceback for these.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SagerlError(Exception):
    """An error caused by the user's input; its message is shown as is, on one line."""


class ConfigError(SagerlError, ValueError):
    """A config key is unknown, has the wrong type, or an invalid value."""


class DataError(SagerlError, ValueError):
    """A data file is missing, malformed or truncated."""


class UnknownNameError(SagerlError, KeyError):
    """A name (GPU, model, policy, data set, ...) is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0]) if self.args else ""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UnknownNameError:
    """Build the error for an unknown registered name, listing the valid ones."""
    valid = sorted(choices)
    return UnknownNameError(
        f"unknown {kind} '{name}'{did_you_mean(name, valid)}; valid: {', '.join(valid)}"
    )
