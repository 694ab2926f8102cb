"""Workflow definitions: the typed shape of a workflow, loaded from JSON, TOML or Python.

A definition is decoded by msgspec (so type errors come with msgspec's `$.path`) and then
checked for what a type system cannot say: unknown parents, cycles, duplicate ids and
template references. Every refusal is a `DefinitionError` naming the path of the bad field,
so an operator can fix the file without reading our code.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from stepflow.engine.templates import TemplateError, references

ParameterType = Literal[
    "string", "integer", "number", "boolean", "array_of_strings", "array_of_integers", "object"
]
ExecutionMode = Literal["job", "notification"]  # run by a worker, or by the backend as an HTTP call
Action = Literal["view", "create", "retry", "abort", "delete", "update"]

_SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class DefinitionError(ValueError):
    """A definition or a set of start parameters that stepflow refuses, with where and why."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{message} - at `{path}`")
        self.path = path
        self.reason = message


class ParameterSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    type: ParameterType = "string"
    label: str = ""
    default: Any = None
    required: bool = True


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How an errored job is tried again: `max_attempts` counts the first try."""

    max_attempts: int = 1
    backoff_s: float = 1.0
    backoff_multiplier: float = 2.0
    max_backoff_s: float = 300.0
    non_retryable: tuple[str, ...] = ()

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before `attempt` (2 = first retry)."""
        delay = self.backoff_s * self.backoff_multiplier ** max(0, attempt - 2)
        return min(delay, self.max_backoff_s)


class NotificationSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An HTTP call the backend makes itself; every field is a template.

    A string `body` is sent as it is; any other body is sent as JSON. A 2xx answer is
    success, anything else (or no answer) an error that the step's retry policy handles.
    """

    url: str
    method: str = "POST"
    headers: dict[str, str] = {}
    body: Any = None

    def as_parameters(self) -> dict[str, Any]:
        return {"method": self.method, "url": self.url, "headers": dict(self.headers), "body": self.body}


class Hooks(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Notifications the backend sends when a workflow ends (at least once; failures logged)."""

    on_completed: tuple[NotificationSpec, ...] = ()
    on_error: tuple[NotificationSpec, ...] = ()


