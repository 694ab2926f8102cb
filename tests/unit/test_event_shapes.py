"""No stored shape changes without a new schema version (or a deliberate, compatible record).

    python tests/unit/test_event_shapes.py    # rewrite tests/fixtures/event_shapes.json

`tests/fixtures/event_shapes.json` records the JSON Schema of every stored type (events and
the snapshot, nested Structs inlined, docstrings left out) under its versioned tag. A
field renamed, removed or retyped at the same version would make the events stored before
decode silently to defaults; this test is what notices. When it fails:
- the change is additive (a new field whose default is right for every event stored before
  it) or only widens a type: refresh the record;
- anything else: bump the type's `schema_version`, register an upcaster (see
  `stepflow.engine.upcasting`), then refresh the record. A change to `WorkflowState` shows
  as a change of `WorkflowSnapshot`: see `stepflow.engine.snapshots`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

if __name__ == "__main__":  # run as a script: this checkout's stepflow, not an installed one
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stepflow.engine import events as ev
from stepflow.engine.snapshots import WorkflowSnapshot
from stepflow.engine.upcasting import versioned_tag

RECORD = Path(__file__).resolve().parents[1] / "fixtures" / "event_shapes.json"
STORED: tuple[type[msgspec.Struct], ...] = (*ev.STORED_EVENTS, WorkflowSnapshot)


def shapes() -> dict[str, Any]:
    """Versioned tag -> the type's JSON Schema, self-contained."""
    schemas, components = msgspec.json.schema_components(STORED, ref_template="{name}")

    def inline(node: Any, seen: tuple[str, ...] = ()) -> Any:
        if isinstance(node, list):
            return [inline(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if ref is not None:
            return node if ref in seen else inline(components[ref], (*seen, ref))
        out = {key: inline(value, seen) for key, value in node.items()
               if key not in ("title", "description", "properties")}
        if "properties" in node:
            out["properties"] = {name: inline(value, seen) for name, value in node["properties"].items()}
        return out

    tagged = {versioned_tag(cls.__name__, getattr(cls, "schema_version", 1)): inline(schema)
              for cls, schema in zip(STORED, schemas, strict=True)}
    return msgspec.json.decode(msgspec.json.encode(tagged))  # as the record reads: tuples are lists


def test_no_stored_shape_changed_without_a_new_version() -> None:
    recorded = msgspec.json.decode(RECORD.read_bytes())
    now = shapes()
    changed = sorted(tag for tag in recorded.keys() & now.keys() if recorded[tag] != now[tag])
    assert not changed, (f"{changed} changed shape at the same schema version: events stored before "
                         f"would decode differently. See {__file__}'s docstring.")
    assert sorted(now) == sorted(recorded), (
        f"new or re-versioned types {sorted(now.keys() ^ recorded.keys())}: "
        "refresh the record with `python tests/unit/test_event_shapes.py`")


def test_every_stored_type_is_in_the_record() -> None:
    names = {tag.split(".v")[0] for tag in msgspec.json.decode(RECORD.read_bytes())}
    assert {"JobCompleted", "WorkflowStarted", "MessageQuarantined", "WorkflowSnapshot"} <= names
    assert len(names) == len(STORED) == 27  # 25 + WorkerOrdered + WorkflowNumbered


if __name__ == "__main__":
    RECORD.write_bytes(msgspec.json.format(msgspec.json.encode(shapes(), order="sorted"), indent=1) + b"\n")
