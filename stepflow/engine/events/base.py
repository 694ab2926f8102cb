"""The base of every stored event: what a stream, its version and its time say of each.

Every event is a frozen msgspec Struct tagged with its class name (and its schema version
from version 2 on, see `stepflow.engine.upcasting`), so one decoder reads any of them and the
stored topic is the class name.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar
from uuid import UUID

import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True, tag=True, gc=False):
    # gc=False: an event holds plain data and can never be part of a reference cycle, so the
    # cycle collector need not track it; reading a long log then spends a third less time in GC.
    schema_version: ClassVar[int] = 1  # of the stored shape; a change bumps it (see upcasting)
    originator_id: UUID
    originator_version: int
    timestamp: datetime
    cause: str | None = None
    actor: str | None = None
