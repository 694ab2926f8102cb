"""The versioned codec: current events as before, old versions upcast, the rest refused loudly.

`Shipment` (version 3) stands for an event whose shape changed twice: version 1 had `dest`,
version 2 renamed it `destination`, version 3 made `items` a list of objects.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID

import msgspec
import pytest
from eventsourcing.persistence import StoredEvent

from stepflow.engine import events as ev
from stepflow.engine import snapshots
from stepflow.engine.codec import VersionedCodec
from stepflow.engine.definitions import build_definition
from stepflow.engine.mapper import MsgspecMapper
from stepflow.engine.upcasting import UPCASTERS, UpcastError, parse_tag, upcaster, versioned_tag

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
WF = UUID(int=7)


class Item(msgspec.Struct, frozen=True):
    sku: str
    count: int


class Shipment(msgspec.Struct, frozen=True, kw_only=True, tag="Shipment.v3"):
    schema_version: ClassVar[int] = 3
    destination: str
    items: list[Item] = []  # a default: read as version 3, an old event would silently lose it


class Parcel(msgspec.Struct, frozen=True, kw_only=True, tag=True):  # still version 1
    weight: float


def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    data["destination"] = data.pop("dest")
    return data


def v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "items": [{"sku": sku, "count": n} for sku, n in data["items"].items()]}


@pytest.fixture
def codec(monkeypatch: pytest.MonkeyPatch) -> VersionedCodec:
    monkeypatch.setitem(UPCASTERS, ("Shipment", 1), v1_to_v2)
    monkeypatch.setitem(UPCASTERS, ("Shipment", 2), v2_to_v3)
    return VersionedCodec((Shipment, Parcel))


def test_current_versions_decode_straight(codec: VersionedCodec) -> None:
    shipment = Shipment(destination="Lyon", items=[Item("a", 2)])
    data = codec.encode(shipment)
    assert data.startswith(b'{"type":"Shipment.v3",')
    assert codec.fast(data) == codec.decode(data) == shipment
    assert codec.encode(Parcel(weight=1.5)) == b'{"type":"Parcel","weight":1.5}'  # version 1: the bare name


def test_every_older_version_is_upcast(codec: VersionedCodec) -> None:
    expected = Shipment(destination="Lyon", items=[Item("a", 2), Item("b", 1)])
    v1 = b'{"type":"Shipment","dest":"Lyon","items":{"a":2,"b":1}}'  # stored before versions existed
    v2 = b'{"type":"Shipment.v2","destination":"Lyon","items":{"a":2,"b":1}}'
    for old in (v1, v2):
        with pytest.raises(msgspec.ValidationError):
            codec.fast(old)  # so hot loops take `decode_old` only for these
        assert codec.decode(old) == expected


def test_an_old_version_without_its_upcaster_fails_loudly(codec: VersionedCodec,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(UPCASTERS, ("Shipment", 1))
    with pytest.raises(UpcastError, match=r"Shipment is version 1 .* no upcaster turns version 1 into 2"):
        codec.decode(b'{"type":"Shipment","dest":"Lyon","items":{}}')
    with pytest.raises(UpcastError, match="version 0 into 1"):
        codec.decode(b'{"type":"Parcel.v0","kilos":1.5}')


def test_what_no_version_explains_is_refused_as_before(codec: VersionedCodec) -> None:
    with pytest.raises(UpcastError, match="newer stepflow"):
        codec.decode(b'{"type":"Shipment.v4","destination":"Lyon"}')
    with pytest.raises(msgspec.ValidationError, match=r"Expected `float`, got `str` - at `\$.weight`"):
        codec.decode(b'{"type":"Parcel","weight":"heavy"}')  # bad data at the current version
    with pytest.raises(msgspec.ValidationError, match="Invalid value 'Crate'"):
        codec.decode(b'{"type":"Crate"}')  # a type outside the set
    with pytest.raises(msgspec.DecodeError):
        codec.decode(b'{"type":')


def test_an_upcast_that_does_not_fit_the_current_shape_says_so(codec: VersionedCodec,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(UPCASTERS, ("Shipment", 2), lambda data: data)  # forgot to restructure items
    with pytest.raises(UpcastError, match=r"Shipment version 2, upcast to version 3, does not fit .*items"):
        codec.decode(b'{"type":"Shipment.v2","destination":"Lyon","items":{"a":2}}')


def test_a_class_must_declare_its_version_in_its_tag_and_have_upcasters_to_it() -> None:
    class Wrong(msgspec.Struct, tag=True):
        schema_version: ClassVar[int] = 2

    with pytest.raises(TypeError, match="declare it with tag='Wrong.v2'"):
        VersionedCodec((Wrong,))
    with pytest.raises(TypeError, match=r"Shipment is schema version 3, .* from version\(s\) \[1, 2\]"):
        VersionedCodec((Shipment,))


def test_tags_and_the_registry() -> None:
    assert [versioned_tag("JobCompleted", v) for v in (0, 1, 2)] == [
        "JobCompleted.v0", "JobCompleted", "JobCompleted.v2"]
    assert [parse_tag(t) for t in ("JobCompleted", "JobCompleted.v2", "JobCompleted.v0", "A.vx")] == [
        ("JobCompleted", 1), ("JobCompleted", 2), ("JobCompleted", 0), ("A.vx", 1)]
    try:
        upcaster("Parcel", 1)(v1_to_v2)
        with pytest.raises(ValueError, match="two upcasters for Parcel version 1"):
            upcaster("Parcel", 1)(v2_to_v3)
    finally:
        del UPCASTERS[("Parcel", 1)]


def test_stored_events_are_all_version_1_and_their_bytes_unchanged() -> None:
    assert set(ev.codec.versions.values()) == {1}  # no upcaster is needed yet
    event = ev.JobCompleted(originator_id=WF, originator_version=3, timestamp=AT, job_id="j", outputs={"n": 1})
    assert ev.encode(event) == (
        b'{"type":"JobCompleted","originator_id":"00000000-0000-0000-0000-000000000007","originator_version":3,'
        b'"timestamp":"2024-05-01T12:00:00Z","cause":null,"actor":null,"job_id":"j","outputs":{"n":1},'
        b'"destination_paths":[],"execution_duration":null,"worker":null,"digest":null}')
    assert ev.decode(ev.encode(event)) == event


def test_the_mapper_reads_every_stored_type_and_snapshots_with_the_one_codec(
    memory_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    mapper = MsgspecMapper(transcoder=memory_engine.mapper.transcoder)
    quarantined = ev.MessageQuarantined(originator_id=WF, originator_version=1, timestamp=AT,
                                        message_id=None, queue="q", reason="bad")
    assert mapper.to_domain_event(mapper.to_stored_event(quarantined)) == quarantined
    definition = build_definition({"identifier": "one", "steps": [{"id": "a", "job_type": "a"}]})
    workflow = memory_engine.load(memory_engine.start_workflow(definition))
    snapshot = snapshots.WorkflowSnapshot.take(workflow)
    stored = mapper.to_stored_event(snapshot)
    assert stored.topic == "WorkflowSnapshot" and mapper.to_domain_event(stored) == snapshot
    old = ev.encode(ev.JobCompleted(originator_id=WF, originator_version=3, timestamp=AT, job_id="j"))
    old = old.replace(b'"type":"JobCompleted"', b'"type":"JobCompleted.v0"')
    monkeypatch.setitem(UPCASTERS, ("JobCompleted", 0), lambda data: {**data, "worker": "from v0"})
    decoded = mapper.to_domain_event(StoredEvent(originator_id=WF, originator_version=3, topic="JobCompleted",
                                                 state=old))
    assert isinstance(decoded, ev.JobCompleted) and decoded.worker == "from v0"

