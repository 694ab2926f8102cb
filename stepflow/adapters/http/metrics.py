"""`/metrics`: Prometheus text exposition (format 0.0.4), written by `prometheus_client`.

The official client does the format (names, escaping, `_total`, histogram buckets); the
values are read at each scrape, by a collector of our own, from where they are kept:

- the views, so they survive restarts and agree across backends: workflows by status;
  jobs submitted / completed / errored / timed out / unroutable / stopped / retried per job
  type and job durations per type (`job_stats`); per definition (identifier and version)
  workflows started / completed / failed / stopped / deleted and step and job durations
  (`definition_stats`, counted from events, so they only grow); workers by type and status;
- the log: its position, how far each view is behind it, and the orders the outbox has yet
  to publish (`outbox_lag_events`: stored job orders and stop events after its tracked
  position, so it reads 0 when nothing is pending, however many other events came after);
- the broker: messages waiting per queue (`stepflow.adapters.http.queues`);
- this process's backend, when there is one: inbound batch sizes, messages, quarantined,
  duplicates, late answers, orders published, notification and hook calls.

Durations are kept in the views as log-scale histograms (`stepflow.projections.job_stats`,
8 buckets per doubling), folded here into fixed `le` buckets (`DURATION_BUCKETS`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from stepflow.adapters.http.api_misc import worker_counts, workflow_counts
from stepflow.adapters.http.queues import Depth
from stepflow.adapters.http.services import Services
from stepflow.adapters.outbox import TOPICS as OUTBOX_TOPICS
from stepflow.projections.definition_stats import COUNTS, DURATIONS
from stepflow.projections.job_stats import BUCKETS_PER_DOUBLING, STATS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
HOOK_TOPICS = ("WorkflowCompleted", "WorkflowFailed")
LAG_CAP = 100_000  # pending events counted at most (a scrape reads no more of the log than this)
_histogram = msgspec.json.Decoder(dict[int, int])
_JOB_COUNTERS = (("submitted", "jobs_submitted_total", "Job attempts submitted."),
                 ("completed", "jobs_completed_total", "Job attempts completed."),
                 ("errored", "jobs_errored_total", "Job attempts a worker reported as errored."),
                 ("timed_out", "jobs_timed_out_total", "Job attempts that timed out."),
                 ("unroutable", "jobs_unroutable_total", "Job orders no queue took."),
                 ("stopped", "jobs_stopped_total", "Job attempts stopped."),
                 ("retries", "jobs_retried_total", "Second and later attempts submitted."))
_WORKFLOW_COUNTERS = (("started", "Workflows started"), ("completed", "Workflows completed"),
                      ("failed", "Workflows that ended in error"), ("stopped", "Workflows stopped"),
                      ("deleted", "Workflows deleted"))


def fold(histogram: Mapping[int, int], bounds: Sequence[float]) -> list[int]:
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


def _buckets(bounds: Iterable[float], cumulative: list[int], count: int) -> list[tuple[str, float]]:
    return [*((floatToGoString(b), float(n)) for b, n in zip(bounds, cumulative, strict=False)), ("+Inf", float(count))]


def pending(engine: Any, after: int, topics: Sequence[str]) -> int:
    """Events of `topics` stored after `after` (at most `LAG_CAP`): what a follower has to do."""
    return len(engine.notifications(after, LAG_CAP, topics=topics))


def _view_metrics(s: Services, outbox_position: int | None) -> dict[str, Any]:
    """Everything read from the store, in one worker thread. The views' positions are read
    first: a view that moves on meanwhile shows a lag it no longer has, never the reverse."""
    views = s.runner.positions()
    with s.store.read() as tx:
        stats = tx.query(STATS.select() + " ORDER BY job_type")
        definitions = tx.query(COUNTS.select() + " ORDER BY definition, version")
        durations = tx.query(DURATIONS.select() + " ORDER BY definition, version, kind, name")
    if outbox_position is None:
        if s.tracking is None:
            s.tracking = s.engine.factory.tracking_recorder()
        outbox_position = s.tracking.max_tracking_id("outbox") or 0
    hooks = getattr(s.backend, "hooks", None)
    return {
        "workflows": workflow_counts(s.store),
        "stats": stats,
        "definitions": definitions,
        "durations": durations,
        "workers": worker_counts(s.store),
        "position": s.engine.max_notification_id(),
        "views": views,
        "outbox_lag": pending(s.engine, outbox_position, OUTBOX_TOPICS),
        "hooks_lag": (pending(s.engine, hooks.position, HOOK_TOPICS)
                      if hooks is not None and hooks.reader is not None else None),
    }


class _Collected:
    """A one-scrape collector: the families built from what was read."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def families(s: Services, data: Mapping[str, Any], depths: Sequence[Depth] = ()) -> list[Metric]:
    out: list[Metric] = []
    gauge = GaugeMetricFamily("stepflow_workflows", "Workflows by status (workflows view).", labels=["status"])
    for status, count in sorted(data["workflows"].items()):
        gauge.add_metric([status], count)
    out.append(gauge)
    rows = [dict(zip(STATS.names, row, strict=True)) for row in data["stats"]]
    for column, name, help in _JOB_COUNTERS:
        counter = CounterMetricFamily(f"stepflow_{name}", help + " Per job type (job_stats view).", labels=["job_type"])
        for row in rows:
            counter.add_metric([row["job_type"]], row[column])
        out.append(counter)
    histogram = HistogramMetricFamily("stepflow_job_duration_seconds", "Durations of completed jobs, per job type.",
                                      labels=["job_type"])
    for row in rows:
        cumulative = fold(_histogram.decode(row["histogram"]), DURATION_BUCKETS)
        histogram.add_metric([row["job_type"]], _buckets(DURATION_BUCKETS, cumulative, row["duration_count"]),
                             row["duration_sum"])
    out.append(histogram)
    out += _definition_families(data)
    gauge = GaugeMetricFamily("stepflow_workers", "Known workers by job type and status (alive, paused, gone, "
                                                  "terminated).", labels=["job_type", "status"])
    for job_type, status, count in data["workers"]:
        gauge.add_metric([job_type, status], count)
    out.append(gauge)
    position = data["position"]
    out.append(GaugeMetricFamily("stepflow_log_position", "Notification id of the last stored event.", value=position))
    gauge = GaugeMetricFamily("stepflow_projection_lag_events", "Events stored and not yet applied, per view.",
                              labels=["view"])
    for view, at in sorted(data["views"].items()):
        gauge.add_metric([view], max(0, position - at))
    out.append(gauge)
    out.append(GaugeMetricFamily("stepflow_outbox_lag_events", "Job orders and stop events stored and not yet "
                                 "published by the outbox (0 when nothing is pending).", value=data["outbox_lag"]))
    if depths:
        messages = GaugeMetricFamily("stepflow_queue_messages", "Messages ready in each queue (from the broker).",
                                     labels=["queue"])
        consumers = GaugeMetricFamily("stepflow_queue_consumers", "Consumers of each queue (RabbitMQ only).",
                                      labels=["queue"])
        for depth in depths:
            messages.add_metric([depth.queue], depth.messages)
            if depth.consumers is not None:
                consumers.add_metric([depth.queue], depth.consumers)
        out += [messages, consumers] if consumers.samples else [messages]
    if s.backend is not None:
        out += _backend_families(s.backend, data)
    return out


