"""The options of a config dataclass as --help lists them: name, type, default and meaning, read from pydantic's
JSON schema of the dataclass (the meaning is the docstring under each field)."""

from __future__ import annotations

import dataclasses
import json
import textwrap
import typing
from typing import Any

from pydantic import TypeAdapter

INDENT = "      "


def options_help(schema: type, width: int = 100) -> str:
    """One entry per option, nested ones by their command-line path (models.N.name)."""
    document = TypeAdapter(schema).json_schema()
    lines: list[str] = []
    _describe_object(document, document.get("$defs", {}), "", lines, width, _factory_defaults(schema))
    return "\n".join(lines)


def _factory_defaults(schema: type, prefix: str = "") -> dict[str, Any]:
    """path -> default of the fields whose default comes from a factory, which the JSON schema leaves out."""
    defaults: dict[str, Any] = {}
    hints = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        if field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
            defaults[f"{prefix}{field.name}"] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        for candidate in (hints[field.name], *typing.get_args(hints[field.name])):
            if dataclasses.is_dataclass(candidate):
                suffix = ".N." if typing.get_origin(hints[field.name]) is list else "."
                defaults.update(_factory_defaults(candidate, f"{prefix}{field.name}{suffix}"))
    return defaults


def option_entries(schema: type) -> dict[str, dict[str, Any]]:
    """name -> its JSON schema property (type, default, description), nested names included."""
    document = TypeAdapter(schema).json_schema()
    entries: dict[str, dict[str, Any]] = {}
    _collect(document, document.get("$defs", {}), "", entries)
    return entries


def _collect(node: dict, definitions: dict, prefix: str, entries: dict[str, dict[str, Any]]) -> None:
    for name, prop in node.get("properties", {}).items():
        nested = _nested_object(prop, definitions)
        if nested is not None:
            _collect(nested[0], definitions, f"{prefix}{name}{nested[1]}.", entries)
        else:
            entries[f"{prefix}{name}"] = prop


def _describe_object(node: dict, definitions: dict, prefix: str, lines: list[str], width: int,
                     factory_defaults: dict[str, Any]) -> None:
    for name, prop in node.get("properties", {}).items():
        nested = _nested_object(prop, definitions)
        if nested is not None:
            target, suffix = nested
            header = f"  {prefix}{name}{suffix}.*"
            lines.append(header + (f"  {prop['description']}" if prop.get("description") else ""))
            _describe_object(target, definitions, f"{prefix}{name}{suffix}.", lines, width, factory_defaults)
            continue
        path = f"{prefix}{name}"
        if "default" not in prop and path in factory_defaults:
            prop = {**prop, "default": factory_defaults[path]}
        lines.append(f"  {path} ({_type(prop, definitions)}, default {_default(prop)})")
        description = " ".join(prop.get("description", "").split())
        lines.extend(textwrap.wrap(description, width, initial_indent=INDENT, subsequent_indent=INDENT))


def _nested_object(prop: dict, definitions: dict) -> tuple[dict, str] | None:
    """(the object's schema, path suffix) when the property holds a dataclass (.) or a list of them (.N)."""
    if "$ref" in prop:
        return _resolve(prop, definitions), ""
    items = prop.get("items", {})
    if prop.get("type") == "array" and "$ref" in items:
        return _resolve(items, definitions), ".N"
    return None


def _resolve(prop: dict, definitions: dict) -> dict:
    return definitions[prop["$ref"].rsplit("/", 1)[-1]]


BOUNDS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))


def _type(prop: dict, definitions: dict) -> str:
    bounds = [f"{sign} {prop[key]}" for key, sign in BOUNDS if key in prop]
    return " ".join([_base_type(prop, definitions), ", ".join(bounds)]) if bounds else _base_type(prop, definitions)


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
