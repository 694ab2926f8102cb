"""Snapshots: a workflow's whole state at a version, so a long history loads in one read.

The state is a msgspec Struct already, so the snapshot is that state and the version it is
valid at; restoring decodes a fresh copy, never sharing objects with a cached aggregate.

A snapshot is stored state, so it has a schema version like an event (read with the same
`VersionedCodec`). A change to the shape of `WorkflowState` (or of what it holds: jobs,
steps, the definition) bumps `WorkflowSnapshot.schema_version`, with an upcaster for the
old snapshot, as for events (`stepflow.engine.upcasting`). Snapshots are only a cache of
the events, so the other way out is to delete the snapshots table: `eventsourcing` then
folds the whole history, and takes new snapshots as workflows grow. Changing an event's
shape alone leaves snapshots untouched: they hold the state the events made, not events.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID

import msgspec

from stepflow.engine.codec import VersionedCodec
from stepflow.engine.state import WorkflowState


class WorkflowSnapshot(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    schema_version: ClassVar[int] = 1  # of the stored shape, state included (see above)
    originator_id: UUID
    originator_version: int
    timestamp: datetime
    state: WorkflowState

    @classmethod
    def take(cls, aggregate: Any) -> WorkflowSnapshot:
        return cls(
            originator_id=aggregate.id,
            originator_version=aggregate.version,
            timestamp=datetime.now(UTC),
            state=_copy(aggregate.state),
        )

    def restore(self) -> WorkflowState:
        return _copy(self.state)


def _copy(state: WorkflowState) -> WorkflowState:
    return msgspec.json.decode(msgspec.json.encode(state), type=WorkflowState)


codec = VersionedCodec((WorkflowSnapshot,))
