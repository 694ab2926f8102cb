"""Statistics over time bins, from rows placed at known times (`check_timeline` runs on
PostgreSQL too: tests/integration/test_projections_postgres.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from stepflow.engine.application import WorkflowEngine
from stepflow.projections import ProjectionRunner, ViewStore
from stepflow.projections.rows import JOBS, WORKFLOWS, JobRow, WorkflowRow
from stepflow.projections.timeline import MAX_BINS, TooManyBins, bin_range, timeline

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()  # an hour's edge


def workflow(n: int, started: float, status: str, definition: str = "media") -> WorkflowRow:
    return WorkflowRow(f"w{n}", n, definition, "1.0.0", "", status, "[]", "[]", "{}", 1, 0, "[]", 0.0,
                       started, None, started, 1, None, None)


def job(n: int, workflow_id: str, submitted: float, status: str, job_type: str = "encode",
        ended: float | None = None, duration: float | None = None) -> JobRow:
    return JobRow(f"j{n}", workflow_id, "s", 0, 1, job_type, status, n, 0, submitted, submitted,
                  submitted + 1 if ended else None, ended, ended or submitted, 0, None, None, None, None,
                  duration, None)


def fill(store: ViewStore) -> None:
    """Hour 12: two workflows (completed, error), hour 13: one running; jobs and durations."""
    with store.write() as tx:
        tx.executemany(WORKFLOWS.upsert(), [msgspec.structs.astuple(r) for r in (
            workflow(1, T0 + 60, "completed"), workflow(2, T0 + 3599, "error"),
            workflow(3, T0 + 3600, "running", "other"), workflow(4, T0 - 1, "completed"))])
        tx.executemany(JOBS.upsert(), [msgspec.structs.astuple(r) for r in (
            job(1, "w1", T0 + 60, "completed", ended=T0 + 70, duration=2.0),
            job(2, "w1", T0 + 61, "completed", ended=T0 + 80, duration=4.0),
            job(3, "w1", T0 + 62, "completed", ended=T0 + 3700),  # no worker figure: end - first progress
            job(4, "w2", T0 + 3599, "error", ended=T0 + 3599.5),
            job(5, "w3", T0 + 3600, "processing", job_type="pack"))])


def check_timeline(store: ViewStore) -> None:
    fill(store)
    line = timeline(store, bin="hour", since=datetime.fromtimestamp(T0 + 1800, UTC),
                    until=datetime.fromtimestamp(T0 + 7201, UTC))
    assert line.since.timestamp() == T0 and line.until.timestamp() == T0 + 3 * 3600  # rounded to edges
    assert [b.start.timestamp() for b in line.bins] == [T0, T0 + 3600, T0 + 7200]
    first, second, third = line.bins
    assert first.workflows == {"completed": 1, "error": 1} and second.workflows == {"running": 1}
    assert first.jobs == {"completed": 3, "error": 1} and second.jobs == {"processing": 1}
    assert third.workflows == {} and third.jobs == {} and third.durations == ()
    (encode,) = first.durations
    assert (encode.job_type, encode.count, encode.p50_s, encode.p95_s, encode.max_s) == ("encode", 2, 2.0, 4.0, 4.0)
    assert encode.mean_s == 3.0
    (late,) = second.durations  # ended in the next hour; 3700 - (62 + 1) s after its first progress
    assert late.count == 1 and late.p50_s == pytest.approx(3700 - 63)
    by_minute = timeline(store, bin="minute", since=datetime.fromtimestamp(T0, UTC),
                         until=datetime.fromtimestamp(T0 + 120, UTC))
    assert [b.jobs for b in by_minute.bins] == [{}, {"completed": 3}]
    assert timeline(store, bin="hour", since=datetime.fromtimestamp(T0, UTC), until=datetime.fromtimestamp(
        T0 + 7200, UTC), job_type="pack").bins[1].jobs == {"processing": 1}
    other = timeline(store, bin="day", since=datetime.fromtimestamp(T0, UTC), until=datetime.fromtimestamp(
        T0 + 1, UTC), definition="other")
    assert [b.workflows for b in other.bins] == [{"running": 1}] and other.bins[0].jobs == {"processing": 1}


@pytest.fixture
def store(memory_engine: WorkflowEngine) -> Iterator[ViewStore]:
    runner = ProjectionRunner(memory_engine)
    yield runner.store
    runner.close()


def test_timeline_on_sqlite(store: ViewStore) -> None:
    check_timeline(store)


def test_ranges() -> None:
    now = T0 + 90
    assert bin_range("minute", None, None, now=now) == (60, T0 + 60 - 3600, T0 + 120)
    assert bin_range("day", None, None, now=now)[0] == 86400
    with pytest.raises(TooManyBins, match=f"at most {MAX_BINS}"):
        bin_range("minute", datetime(2020, 1, 1, tzinfo=UTC), datetime(2021, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="since must be before until"):
        bin_range("hour", datetime(2021, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="unknown bin 'week'; one of minute, hour, day"):
        bin_range("week", None, None)
    naive = datetime(2024, 5, 1, 12, 0)  # read as UTC
    assert bin_range("hour", naive, naive + timedelta(hours=1))[1:] == (T0, T0 + 3600)


def test_lenient_ranges_are_cut_or_empty() -> None:
    width, first, last = bin_range("minute", datetime(2020, 1, 1, tzinfo=UTC), datetime.fromtimestamp(T0, UTC),
                                   strict=False)
    assert (last - first) / width == MAX_BINS and last == T0
    assert bin_range("hour", datetime.fromtimestamp(T0 + 7200, UTC), datetime.fromtimestamp(T0, UTC),
                     strict=False) == (3600, T0, T0)
