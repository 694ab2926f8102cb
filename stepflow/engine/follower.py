"""Following the notification log from a position of one's own.

The outbox, the hooks, the deadlines' low-water mark and each projection read the log after
a position and record how far they got, so that a restart resumes instead of starting over.

Two things are pluggable, and the defaults are what any `eventsourcing` application has:
- the reader: by default the recorder's `select_notifications` (topics and `stop` in SQL)
  decoded by the mapper; the projections pass their faster reader of every event
  (`stepflow.projections.log`).
- the position store (`Positions`): by default eventsourcing's tracking table under the
  follower's name (`Tracking("outbox", id)`). That table keeps one row per name that only
  moves forward, so a follower that records a position another process already passed gets
  `IntegrityError` and carries on from its own: several backends may follow the same log.
  The projections pass their view store, whose `sf_tracking` row moves in the transaction
  that writes the view's rows (`advance` hands that transaction to the caller) and which
  refuses a move from a position the view is no longer at (`reload` and read again).

Synchronous, like the store: callers run it off their event loop. It needs nothing of the
engine's application service, so the projections use it without importing the adapters.

`CommitsSeen` is the log's shortcut for a follower in the process that writes: the commits
this process makes, handed over as they are made, so that a commit which follows on from
what the follower handled is handled from memory, with no read of the log.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Generic, Protocol, TypeVar

from eventsourcing.application import Application
from eventsourcing.persistence import IntegrityError, Recording, Tracking, TrackingRecorder

from stepflow.engine import events as ev

ReadLog = Callable[[int, int], list[tuple[int, ev.Event]]]  # (after, limit) -> [(notification id, event)]
T = TypeVar("T")


class Positions(Protocol):
    """Where followers keep their positions, by name."""

    def position(self, name: str, /) -> int | None:
        """The recorded position; None if the follower never recorded one."""

    def advance(self, name: str, expected: int, position: int, /) -> AbstractContextManager[Any]:
        """A transaction that moves `name` from `expected` to `position` once its body succeeds.

        The body gets the transaction (None where the store cannot share one) and writes in
        it what must commit with the position. What happens when another process moved the
        position meanwhile is the store's to say.
        """


class TrackingTable:
    """eventsourcing's tracking table: positions only move forward, one ahead is no error."""

    def __init__(self, engine: Application[Any]) -> None:
        self.recorder: TrackingRecorder = engine.factory.tracking_recorder()

    def position(self, name: str) -> int | None:
        return self.recorder.max_tracking_id(name)

    @contextmanager
    def advance(self, name: str, expected: int, position: int) -> Iterator[None]:
        yield None  # the table is not the caller's database: recorded once the body is done
        try:
            self.recorder.insert_tracking(Tracking(name, position))
        except IntegrityError:
            pass  # another process following under the same name got further: go on from ours


class LogFollower:
    """`read` the events after a position, `record` (or `advance` to) the position reached.

    `topics`: only events of these types (with the default reader only: a `reader` reads
    what it reads). `new_at_end`: a follower with no position yet starts at the end of the
    log, for one whose past would be harmful to replay (hooks of workflows that ended before
    it existed).
    """

    def __init__(self, engine: Application[Any], name: str, topics: Sequence[str] = (), *,
                 batch_size: int = 500, new_at_end: bool = False, reader: ReadLog | None = None,
                 positions: Positions | None = None) -> None:
        if reader is not None and topics:
            raise ValueError("topics select rows of the default reader; filter in your reader")
        self.engine = engine
        self.name = name
        self.topics = tuple(topics)
        self.batch_size = batch_size
        self.reader = reader
        self.positions: Positions = positions if positions is not None else TrackingTable(engine)
        tracked = self.positions.position(name)
        self.position = tracked or 0
        if tracked is None and new_at_end:
            self.record(engine.recorder.max_notification_id() or 0)

    def read(self, after: int | None = None, *, limit: int | None = None,
             stop: int | None = None) -> list[tuple[int, ev.Event]]:
        """The next events after `after` (default: the position), up to `stop` inclusive."""
        after = self.position if after is None else after
        limit = limit or self.batch_size
        if self.reader is None:
            notifications = self.engine.recorder.select_notifications(
                after, limit, stop=stop, topics=self.topics, inclusive_of_start=False)
            return [(n.id, self.engine.mapper.to_domain_event(n)) for n in notifications]  # type: ignore[misc]
        if stop is None:
            return self.reader(after, limit)
        items = self.reader(after, max(1, min(limit, stop - after)))  # no more ids than (after, stop] holds
        return items if not items or items[-1][0] <= stop else [item for item in items if item[0] <= stop]

    @contextmanager
    def advance(self, position: int) -> Iterator[Any]:
        """Move to `position` in the transaction the body writes in (the body gets it).

        Nothing moves if the body raises, or if the store refuses (the view store raises
        `PositionMoved` when another runner moved the view: `reload` then).
        """
        with self.positions.advance(self.name, self.position, position) as tx:
            yield tx
        self.position = position

    def record(self, position: int) -> None:
        """Move the position forward (never back) and keep it in the store."""
        if position <= self.position:
            return
        with self.advance(position):
            pass

    def reload(self, position: int | None = None) -> None:
        """Take the stored position again (another process may have moved it), or `position`
        when the caller has just read it from the store with others'."""
        self.position = (self.positions.position(self.name) if position is None else position) or 0


class CommitsSeen(Generic[T]):
    """This process's commits, as the engine makes them (`WorkflowEngine.on_saved`, in the
    thread that committed): one entry per commit, (first notification id, last, `summary` of
    its events), oldest first. The summary is what the follower needs of the commit, or None
    when it must read the log for it. Bounded: an entry dropped is only a gap, which the
    follower fills from the log."""

    def __init__(self, summary: Callable[[list[ev.Event]], T | None], bound: int = 1024) -> None:
        self.summary = summary
        self.commits: deque[tuple[int, int, T | None]] = deque(maxlen=bound)

    def __call__(self, recordings: Sequence[Recording[Any]]) -> None:
        if not recordings:
            return
        ids = [r.notification.id for r in recordings]
        summary = self.summary([r.domain_event for r in recordings])  # type: ignore[misc]
        self.commits.append((min(ids), max(ids), summary))  # deque.append is safe across threads

    def take(self, handled: int) -> tuple[int, T] | None:
        """The next commit's (last id, summary) if it follows on from `handled`; None when the
        log must be read first (a gap, or no summary) or when nothing is waiting."""
        while self.commits:
            first, last, summary = self.commits[0]
            if last <= handled:
                self.commits.popleft()  # already read from the log
                continue
            if first != handled + 1 or summary is None:
                return None
            self.commits.popleft()
            return last, summary
        return None

    def waiting(self) -> bool:
        return bool(self.commits)

    def clear(self) -> None:
        self.commits.clear()
