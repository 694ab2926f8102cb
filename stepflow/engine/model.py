"""The shape of a workflow definition: frozen msgspec Structs, decoded as they are written.

msgspec enforces every type here (so a wrong type is refused with its `$.path`); what a type
cannot say (unknown parents, cycles, template references) is `stepflow.engine.validation`'s.
Kept apart from loading and checking so the engine's state, events and decisions can hold a
definition without importing the code that reads one from a file.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, get_args

import msgspec

ParameterType = Literal[
    "string", "integer", "number", "boolean", "array_of_strings", "array_of_integers", "object"
]
ExecutionMode = Literal["job", "notification"]  # run by a worker, or by the backend as an HTTP call
Action = Literal["view", "create", "retry", "abort", "delete", "update"]
ACTIONS: tuple[Action, ...] = get_args(Action)


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
