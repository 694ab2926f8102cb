"""The views on PostgreSQL: same story, rebuild equals live, LISTEN wake-up, concurrency, CLI.

Each test runs in a schema of its own (created and dropped here). Needs the server at
127.0.0.1:5432 (user postgres, database `test`; `STEPFLOW_TEST_PG` to point elsewhere). An
unreachable server fails the test, never skips it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from pg_fixtures import PG_SERVER, fresh_schema, pg_connect
from test_projections_views import INGEST, dump, play_story
from test_timeline import check_timeline

from stepflow.adapters.cli import main
from stepflow.adapters.persistence import engine_env
from stepflow.engine.application import WorkflowEngine
from stepflow.projections import ProjectionRunner, queries
from stepflow.projections.postgres import PostgresViewStore
from stepflow.projections.replay import check_determinism, replay

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

SERVER = PG_SERVER
connect = pg_connect


@pytest.fixture
def schema() -> Iterator[str]:
    with fresh_schema() as name:
        yield name


@pytest.fixture
def url(schema: str) -> str:
    return f"{SERVER}?schema={schema}"


@pytest.fixture
def engine(url: str) -> Iterator[WorkflowEngine]:
    engine = WorkflowEngine(env=engine_env(url))
    yield engine
    engine.close()


@pytest.fixture
def runner(engine: WorkflowEngine) -> Iterator[ProjectionRunner]:
    runner = ProjectionRunner(engine)
    assert isinstance(runner.store, PostgresViewStore)
    yield runner
    runner.close()


def test_views_live_in_the_store_schema_and_rebuild_equals_live(
    engine: WorkflowEngine, runner: ProjectionRunner, schema: str
) -> None:
    ids = play_story(engine, after=lambda _: runner.run_once())
    with connect() as connection:
        tables = {r[0] for r in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))}
    assert {"sf_tracking", "sf_workflows", "sf_workflow_labels", "sf_steps", "sf_jobs",
            "sf_job_type_stats", "sf_job_stats_open"} <= tables
    done = queries.get_workflow(runner.store, ids["done"])
    assert done is not None and done.workflow.status == "completed" and done.workflow.progress == 100.0
    assert {s.step_id: s.job_counts for s in done.steps}["encode"] == {"completed": 3, "retrying": 2}
    stats = {s.job_type: s for s in queries.job_stats(runner.store)}
    assert (stats["encode"].completed, stats["encode"].errored, stats["encode"].timed_out) == (3, 1, 1)
    live = dump(runner.store)
    runner.rebuild(batch_size=5)
    assert dump(runner.store) == live
    assert [w.status for w in queries.list_workflows(runner.store, label="story", limit=3).items] == [
        "running", "error", "stopped"]


def test_the_runner_wakes_on_notify_without_polling(engine: WorkflowEngine) -> None:
    runner = ProjectionRunner(engine, poll_interval=30.0)  # only LISTEN can make it this fast
    runner.start()
    try:
        time.sleep(0.3)  # the runner is idle, listening
        workflow_id = engine.start_workflow(INGEST)
        started = time.monotonic()
        assert runner.store.wait(runner.names, engine.max_notification_id(), timeout=5)
        assert time.monotonic() - started < 3
        assert queries.get_workflow(runner.store, workflow_id) is not None
    finally:
        runner.close()


def test_two_runners_share_a_view_without_applying_twice(engine: WorkflowEngine) -> None:
    for _ in range(40):
        engine.start_workflow(INGEST)
    runners = [ProjectionRunner(engine, batch_size=3) for _ in range(3)]
    threads = [threading.Thread(target=r.run_once) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert queries.job_stats(runners[0].store)[0].submitted == 40
    assert len(queries.list_workflows(runners[0].store, limit=100).items) == 40
    for r in runners:
        r.close()


def test_pagination_under_concurrent_inserts(engine: WorkflowEngine, runner: ProjectionRunner) -> None:
    before = [str(engine.start_workflow(INGEST)) for _ in range(12)]
    runner.run_once()
    stop = threading.Event()

    def insert() -> None:
        while not stop.is_set():
            engine.start_workflow(INGEST)
            runner.run_once()

    inserter = threading.Thread(target=insert)
    inserter.start()
    try:
        seen: list[str] = []
        cursor = None
        while True:
            page = queries.list_workflows(runner.store, limit=5, cursor=cursor)
            seen += [w.workflow_id for w in page.items]
            time.sleep(0.01)
            if (cursor := page.next_cursor) is None:
                break
    finally:
        stop.set()
        inserter.join()
    assert len(seen) == len(set(seen))
    assert [s for s in seen if s in set(before)] == list(reversed(before))


def test_replay_and_determinism_on_postgres(engine: WorkflowEngine) -> None:
    ids = play_story(engine)
    for n in range(1, len(engine.history(ids["done"])) + 1):
        assert replay(engine, ids["done"], at=n).differences == []
    report = check_determinism(engine)
    assert report.ok and report.workflows == 6


def test_cli_on_postgres(engine: WorkflowEngine, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ids = play_story(engine)
    capsys.readouterr()  # the story's log lines
    assert main(["workflows", "--json", "--store", url]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 5
    assert main(["pause", str(ids["running"]), "--actor", "pg-op", "--store", url]) == 0
    assert main(["show", str(ids["running"])[:8], "--json", "--store", url]) == 0
    out = capsys.readouterr().out.splitlines()[-1]
    assert json.loads(out)["workflow"]["status"] == "paused"
    assert main(["audit", "--actor", "pg-op", "--json", "--store", url]) == 0
    assert json.loads(capsys.readouterr().out)["event"] == "WorkflowPaused"
    assert main(["rebuild", "--quiet", "--store", url]) == 0
    assert main(["stats", "--json", "--no-catch-up", "--store", url]) == 0
    assert {json.loads(line)["job_type"] for line in capsys.readouterr().out.splitlines()} >= {"encode", "fetch"}


def test_read_your_writes_with_wait_for(engine: WorkflowEngine) -> None:
    runner = ProjectionRunner(engine, poll_interval=30.0)
    runner.start()
    try:
        workflow_id: UUID = engine.start_workflow(INGEST)
        detail = queries.get_workflow(runner.store, workflow_id, wait_for=engine.max_notification_id(), timeout=5)
        assert detail is not None and detail.workflow.status == "running"
    finally:
        runner.close()


def test_timeline_bins_on_postgres(runner: ProjectionRunner) -> None:
    check_timeline(runner.store)  # the same rows and answers as on SQLite (FLOOR for the bin there)
