"""Stores msgspec events in `eventsourcing`'s recorders without the generic JSON transcoder.

The default `Mapper` turns an event into a dict (`vars()`), then walks it with `JSONTranscoder`
and its registered transcodings; ours encodes the Struct in one msgspec call and decodes it
with one tagged-union decoder. The stored topic is the event's tag (its class name), which
keeps the log readable and renames cheap. `benchmarks/bench_mapper.py` measures both.
Compression and encryption settings of `eventsourcing` still apply.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import Mapper, StoredEvent

from stepflow.engine.events import (
    ActionRefused,
    MessageQuarantined,
    MessageSuspected,
    SuspicionCleared,
    WorkflowEvent,
)
from stepflow.engine.snapshots import WorkflowSnapshot

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
    WorkflowEvent | WorkflowSnapshot | MessageQuarantined | MessageSuspected | SuspicionCleared | ActionRefused
)


class MsgspecMapper(Mapper[UUID]):
    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        state = _encoder.encode(domain_event)
        if self.compressor:
            state = self.compressor.compress(state)
        if self.cipher:
            state = self.cipher.encrypt(state)
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=type(domain_event).__name__,
            state=state,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        state = stored_event.state
        if self.cipher:
            state = self.cipher.decrypt(state)
        if self.compressor:
            state = self.compressor.decompress(state)
        return _decoder.decode(state)
