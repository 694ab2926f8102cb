"""The read side in the backend process: projections following the log, and the workers view.

The backend tells it two things: "events were stored" (`wake`, so views catch up at once
instead of at the next poll) and "a worker announced itself" (`on_worker`). Views are written
in the projection runner's own thread and worker announcements in a one-thread executor, so
neither ever blocks the event loop nor the store thread that commits inbound batches.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import structlog

from stepflow.adapters import protocol as p
from stepflow.engine.application import WorkflowEngine
from stepflow.projections import ProjectionRunner, WorkerSeen, WorkersView

log = structlog.get_logger("stepflow.read_side")


def worker_seen(message: p.WorkerDiscovery | p.WorkerStatus, at: datetime) -> WorkerSeen | None:
    if isinstance(message, p.WorkerDiscovery):
        return WorkerSeen(
            instance_id=message.instance_id, at=at, job_type=message.queue_name, label=message.label,
            description=message.description, version=message.version, sdk_version=message.sdk_version,
            direct_queue=message.direct_messaging_queue_name, activity=message.activity,
            terminated=message.activity == "Terminated",
        )
    instance_id = message.instance  # top level (stepflow's SDK) or in `worker` (the original's)
    if instance_id:
        job = p.job_key(message.job.job_id) if message.job is not None else None
        return WorkerSeen(instance_id=instance_id, at=at, activity=message.worker.activity, current_job=job)
    return None


class ReadSide:
    def __init__(self, engine: WorkflowEngine, runner: ProjectionRunner | None = None) -> None:
        self.runner = runner or ProjectionRunner(engine)
        self.workers = WorkersView(self.runner.store)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stepflow-workers-view")

    def start(self) -> None:
        self.runner.start()

    def wake(self) -> None:
        self.runner.wake()

    def on_worker(self, message: p.WorkerDiscovery | p.WorkerStatus, at: datetime) -> None:
        seen = worker_seen(message, at)
        if seen is not None:
            self._writer.submit(self._record, seen)

    def _record(self, seen: WorkerSeen) -> None:
        try:
            self.workers.record([seen])
        except Exception as error:  # noqa: BLE001  a view is derived data: log, never take the backend down
            log.warning("workers_view_failed", instance_id=seen.instance_id, error=repr(error))

    def stop(self) -> None:
        self._writer.shutdown(wait=True)
        self.runner.stop()
        self.runner.close()
