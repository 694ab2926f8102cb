"""Statistics over time bins: workflows and jobs per status, job-type durations, per minute,
hour or day over a chosen range (the original Step Flow's statistics, from the read models).

    timeline(store, bin="hour", since=..., until=..., job_type=None, definition=None) -> Timeline

What falls in a bin:
- a workflow, in the bin of its start, counted under its status now (so a bin reads "of the
  workflows started that hour, 40 completed, 2 failed, 1 still running");
- a job attempt, likewise, in the bin of its submission, under its status now;
- a completed job's duration, in the bin where it ended, per job type: how many, p50 and p95
  (nearest rank, exact), mean and max. The duration is the worker's `execution_duration`,
  else end - first progress, else end - earliest start, as in the job view.

Bins are aligned to UTC (a minute at :00 s, an hour at :00, a day at midnight UTC); `since`
is rounded down and `until` up to a bin edge. Every bin of the range is returned, empty ones
too, so a chart has one column per bin. A range of more than `MAX_BINS` bins, or `since`
after `until`, is refused (`strict`, the default: a person typed it) or, with
`strict=False` (the HTTP API, whose callers may ask anything its schema allows), cut to the
`MAX_BINS` bins that end at `until`, or empty; the answer's `since` and `until` say which.

The counts are one `GROUP BY` per view, on the indexed start and end times; the SQL is the
same on SQLite and PostgreSQL but for the bin's expression (`CAST(x AS INTEGER)` truncates on
SQLite, rounds on PostgreSQL, so PostgreSQL gets `FLOOR`). Durations are fetched per job and
ranked in Python: neither database has one percentile function both understand.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from stepflow.projections.store import ViewStore

BinName = Literal["minute", "hour", "day"]
BIN_SECONDS: dict[str, int] = {"minute": 60, "hour": 3600, "day": 86400}
DEFAULT_BINS: dict[str, int] = {"minute": 60, "hour": 24, "day": 30}  # the range when `since` is not given
MAX_BINS = 1500


class TooManyBins(ValueError):
    """The range holds more bins than `MAX_BINS`: choose a wider bin or a shorter range."""


class DurationStats(msgspec.Struct, frozen=True, kw_only=True):
    job_type: str
    count: int
    p50_s: float
    p95_s: float
    mean_s: float
    max_s: float


class TimelineBin(msgspec.Struct, frozen=True, kw_only=True):
    start: datetime
    end: datetime
    workflows: dict[str, int]  # status -> workflows started in the bin
    jobs: dict[str, int]  # status -> job attempts submitted in the bin
    durations: tuple[DurationStats, ...]  # per job type, jobs completed in the bin


class Timeline(msgspec.Struct, frozen=True, kw_only=True):
    bin: str
    since: datetime  # the first bin's start
    until: datetime  # the last bin's end
    bins: tuple[TimelineBin, ...]


def bin_range(bin: str, since: datetime | None, until: datetime | None, now: float | None = None,
              strict: bool = True) -> tuple[int, float, float]:
    """(bin width in seconds, first edge, last edge), aligned to UTC. Strict: raise
    `TooManyBins`, or ValueError for `since` after `until`; else cut to the last `MAX_BINS`
    bins, and an empty range (first == last) for `since` after `until`. ValueError for an
    unknown bin either way."""
    if bin not in BIN_SECONDS:
        raise ValueError(f"unknown bin {bin!r}; one of {', '.join(BIN_SECONDS)}")
    width = BIN_SECONDS[bin]
    end = _epoch(until) if until is not None else (now if now is not None else time.time())
    start = _epoch(since) if since is not None else end - DEFAULT_BINS[bin] * width
    last = math.ceil(end / width) * width
    if start >= end:
        if strict:
            raise ValueError("since must be before until")
        return width, float(last), float(last)
    first = math.floor(start / width) * width
    if last == first:
        last = first + width
    count = round((last - first) / width)
    if count > MAX_BINS:
        if strict:
            raise TooManyBins(f"{count} {bin}s between since and until (at most {MAX_BINS}): "
                              "choose a wider bin or a shorter range")
        first = last - MAX_BINS * width
    return width, float(first), float(last)


def timeline(store: ViewStore, *, bin: str = "hour", since: datetime | None = None, until: datetime | None = None,
             job_type: str | None = None, definition: str | None = None, now: float | None = None,
             strict: bool = True) -> Timeline:
    """Workflows and jobs per status and job-type durations per bin (see the module's doc)."""
    width, first, last = bin_range(bin, since, until, now, strict)
    count = round((last - first) / width)
    workflows: list[dict[str, int]] = [{} for _ in range(count)]
    jobs: list[dict[str, int]] = [{} for _ in range(count)]
    durations: list[dict[str, list[float]]] = [{} for _ in range(count)]
    with store.read() as tx:
        where, params = _filters("w", job_type=None, definition=definition)
        for index, status, n in tx.query(
                f"SELECT {_bin(store, 'w.started_at')} AS b, w.status, COUNT(*) FROM sf_workflows w "
                f"WHERE w.started_at >= ? AND w.started_at < ?{where} GROUP BY 1, 2",
                [first, width, first, last, *params]):
            _add(workflows, index, status, n)
        where, params = _filters("j", job_type=job_type, definition=definition)
        for index, status, n in tx.query(
                f"SELECT {_bin(store, 'j.submitted_at')} AS b, j.status, COUNT(*) FROM sf_jobs j "
                f"WHERE j.submitted_at >= ? AND j.submitted_at < ?{where} GROUP BY 1, 2",
                [first, width, first, last, *params]):
            _add(jobs, index, status, n)
        for index, name, seconds in tx.query(
                f"SELECT {_bin(store, 'j.ended_at')} AS b, j.job_type, "
                "COALESCE(j.execution_duration, j.ended_at - COALESCE(j.started_at, j.not_before)) FROM sf_jobs j "
                f"WHERE j.status = 'completed' AND j.ended_at >= ? AND j.ended_at < ?{where}",
                [first, width, first, last, *params]):
            if 0 <= index < count:
                durations[int(index)].setdefault(name, []).append(max(0.0, float(seconds)))
    bins = tuple(
        TimelineBin(start=_dt(first + i * width), end=_dt(first + (i + 1) * width), workflows=workflows[i],
                    jobs=jobs[i], durations=tuple(_stats(name, values) for name, values in sorted(durations[i].items())))
        for i in range(count)
    )
    return Timeline(bin=bin, since=_dt(first), until=_dt(last), bins=bins)


def _bin(store: ViewStore, column: str) -> str:
    """The bin index of a time column, given (origin, width) as the first two parameters."""
    if store.dialect == "postgres":
        return f"CAST(FLOOR(({column} - ?) / ?) AS BIGINT)"
    return f"CAST(({column} - ?) / ? AS INTEGER)"  # truncation is the floor: the column is >= origin


def _filters(alias: str, *, job_type: str | None, definition: str | None) -> tuple[str, list[Any]]:
    where, params = "", []
    if job_type is not None:
        where += f" AND {alias}.job_type = ?"
        params.append(job_type)
    if definition is not None:
        if alias == "w":
            where += " AND w.definition = ?"
        else:
            where += f" AND {alias}.workflow_id IN (SELECT workflow_id FROM sf_workflows WHERE definition = ?)"
        params.append(definition)
    return where, params


def _add(bins: list[dict[str, int]], index: Any, status: str, n: int) -> None:
    if 0 <= index < len(bins):
        bins[int(index)][status] = bins[int(index)].get(status, 0) + int(n)


def _stats(job_type: str, values: Sequence[float]) -> DurationStats:
    ordered = sorted(values)
    return DurationStats(job_type=job_type, count=len(ordered), p50_s=_rank(ordered, 0.50),
                         p95_s=_rank(ordered, 0.95), mean_s=sum(ordered) / len(ordered), max_s=ordered[-1])


def _rank(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q of the values at or below it."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _epoch(moment: datetime) -> float:
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()


def _dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
