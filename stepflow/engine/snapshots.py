"""Snapshots: a workflow's whole state at a version, so a long history loads in one read.

The state is a msgspec Struct already, so the snapshot is that state and the version it is
valid at; restoring decodes a fresh copy, never sharing objects with a cached aggregate.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec

from stepflow.engine.state import WorkflowState


class WorkflowSnapshot(msgspec.Struct, frozen=True, kw_only=True, tag=True):
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
