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


def _from_msgspec(error: msgspec.ValidationError | msgspec.DecodeError) -> DefinitionError:
    text = str(error)
    # msgspec says "... - at `$.path`", or "... - at `key` in `$.path`" for a bad dict key.
    match = re.search(r" - at (`key` in )?`(\$[^`]*)`$", text)
    if match:
        reason = text[: match.start()] + (" (in a key)" if match.group(1) else "")
        return DefinitionError(match.group(2), reason)
    return DefinitionError("$", text)


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
    """Load a `.json` or `.toml` definition file."""
    path = Path(path)
    format: Literal["json", "toml"] = "toml" if path.suffix == ".toml" else "json"
    return parse_definition(path.read_bytes(), format=format)


def build_definition(data: Mapping[str, Any]) -> WorkflowDefinition:
    """Build a definition from plain Python data, with the same validation as a file."""
    try:
        definition = msgspec.convert(data, WorkflowDefinition)
    except msgspec.ValidationError as error:
        raise _from_msgspec(error) from None
    validate_definition(definition)
    return definition
