"""A registered job handler: the function, and the parameters type read from its annotation.

The annotation is the contract: parameters are validated at the edge into it (a bad order
fails with kind `invalid_parameters`, which no retry fixes), and its JSON schema is what the
worker announces, so the backend and the web view can show what a job type takes.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, get_type_hints

import msgspec

from stepflow.adapters import protocol as p
from stepflow.sdk.context import JobFailed

if TYPE_CHECKING:
    from stepflow.sdk.context import JobContext

Handler = Callable[[Any, "JobContext"], Awaitable[Any]]


class Registered:
    def __init__(self, fn: Handler) -> None:
        self.fn = fn
        hints = get_type_hints(fn)
        first = next(iter(inspect.signature(fn).parameters), None)
        self.params_type: Any = hints.get(first) if first else None
        if self.params_type in (dict, None, Any, inspect.Parameter.empty):
            self.params_type = None

    def params(self, order: p.JobOrder) -> Any:
        """The order's parameters as the handler's type (a dict when it names none)."""
        values = p.from_parameters(order.parameters)
        if self.params_type is None:
            return values
        try:
            return msgspec.convert(values, self.params_type)
        except msgspec.ValidationError as error:
            raise JobFailed(f"invalid parameters: {error}", kind="invalid_parameters") from None

    def schema(self) -> dict[str, Any]:
        """The JSON schema of the parameters type, announced on discovery; {} when there is none."""
        if self.params_type is None:
            return {}
        try:
            return msgspec.json.schema(self.params_type)
        except (TypeError, ValueError):
            return {}


def outputs(result: Any) -> dict[str, Any]:
    """A handler's return value as job outputs."""
    if result is None:
        return {}
    if isinstance(result, msgspec.Struct):
        return msgspec.to_builtins(result)  # type: ignore[no-any-return]
    if isinstance(result, dict):
        return msgspec.to_builtins(result)  # type: ignore[no-any-return]
    raise TypeError(f"a job handler returns a dict or a msgspec Struct, not {type(result).__name__}")
