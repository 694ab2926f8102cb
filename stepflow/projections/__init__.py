"""Read models built from the event log: views, queries, rebuild, history, replay.

Views (tables beside the event store: same SQLite file or PostgreSQL schema):
- `workflows` projection -> the workflow view (`sf_workflows`, `sf_workflow_labels`), the
  step view (`sf_steps`) and the job view (`sf_jobs`), kept in one transaction;
- `job_stats` projection -> per job type outcomes and duration percentiles;
- workers -> not a projection: `WorkersView.record(...)` is called by the backend with the
  fields of worker discovery/status messages (see `stepflow.projections.workers`).

Each projection has a tracking row (`sf_tracking`) updated in the same transaction as its
tables. Entry points:

    store = open_view_store(engine)                         # or SQLiteViewStore / PostgresViewStore
    runner = ProjectionRunner(engine, store)                # batches, tracking, polling / LISTEN
    runner.run_once() | runner.start() ... runner.stop()    # catch up | follow in a thread
    runner.wake()                                           # after a save: apply now, not at next poll
    runner.wait(notification_id, timeout)                   # read-your-writes
    runner.rebuild(["workflows"], on_progress=...)          # drop and replay from the log
    run_projections_once(engine) -> int
    WorkersView(store).record([WorkerSeen(...), ...])       # the backend, on worker announcements

    queries.list_workflows(store, status=..., label=..., cursor=..., wait_for=...)
    queries.get_workflow(store, id) / list_jobs / get_job / list_workers / job_stats

    history.timeline(engine, id) / history.audit(engine, since=...)
    replay.replay(engine, id, at=N | until=datetime) -> Replayed (aggregate state + view)
    replay.check_determinism(engine) -> DeterminismReport
"""

from stepflow.projections.opening import open_view_store
from stepflow.projections.runner import ProjectionRunner, default_projections, run_projections_once
from stepflow.projections.store import ViewStore
from stepflow.projections.workers import WorkerSeen, WorkersView

__all__ = [
    "ProjectionRunner",
    "ViewStore",
    "WorkerSeen",
    "WorkersView",
    "default_projections",
    "open_view_store",
    "run_projections_once",
]