def _definition_families(data: Mapping[str, Any]) -> list[Metric]:
    out: list[Metric] = []
    rows = [dict(zip(COUNTS.names, row, strict=True)) for row in data["definitions"]]
    for column, help in _WORKFLOW_COUNTERS:
        counter = CounterMetricFamily(f"stepflow_workflows_{column}_total", f"{help}, per definition and version "
                                      "(definition_stats view).", labels=["definition", "version"])
        for row in rows:
            counter.add_metric([row["definition"], row["version"]], row[column])
        out.append(counter)
    steps = HistogramMetricFamily("stepflow_step_duration_seconds", "Durations of completed or failed steps (first "
                                  "job submitted to step end), per definition, version and step.",
                                  labels=["definition", "version", "step"])
    jobs = HistogramMetricFamily("stepflow_definition_job_duration_seconds", "Durations of completed jobs, per "
                                 "definition, version and job type.", labels=["definition", "version", "job_type"])
    for definition, version, kind, name, count, total, _, histogram_json in data["durations"]:
        cumulative = fold(_histogram.decode(histogram_json), DURATION_BUCKETS)
        family = steps if kind == "step" else jobs
        family.add_metric([definition, version, name], _buckets(DURATION_BUCKETS, cumulative, count), total)
    return [*out, steps, jobs]


