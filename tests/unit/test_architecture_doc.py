"""docs/architecture.md matches the code: every class, method and function it names exists;
the path of a `job_completed` message goes broker -> inbox -> command -> aggregate -> events
stored -> outbox -> next order, each step in a module no earlier step did its work in (only
the broker adapter comes back, as the way out); and each crash point it places is checked
in the function it names."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
TEXT = DOC.read_text()
PATH_HEADING = "## The path of one `job_completed` message"

# Modules the doc may name things from without giving their path.
VOCABULARY = ("stepflow.engine.events", "stepflow.engine.commands", "stepflow.engine.ports",
              "stepflow.adapters.protocol", "stepflow.adapters.notify.hooks", "stepflow.projections")

DOTTED = re.compile(r"^[A-Za-z_]\w*(\.\w+)+$")
CALLED = re.compile(r"^([A-Za-z_]\w*)\(\)$")
CLASS = re.compile(r"^[A-Z]\w*$")


def section(heading: str) -> str:
    start = TEXT.index(heading)
    following = [i for i in (TEXT.find("\n## ", start + 1), TEXT.find("\n### ", start + 1)) if i != -1]
    return TEXT[start:min(following, default=len(TEXT))]


def steps() -> list[str]:
    body = section(PATH_HEADING)
    items = re.split(r"\n(?=\d+\. )", body)[1:]
    return [re.split(r"\n\n", item)[0] for item in items]


def module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def modules() -> list[Any]:
    paths = {m for m in re.findall(r"`([\w/]+\.py)`", TEXT) if not m.startswith(("tests/", "docs/"))}
    return [importlib.import_module(name) for name in sorted({*map(module_name, paths), *VOCABULARY})]


def resolve(name: str, where: list[Any]) -> Any:
    head, *rest = name.split(".")
    for module in where:
        if hasattr(module, head):
            value = getattr(module, head)
            for attribute in rest:
                value = getattr(value, attribute)
            return value
    raise AttributeError(name)


def test_every_name_in_the_doc_exists_in_the_code() -> None:
    where = modules()
    missing = []
    for token in sorted(set(re.findall(r"`([^`\n]+)`", TEXT))):
        called = CALLED.match(token)
        name = called.group(1) if called else token
        if token.endswith(".py") or not (called or DOTTED.match(token) or CLASS.match(token)):
            continue
        try:
            resolve(name, where)
        except AttributeError:
            missing.append(token)
    assert missing == []


def test_the_path_goes_forward_from_the_broker_back_to_the_broker() -> None:
    path = steps()
    titles = [re.match(r"\d+\. \*\*(.+?)\*\*", step).group(1) for step in path]  # type: ignore[union-attr]
    assert titles == ["Broker", "Inbox", "Command", "Aggregate", "Decisions", "Events stored", "Outbox",
                      "Next order"]
    primary = [re.search(r"`([\w/]+\.py)`", step).group(1) for step in path]  # type: ignore[union-attr]
    assert primary[0] == primary[-1] == "stepflow/adapters/amqp/backend_broker.py"
    assert len(set(primary[:-1])) == len(primary) - 1, primary  # no step goes back to a module it left


@pytest.mark.parametrize("row", [r for r in section("### Crash points").splitlines() if r.startswith("| `")])
def test_each_crash_point_is_where_the_doc_puts_it(row: str) -> None:
    points_cell, where_cell = row.strip("|").split("|")[:2]
    points = re.findall(r"`(\w+)`", points_cell)
    (function,) = [t for t in re.findall(r"`([\w.]+)`", where_cell) if "." in t]
    source = inspect.getsource(resolve(function, modules()))
    for point in points:
        assert f'FAULT == "{point}"' in source, (point, function)