class StepDefinition(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    job_type: str
    label: str = ""
    parameters: dict[str, Any] = {}
    parents: tuple[str, ...] = ()
    condition: str | None = None
    allow_failure: bool = False
    fan_out: str | None = None
    retry: RetryPolicy = RetryPolicy()
    timeout_s: float | None = None
    outputs: tuple[str, ...] | None = None
    mode: ExecutionMode = "job"
    notification: NotificationSpec | None = None

    @property
    def job_parameters(self) -> dict[str, Any]:
        """What each job's parameters are rendered from: the request of a notification step."""
        if self.mode == "notification" and self.notification is not None:
            return self.notification.as_parameters()
        return self.parameters


class WorkflowDefinition(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, dict=True):
    identifier: str
    version: str = "1.0.0"
    label: str = ""
    tags: tuple[str, ...] = ()
    reference: str | None = None
    parameters: tuple[ParameterSpec, ...] = ()
    steps: tuple[StepDefinition, ...]
    rights: dict[Action, tuple[str, ...]] = {}
    hooks: Hooks = Hooks()

    def step(self, step_id: str) -> StepDefinition:
        try:
            return self._steps_by_id[step_id]
        except KeyError:
            raise KeyError(step_id) from None

    @functools.cached_property
    def _steps_by_id(self) -> dict[str, StepDefinition]:
        # `decide` looks up every step after every event: a scan made that O(steps^2)
        # (102 ms per step at 1,000 steps); `dict=True` above is what lets this be cached.
        return {step.id: step for step in self.steps}


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


def validate_definition(definition: WorkflowDefinition) -> None:
    """The checks a type cannot express. Raises the first `DefinitionError` found."""
    if not _SEMVER.match(definition.version):
        raise DefinitionError("$.version", f"not a semantic version: {definition.version!r}")
    if not definition.steps:
        raise DefinitionError("$.steps", "a workflow needs at least one step")
    params: dict[str, ParameterSpec] = {}
    for i, spec in enumerate(definition.parameters):
        if not _IDENT.match(spec.id):
            raise DefinitionError(f"$.parameters[{i}].id", f"not an identifier: {spec.id!r}")
        if spec.id in params:
            raise DefinitionError(f"$.parameters[{i}].id", f"duplicate parameter id {spec.id!r}")
        if spec.default is not None:
            check_value(spec, spec.default, f"$.parameters[{i}].default")
        params[spec.id] = spec
    index: dict[str, int] = {}
    for i, step in enumerate(definition.steps):
        if not _IDENT.match(step.id):
            raise DefinitionError(f"$.steps[{i}].id", f"not an identifier: {step.id!r}")
        if step.id in index:
            raise DefinitionError(f"$.steps[{i}].id", f"duplicate step id {step.id!r}")
        index[step.id] = i
        if not step.job_type:
            raise DefinitionError(f"$.steps[{i}].job_type", "a step needs a job type")
        if step.retry.max_attempts < 1:
            raise DefinitionError(f"$.steps[{i}].retry.max_attempts", "must be at least 1")
        if step.timeout_s is not None and step.timeout_s <= 0:
            raise DefinitionError(f"$.steps[{i}].timeout_s", "must be positive")
        _check_mode(i, step)
    for i, step in enumerate(definition.steps):
        for j, parent in enumerate(step.parents):
            if parent not in index:
                raise DefinitionError(f"$.steps[{i}].parents[{j}]", f"unknown step {parent!r}")
            if parent == step.id:
                raise DefinitionError(f"$.steps[{i}].parents[{j}]", "a step cannot be its own parent")
    ancestors = _ancestors(definition)  # refuses cycles on the way
    for i, step in enumerate(definition.steps):
        _check_templates(definition, i, step, params, ancestors[step.id])
    _check_hooks(definition, params)


def _check_mode(i: int, step: StepDefinition) -> None:
    if step.mode == "notification":
        if step.notification is None:
            raise DefinitionError(f"$.steps[{i}].notification", "a notification step needs `notification`")
        if step.parameters:
            raise DefinitionError(f"$.steps[{i}].parameters",
                                  "a notification step takes its request from `notification`, not `parameters`")
    elif step.notification is not None:
        raise DefinitionError(f"$.steps[{i}].notification", "only a step of mode 'notification' takes `notification`")


RUN_FIELDS = ("id", "status", "reason", "definition", "version")  # {run.X} in hooks


def _notification_fields(path: str, spec: NotificationSpec) -> list[tuple[str, Any]]:
    fields: list[tuple[str, Any]] = [(f"{path}.url", spec.url), (f"{path}.method", spec.method)]
    fields += [(f"{path}.headers.{k}", v) for k, v in spec.headers.items()]
    fields.append((f"{path}.body", spec.body))
    return fields


def _check_hooks(definition: WorkflowDefinition, params: Mapping[str, ParameterSpec]) -> None:
    """Hook templates may read parameters, any step's outputs and `{run.X}` (id, status, ...)."""
    steps = {step.id for step in definition.steps}
    for when, specs in (("on_completed", definition.hooks.on_completed), ("on_error", definition.hooks.on_error)):
        for j, spec in enumerate(specs):
            for path, value in _notification_fields(f"$.hooks.{when}[{j}]", spec):
                for text in _strings(value):
                    try:
                        refs = references(text)
                    except TemplateError as error:
                        raise DefinitionError(path, str(error)) from None
                    for ref in refs:
                        dotted = ".".join(ref)
                        if ref[0] == "run":
                            if len(ref) != 2 or ref[1] not in RUN_FIELDS:
                                raise DefinitionError(path, f"unknown {{{dotted}}}; run fields: {', '.join(RUN_FIELDS)}")
                        elif ref[0] == "workflow":
                            if len(ref) != 2 or ref[1] not in params:
                                raise DefinitionError(path, f"unknown workflow parameter in {{{dotted}}}")
                        elif ref[0] == "steps":
                            if len(ref) < 4 or ref[2] != "outputs" or ref[1] not in steps:
                                raise DefinitionError(path, f"expected {{steps.STEP.outputs.NAME}} of a known step, got {{{dotted}}}")
                        else:
                            raise DefinitionError(path, f"unknown name {ref[0]!r} in {{{dotted}}}")


def topological_order(definition: WorkflowDefinition) -> list[str]:
    """Step ids, parents first, ties in definition order; a cycle is a `DefinitionError`."""
    index = {step.id: i for i, step in enumerate(definition.steps)}
    remaining = {step.id: set(step.parents) for step in definition.steps}
    order: list[str] = []
    while remaining:
        ready = sorted((s for s, ps in remaining.items() if not ps), key=index.__getitem__)
        if not ready:
            cycle = sorted(remaining, key=index.__getitem__)
            first = cycle[0]
            raise DefinitionError(
                f"$.steps[{index[first]}].parents",
                f"cycle between steps {', '.join(repr(s) for s in cycle)}",
            )
        for step_id in ready:
            order.append(step_id)
            del remaining[step_id]
        for parents in remaining.values():
            parents.difference_update(ready)
    return order


def _ancestors(definition: WorkflowDefinition) -> dict[str, set[str]]:
    parents = {step.id: step.parents for step in definition.steps}
    result: dict[str, set[str]] = {}
    for step_id in topological_order(definition):
        found: set[str] = set()
        for parent in parents[step_id]:
            found.add(parent)
            found |= result[parent]
        result[step_id] = found
    return result


def _check_templates(
    definition: WorkflowDefinition,
    i: int,
    step: StepDefinition,
    params: Mapping[str, ParameterSpec],
    ancestors: set[str],
) -> None:
    fields: list[tuple[str, Any]] = [
        (f"$.steps[{i}].parameters.{k}", v) for k, v in step.parameters.items()
    ]
    if step.notification is not None:
        fields += _notification_fields(f"$.steps[{i}].notification", step.notification)
    if step.condition is not None:
        fields.append((f"$.steps[{i}].condition", step.condition))
    if step.fan_out is not None:
        fields.append((f"$.steps[{i}].fan_out", step.fan_out))
    for path, value in fields:
        for text in _strings(value):
            try:
                refs = references(text)
            except TemplateError as error:
                raise DefinitionError(path, str(error)) from None
            for ref in refs:
                _check_reference(definition, step, ref, path, params, ancestors)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _check_reference(
    definition: WorkflowDefinition,
    step: StepDefinition,
    ref: tuple[str, ...],
    path: str,
    params: Mapping[str, ParameterSpec],
    ancestors: set[str],
) -> None:
    dotted = ".".join(ref)
    head = ref[0]
    if head == "workflow":
        if len(ref) != 2 or ref[1] not in params:
            raise DefinitionError(path, f"unknown workflow parameter in {{{dotted}}}")
    elif head == "steps":
        if len(ref) < 4 or ref[2] != "outputs":
            raise DefinitionError(path, f"expected {{steps.STEP.outputs.NAME}}, got {{{dotted}}}")
        source = ref[1]
        if source not in ancestors:
            raise DefinitionError(
                path, f"{{{dotted}}} refers to {source!r}, which is not an ancestor of {step.id!r}"
            )
        declared = definition.step(source).outputs
        if declared is not None and ref[3] not in declared:
            raise DefinitionError(path, f"step {source!r} declares no output {ref[3]!r}")
    elif head == "item":
        if step.fan_out is None or path.endswith(".fan_out"):
            raise DefinitionError(path, "{item} is only bound in a step with fan_out")
    else:
        raise DefinitionError(path, f"unknown name {head!r} in {{{dotted}}}")


_TYPE_CHECKS: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array_of_strings": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "array_of_integers": lambda v: isinstance(v, list)
    and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
    "object": lambda v: isinstance(v, dict),
}


