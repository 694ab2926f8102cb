"""How fast events go to and from stored bytes: `MsgspecMapper` against eventsourcing's default.

    python -m benchmarks.bench_mapper [--events N] [--repeat R]
    python benchmarks/bench_mapper.py

Both sides round-trip (encode to a `StoredEvent`, decode back to an event) the same realistic
mix: half `JobSubmitted` with rendered parameters, half `JobCompleted` with outputs. The
baseline is eventsourcing's `Mapper` with a `JSONTranscoder` (UUIDAsHex, DatetimeAsISO
registered) on plain objects carrying the same fields in `__dict__`, which is how an
ordinary eventsourcing application stores its events. Prints events/s for each, best of R.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4, uuid5

from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, Mapper, UUIDAsHex

from stepflow.engine import events as ev
from stepflow.engine.mapper import MsgspecMapper


class PlainEvent:
    """An event as the default mapper sees it: fields in `__dict__`, a UUID originator."""

    originator_id: UUID
    originator_version: int

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


class PlainJobSubmitted(PlainEvent):
    pass


class PlainJobCompleted(PlainEvent):
    pass


def job_fields(n: int, workflow_id: UUID, at: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields of the n-th JobSubmitted and its JobCompleted."""
    job_id = str(uuid5(workflow_id, f"encode/{n}/1"))
    common = {"originator_id": workflow_id, "timestamp": at + timedelta(seconds=n), "cause": None, "actor": None}
    submitted = {
        **common,
        "originator_version": 2 * n + 1,
        "job_id": job_id,
        "step_id": "encode",
        "index": n,
        "attempt": 1,
        "job_type": "ffmpeg",
        "parameters": {
            "source": f"s3://media/in/clip-{n:05d}.mov",
            "destination": f"s3://media/out/clip-{n:05d}/",
            "height": 720,
            "bitrate_kbps": 3500,
            "two_pass": True,
            "renditions": ["360p", "720p", "1080p"],
            "audio": {"codec": "aac", "channels": 2, "sample_rate": 48000},
        },
        "priority": 2,
        "delay_s": 0.0,
        "timeout_s": 600.0,
    }
    completed = {
        **common,
        "originator_version": 2 * n + 2,
        "cause": f"amq-{n:08d}",
        "job_id": job_id,
        "outputs": {
            "file": f"s3://media/out/clip-{n:05d}/720p.mp4",
            "duration_s": 123.45,
            "size_bytes": 48_213_004,
            "streams": [{"type": "video", "codec": "h264"}, {"type": "audio", "codec": "aac"}],
        },
        "destination_paths": [f"s3://media/out/clip-{n:05d}/720p.mp4"],
        "execution_duration": 41.2,
        "worker": "ffmpeg-7c9d",
    }
    return submitted, completed


def build(count: int) -> tuple[list[Any], list[Any]]:
    """`count` msgspec events and `count` plain events with the same fields."""
    workflow_id = uuid4()
    at = datetime(2024, 5, 1, tzinfo=UTC)
    structs: list[Any] = []
    plain: list[Any] = []
    for n in range(count // 2):
        submitted, completed = job_fields(n, workflow_id, at)
        structs.append(ev.JobSubmitted(**submitted))
        structs.append(ev.JobCompleted(**{**completed, "destination_paths": tuple(completed["destination_paths"])}))
        plain.append(PlainJobSubmitted(**submitted))
        plain.append(PlainJobCompleted(**completed))
    return structs, plain


def default_mapper() -> Mapper[UUID]:
    transcoder = JSONTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DatetimeAsISO())
    return Mapper(transcoder=transcoder)


def round_trip_rate(mapper: Mapper[UUID], events: Sequence[Any], repeat: int) -> float:
    """Events per second through encode and decode, best of `repeat` runs."""
    encode: Callable[[Any], Any] = mapper.to_stored_event
    decode: Callable[[Any], Any] = mapper.to_domain_event
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for event in events:
            decode(encode(event))
        best = min(best, time.perf_counter() - started)
    return len(events) / best


def check(mapper: Mapper[UUID], events: Sequence[Any], same: Callable[[Any, Any], bool]) -> None:
    """Both mappers must give back what they were given, or the race means nothing."""
    for event in events[:100]:
        back = mapper.to_domain_event(mapper.to_stored_event(event))
        assert same(event, back), (event, back)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000, help="events per run (half of each type)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per mapper; the best counts")
    args = parser.parse_args(argv)

    structs, plain = build(args.events)
    fast, default = MsgspecMapper(transcoder=JSONTranscoder()), default_mapper()
    check(fast, structs, lambda a, b: a == b)
    check(default, plain, lambda a, b: type(a) is type(b) and vars(a) == vars(b))

    msgspec_rate = round_trip_rate(fast, structs, args.repeat)
    default_rate = round_trip_rate(default, plain, args.repeat)
    size_fast = sum(len(fast.to_stored_event(e).state) for e in structs[:1000]) / min(1000, len(structs))
    size_default = sum(len(default.to_stored_event(e).state) for e in plain[:1000]) / min(1000, len(plain))

    print(f"encode+decode of {len(structs)} events (JobSubmitted + JobCompleted), best of {args.repeat}")
    print(f"  msgspec  MsgspecMapper            {msgspec_rate:>12,.0f} events/s  ({size_fast:.0f} B/event)")
    print(f"  default  Mapper + JSONTranscoder  {default_rate:>12,.0f} events/s  ({size_default:.0f} B/event)")
    print(f"  ratio msgspec/default             {msgspec_rate / default_rate:>12.2f}x")


if __name__ == "__main__":
    main()
