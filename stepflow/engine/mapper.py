"""Stores msgspec events in `eventsourcing`'s recorders without the generic JSON transcoder.

The default `Mapper` turns an event into a dict (`vars()`), then walks it with `JSONTranscoder`
and its registered transcodings; ours encodes the Struct in one msgspec call and decodes it
with the events' one tagged-union codec (`stepflow.engine.events.codec`), which also upcasts
events stored in an older schema version. The stored topic is the event's class name, which
keeps the log readable and renames cheap; the schema version is in the state, not the topic
(see `stepflow.engine.upcasting`). `benchmarks/bench_mapper.py` measures both mappers.
Compression and encryption settings of `eventsourcing` still apply.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import Mapper, StoredEvent

from stepflow.engine import events as ev
from stepflow.engine import snapshots

_SNAPSHOT_TOPIC = snapshots.WorkflowSnapshot.__name__
_encode = ev.codec.encode
_decode_current = ev.codec.fast
_decode_old = ev.codec.decode_old


class MsgspecMapper(Mapper[UUID]):
    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        state = _encode(domain_event)
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
        try:
            return _decode_current(state)
        except msgspec.ValidationError as error:  # a snapshot (rare: once per load), or an old version
            if stored_event.topic == _SNAPSHOT_TOPIC:
                return snapshots.codec.decode(state)
            return _decode_old(state, error)
