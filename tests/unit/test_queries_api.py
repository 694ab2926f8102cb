"""`stepflow.queries`: the read models from Python give what the read commands print."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import pytest
from test_cli_read import Cli
from test_projections_views import INGEST, play_story

from stepflow.engine import commands as cmd
from stepflow.engine.application import WorkflowEngine
from stepflow.projections import WorkersView, open_view_store
from stepflow.queries import BadCursor, NotCaughtUp, Views, WorkflowDetail, open_views


def plain(value: Any) -> Any:
    """As the CLI's `--json` prints it."""
    return json.loads(msgspec.json.encode(value))


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.sqlite'}"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[WorkflowEngine]:
    engine = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                 "SQLITE_DBNAME": str(tmp_path / "store.sqlite")})
    yield engine
    engine.close()


@pytest.fixture
def ids(engine: WorkflowEngine) -> dict[str, UUID]:
    return play_story(engine)


@pytest.fixture
def views(ids: dict[str, UUID], url: str) -> Iterator[Views]:
    with open_views(url) as views:
        yield views


@pytest.fixture
def cli(url: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(url, capsys)


def test_listings_are_what_the_read_commands_print(ids: dict[str, UUID], views: Views, cli: Cli) -> None:
    assert plain(views.workflows().items) == cli.json_lines("workflows")
    assert plain(views.workflows(status=["completed", "deleted"]).items) == cli.json_lines(
        "workflows", "--status", "completed", "--status", "deleted")
    assert plain(views.workflows(label="worker_stopped").items) == cli.json_lines("workflows", "--label",
                                                                                 "worker_stopped")
    assert plain(views.jobs(status="retrying").items) == cli.json_lines("jobs", "--status", "retrying")
    assert plain(views.jobs(workflow_id=ids["done"]).items) == cli.json_lines("jobs", "--workflow", str(ids["done"]))
    assert plain(views.job_type_stats()) == cli.json_lines("stats")
    assert plain(views.job_type_stats("probe")) == cli.json_lines("stats", "--job-type", "probe")


def test_one_workflow_and_one_job(ids: dict[str, UUID], views: Views, cli: Cli) -> None:
    detail = views.workflow(ids["done"])
    assert isinstance(detail, WorkflowDetail) and detail.workflow.status == "completed"
    assert plain(detail) == cli.json_lines("show", str(ids["done"]))[0]
    assert views.workflow(str(ids["stopped"])) == views.workflow(ids["stopped"])
    assert views.workflow(UUID(int=0)) is None
    job = detail.jobs[0]
    assert views.job(job.job_id) == job
    assert views.job("nope") is None


def test_pages_follow_cursors_and_a_bad_cursor_is_refused(ids: dict[str, UUID], views: Views) -> None:
    first = views.workflows(limit=2)
    second = views.workflows(limit=2, cursor=first.next_cursor)
    assert len(first.items) == len(second.items) == 2 and first.next_cursor and second.next_cursor
    assert not {w.workflow_id for w in first.items} & {w.workflow_id for w in second.items}
    assert [w.workflow_id for w in views.workflows(limit=2, oldest_first=True).items] == [
        str(ids["done"]), str(ids["retried"])]
    assert views.workflows(started_before=datetime(2000, 1, 1, tzinfo=UTC)).items == ()
    with pytest.raises(BadCursor):
        views.workflows(cursor="x")


def test_workers_as_announced(ids: dict[str, UUID], views: Views, cli: Cli, engine: WorkflowEngine) -> None:
    assert views.workers() == []
    store = open_view_store(engine)
    WorkersView(store).record_heartbeat("i-1", "encode", at=datetime.now(UTC), label="Encoder")
    WorkersView(store).record_heartbeat("i-0", "probe", at=datetime(2020, 1, 1, tzinfo=UTC))
    store.close()
    assert [(w.instance_id, w.status) for w in views.workers()] == [("i-1", "alive"), ("i-0", "gone")]
    assert [w.instance_id for w in views.workers(alive_only=True)] == ["i-1"]
    assert [w.instance_id for w in views.workers(job_type="probe")] == ["i-0"]
    assert plain(views.workers()) == cli.json_lines("workers")


def test_views_stay_as_read_until_refreshed_or_waited_for(ids: dict[str, UUID], views: Views,
                                                         engine: WorkflowEngine) -> None:
    before = len(views.workflows().items)
    new = engine.start_workflow(INGEST, {}, labels=["late"])
    assert len(views.workflows().items) == before  # not refreshed yet
    assert views.refresh() == len(engine.history(new)) + 1  # the events of its start, and its number
    assert views.workflow(new) is not None
    engine.command(cmd.StopWorkflow(workflow_id=new, cause="stop-1", reason="enough", actor="me"))
    views.wait_for(engine.max_notification_id())  # read your own write
    detail = views.workflow(new)
    assert detail is not None and detail.workflow.status == "stopped"
    engine.command(cmd.DeleteWorkflow(workflow_id=new, cause="delete-1", actor="me"))
    views.wait_for()  # default: the end of the log now
    assert views.workflows(status="deleted", label="late").items[0].workflow_id == str(new)
    with pytest.raises(NotCaughtUp):
        views.wait_for(engine.max_notification_id() + 100, timeout=0.1)


def test_open_without_catching_up_reads_the_views_as_they_are(ids: dict[str, UUID], url: str) -> None:
    with open_views(url, catch_up=False) as views:
        assert views.workflows().items == ()
        assert views.refresh() > 0
        assert len(views.workflows().items) == 5


def test_an_open_engine_is_read_in_place_and_left_open() -> None:
    engine = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    try:
        workflow_id = engine.start_workflow(INGEST, {})
        with open_views(engine) as views:  # memory://: its views live beside this engine only
            detail = views.workflow(workflow_id)
            assert detail is not None and detail.workflow.status == "running"
        assert engine.workflow_state(workflow_id).status == "running"  # still open
    finally:
        engine.close()


def test_the_store_defaults_to_stepflow_store(ids: dict[str, UUID], url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPFLOW_STORE", url)
    with open_views() as views:
        assert len(views.workflows().items) == 5