def _backend_families(backend: Any, data: Mapping[str, Any]) -> list[Metric]:
    out: list[Metric] = []
    sizes: Mapping[int, int] = getattr(backend, "batch_sizes", {})
    cumulative = [sum(n for size, n in sizes.items() if size <= bound) for bound in BATCH_BUCKETS]
    histogram = HistogramMetricFamily("stepflow_inbound_batch_size", "Inbound messages stored per transaction.")
    histogram.add_metric([], _buckets(BATCH_BUCKETS, cumulative, sum(sizes.values())),
                         sum(k * n for k, n in sizes.items()))
    out.append(histogram)
    out.append(GaugeMetricFamily("stepflow_backend_active", "1 while this backend holds the store's lease and "
                                 "runs inbox, outbox, timers and hooks; 0 on a standby.",
                                 value=1 if getattr(backend, "active", True) else 0))
    for key, name, help in (("messages", "inbound_messages_total", "Inbound broker messages handled."),
                            ("quarantined", "quarantined_total", "Inbound messages sent to quarantine."),
                            ("duplicates", "duplicates_ignored_total",
                             "Inbound messages already applied (a redelivery), acked with no change."),
                            ("late_answers", "late_answers_total",
                             "Answers for jobs no longer running, kept as LateAnswerReceived events."),
                            ("late_progress", "late_progress_total",
                             "Progress reports for jobs no longer running, counted only."),
                            ("orders", "orders_published_total", "Job orders published (and notification jobs).")):
        out.append(CounterMetricFamily(f"stepflow_{name}", help, value=backend.stats.get(key, 0)))
    notifier = getattr(backend, "notifier", None)
    if notifier is not None:
        calls = CounterMetricFamily("stepflow_notification_calls_total", "HTTP calls of notification steps, "
                                    "by outcome.", labels=["outcome"])
        calls.add_metric(["ok"], notifier.stats["calls_ok"])
        calls.add_metric(["failed"], notifier.stats["calls_failed"])
        hooks = CounterMetricFamily("stepflow_hook_calls_total", "Workflow hook calls, by final outcome.",
                                    labels=["outcome"])
        hooks.add_metric(["ok"], notifier.stats["hooks_ok"])
        hooks.add_metric(["failed"], notifier.stats["hooks_failed"])
        out += [calls, hooks, GaugeMetricFamily("stepflow_notifications_in_flight", "Notification jobs being "
                                                "called now.", value=notifier.in_flight)]
    if data.get("hooks_lag") is not None:
        out.append(GaugeMetricFamily("stepflow_hooks_lag_events", "Ended workflows stored and not yet handed to "
                                     "their hooks (0 when nothing is pending).", value=data["hooks_lag"]))
    return out


def render(s: Services, data: Mapping[str, Any], depths: Sequence[Depth] = ()) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collected(families(s, data, depths)))  # type: ignore[arg-type]
    return generate_latest(registry)


async def collect(s: Services) -> bytes:
    position = s.backend.outbox_position if s.backend is not None else None
    data = await s.read(_view_metrics, s, position)
    job_types = [row[0] for row in data["stats"]]
    depths = await s.queue_depths.read(s.backend, job_types) if s.backend is not None else []
    return render(s, data, depths)
