"""Schema versions of stored events, and the upcasters that turn old shapes into current ones.

The log is kept forever, so an event's shape may change only in a way every reader can
follow. Adding a field whose default is right for every event stored before it (as
`MessageQuarantined.kind` did) needs no new version, only step 3 below. Anything else (a renamed, removed, retyped or
restructured field, or a new meaning) would make old events decode silently to defaults,
so it gets a new schema version and an upcaster:

1. bump `schema_version` on the Struct and declare it with the versioned tag,
   `class JobCompleted(Event, frozen=True, kw_only=True, tag="JobCompleted.v2")` with
   `schema_version: ClassVar[int] = 2` (the codec refuses, at import, a class whose tag and
   version disagree, or a version without upcasters from 1 up to it);
2. register here `@upcaster("JobCompleted", 1)`: a function from the version-1 JSON object
   (a dict, as decoded from the store) to the version-2 one;
3. refresh `tests/fixtures/event_shapes.json` (`python tests/unit/test_event_shapes.py`):
   that test fails until then, which is what catches a shape changed without a version.
A snapshot holds the state the events made, not events, so an event's new shape leaves
snapshots alone; a change to `WorkflowState` (or what it holds) is a change of
`WorkflowSnapshot`'s shape, with the same recipe (see `stepflow.engine.snapshots`).

Where the version is stored: in the event's msgspec tag, the `"type"` field of the encoded
JSON (`"JobCompleted"` is version 1, `"JobCompleted.v2"` version 2), not in the recorder's
topic. Three reasons:
- the tagged-union decoder then checks the version for free: bytes of the current version
  decode straight into the Struct, exactly as before versions existed, and bytes of any
  other version fail the tag lookup, which is the only moment the slow path (JSON object,
  upcasters, `msgspec.convert`) runs. No version field to read, no cost for current events;
- version 1 is the bare class name, so every event stored before versions existed is
  version 1 with no migration, and its bytes are unchanged;
- topics stay class names, so every `topics=` filter (the outbox's `JobSubmitted`, the
  deadline and hook readers, replay's `WorkflowStarted`) keeps matching all versions of an
  event, and the state column alone says what it holds (a dump, a snapshot, a JSON line).
One visible consequence: `msgspec.to_builtins(event)["type"]` of a versioned event is its
versioned tag (audit entries drop it; replay's divergence dicts show it).

No event has changed shape yet, so no upcaster is registered: every stored type is at
version 1. `tests/fixtures/event_log_legacy.jsonl` holds a `JobCompleted.v0`, a shape no
release wrote, made to prove the read paths; its upcaster lives with that test, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

# (event type name, version it reads) -> function returning that event at the next version
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class UpcastError(ValueError):
    """A stored event in a version this code cannot turn into the current one."""


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register the decorated function as `event_type` version `from_version` -> `from_version + 1`."""

    def register(function: Upcaster) -> Upcaster:
        key = (event_type, from_version)
        if key in UPCASTERS:
            raise ValueError(f"two upcasters for {event_type} version {from_version}")
        UPCASTERS[key] = function
        return function

    return register


def upcast(data: dict[str, Any], event_type: str, version: int, to_version: int) -> dict[str, Any]:
    """Apply the registered upcasters one version at a time; loud when one is missing."""
    if version > to_version:
        raise UpcastError(f"stored {event_type} is version {version}, newer than this code's "
                          f"{to_version}: it was written by a newer stepflow")
    while version < to_version:
        step = UPCASTERS.get((event_type, version))
        if step is None:
            raise UpcastError(f"stored {event_type} is version {version} and this code reads version "
                              f"{to_version}, but no upcaster turns version {version} into {version + 1} "
                              f"(register one with @upcaster({event_type!r}, {version}) in "
                              f"stepflow.engine.upcasting)")
        data = step(data)
        version += 1
    return data


def versioned_tag(name: str, version: int) -> str:
    """The stored `"type"` of an event: the class name for version 1, `Name.vN` otherwise."""
    return name if version == 1 else f"{name}.v{version}"


def parse_tag(tag: str) -> tuple[str, int]:
    """`("JobCompleted", 2)` from `"JobCompleted.v2"`; a bare name is version 1."""
    name, dot_v, number = tag.rpartition(".v")
    if dot_v and number.isdigit():
        return name, int(number)
    return tag, 1
