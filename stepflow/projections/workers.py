"""The live-workers view, fed by worker announcements rather than by the event log.

Worker discovery and status messages are not workflow events: they are frequent, they
belong to no workflow, and keeping them in the log would bloat it with heartbeats nobody
replays. So this view is a plain table the backend writes through `WorkersView.record`
(one transaction per batch of messages), with plain fields, so this package needs nothing
from the adapters. It is not rebuildable from the log; after a loss it refills as workers
announce themselves again.

"Gone" is decided when reading: a worker whose last message is older than the timeout
(`GONE_AFTER_S`, default 90 s, about three missed heartbeats) is reported `gone`; one that
said it terminated is `terminated`. `prune()` deletes rows long gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from stepflow.projections.store import Table, ViewStore, delete_in, fetch_in

GONE_AFTER_S = 90.0


class WorkerSeen(msgspec.Struct, frozen=True, kw_only=True):
    """One announcement: discovery (job type, label...), status (activity, job), termination.

    Fields left None keep what the view already knows of the worker.
    """

    instance_id: str
    at: datetime
    job_type: str | None = None  # the discovery's queue_name
    label: str | None = None
    description: str | None = None
    version: str | None = None
    sdk_version: str | None = None
    direct_queue: str | None = None
    activity: str | None = None  # Idle | Busy
    current_job: str | None = None
    terminated: bool = False


class WorkerRow(msgspec.Struct, gc=False):
    instance_id: str
    job_type: str | None
    label: str | None
    description: str | None
    version: str | None
    sdk_version: str | None
    direct_queue: str | None
    activity: str | None
    current_job: str | None
    first_seen: float
    last_seen: float
    terminated_at: float | None


WORKERS = Table(
    "sf_workers",
    (("instance_id", "text"), ("job_type", "text"), ("label", "text"), ("description", "text"),
     ("version", "text"), ("sdk_version", "text"), ("direct_queue", "text"), ("activity", "text"),
     ("current_job", "text"), ("first_seen", "real"), ("last_seen", "real"), ("terminated_at", "real")),
    key=("instance_id",),
    indexes=(("last_seen",),),
)
_MERGED = ("job_type", "label", "description", "version", "sdk_version", "direct_queue", "activity")


class WorkersView:
    def __init__(self, store: ViewStore) -> None:
        self.store = store
        with store.write() as tx:
            store.create_tables(tx, [WORKERS])

    def record(self, seen: Sequence[WorkerSeen]) -> None:
        """Apply announcements in order, in one transaction."""
        if not seen:
            return
        with self.store.write() as tx:
            rows = {r[0]: WorkerRow(*r) for r in fetch_in(tx, WORKERS.select(), "instance_id",
                                                          {s.instance_id for s in seen})}
            for s in seen:
                at = s.at.timestamp()
                row = rows.get(s.instance_id)
                if row is None:
                    row = rows[s.instance_id] = WorkerRow(
                        instance_id=s.instance_id, job_type=None, label=None, description=None, version=None,
                        sdk_version=None, direct_queue=None, activity=None, current_job=None, first_seen=at,
                        last_seen=at, terminated_at=None)
                for name in _MERGED:
                    value = getattr(s, name)
                    if value is not None:
                        setattr(row, name, value)
                if s.activity is not None:
                    row.current_job = s.current_job
                row.last_seen = max(row.last_seen, at)
                row.terminated_at = at if s.terminated else None
            tx.executemany(WORKERS.upsert(), [msgspec.structs.astuple(r) for r in rows.values()])

    def record_heartbeat(
        self, instance_id: str, job_type: str, *, at: datetime, label: str | None = None,
        description: str | None = None, version: str | None = None, sdk_version: str | None = None,
        direct_queue: str | None = None,
    ) -> None:
        """A discovery message (`WorkerDiscovery`-like fields; `job_type` is its queue_name)."""
        self.record([WorkerSeen(instance_id=instance_id, at=at, job_type=job_type, label=label,
                                description=description, version=version, sdk_version=sdk_version,
                                direct_queue=direct_queue)])

    def record_status(self, instance_id: str, activity: str, *, at: datetime, job_id: str | None = None) -> None:
        self.record([WorkerSeen(instance_id=instance_id, at=at, activity=activity, current_job=job_id)])

    def record_terminated(self, instance_id: str, *, at: datetime) -> None:
        self.record([WorkerSeen(instance_id=instance_id, at=at, terminated=True)])

    def prune(self, older_than: datetime) -> int:
        """Delete workers not heard of since `older_than`; return how many."""
        with self.store.write() as tx:
            ids = [r[0] for r in tx.query("SELECT instance_id FROM sf_workers WHERE last_seen < ?",
                                          (older_than.timestamp(),))]
            delete_in(tx, WORKERS.name, "instance_id", ids)
        return len(ids)


def utcnow() -> datetime:
    return datetime.now(UTC)
