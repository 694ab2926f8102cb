"""What a definition's types cannot say: ids, the step graph, and what each template reads.

A template is checked once, by one set of rules, wherever it is written (step parameters,
conditions, fan-outs, notification requests, hooks); places differ only in the names they
bind (`_Reads`): a step reads its ancestors' outputs and, with a fan-out, `{item}`; a hook
reads any step's outputs and `{run.X}`. A mistake is refused at load time, with the path of
the field, rather than failing a step hours into a run.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from stepflow.engine.graph import ancestors
from stepflow.engine.model import (
    DefinitionError,
    NotificationSpec,
    ParameterSpec,
    StepDefinition,
    WorkflowDefinition,
)
from stepflow.engine.parameters import check_value
from stepflow.engine.templates import TemplateError, references

RUN_FIELDS = ("id", "status", "reason", "definition", "version")  # {run.X} in hooks

_SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def validate_definition(definition: WorkflowDefinition) -> None:
    """The checks a type cannot express. Raises the first `DefinitionError` found."""
    if not _SEMVER.match(definition.version):
        raise DefinitionError("$.version", f"not a semantic version: {definition.version!r}")
    if not definition.steps:
        raise DefinitionError("$.steps", "a workflow needs at least one step")
    params = _check_parameters(definition.parameters)
    _check_steps(definition.steps)
    graph = ancestors(definition)  # refuses cycles on the way
    for i, step in enumerate(definition.steps):
        _check_templates(_step_fields(i, step), _Reads.of_step(definition, step, params, graph[step.id]))
    _check_templates(_hook_fields(definition), _Reads.of_hooks(definition, params))


def _check_parameters(specs: Iterable[ParameterSpec]) -> set[str]:
    params: set[str] = set()
    for i, spec in enumerate(specs):
        if not _IDENT.match(spec.id):
            raise DefinitionError(f"$.parameters[{i}].id", f"not an identifier: {spec.id!r}")
        if spec.id in params:
            raise DefinitionError(f"$.parameters[{i}].id", f"duplicate parameter id {spec.id!r}")
        if spec.default is not None:
            check_value(spec, spec.default, f"$.parameters[{i}].default")
        params.add(spec.id)
    return params


def _check_steps(steps: Sequence[StepDefinition]) -> None:
    index: dict[str, int] = {}
    for i, step in enumerate(steps):
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
    for i, step in enumerate(steps):
        for j, parent in enumerate(step.parents):
            if parent not in index:
                raise DefinitionError(f"$.steps[{i}].parents[{j}]", f"unknown step {parent!r}")
            if parent == step.id:
                raise DefinitionError(f"$.steps[{i}].parents[{j}]", "a step cannot be its own parent")


def _check_mode(i: int, step: StepDefinition) -> None:
    if step.mode == "notification":
        if step.notification is None:
            raise DefinitionError(f"$.steps[{i}].notification", "a notification step needs `notification`")
        if step.parameters:
            raise DefinitionError(f"$.steps[{i}].parameters",
                                  "a notification step takes its request from `notification`, not `parameters`")
    elif step.notification is not None:
        raise DefinitionError(f"$.steps[{i}].notification", "only a step of mode 'notification' takes `notification`")


# --- templates ----------------------------------------------------------------------------


class _Reads(NamedTuple):
    """The names bound where a template is written ({item} is bound per field: `_Field`)."""

    params: Collection[str]  # {workflow.NAME}
    steps: Mapping[str, Collection[str] | None]  # {steps.S.outputs.NAME}: S -> declared outputs (None: any)
    steps_are: str  # what a readable step is, for the refusal: "an ancestor of 'x'"
    run: bool = False  # {run.X}

    @classmethod
    def of_step(cls, definition: WorkflowDefinition, step: StepDefinition, params: Collection[str],
                readable: Collection[str]) -> _Reads:
        steps = {source: definition.step(source).outputs for source in readable}
        return cls(params, steps, f"an ancestor of {step.id!r}")

    @classmethod
    def of_hooks(cls, definition: WorkflowDefinition, params: Collection[str]) -> _Reads:
        # A hook's outputs are not checked against a step's declared `outputs`: that was never
        # refused, and refusing it now would reject definitions that load today.
        return cls(params, dict.fromkeys(step.id for step in definition.steps), "a step of this workflow",
                   run=True)


_Field = tuple[str, Any, bool]  # (path, value, whether {item} is bound there)


def _step_fields(i: int, step: StepDefinition) -> Iterator[_Field]:
    item = step.fan_out is not None
    for key, value in step.parameters.items():
        yield f"$.steps[{i}].parameters.{key}", value, item
    if step.notification is not None:
        for path, value in _notification_fields(f"$.steps[{i}].notification", step.notification):
            yield path, value, item
    if step.condition is not None:
        yield f"$.steps[{i}].condition", step.condition, item
    if step.fan_out is not None:
        yield f"$.steps[{i}].fan_out", step.fan_out, False  # the items come from it


def _hook_fields(definition: WorkflowDefinition) -> Iterator[_Field]:
    for when, specs in (("on_completed", definition.hooks.on_completed), ("on_error", definition.hooks.on_error)):
        for j, spec in enumerate(specs):
            for path, value in _notification_fields(f"$.hooks.{when}[{j}]", spec):
                yield path, value, False


def _notification_fields(path: str, spec: NotificationSpec) -> list[tuple[str, Any]]:
    fields: list[tuple[str, Any]] = [(f"{path}.url", spec.url), (f"{path}.method", spec.method)]
    fields += [(f"{path}.headers.{k}", v) for k, v in spec.headers.items()]
    fields.append((f"{path}.body", spec.body))
    return fields


def _check_templates(fields: Iterable[_Field], reads: _Reads) -> None:
    for path, value, item in fields:
        for text in _strings(value):
            try:
                refs = references(text)
            except TemplateError as error:
                raise DefinitionError(path, str(error)) from None
            for ref in refs:
                _check_reference(ref, path, reads, item=item)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _check_reference(ref: tuple[str, ...], path: str, reads: _Reads, *, item: bool) -> None:
    dotted = ".".join(ref)
    head = ref[0]
    if head == "workflow":
        if len(ref) != 2 or ref[1] not in reads.params:
            raise DefinitionError(path, f"unknown workflow parameter in {{{dotted}}}")
    elif head == "steps":
        if len(ref) < 4 or ref[2] != "outputs":
            raise DefinitionError(path, f"expected {{steps.STEP.outputs.NAME}}, got {{{dotted}}}")
        source = ref[1]
        if source not in reads.steps:
            raise DefinitionError(path, f"{{{dotted}}} refers to {source!r}, which is not {reads.steps_are}")
        declared = reads.steps[source]
        if declared is not None and ref[3] not in declared:
            raise DefinitionError(path, f"step {source!r} declares no output {ref[3]!r}")
    elif head == "item":
        if not item:
            raise DefinitionError(path, "{item} is only bound in a step with fan_out")
    elif head == "run":
        if not reads.run:
            raise DefinitionError(path, f"{{{dotted}}} is only bound in hooks")
        if len(ref) != 2 or ref[1] not in RUN_FIELDS:
            raise DefinitionError(path, f"unknown {{{dotted}}}; run fields: {', '.join(RUN_FIELDS)}")
    else:
        raise DefinitionError(path, f"unknown name {head!r} in {{{dotted}}}")
