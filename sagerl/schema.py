"""Typed, strict configs: YAML files validated into pydantic models, with ``key=value`` overrides.

Every config model derives from :class:`StrictModel`, which forbids unknown keys. Errors are turned
into one line naming the key (dotted path), the problem, and the nearest valid key name, e.g.::

    config error in configs/default.yaml: cluster.replcas: unknown key (did you mean 'replicas'?)

Each package defines the config of its own part next to its code (``sagerl/workload/config.py``,
``sagerl/sim/config.py``, ...); ``sagerl/config.py`` composes them into the run config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from sagerl.errors import ConfigError, did_you_mean

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for all config sections: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def _fields_at(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """Valid field names of the sub-model that ``path`` (minus its last item) points into."""
    current: Any = model
    for part in path[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        annotation = fields[part].annotation
        current = _first_model(annotation)
        if current is None:
            return []
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _first_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``X``, ``list[X]``, ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def format_validation_error(model: type[BaseModel], err: ValidationError, where: str) -> str:
    """One line for the first error: ``config error in WHERE: a.b: message (did you mean ...)``."""
    first = err.errors()[0]
    loc = tuple(first.get("loc", ()))
    key = ".".join(str(p) for p in loc) or "<root>"
    if first.get("type") == "extra_forbidden":
        hint = did_you_mean(str(loc[-1]), _fields_at(model, loc)) if loc else ""
        msg = f"unknown key{hint}"
    else:
        msg = first.get("msg", "invalid value")
        value = first.get("input")
        if first.get("type") == "value_error":
            # Our own validators' messages already name the value.
            msg = msg.removeprefix("Value error, ")
        elif value is not None and not isinstance(value, dict | list):
            msg = f"{msg} (got {value!r})"
    return f"config error in {where}: {key}: {msg}"


def parse_value(text: str) -> Any:
    """Parse the right-hand side of a ``key=value`` override with YAML rules (``3``, ``true``,
    ``[1, 2]``, ``{a: 1}``); anything else stays a string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a nested dict (list items by index: ``a.0.b=1``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        dotted, raw = item.split("=", 1)
        parts = dotted.strip().split(".")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = node[_index(part, parts[: i + 1], len(node))]
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, dict | list):
                    raise ConfigError(f"override '{dotted}': '{part}' is not a section")
        last = parts[-1]
        if isinstance(node, list):
            node[_index(last, parts, len(node))] = parse_value(raw)
        else:
            node[last] = parse_value(raw)
    return data


def _index(part: str, path: list[str], size: int) -> int:
    if not part.isdigit() or int(part) >= size:
        raise ConfigError(f"override '{'.'.join(path)}': '{part}' is not an index below {size}")
    return int(part)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a syntax error is a one-line ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"config error in {p}{line}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config error in {p}: top level must be a mapping of keys")
    return data


def validate(model: type[M], data: dict[str, Any], where: str) -> M:
    """Validate ``data`` into ``model`` or raise a one-line ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(model, err, where)) from None


def load_config(
    model: type[M], path: str | Path | None = None, overrides: list[str] | None = None
) -> M:
    """Load ``path`` (or the model's defaults when ``None``), apply overrides, validate."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return validate(model, data, str(path) if path is not None else "<defaults>")
