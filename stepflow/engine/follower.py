"""Following the notification log from a position of one's own.

The outbox, the hooks and the deadlines' low-water mark each read the log after a position
and record how far they got, so that a restart resumes instead of starting over. The
position lives in eventsourcing's tracking table under the follower's name
(`Tracking("outbox", id)`); that table keeps one row per name that only moves forward, so a
follower that records a position another process already passed gets `IntegrityError` and
carries on from its own: several backends may follow the same log.

Synchronous, like the store: callers run it off their event loop. It needs only what any
`eventsourcing` application has (its recorder, mapper and tracking recorder), so the
projections can use it without importing the adapters or the engine's application service.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.application import Application
from eventsourcing.persistence import IntegrityError, Tracking, TrackingRecorder

from stepflow.engine import events as ev


class LogFollower:
    """`read` the events after a position (topics only), `record` the position reached.

    `new_at_end`: a follower with no position yet starts at the end of the log, for one
    whose past would be harmful to replay (hooks of workflows that ended before it existed).
    """

    def __init__(self, engine: Application[Any], name: str, topics: Sequence[str] = (), *,
                 batch_size: int = 500, new_at_end: bool = False) -> None:
        self.engine = engine
        self.name = name
        self.topics = tuple(topics)
        self.batch_size = batch_size
        self.tracking: TrackingRecorder = engine.factory.tracking_recorder()
        tracked = self.tracking.max_tracking_id(name)
        self.position = tracked or 0
        if tracked is None and new_at_end:
            self.record(engine.recorder.max_notification_id() or 0)

    def read(self, after: int | None = None, *, limit: int | None = None,
             stop: int | None = None) -> list[tuple[int, ev.Event]]:
        """The next events after `after` (default: the position), up to `stop` inclusive."""
        notifications = self.engine.recorder.select_notifications(
            self.position if after is None else after, limit or self.batch_size, stop=stop,
            topics=self.topics, inclusive_of_start=False)
        return [(n.id, self.engine.mapper.to_domain_event(n)) for n in notifications]  # type: ignore[misc]

    def record(self, position: int) -> None:
        """Move the position forward (never back) and keep it in the store."""
        if position <= self.position:
            return
        try:
            self.tracking.insert_tracking(Tracking(self.name, position))
        except IntegrityError:
            pass  # another process following under the same name got further: go on from ours
        self.position = position
