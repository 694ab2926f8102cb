"""The `job_stats` projection: per job type, counts by outcome, success rate, durations.

Its own projection (own tracking row), so it can run, lag or be rebuilt apart from the
workflow views. Completion events name the job but not its type, so the view keeps a small
index of the jobs still in flight (`sf_job_stats_open`: type, workflow, start time); a row
is deleted when its job ends, so the index stays the size of the work in progress.

Every attempt counts (a job id is one attempt). Outcomes: completed, errored (the worker
said so), timed_out, unroutable, stopped (by a worker, or because its workflow was stopped
or deleted). Success rate = completed / all ended. Durations of completed jobs go into a
log-scale histogram (8 buckets per doubling, so an estimate is within ~4.5 %), from which
p50/p95 are read; the duration is the worker's `execution_duration`, else end - first
progress, else end - earliest start (submission plus backoff delay).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec

from stepflow.engine import events as ev
from stepflow.projections.store import Table, Tx, delete_in, fetch_in

BUCKETS_PER_DOUBLING = 8
MIN_BUCKET = -10 * BUCKETS_PER_DOUBLING  # ~1 ms
CACHE_OPEN_JOBS = 100_000

_hist_decoder = msgspec.json.Decoder(dict[int, int])
_hist_encoder = msgspec.json.Encoder()


class StatsRow(msgspec.Struct, gc=False):
    job_type: str
    submitted: int = 0
    retries: int = 0  # submissions of a second or later attempt
    completed: int = 0
    errored: int = 0
    timed_out: int = 0
    unroutable: int = 0
    stopped: int = 0
    duration_count: int = 0
    duration_sum: float = 0.0
    duration_max: float = 0.0
    histogram: str = "{}"  # JSON {bucket: count}
    updated_at: float = 0.0


class OpenJob(msgspec.Struct, gc=False):
    job_id: str
    workflow_id: str
    job_type: str
    not_before: float
    started_at: float | None


STATS = Table(
    "sf_job_type_stats",
    (("job_type", "text"), ("submitted", "int"), ("retries", "int"), ("completed", "int"),
     ("errored", "int"), ("timed_out", "int"), ("unroutable", "int"), ("stopped", "int"),
     ("duration_count", "int"), ("duration_sum", "real"), ("duration_max", "real"),
     ("histogram", "text"), ("updated_at", "real")),
    key=("job_type",),
)
OPEN = Table(
    "sf_job_stats_open",
    (("job_id", "text"), ("workflow_id", "text"), ("job_type", "text"), ("not_before", "real"),
     ("started_at", "real")),
    key=("job_id",),
    indexes=(("workflow_id",),),
)


def bucket_of(seconds: float) -> int:
    if seconds <= 0:
        return MIN_BUCKET
    return max(MIN_BUCKET, math.floor(math.log2(seconds) * BUCKETS_PER_DOUBLING))


def bucket_value(bucket: int) -> float:
    """The geometric middle of a bucket, in seconds."""
    return float(2 ** ((bucket + 0.5) / BUCKETS_PER_DOUBLING))


def percentile(histogram: dict[int, int], q: float) -> float | None:
    total = sum(histogram.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return bucket_value(bucket)
    return bucket_value(max(histogram))


class _Cache:
    """Rows as of `position` (see `stepflow.projections.workflows` for when it is trusted)."""

    def __init__(self) -> None:
        self.position: int | None = None
        self.stats: dict[str, StatsRow] | None = None  # every job type, once read
        self.histograms: dict[str, dict[int, int]] = {}
        self.open: dict[str, OpenJob] = {}
        self.stored: set[str] = set()  # open jobs that have a row in the table

    def clear(self) -> None:
        self.position, self.stats = None, None
        self.histograms.clear()
        self.open.clear()
        self.stored.clear()


class JobStatsProjection:
    name: ClassVar[str] = "job_stats"
    schema_version: ClassVar[int] = 1
    tables: ClassVar[tuple[Table, ...]] = (STATS, OPEN)

    def __init__(self) -> None:
        self._cache = _Cache()

    def apply(self, tx: Tx, batch: Sequence[tuple[int, ev.Event]], position: int | None = None) -> None:
        if position is None or position != self._cache.position:
            self._cache.clear()
        _StatsBatch(tx, self._cache).run(batch)

    def committed(self, position: int) -> None:
        if len(self._cache.open) > CACHE_OPEN_JOBS:
            self._cache.clear()
        self._cache.position = position

    def forget(self) -> None:
        self._cache.clear()


_ENDINGS: dict[type[ev.Event], str] = {
    ev.JobCompleted: "completed",
    ev.JobErrored: "errored",
    ev.JobTimedOut: "timed_out",
    ev.JobUnroutable: "unroutable",
    ev.JobStopped: "stopped",
}


class _StatsBatch:
    def __init__(self, tx: Tx, cache: _Cache) -> None:
        self.tx = tx
        self.cache = cache
        self.histograms = cache.histograms
        self.open = cache.open
        self.stored = cache.stored
        self.changed: set[str] = set()  # open rows to write back
        self.closed: set[str] = set()  # stored open rows to delete
        self.touched: set[str] = set()  # job types whose stats changed
        self.stats: dict[str, StatsRow] = {}

    def run(self, batch: Sequence[tuple[int, ev.Event]]) -> None:
        self._load(batch)
        for _, event in batch:
            kind = type(event)
            if kind is ev.JobSubmitted:
                self._submitted(event)  # type: ignore[arg-type]
            elif kind is ev.JobProgressed:
                job = self.open.get(event.job_id)  # type: ignore[attr-defined]
                if job is not None and job.started_at is None:
                    job.started_at = event.timestamp.timestamp()
                    self.changed.add(job.job_id)
            elif kind in _ENDINGS:
                job = self.open.get(event.job_id)  # type: ignore[attr-defined]
                if job is not None:
                    self._ended(job, _ENDINGS[kind], event)
            elif kind is ev.WorkflowStopped or kind is ev.WorkflowDeleted:
                workflow_id = str(event.originator_id)
                for job in [j for j in self.open.values() if j.workflow_id == workflow_id]:
                    self._ended(job, "stopped", event)
        self._write()
        self.stored |= self.changed
        self.stored -= self.closed

    def _load(self, batch: Sequence[tuple[int, ev.Event]]) -> None:
        submitted: set[str] = set()
        job_ids: set[str] = set()
        halted: set[str] = set()
        for _, event in batch:
            kind = type(event)
            if kind is ev.JobSubmitted:
                submitted.add(event.job_id)  # type: ignore[attr-defined]
            elif kind is ev.JobProgressed or kind in _ENDINGS:
                job_id = event.job_id  # type: ignore[attr-defined]
                if job_id not in submitted and job_id not in self.open:
                    job_ids.add(job_id)
            elif kind is ev.WorkflowStopped or kind is ev.WorkflowDeleted:
                halted.add(str(event.originator_id))
        rows = fetch_in(self.tx, OPEN.select(), "job_id", job_ids)
        rows += fetch_in(self.tx, OPEN.select(), "workflow_id", halted)
        for row in rows:
            if row[0] not in self.open:
                self.open[row[0]] = OpenJob(*row)
                self.stored.add(row[0])
        if self.cache.stats is None:
            self.cache.stats = {row[0]: StatsRow(*row) for row in self.tx.query(STATS.select())}
        self.stats = self.cache.stats

    def _row(self, job_type: str, at: float) -> StatsRow:
        stats = self.stats.get(job_type)
        if stats is None:
            stats = self.stats[job_type] = StatsRow(job_type)
        stats.updated_at = at
        self.touched.add(job_type)
        return stats

    def _submitted(self, e: ev.JobSubmitted) -> None:
        at = e.timestamp.timestamp()
        stats = self._row(e.job_type, at)
        stats.submitted += 1
        if e.attempt > 1:
            stats.retries += 1
        self.open[e.job_id] = OpenJob(e.job_id, str(e.originator_id), e.job_type, at + e.delay_s, None)
        self.changed.add(e.job_id)

    def _ended(self, job: OpenJob, outcome: str, event: Any) -> None:
        at = event.timestamp.timestamp()
        stats = self._row(job.job_type, at)
        setattr(stats, outcome, getattr(stats, outcome) + 1)
        if outcome == "completed":
            duration = event.execution_duration
            if duration is None:
                duration = max(0.0, at - (job.started_at or job.not_before))
            stats.duration_count += 1
            stats.duration_sum += duration
            stats.duration_max = max(stats.duration_max, duration)
            histogram = self._histogram(stats)
            bucket = bucket_of(duration)
            histogram[bucket] = histogram.get(bucket, 0) + 1
        del self.open[job.job_id]
        self.changed.discard(job.job_id)
        if job.job_id in self.stored:
            self.closed.add(job.job_id)

    def _histogram(self, stats: StatsRow) -> dict[int, int]:
        histogram = self.histograms.get(stats.job_type)
        if histogram is None:
            histogram = self.histograms[stats.job_type] = _hist_decoder.decode(stats.histogram)
        return histogram

    def _write(self) -> None:
        for job_type in self.touched:
            histogram = self.histograms.get(job_type)
            if histogram is not None:
                self.stats[job_type].histogram = _hist_encoder.encode(dict(sorted(histogram.items()))).decode()
        rows = [msgspec.structs.astuple(self.stats[t]) for t in sorted(self.touched)]
        self.tx.executemany(STATS.upsert(), rows)
        self.tx.executemany(OPEN.upsert(), [msgspec.structs.astuple(self.open[j]) for j in self.changed])
        delete_in(self.tx, OPEN.name, "job_id", self.closed)
