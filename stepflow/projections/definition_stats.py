"""The `definition_stats` projection: per definition (identifier and version), workflows
started / completed / failed / stopped / deleted, and the durations of its steps and jobs.

What `/metrics` exposes per definition (`stepflow.adapters.http.metrics`). Counted from
events, not from the workflows view's current statuses, so the counters only grow (a failed
workflow retried to completion counts once failed and once completed, as Prometheus counters
must), and, being a projection of the log, they survive restarts and rebuilds and agree
across backends.

Events after the first name their workflow, not its definition, so the view keeps one row
per workflow (`sf_definition_runs`: workflow id -> definition, version), and, like
`job_stats`, small tables of what is in flight: a step from its first job's submission to
its end (`StepCompleted` / `StepFailed`), a job from its submission to its completion (its
duration is the worker's `execution_duration`, else end - first progress, else end -
submission plus backoff). Durations go into log-scale histograms (`job_stats`' buckets),
folded into Prometheus' `le` buckets when exposed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec

from stepflow.engine import events as ev
from stepflow.projections.job_stats import bucket_of
from stepflow.projections.store import Table, Tx, delete_in, fetch_in

_hist_decoder = msgspec.json.Decoder(dict[int, int])
_hist_encoder = msgspec.json.Encoder()


class CountRow(msgspec.Struct, gc=False):
    definition: str
    version: str
    started: int = 0
    completed: int = 0
    failed: int = 0
    stopped: int = 0
    deleted: int = 0


class DurationRow(msgspec.Struct, gc=False):
    definition: str
    version: str
    kind: str  # step | job
    name: str  # the step id | the job type
    count: int = 0
    total: float = 0.0
    longest: float = 0.0
    histogram: str = "{}"  # JSON {bucket: count}, buckets of `job_stats.bucket_of`


COUNTS = Table(
    "sf_definition_stats",
    (("definition", "text"), ("version", "text"), ("started", "int"), ("completed", "int"),
     ("failed", "int"), ("stopped", "int"), ("deleted", "int")),
    key=("definition", "version"),
)
DURATIONS = Table(
    "sf_definition_durations",
    (("definition", "text"), ("version", "text"), ("kind", "text"), ("name", "text"), ("count", "int"),
     ("total", "real"), ("longest", "real"), ("histogram", "text")),
    key=("definition", "version", "kind", "name"),
)
RUNS = Table("sf_definition_runs", (("workflow_id", "text"), ("definition", "text"), ("version", "text")),
             key=("workflow_id",))
OPEN_STEPS = Table("sf_definition_open_steps", (("workflow_id", "text"), ("step_id", "text"),
                                                ("started_at", "real")), key=("workflow_id", "step_id"))
OPEN_JOBS = Table("sf_definition_open_jobs", (("job_id", "text"), ("workflow_id", "text"), ("job_type", "text"),
                                              ("not_before", "real"), ("started_at", "real")),
                  key=("job_id",), indexes=(("workflow_id",),))

_JOB_ENDS = (ev.JobCompleted, ev.JobErrored, ev.JobTimedOut, ev.JobUnroutable, ev.JobStopped)


class DefinitionStatsProjection:
    name: ClassVar[str] = "definition_stats"
    schema_version: ClassVar[int] = 1
    tables: ClassVar[tuple[Table, ...]] = (COUNTS, DURATIONS, RUNS, OPEN_STEPS, OPEN_JOBS)

    def apply(self, tx: Tx, batch: Sequence[tuple[int, ev.Event]], position: int | None = None) -> None:
        _Batch(tx).run([e for _, e in batch])

    def committed(self, position: int) -> None:
        return None

    def forget(self) -> None:
        return None


class _Batch:
    """One batch: load the rows it touches, apply every event in memory, write back."""

    def __init__(self, tx: Tx) -> None:
        self.tx = tx
        self.runs: dict[str, tuple[str, str]] = {}
        self.counts: dict[tuple[str, str], CountRow] = {}
        self.durations: dict[tuple[str, str, str, str], DurationRow] = {}
        self.histograms: dict[tuple[str, str, str, str], dict[int, int]] = {}
        self.steps: dict[tuple[str, str], float] = {}
        self.jobs: dict[str, list[Any]] = {}  # job id -> [workflow, type, not_before, started_at]
        self.new_runs: list[tuple[str, str, str]] = []
        self.steps_done: set[tuple[str, str]] = set()
        self.jobs_done: set[str] = set()

    def run(self, events: list[ev.Event]) -> None:
        events = [e for e in events if type(e) in _HANDLERS]  # workflow events only
        if not events:
            return
        self._load(events)
        for event in events:
            handler = _HANDLERS.get(type(event))
            if handler is not None:
                wid = str(event.originator_id)
                run = self.runs.get(wid)
                if run is not None or type(event) is ev.WorkflowStarted:
                    handler(self, event, wid, run)
        self._write()

    def _load(self, events: list[ev.Event]) -> None:
        workflows = {str(e.originator_id) for e in events if type(e) is not ev.WorkflowStarted}
        self.runs = {r[0]: (r[1], r[2]) for r in fetch_in(self.tx, RUNS.select(), "workflow_id", workflows)}
        job_ids = {e.job_id for e in events if isinstance(e, (*_JOB_ENDS, ev.JobProgressed))}  # type: ignore[attr-defined]
        for row in fetch_in(self.tx, OPEN_JOBS.select(), "job_id", job_ids):
            self.jobs[row[0]] = list(row[1:])
        halted = {str(e.originator_id) for e in events if isinstance(e, (ev.WorkflowStopped, ev.WorkflowDeleted))}
        for row in fetch_in(self.tx, OPEN_JOBS.select(), "workflow_id", halted):
            self.jobs.setdefault(row[0], list(row[1:]))
        for row in fetch_in(self.tx, OPEN_STEPS.select(), "workflow_id", workflows):
            self.steps[(row[0], row[1])] = row[2]

    def count(self, run: tuple[str, str], field: str) -> None:
        row = self.counts.get(run)
        if row is None:
            found = self.tx.query(f"{COUNTS.select()} WHERE definition = ? AND version = ?", run)
            row = self.counts[run] = CountRow(*found[0]) if found else CountRow(*run)
        setattr(row, field, getattr(row, field) + 1)

    def duration(self, run: tuple[str, str], kind: str, name: str, seconds: float) -> None:
        key = (*run, kind, name)
        row = self.durations.get(key)
        if row is None:
            found = self.tx.query(f"{DURATIONS.select()} WHERE definition = ? AND version = ? AND kind = ? "
                                  "AND name = ?", key)
            row = self.durations[key] = DurationRow(*found[0]) if found else DurationRow(*key)
            self.histograms[key] = _hist_decoder.decode(row.histogram)
        row.count += 1
        row.total += seconds
        row.longest = max(row.longest, seconds)
        histogram = self.histograms[key]
        bucket = bucket_of(seconds)
        histogram[bucket] = histogram.get(bucket, 0) + 1

    def _write(self) -> None:
        self.tx.executemany(RUNS.insert_ignore(), self.new_runs)
        self.tx.executemany(COUNTS.upsert(), [msgspec.structs.astuple(r) for r in self.counts.values()])
        for key, row in self.durations.items():
            row.histogram = _hist_encoder.encode(dict(sorted(self.histograms[key].items()))).decode()
        self.tx.executemany(DURATIONS.upsert(), [msgspec.structs.astuple(r) for r in self.durations.values()])
        open_steps = [(w, s, at) for (w, s), at in self.steps.items() if (w, s) not in self.steps_done]
        self.tx.executemany(OPEN_STEPS.upsert(), open_steps)
        for workflow_id, step_id in self.steps_done:
            self.tx.execute("DELETE FROM sf_definition_open_steps WHERE workflow_id = ? AND step_id = ?",
                            (workflow_id, step_id))
        self.tx.executemany(OPEN_JOBS.upsert(), [(j, *v) for j, v in self.jobs.items() if j not in self.jobs_done])
        delete_in(self.tx, OPEN_JOBS.name, "job_id", self.jobs_done)


def _started(b: _Batch, e: ev.WorkflowStarted, wid: str, run: tuple[str, str] | None) -> None:
    run = (e.definition.identifier, e.definition.version)
    if wid not in b.runs:
        b.runs[wid] = run
        b.new_runs.append((wid, *run))
        b.count(run, "started")


def _submitted(b: _Batch, e: ev.JobSubmitted, wid: str, run: tuple[str, str] | None) -> None:
    at = e.timestamp.timestamp()
    b.jobs[e.job_id] = [wid, e.job_type, at + e.delay_s, None]
    b.jobs_done.discard(e.job_id)
    if (wid, e.step_id) not in b.steps or (wid, e.step_id) in b.steps_done:
        b.steps[(wid, e.step_id)] = at
        b.steps_done.discard((wid, e.step_id))


def _progressed(b: _Batch, e: ev.JobProgressed, wid: str, run: tuple[str, str] | None) -> None:
    job = b.jobs.get(e.job_id)
    if job is not None and job[3] is None:
        job[3] = e.timestamp.timestamp()


def _job_ended(b: _Batch, e: Any, wid: str, run: tuple[str, str] | None) -> None:
    job = b.jobs.get(e.job_id)
    if job is None or e.job_id in b.jobs_done:
        return
    b.jobs_done.add(e.job_id)
    if type(e) is ev.JobCompleted and run is not None:
        at = e.timestamp.timestamp()
        seconds = e.execution_duration
        if seconds is None:
            seconds = max(0.0, at - (job[3] or job[2]))
        b.duration(run, "job", job[1], seconds)


def _step_ended(b: _Batch, e: ev.StepCompleted | ev.StepFailed, wid: str, run: tuple[str, str] | None) -> None:
    started = b.steps.get((wid, e.step_id))
    if started is None or (wid, e.step_id) in b.steps_done:
        return
    b.steps_done.add((wid, e.step_id))
    if run is not None:
        b.duration(run, "step", e.step_id, max(0.0, e.timestamp.timestamp() - started))


def _ended(field: str) -> Any:
    def handler(b: _Batch, e: ev.Event, wid: str, run: tuple[str, str] | None) -> None:
        if run is not None:
            b.count(run, field)
        if field in ("stopped", "deleted"):
            for job_id, job in b.jobs.items():
                if job[0] == wid:
                    b.jobs_done.add(job_id)
            for key in [k for k in b.steps if k[0] == wid]:
                b.steps_done.add(key)

    return handler


_HANDLERS: dict[type[ev.Event], Any] = {
    ev.WorkflowStarted: _started,
    ev.JobSubmitted: _submitted,
    ev.JobProgressed: _progressed,
    **dict.fromkeys(_JOB_ENDS, _job_ended),
    ev.StepCompleted: _step_ended,
    ev.StepFailed: _step_ended,
    ev.WorkflowCompleted: _ended("completed"),
    ev.WorkflowFailed: _ended("failed"),
    ev.WorkflowStopped: _ended("stopped"),
    ev.WorkflowDeleted: _ended("deleted"),
}
