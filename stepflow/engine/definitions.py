"""Workflow definitions, loaded from JSON, TOML or Python: the one import for their users.

A definition is decoded by msgspec (so type errors come with msgspec's `$.path`) and then
checked for what a type system cannot say (`stepflow.engine.validation`). Every refusal is a
`DefinitionError` naming the path of the bad field, so an operator can fix the file without
reading our code.

The pieces live in small modules (`model`: the Structs, `graph`: step order, `validation`,
`parameters`: start values); this module loads, and re-exports what callers outside the
engine use, so `from stepflow.engine.definitions import ...` stays the public door.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from stepflow.engine.graph import topological_order
from stepflow.engine.model import (
    ACTIONS,
    Action,
    DefinitionError,
    ExecutionMode,
    Hooks,
    NotificationSpec,
    ParameterSpec,
    ParameterType,
    RetryPolicy,
    StepDefinition,
    WorkflowDefinition,
)
from stepflow.engine.parameters import coerce_parameter, resolve_parameters
from stepflow.engine.validation import validate_definition

__all__ = [
    "ACTIONS",
    "Action",
    "DefinitionError",
    "ExecutionMode",
    "Hooks",
    "NotificationSpec",
    "ParameterSpec",
    "ParameterType",
    "RetryPolicy",
    "StepDefinition",
    "WorkflowDefinition",
    "build_definition",
    "coerce_parameter",
    "load_definition",
    "parse_definition",
    "resolve_parameters",
    "topological_order",
    "validate_definition",
]

_json_decoder = msgspec.json.Decoder(WorkflowDefinition)


FORMATS: dict[str, Literal["json", "toml"]] = {".toml": "toml", ".json": "json"}


def _from_msgspec(error: msgspec.ValidationError | msgspec.DecodeError) -> DefinitionError:
    text = str(error)
    # msgspec says "... - at `$.path`", or "... - at `key` in `$.path`" for a bad dict key.
    match = re.search(r" - at (`key` in )?`(\$[^`]*)`$", text)
    if match:
        reason = text[: match.start()] + (" (in a key)" if match.group(1) else "")
        if reason.startswith("Invalid enum value"):  # msgspec names the bad word, not the good ones
            choices = _choices_at(match.group(2), key=bool(match.group(1)))
            if choices:
                reason += f"; expected one of: {', '.join(map(str, choices))}"
        return DefinitionError(match.group(2), reason)
    return DefinitionError("$", text)


def _choices_at(path: str, *, key: bool = False) -> tuple[Any, ...]:
    """The words a `Literal` at `path` of a definition accepts (a dict's keys with `key`), or ()."""
    info: Any = msgspec.inspect.type_info(WorkflowDefinition)
    for name, index in re.findall(r"\.([A-Za-z_]\w*)|\[(\d+)\]", path):
        info = _inside(info, name or None, index or None)
        if info is None:
            return ()
    if key:
        info = info.key_type if isinstance(info, msgspec.inspect.DictType) else None
    return info.values if isinstance(info, msgspec.inspect.LiteralType) else ()


def _inside(info: Any, name: str | None, index: str | None) -> Any:
    """The type of field `name` (or item `index`) of `info`, through `X | None`; None if unknown."""
    if isinstance(info, msgspec.inspect.UnionType):
        found = [t for t in (_inside(t, name, index) for t in info.types) if t is not None]
        return found[0] if found else None
    if name is not None and isinstance(info, msgspec.inspect.StructType):
        return next((f.type for f in info.fields if f.encode_name == name), None)
    if name is not None and isinstance(info, msgspec.inspect.DictType):
        return info.value_type
    if index is not None and isinstance(info, msgspec.inspect.ListType | msgspec.inspect.VarTupleType):
        return info.item_type
    return None


def parse_definition(data: bytes | str, *, format: Literal["json", "toml"] = "json") -> WorkflowDefinition:
    """Decode and validate a definition; raise `DefinitionError` naming the bad field."""
    try:
        if format == "toml":
            definition = msgspec.toml.decode(data, type=WorkflowDefinition)
        else:
            definition = _json_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise _from_msgspec(error) from None
    validate_definition(definition)
    return definition


def load_definition(path: str | Path) -> WorkflowDefinition:
    """Load a `.json` or `.toml` definition file; any other suffix is refused by name, before
    reading (a YAML file read as JSON was reported as "JSON is malformed")."""
    path = Path(path)
    format = FORMATS.get(path.suffix.lower())
    if format is None:
        shown = f"{path.suffix!r} " if path.suffix else ""
        raise DefinitionError("$", f"unsupported definition format {shown}(use .toml or .json)")
    return parse_definition(path.read_bytes(), format=format)


def build_definition(data: Mapping[str, Any]) -> WorkflowDefinition:
    """Build a definition from plain Python data, with the same validation as a file."""
    try:
        definition = msgspec.convert(data, WorkflowDefinition)
    except msgspec.ValidationError as error:
        raise _from_msgspec(error) from None
    validate_definition(definition)
    return definition