def check_value(spec: ParameterSpec, value: Any, path: str) -> None:
    if not _TYPE_CHECKS[spec.type](value):
        raise DefinitionError(path, f"expected {spec.type}, got {type(value).__name__} {value!r}")


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
        check_value(spec, value, path)
        resolved[spec.id] = value
    return resolved


def coerce_parameter(spec: ParameterSpec, text: str) -> Any:
    """Turn a command-line `k=v` text into the parameter's type."""
    path = f"$.parameters.{spec.id}"
    try:
        if spec.type == "string":
            return text
        if spec.type == "integer":
            return int(text)
        if spec.type == "number":
            return float(text)
        if spec.type == "boolean":
            lowered = text.lower()
            if lowered in ("true", "yes", "1", "on"):
                return True
            if lowered in ("false", "no", "0", "off"):
                return False
            raise ValueError(text)
        if spec.type == "array_of_strings":
            if text.startswith("["):
                return msgspec.json.decode(text, type=list[str])
            return [part for part in text.split(",") if part]
        if spec.type == "array_of_integers":
            if text.startswith("["):
                return msgspec.json.decode(text, type=list[int])
            return [int(part) for part in text.split(",") if part]
        return msgspec.json.decode(text, type=dict[str, Any])
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise DefinitionError(path, f"expected {spec.type}, got {text!r}") from None
