"""Prometheus text exposition (format 0.0.4) at `/metrics`, written by hand: no dependency.

From the views (so they survive restarts and agree across backends): workflows by status,
jobs submitted / completed / errored / timed out / unroutable / stopped / retried per job
type, job duration histograms per type (the `job_stats` view's log-scale histogram folded
into fixed `le` buckets), workers by type and status. From the log: its position, and the
lag of each view, the outbox and the hooks behind it. From this process's backend, when
there is one: inbound batch sizes (histogram), messages, quarantined messages, orders
published, notification and hook calls.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from stepflow.adapters.http.api_misc import worker_counts, workflow_counts
from stepflow.adapters.http.services import Services
from stepflow.projections.job_stats import BUCKETS_PER_DOUBLING, STATS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_histogram = msgspec.json.Decoder(dict[int, int])
_JOB_COUNTERS = (("submitted", "jobs_submitted_total", "Job attempts submitted."),
                 ("completed", "jobs_completed_total", "Job attempts completed."),
                 ("errored", "jobs_errored_total", "Job attempts a worker reported as errored."),
                 ("timed_out", "jobs_timed_out_total", "Job attempts that timed out."),
                 ("unroutable", "jobs_unroutable_total", "Job orders no queue took."),
                 ("stopped", "jobs_stopped_total", "Job attempts stopped."),
                 ("retries", "jobs_retried_total", "Second and later attempts submitted."))


class Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help: str) -> None:
        self.lines.append(f"# HELP stepflow_{name} {help}")
        self.lines.append(f"# TYPE stepflow_{name} {kind}")

    def sample(self, name: str, value: float, labels: Mapping[str, Any] | None = None) -> None:
        text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in (labels or {}).items())
        self.lines.append(f"stepflow_{name}{{{text}}} {_number(value)}" if text else f"stepflow_{name} {_number(value)}")

    def histogram(self, name: str, bounds: Iterable[float], cumulative: list[int], total: float, count: int,
                  labels: Mapping[str, Any] | None = None) -> None:
        for bound, n in zip(bounds, cumulative, strict=False):
            self.sample(f"{name}_bucket", n, {**(labels or {}), "le": _number(bound)})
        self.sample(f"{name}_bucket", count, {**(labels or {}), "le": "+Inf"})
        self.sample(f"{name}_sum", total, labels)
        self.sample(f"{name}_count", count, labels)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def fold(histogram: Mapping[int, int], bounds: tuple[float, ...]) -> list[int]:
    """Cumulative counts per `le` bound; a log bucket counts once its upper edge is within the bound."""
    counts = [0] * len(bounds)
    for bucket, n in histogram.items():
        upper = 2 ** ((bucket + 1) / BUCKETS_PER_DOUBLING)
        for i, bound in enumerate(bounds):
            if upper <= bound * (1 + 1e-9):
                counts[i] += n
                break
    running, out = 0, []
    for n in counts:
        running += n
        out.append(running)
    return out


def _view_metrics(s: Services) -> dict[str, Any]:
    """Everything read from the store, in one worker thread."""
    with s.store.read() as tx:
        stats = tx.query(STATS.select() + " ORDER BY job_type")
    return {
        "workflows": workflow_counts(s.store),
        "stats": stats,
        "workers": worker_counts(s.store),
        "position": s.engine.max_notification_id(),
        "views": s.runner.positions(),
    }


def render(s: Services, data: Mapping[str, Any], outbox_position: int | None) -> str:
    out = Exposition()
    out.family("workflows", "gauge", "Workflows by status (workflows view).")
    for status, count in sorted(data["workflows"].items()):
        out.sample("workflows", count, {"status": status})
    rows = [dict(zip(STATS.names, row, strict=True)) for row in data["stats"]]
    for column, name, help in _JOB_COUNTERS:
        out.family(name, "counter", help + " Per job type (job_stats view).")
        for row in rows:
            out.sample(name, row[column], {"job_type": row["job_type"]})
    out.family("job_duration_seconds", "histogram", "Durations of completed jobs, per job type.")
    for row in rows:
        cumulative = fold(_histogram.decode(row["histogram"]), DURATION_BUCKETS)
        out.histogram("job_duration_seconds", DURATION_BUCKETS, cumulative, row["duration_sum"],
                      row["duration_count"], {"job_type": row["job_type"]})
    out.family("workers", "gauge", "Known workers by job type and status (alive, gone, terminated).")
    for job_type, status, count in data["workers"]:
        out.sample("workers", count, {"job_type": job_type, "status": status})
    position = data["position"]
    out.family("log_position", "gauge", "Notification id of the last stored event.")
    out.sample("log_position", position)
    out.family("projection_lag_events", "gauge", "Events stored and not yet applied, per view.")
    for view, at in sorted(data["views"].items()):
        out.sample("projection_lag_events", max(0, position - at), {"view": view})
    if outbox_position is not None:
        out.family("outbox_lag_events", "gauge", "Events stored after the outbox's tracked position.")
        out.sample("outbox_lag_events", max(0, position - outbox_position))
    backend = s.backend
    if backend is not None:
        _backend_metrics(out, backend, position)
    return out.text()


def _backend_metrics(out: Exposition, backend: Any, position: int) -> None:
    sizes: Mapping[int, int] = getattr(backend, "batch_sizes", {})
    cumulative = [sum(n for size, n in sizes.items() if size <= bound) for bound in BATCH_BUCKETS]
    out.family("inbound_batch_size", "histogram", "Inbound messages stored per transaction.")
    out.histogram("inbound_batch_size", BATCH_BUCKETS, cumulative, sum(k * n for k, n in sizes.items()),
                  sum(sizes.values()))
    for key, name, help in (("messages", "inbound_messages_total", "Inbound broker messages handled."),
                            ("quarantined", "quarantined_total", "Inbound messages sent to quarantine."),
                            ("duplicates", "duplicates_ignored_total",
                             "Inbound messages already applied (a redelivery), acked with no change."),
                            ("late_answers", "late_answers_total",
                             "Answers for jobs no longer running, kept as LateAnswerReceived events."),
                            ("late_progress", "late_progress_total",
                             "Progress reports for jobs no longer running, counted only."),
                            ("orders", "orders_published_total", "Job orders published (and notification jobs).")):
        out.family(name, "counter", help)
        out.sample(name, backend.stats.get(key, 0))
    notifier = getattr(backend, "notifier", None)
    if notifier is not None:
        out.family("notification_calls_total", "counter", "HTTP calls of notification steps, by outcome.")
        out.sample("notification_calls_total", notifier.stats["calls_ok"], {"outcome": "ok"})
        out.sample("notification_calls_total", notifier.stats["calls_failed"], {"outcome": "failed"})
        out.family("hook_calls_total", "counter", "Workflow hook calls, by final outcome.")
        out.sample("hook_calls_total", notifier.stats["hooks_ok"], {"outcome": "ok"})
        out.sample("hook_calls_total", notifier.stats["hooks_failed"], {"outcome": "failed"})
        out.family("notifications_in_flight", "gauge", "Notification jobs being called now.")
        out.sample("notifications_in_flight", notifier.in_flight)
    hooks = getattr(backend, "hooks", None)
    if hooks is not None and hooks.reader is not None:
        out.family("hooks_lag_events", "gauge", "Events stored after the hooks' tracked position.")
        out.sample("hooks_lag_events", max(0, position - hooks.position))


def _outbox_position(s: Services) -> int | None:
    """The outbox's tracked position in the store, when no backend runs in this process."""
    if s.tracking is None:
        s.tracking = s.engine.factory.tracking_recorder()
    return s.tracking.max_tracking_id("outbox")  # type: ignore[no-any-return]


async def collect(s: Services) -> str:
    data = await s.read(_view_metrics, s)
    position = s.backend.outbox_position if s.backend is not None else None
    if position is None:
        position = await s.read(_outbox_position, s) or 0
    return render(s, data, position)
