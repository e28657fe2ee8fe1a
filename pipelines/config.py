"""Job configuration: a dataclass is the schema, a YAML file an instance, `key=value` arguments override it.

    cfg = load_config(PreprocessConfig, "my-data.yaml", ["template=plain", "data=[a.json,b.json]", "models.0.name=x"])

Values on the command line are parsed as YAML scalars/lists (so 3, 1e-3, true, [a, b] mean what they look like);
`models.0.name=x` sets a field of a list's item. pydantic validates the result against the schema (types,
allowed values, unknown keys), every problem is reported at once, before any Ray worker starts. A field's meaning
is the docstring under it, which `--help` shows.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BeforeValidator, ConfigDict, TypeAdapter, ValidationError

T = TypeVar("T")

# Every config is a pydantic dataclass, `@dataclass(config=OPTIONS)`, so that every construction is validated:
# unknown keys are errors, numbers given for a str field are that str (name=12), and the docstring under a field
# is its description.
OPTIONS = ConfigDict(extra="forbid", coerce_numbers_to_str=True, use_attribute_docstrings=True)


def _one_is_a_list(value: Any) -> Any:
    return value if isinstance(value, (list, tuple)) else [value]


# A list option that also takes a single value as a list of one: data=a.json is data=[a.json].
StrList = Annotated[list[str], BeforeValidator(_one_is_a_list)]


class ConfigError(ValueError):
    """A configuration that does not fit its schema; the message lists every problem."""


def load_config(schema: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                values: dict[str, Any] | None = None) -> T:
    """`values` (a dict, e.g. Serve application args) is the base instead of a YAML file."""
    values = copy.deepcopy(values) if values is not None else {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {error}") from error
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of option: value")
        values = loaded or {}
    problems: list[str] = []
    for override in overrides:
        key, separator, raw = override.partition("=")
        if not separator or not key.strip():
            problems.append(f"override {override!r} is not key=value")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as error:
            problems.append(f"override {override!r}: the value is not valid YAML ({' '.join(str(error).split())})")
            continue
        problem = _set_path(schema, values, key.strip().split("."), value)
        if problem:
            problems.append(problem)
    try:
        config = TypeAdapter(schema).validate_python(values)
    except ValidationError as error:
        problems.extend(_describe(schema, detail) for detail in error.errors(include_url=False))
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


def to_yaml(config: Any) -> str:
    """The whole configuration as YAML that `--config` reads back (--print-config)."""
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False, allow_unicode=True)


def _set_path(schema: type, values: dict[str, Any], keys: list[str], value: Any) -> str | None:
    """Set values[k1][k2]... = value; a number selects a list's item (models.0.name). A list the YAML does not hold
    starts as the schema's default list. Returns the problem, if the path leads nowhere."""
    container: Any = values
    for depth, key in enumerate(keys[:-1]):
        if isinstance(container, list):
            if not key.isdigit() or int(key) >= len(container):
                return f"{'.'.join(keys)}: {'.'.join(keys[:depth])} has {len(container)} items, no item {key!r}"
            container = container[int(key)]
            continue
        if not isinstance(container, dict):
            return f"{'.'.join(keys)}: {'.'.join(keys[:depth])} is not a mapping"
        if key not in container:
            container[key] = _default_of(schema, keys[:depth + 1])
        container = container[key]
    last = keys[-1]
    if isinstance(container, list):
        if not last.isdigit() or int(last) >= len(container):
            return f"{'.'.join(keys)}: {'.'.join(keys[:-1])} has {len(container)} items, no item {last!r}"
        container[int(last)] = value
    elif isinstance(container, dict):
        container[last] = value
    else:
        return f"{'.'.join(keys)}: {'.'.join(keys[:-1])} is not a mapping"
    return None


def _default_of(schema: type, keys: list[str]) -> Any:
    """The schema's default at a path (a list of items as plain dicts), {} where it has none."""
    value: Any = _defaults(schema)
    for key in keys:
        if isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        elif isinstance(value, dict) and key in value:
            value = value[key]
        else:
            return {}
    return copy.deepcopy(value)


def _defaults(schema: type) -> dict[str, Any]:
    defaults = {field.name: plain_default(field) for field in dataclasses.fields(schema)}
    return {name: value for name, value in defaults.items() if value is not dataclasses.MISSING}


def plain_default(field: dataclasses.Field) -> Any:
    """A config field's default as plain data (dataclasses as dicts, also in lists), its factory called;
    dataclasses.MISSING where it has none."""
    default = field.default
    if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    if isinstance(default, list):
        return [dataclasses.asdict(item) if dataclasses.is_dataclass(item) else item for item in default]
    return dataclasses.asdict(default) if dataclasses.is_dataclass(default) else default


def _describe(schema: type, detail: dict[str, Any]) -> str:
    """One line per pydantic error, naming the option as it is written on the command line."""
    location = ".".join(str(part) for part in detail["loc"])
    kind = detail["type"]
    if kind == "unexpected_keyword_argument":
        parent, _, name = location.rpartition(".")
        allowed = _field_names(schema, parent)
        return f"unknown option {location!r}" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    if kind == "missing_argument":
        return f"option {location!r} is required"
    if kind in ("value_error", "assertion_error"):  # a schema's own check (__post_init__) of the whole config
        message = detail["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        return f"{location}: {message}" if location else message
    return f"option {location!r} = {detail['input']!r}: {detail['msg']}"


def _field_names(schema: type, location: str) -> list[str]:
    """The option names of the dataclass at a location ('' = the schema, 'models.0' = an item of models)."""
    current: Any = schema
    for part in location.split(".") if location else []:
        if part.isdigit():  # an item of a list: the same dataclass
            continue
        hint = typing.get_type_hints(current).get(part)
        current = next((candidate for candidate in (hint, *typing.get_args(hint))
                        if dataclasses.is_dataclass(candidate)), None)
        if current is None:
            return []
    return [field.name for field in dataclasses.fields(current)]
