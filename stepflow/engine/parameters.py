"""Workflow start parameters: each declared type, a value's check, and command-line text.

A parameter's type is a word in the definition (`integer`, `array_of_strings`, ...), and
each word names the Python type msgspec checks a value against, so a value is accepted by
the same rules whether it came from JSON, TOML, HTTP or a Python caller. Refusals are
`DefinitionError`s at the parameter's path (`$.parameters.NAME`, or the declaration's
`$.parameters[i].default`), never msgspec's own path inside the value: the operator fixes a
parameter, not a position in it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from stepflow.engine.model import DefinitionError, ParameterSpec, ParameterType, WorkflowDefinition

# `int | float` keeps an integer an integer; strict conversion refuses a bool for a number.
PYTHON_TYPES: dict[ParameterType, Any] = {
    "string": str,
    "integer": int,
    "number": int | float,
    "boolean": bool,
    "array_of_strings": list[str],
    "array_of_integers": list[int],
    "object": dict[str, Any],
}


def check_value(spec: ParameterSpec, value: Any, path: str) -> Any:
    """`value` as the parameter's type (a list stays a list), or a `DefinitionError` at `path`."""
    try:
        return msgspec.convert(value, PYTHON_TYPES[spec.type])
    except msgspec.ValidationError:
        raise DefinitionError(path, f"expected {spec.type}, got {type(value).__name__} {value!r}") from None


def resolve_parameters(definition: WorkflowDefinition, given: Mapping[str, Any]) -> dict[str, Any]:
    """Start parameters checked against the definition, defaults filled in.

    Refuses unknown names, missing required values and wrong types, so nothing is stored
    for a start that could never run.
    """
    specs = {spec.id: spec for spec in definition.parameters}
    for name in given:
        if name not in specs:
            raise DefinitionError(f"$.parameters.{name}", f"unknown parameter {name!r}")
    resolved: dict[str, Any] = {}
    for spec in definition.parameters:
        path = f"$.parameters.{spec.id}"
        if spec.id in given:
            value = given[spec.id]
        elif spec.default is not None:
            value = spec.default
        elif spec.required:
            raise DefinitionError(path, f"missing required parameter {spec.id!r}")
        else:
            continue
        resolved[spec.id] = check_value(spec, value, path)
    return resolved


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise ValueError(text)


def _array(of: type) -> Callable[[str], list[Any]]:
    """JSON when it looks like JSON (`["a,b", "c"]`), else comma-separated (`a,b,c`)."""

    def parse(text: str) -> list[Any]:
        if text.startswith("["):
            items: list[Any] = msgspec.json.decode(text, type=list[of])  # type: ignore[valid-type]
            return items
        return [of(part) for part in text.split(",") if part]

    return parse


_FROM_TEXT: dict[ParameterType, Callable[[str], Any]] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": _boolean,
    "array_of_strings": _array(str),
    "array_of_integers": _array(int),
    "object": lambda text: msgspec.json.decode(text, type=dict[str, Any]),
}


def coerce_parameter(spec: ParameterSpec, text: str) -> Any:
    """Turn a command-line `k=v` text into the parameter's type."""
    try:
        return _FROM_TEXT[spec.type](text)
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise DefinitionError(f"$.parameters.{spec.id}", f"expected {spec.type}, got {text!r}") from None
