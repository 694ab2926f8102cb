"""The `workflows` projection: the workflow, step and job views, kept in one transaction.

Three read models, one projection (one tracking row): a step's job counts and a workflow's
progress are derived from job transitions, and events name a job without its step, so the
three are computed together and can never disagree. Tables: `sf_workflows`,
`sf_workflow_labels` (labels and definition tags, for the label filter), `sf_steps`, `sf_jobs`.

The rules mirror `stepflow.engine.state.evolve` (a test replays histories through both and
compares); what the views add is timing (step start/end, job update times) and counters.

A batch is applied in three moves, which is what makes a rebuild fast:
1. collect the keys the batch touches that it does not create, and load those rows
   (`IN (...)` lookups, plus the active jobs of workflows being stopped or deleted);
2. apply every event to the rows in memory, one small handler per event type
   (`workflow_handlers`; moves 1 and 3 and the shared row changes are `workflow_batch`);
3. write the changed rows back with one `executemany` upsert per table.
The result does not depend on how the log is cut into batches (tested: batch sizes 1..N).

Rows stay cached between batches (`RowCache`), which spares step 1 for workflows in progress.
The cache is only used while the view is at the position this projection committed last:
the projection is a deterministic function of the log, so rows at that position are the same
whoever wrote them, and any other writer would have moved the position. A failed batch, a
moved position or an oversized cache empties it; a finished workflow leaves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from stepflow.engine import events as ev
from stepflow.projections.rows import JOBS, LABELS, STEPS, WORKFLOWS
from stepflow.projections.store import Table, Tx
from stepflow.projections.workflow_batch import RowBatch, RowCache
from stepflow.projections.workflow_handlers import HANDLERS

CACHE_JOBS = 100_000  # about 40 MB of rows


class WorkflowsProjection:
    name: ClassVar[str] = "workflows"
    schema_version: ClassVar[int] = 2
    tables: ClassVar[tuple[Table, ...]] = (WORKFLOWS, LABELS, STEPS, JOBS)

    def __init__(self) -> None:
        self._cache = RowCache()
        self._finished: list[str] = []

    def apply(self, tx: Tx, batch: Sequence[tuple[int, ev.Event]], position: int | None = None) -> None:
        """Apply a batch; `position` (where the view stands) lets cached rows be used."""
        if position is None or position != self._cache.position:
            self._cache.clear()
        rows = RowBatch(tx, self._cache)
        ids = rows.load(batch, HANDLERS)
        handlers = HANDLERS
        for (nid, event), workflow_id in zip(batch, ids):
            handler = handlers.get(type(event))
            if handler is not None:
                handler(rows, event, nid, workflow_id)
        rows.write()
        self._finished = rows.finished()

    def committed(self, position: int) -> None:
        cache = self._cache
        for workflow_id in self._finished:
            cache.evict(workflow_id)
        if len(cache.jobs) > CACHE_JOBS:
            cache.clear()
        cache.position = position

    def forget(self) -> None:
        self._cache.clear()
