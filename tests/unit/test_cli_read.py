"""The read and operator commands, run in-process on a SQLite file with the story's log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from test_projections_views import play_story

from stepflow.adapters.cli import main
from stepflow.engine import decisions
from stepflow.engine.application import WorkflowEngine
from stepflow.projections import WorkersView, open_view_store


class Cli:
    def __init__(self, store: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.store = store
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main([*args, "--store", self.store])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json_lines(self, *args: str) -> list[dict[str, Any]]:
        code, out, _ = self(*args, "--json")
        assert code == 0
        return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def ids(tmp_path: Path) -> Iterator[dict[str, UUID]]:
    engine = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                 "SQLITE_DBNAME": str(tmp_path / "store.sqlite")})
    yield play_story(engine)
    engine.close()


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(f"sqlite:///{tmp_path / 'store.sqlite'}", capsys)


def test_workflows_table_filters_and_pages(ids: dict[str, UUID], cli: Cli) -> None:
    code, out, _ = cli("workflows")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ID", "DEFINITION", "STATUS", "PROGRESS"]
    assert lines[1].startswith(str(ids["running"])[:8]) and "encode,thumbs" in lines[1]
    assert len(lines) == 1 + 5  # the deleted one is hidden
    rows = cli.json_lines("workflows", "--status", "completed")
    assert [r["workflow_id"] for r in rows] == [str(ids["retried"]), str(ids["done"])]
    assert rows[0]["progress"] == 100.0 and rows[0]["labels"] == ["retried", "story"]
    assert [r["workflow_id"] for r in cli.json_lines("workflows", "--label", "worker_stopped")] == [
        str(ids["worker_stopped"])]
    assert len(cli.json_lines("workflows", "--definition", "ingest", "--status", "deleted")) == 1
    code, out, err = cli("workflows", "--limit", "2", "--json")
    assert len(out.splitlines()) == 2 and err.startswith("more: --cursor ")
    cursor = err.split()[-1]
    assert len(cli.json_lines("workflows", "--limit", "2", "--cursor", cursor)) == 2
    assert len(cli.json_lines("workflows", "--limit", "2", "--all")) == 5
    assert cli.json_lines("workflows", "--since", "1h", "--until", "2999-01-01")
    assert cli.json_lines("workflows", "--until", "2000-01-01") == []


def test_show_steps_and_jobs(ids: dict[str, UUID], cli: Cli) -> None:
    code, out, _ = cli("show", str(ids["done"])[:8])
    assert code == 0
    assert out.startswith(f"workflow {ids['done']}  media@2.1.0  Media ingest")
    assert "completed, 100% (4/4 steps)" in out and "by tester" in out
    assert "tags video" in out and "sizes=['a', 'b', 'c']" in out
    assert "3 completed, 2 retrying" in out and "disk full" in out and "└─" in out
    detail = cli.json_lines("show", str(ids["stopped"]))[0]
    assert detail["workflow"]["status"] == "stopped" and len(detail["steps"]) == 4
    assert [j["status"] for j in detail["jobs"]] == ["retrying", "stopped"]
    assert cli("show", "0000")[0] == 2
    assert cli("show", "not-an-id")[0] == 2


def test_jobs_by_status_and_type(ids: dict[str, UUID], cli: Cli) -> None:
    retrying = cli.json_lines("jobs", "--status", "retrying")
    assert len(retrying) == 4 and {j["status"] for j in retrying} == {"retrying"}
    assert len(cli.json_lines("jobs", "--job-type", "encode", "--status", "queued")) == 3
    assert {j["workflow_id"] for j in cli.json_lines("jobs", "--workflow", str(ids["done"])[:8])} == {
        str(ids["done"])}
    code, out, err = cli("jobs", "--limit", "2")
    assert code == 0 and len(out.splitlines()) == 3 and err.startswith("more: --cursor")
    assert out.splitlines()[0].split()[:3] == ["JOB", "WORKFLOW", "STEP"]


def test_stats_and_workers(ids: dict[str, UUID], cli: Cli, tmp_path: Path) -> None:
    code, out, _ = cli("stats")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["JOB", "TYPE", "SUBMITTED"]
    encode = next(r for r in cli.json_lines("stats") if r["job_type"] == "encode")
    assert encode["completed"] == 3 and encode["success_rate"] == pytest.approx(0.6)
    assert cli.json_lines("stats", "--job-type", "probe")[0]["job_type"] == "probe"

    assert cli.json_lines("workers") == []
    engine = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                 "SQLITE_DBNAME": str(tmp_path / "store.sqlite")})
    store = open_view_store(engine)
    WorkersView(store).record_heartbeat("i-1", "encode", at=datetime.now(UTC), label="Encoder")
    WorkersView(store).record_heartbeat("i-0", "probe", at=datetime(2020, 1, 1, tzinfo=UTC))
    store.close()
    engine.close()
    workers = cli.json_lines("workers")
    assert [(w["instance_id"], w["status"]) for w in workers] == [("i-1", "alive"), ("i-0", "gone")]
    assert [w["instance_id"] for w in cli.json_lines("workers", "--alive")] == ["i-1"]
    code, out, _ = cli("workers")
    assert "Encoder" in out and "alive" in out


def test_history_and_audit(ids: dict[str, UUID], cli: Cli) -> None:
    code, out, _ = cli("history", str(ids["retried"]))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["V", "TIME", "EVENT", "STEP", "JOB"] and len(lines) == 12
    assert "JobRetryRequested" in lines[6] and "alice" in lines[6]
    entries = cli.json_lines("history", str(ids["retried"]))
    assert [e["version"] for e in entries] == list(range(1, 12))
    assert entries[2]["cause"] and entries[2]["step_id"] == "fetch" and entries[2]["event"] == "JobErrored"
    # the event's own fields, whole: not the table's clipped words
    assert (entries[2]["data"]["kind"], entries[2]["data"]["message"]) == ("http", "404") and "detail" not in entries[2]
    assert entries[0]["data"]["definition"]["identifier"] and entries[0]["data"]["parameters"] is not None
    assert cli("history", "00000000-0000-0000-0000-000000000000")[0] == 2

    audit = cli.json_lines("audit", "--actor", "bob")
    assert [a["event"] for a in audit] == ["WorkflowPaused", "JobRetryRequested", "WorkflowResumed",
                                           "WorkflowStopped"]
    assert all(a["actor"] == "bob" and a["workflow_id"] == str(ids["stopped"]) for a in audit)
    everything = cli.json_lines("audit")
    assert len(everything) == len(cli.json_lines("audit", "--since", "1d"))
    assert cli.json_lines("audit", "--since", "2999-01-01") == []
    assert len(cli.json_lines("audit", "--after", str(everything[-2]["notification_id"]))) == 1
    assert {a["workflow_id"] for a in cli.json_lines("audit", "--workflow", str(ids["done"])[:8])} == {
        str(ids["done"])}
    code, out, _ = cli("audit", "--actor", "carol")
    assert code == 0 and "WorkflowDeleted" in out and "carol" in out


def test_replay_and_the_determinism_check(ids: dict[str, UUID], cli: Cli,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = cli("replay", str(ids["done"]), "--at", "3")
    assert code == 0 and err == ""
    assert out.startswith("replayed to version 3 of") and "probe" in out and "processing" in out
    result = cli.json_lines("replay", str(ids["retried"]), "--at", "5")[0]
    assert result["version"] == 5 and result["view"]["workflow"]["status"] == "error"
    assert result["differences"] == []
    assert cli("replay", str(ids["done"]), "--at", "999")[0] == 2
    assert cli("replay", str(ids["done"]), "--until", "2000-01-01")[0] == 2
    assert cli("replay", str(ids["done"]), "--until", "2999-01-01")[0] == 0
    assert cli("replay")[0] == 2

    code, out, err = cli("replay", "--check")
    assert (code, out) == (0, "") and "checked 6 workflow(s)" in err and "0 divergence" in err
    monkeypatch.setattr(decisions, "MAX_PRIORITY", 0)
    code, out, err = cli("replay", "--check")
    assert code == 1 and "2 divergence(s)" in err
    assert out.count("priority: stored 1, now 0") == 2
    code, out, err = cli("replay", "--check", str(ids["done"]), "--json")
    result = json.loads(out)  # one object on stdout: the verdict, the counts, the divergences
    assert code == 1 and err == "" and (result["ok"], result["workflows"]) == (False, 1)
    assert [d["workflow_id"] for d in result["divergences"]] == [str(ids["done"])]
    monkeypatch.undo()
    code, out, _ = cli("replay", "--check", "--json")
    assert code == 0 and json.loads(out) == {"ok": True, "workflows": 6, "events": json.loads(out)["events"],
                                             "divergences": []}


def test_operator_commands_record_the_actor(ids: dict[str, UUID], cli: Cli,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    running = str(ids["running"])
    assert cli("pause", running[:8], "--actor", "dana")[1] == f"paused workflow {running}\n"
    assert cli.json_lines("show", running)[0]["workflow"]["status"] == "paused"  # views caught up
    monkeypatch.setenv("STEPFLOW_ACTOR", "erin")
    outcome = cli.json_lines("resume", running)[0]
    assert outcome["ok"] and outcome["actor"] == "erin" and outcome["notification_id"] > 0
    code, _, err = cli("resume", running)  # already running: nothing to do
    assert code == 0
    assert cli("stop", running, "--reason", "maintenance", "--actor", "dana")[0] == 0
    code, _, err = cli("pause", running)
    assert code == 3 and "cannot pause a workflow that is stopped" in err
    assert cli("delete", running, "--actor", "dana")[0] == 0
    assert cli("stop", "00000000-0000-0000-0000-000000000000")[0] == 2
    events = [(a["event"], a["actor"]) for a in cli.json_lines("audit", "--workflow", running)][-4:]
    assert events == [("WorkflowPaused", "dana"), ("WorkflowResumed", "erin"),
                      ("WorkflowStopped", "dana"), ("WorkflowDeleted", "dana")]


def test_retry_a_job_by_its_short_id(ids: dict[str, UUID], cli: Cli) -> None:
    detail = cli.json_lines("show", str(ids["worker_stopped"]))[0]
    job_id = detail["jobs"][0]["job_id"]
    code, out, _ = cli("retry", job_id[:8], "--actor", "frank")
    assert code == 0 and out == f"retried job {job_id}\n"
    detail = cli.json_lines("show", str(ids["worker_stopped"]))[0]
    assert [j["status"] for j in detail["jobs"]] == ["retrying", "queued"]
    assert detail["workflow"]["status"] == "running"
    code, _, err = cli("retry", job_id)
    assert code == 3 and "already retried" in err
    refused = json.loads(cli("retry", detail["jobs"][1]["job_id"], "--json")[1])
    assert refused["ok"] is False and "only an errored" in refused["reason"]
    assert cli("retry", "ffffffff")[0] == 2


def test_rebuild_and_project_once(ids: dict[str, UUID], cli: Cli) -> None:
    before = cli.json_lines("show", str(ids["done"]))
    code, _, err = cli("rebuild", "--quiet")
    assert code == 0 and "rebuilt workflows, job_stats, definition_stats, worker_orders:" in err and "events/s" in err
    assert cli.json_lines("show", str(ids["done"]), "--no-catch-up") == before
    code, _, err = cli("rebuild", "job_stats")
    assert code == 0 and "rebuilding [" in err
    assert cli("rebuild", "nope")[0] == 2
    assert cli("project", "--once")[0] == 0


def test_no_catch_up_reads_the_views_as_they_are(ids: dict[str, UUID], cli: Cli) -> None:
    assert cli.json_lines("workflows", "--no-catch-up") == []  # nothing projected yet
    assert len(cli.json_lines("workflows")) == 5


def test_a_missing_store_is_exit_2_and_is_not_created(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "sub" / "store.sqlite"
    for command in (["workflows"], ["history", "0000"], ["stop", "abcd"], ["rebuild"], ["project", "--once"]):
        assert main([*command, "--store", f"sqlite:///{missing}"]) == 2
        assert capsys.readouterr().err == (f"stepflow: no store at {missing}: start a workflow first, "
                                           f"or pass --store\n")
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_store_exits_4(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "store.sqlite").mkdir()  # there, but no file SQLite can open
    code = main(["workflows", "--store", f"sqlite:///{tmp_path / 'store.sqlite'}"])
    err = capsys.readouterr().err
    assert code == 4 and err.startswith("stepflow: store unreachable: ") and err.count("\n") == 1, err
