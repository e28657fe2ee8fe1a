"""The options of a config class as --help and docs/configuration.md list them: name, type, default and meaning,
read from pydantic's JSON schema of the class (the meaning is the docstring or Field description of each field)."""

from __future__ import annotations

import dataclasses
import json
import textwrap
import typing
from typing import Any

from pydantic import TypeAdapter

from pipelines.config import plain_default

INDENT = "      "
BOUNDS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))


@dataclasses.dataclass(frozen=True)
class Option:
    """One option by its command-line path (models.N.name); a group (models.N) has no type or default."""

    name: str
    kind: str
    default: str
    meaning: str
    group: bool = False


def options(schema: type) -> list[Option]:
    document = TypeAdapter(schema).json_schema()
    found: list[Option] = []
    _walk(document, document.get("$defs", {}), "", _factory_defaults(schema), found)
    return found


def options_help(schema: type, width: int = 100) -> str:
    """One entry per option, nested ones by their command-line path (models.N.name)."""
    lines: list[str] = []
    for option in options(schema):
        if option.group:
            lines.append(f"  {option.name}.*  {option.meaning}".rstrip())
            continue
        lines.append(f"  {option.name} ({option.kind}, default {option.default})")
        lines.extend(textwrap.wrap(option.meaning, width, initial_indent=INDENT, subsequent_indent=INDENT))
    return "\n".join(lines)


def _walk(node: dict, definitions: dict, prefix: str, factory_defaults: dict[str, Any], found: list[Option]) -> None:
    for name, prop in node.get("properties", {}).items():
        path, meaning = f"{prefix}{name}", " ".join(prop.get("description", "").split())
        nested = _nested_object(prop, definitions)
        if nested is not None:
            target, suffix = nested
            found.append(Option(f"{path}{suffix}", "", "", meaning, group=True))
            _walk(target, definitions, f"{path}{suffix}.", factory_defaults, found)
            continue
        if "default" not in prop and path in factory_defaults:
            prop = {**prop, "default": factory_defaults[path]}
        found.append(Option(path, _type(prop, definitions), _default(prop), meaning))


def _factory_defaults(schema: type, prefix: str = "") -> dict[str, Any]:
    """path -> default of the fields whose default comes from a factory, which the JSON schema leaves out."""
    defaults: dict[str, Any] = {}
    hints = typing.get_type_hints(schema, include_extras=False)
    for field in dataclasses.fields(schema):
        if field.default_factory is not dataclasses.MISSING:
            defaults[f"{prefix}{field.name}"] = plain_default(field)
        for candidate in (hints[field.name], *typing.get_args(hints[field.name])):
            if dataclasses.is_dataclass(candidate):
                suffix = ".N." if typing.get_origin(hints[field.name]) is list else "."
                defaults.update(_factory_defaults(candidate, f"{prefix}{field.name}{suffix}"))
    return defaults


def _nested_object(prop: dict, definitions: dict) -> tuple[dict, str] | None:
    """(the object's schema, path suffix) when the property holds a dataclass ("") or a list of them (".N")."""
    if "$ref" in prop:
        return _resolve(prop, definitions), ""
    items = prop.get("items", {})
    if prop.get("type") == "array" and "$ref" in items:
        return _resolve(items, definitions), ".N"
    return None


def _resolve(prop: dict, definitions: dict) -> dict:
    return definitions[prop["$ref"].rsplit("/", 1)[-1]]


def _type(prop: dict, definitions: dict) -> str:
    bounds = [f"{sign} {prop[key]}" for key, sign in BOUNDS if key in prop]
    base = _base_type(prop, definitions)
    return f"{base} {', '.join(bounds)}" if bounds else base


def _base_type(prop: dict, definitions: dict) -> str:
    if "enum" in prop:
        return " | ".join(map(str, prop["enum"]))
    if "const" in prop:
        return str(prop["const"])
    if "anyOf" in prop:
        return " or ".join(_type(option, definitions) for option in prop["anyOf"])
    kind = prop.get("type")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}), definitions)}"
    if kind == "object":
        values = prop.get("additionalProperties")
        return f"mapping to {_type(values, definitions)}" if isinstance(values, dict) else "mapping"
    if "$ref" in prop:
        return "mapping"
    return {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "null"}.get(kind, "any")


def _default(prop: dict) -> str:
    if "default" not in prop:
        return "required"
    value = prop["default"]
    if value == "":
        return '""'
    return value if isinstance(value, str) else json.dumps(value)
