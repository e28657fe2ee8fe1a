"""Job configuration: a dataclass is the schema, a YAML file an instance, `key=value` arguments override it.

    cfg = load_config(PreprocessConfig, "infra/configs/preprocess.yaml", ["template=plain", "data=[a.json,b.json]"])

Values on the command line are parsed as YAML scalars/lists (so 3, 1e-3, true, [a, b] mean what they look like).
Every problem (unknown key, wrong type) is collected and reported at once, before any Ray worker starts.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that does not fit its schema; the message lists every problem."""


def load_config(schema: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                values: dict[str, Any] | None = None) -> T:
    """`values` (a dict, e.g. Serve application args) is the base instead of a YAML file."""
    values = copy.deepcopy(values) if values is not None else {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of option: value")
        values = loaded or {}
    problems: list[str] = []
    for override in overrides:
        key, separator, raw = override.partition("=")
        if not separator or not key:
            problems.append(f"override {override!r} is not key=value")
            continue
        _set_nested(values, key.strip().split("."), yaml.safe_load(raw) if raw.strip() else "")
    config = _build(schema, values, "", problems)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return config


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """{"train.lr": 1e-3, ...}: the form MLflow params take."""
    flat: dict[str, Any] = {}
    for key, value in (dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _set_nested(values: dict, keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        values = values.setdefault(key, {})
    values[keys[-1]] = value


def _build(schema: type, values: dict[str, Any], where: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(schema)
    fields = {field.name: field for field in dataclasses.fields(schema)}
    for key in sorted(set(values) - set(fields)):
        problems.append(f"unknown option {where}{key!r}; allowed: {', '.join(fields)}")
    arguments = {}
    before = len(problems)  # unknown keys above do not stop the schema's own validation from reporting too
    for name, field in fields.items():
        if name not in values:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                problems.append(f"option {where}{name!r} is required")
            continue
        arguments[name] = _coerce(values[name], hints[name], f"{where}{name}", problems)
    if len(problems) > before:
        return None
    try:
        return schema(**arguments)
    except (TypeError, ValueError) as error:
        problems.append(f"{where.rstrip('.') or schema.__name__}: {error}")
        return None


def _coerce(value: Any, annotation: Any, name: str, problems: list[str]) -> Any:
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            problems.append(f"option {name!r} must be a mapping, got {value!r}")
            return None
        return _build(annotation, value, f"{name}.", problems)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        candidates = [argument for argument in arguments if argument is not type(None)]
        for candidate in candidates:
            trial: list[str] = []
            coerced = _coerce(value, candidate, name, trial)
            if not trial:
                return coerced
        problems.append(f"option {name!r} = {value!r} is not one of {', '.join(map(_type_name, candidates))}")
        return None
    if origin is typing.Literal:
        if value not in arguments:
            problems.append(f"option {name!r} = {value!r}; allowed: {', '.join(map(str, arguments))}")
        return value
    if origin in (list, tuple):
        items = value if isinstance(value, (list, tuple)) else [value]  # a single value is a list of one
        item_type = arguments[0] if arguments else Any
        coerced = [_coerce(item, item_type, f"{name}[{index}]", problems) for index, item in enumerate(items)]
        return coerced if origin is list else tuple(coerced)
    if origin is dict or annotation is Any:
        return value
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:  # YAML 1.1 reads 2e-5 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if annotation is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(annotation, type) and not isinstance(value, annotation):
        problems.append(f"option {name!r} must be {_type_name(annotation)}, got {value!r}")
        return None
    if annotation is int and isinstance(value, bool):
        problems.append(f"option {name!r} must be int, got {value!r}")
    return value


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))
