"""`stepflow project` as its own process, polling a SQLite store another process writes to."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_projections_views import INGEST, dump, play_story

from stepflow.engine import commands as cmd
from stepflow.engine.application import WorkflowEngine
from stepflow.projections import ProjectionRunner, queries
from stepflow.projections.sqlite import SQLiteViewStore

pytestmark = [pytest.mark.integration]


def test_a_separate_project_process_follows_the_log(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    engine = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)})
    ids = play_story(engine)
    # this process also projects now and then, as a backend would: the two share the views
    local = ProjectionRunner(engine, SQLiteViewStore(str(path)), batch_size=4)
    process = subprocess.Popen(
        [sys.executable, "-m", "stepflow", "project", "--store", f"sqlite:///{path}", "--poll-interval", "0.05",
         "--batch-size", "3", "--log-level", "info"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "STEPFLOW_LOG_FORMAT": "json"},
    )
    try:
        assert local.store.wait(local.names, engine.max_notification_id(), timeout=20), process.stderr
        for _ in range(5):
            workflow_id = engine.start_workflow(INGEST)
            local.run_once()
            job = engine.workflow_state(workflow_id).steps["fetch"].jobs[0]
            engine.command(cmd.RecordCompleted(workflow_id=workflow_id, job_id=job, execution_duration=1.0))
        assert local.store.wait(local.names, engine.max_notification_id(), timeout=10)
        detail = queries.get_workflow(local.store, workflow_id, wait_for=engine.max_notification_id())
        assert detail is not None and detail.workflow.status == "completed"
        assert queries.get_workflow(local.store, ids["done"]) is not None
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert b"projections_caught_up" in err
    shared = dump(local.store)
    local.rebuild()
    assert dump(local.store) == shared  # two writers, no event applied twice or missed
    local.close()
    engine.close()
