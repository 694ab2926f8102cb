"""The template language of step parameters: tiny on purpose, and with no eval.

    {workflow.NAME}                 a workflow start parameter
    {steps.STEP.outputs.NAME}       an output of an ancestor step (a list for a fan-out step)
    {item} / {item.KEY}             the fan-out item bound to this job
    {{ and }}                       literal braces

A string that is exactly one placeholder keeps the value's type (a list stays a list);
placeholders inside a longer string are formatted with `str()`. Lookup is a walk over
dicts by key: there is no expression, call or attribute access, so a template can read
values but never run code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class TemplateError(ValueError):
    """A template that cannot be parsed or whose name has no value."""


def _parse(text: str) -> list[str | tuple[str, ...]]:
    parts: list[str | tuple[str, ...]] = []
    position = 0
    for match in _TOKEN.finditer(text):
        if match.start() > position:
            parts.append(text[position : match.start()])
        token = match.group(0)
        if token == "{{":
            parts.append("{")
        elif token == "}}":
            parts.append("}")
        elif match.group(1) is None:
            raise TemplateError(f"unbalanced {token!r} in template {text!r} (write {token * 2})")
        else:
            ref = tuple(match.group(1).strip().split("."))
            if not all(_NAME.match(name) for name in ref):
                raise TemplateError(f"bad name {{{match.group(1)}}} in template {text!r}")
            parts.append(ref)
        position = match.end()
    if position < len(text):
        parts.append(text[position:])
    return parts


def references(text: str) -> list[tuple[str, ...]]:
    """The dotted names a template reads, for validation at load time."""
    return [part for part in _parse(text) if isinstance(part, tuple)]


def _lookup(ref: tuple[str, ...], scope: Mapping[str, Any]) -> Any:
    value: Any = scope
    for depth, name in enumerate(ref):
        if isinstance(value, Mapping) and name in value:
            value = value[name]
        else:
            raise TemplateError(f"no value for {{{'.'.join(ref[: depth + 1])}}}")
    return value


def render(value: Any, scope: Mapping[str, Any]) -> Any:
    """Render a parameter value (strings, and strings nested in lists and dicts)."""
    if isinstance(value, str):
        parts = _parse(value)
        if len(parts) == 1 and isinstance(parts[0], tuple):
            return _lookup(parts[0], scope)
        return "".join(p if isinstance(p, str) else str(_lookup(p, scope)) for p in parts)
    if isinstance(value, list):
        return [render(item, scope) for item in value]
    if isinstance(value, tuple):
        return [render(item, scope) for item in value]
    if isinstance(value, dict):
        return {key: render(item, scope) for key, item in value.items()}
    return value


def truth(text: str, scope: Mapping[str, Any]) -> bool:
    """Evaluate a step condition: a template, optionally prefixed by `not `."""
    negate = text.startswith("not ")
    value = render(text[4:] if negate else text, scope)
    if isinstance(value, str):
        result = value.strip().lower() not in ("", "false", "no", "0", "off")
    else:
        result = bool(value)
    return not result if negate else result
