"""A log stored in an older shape reads as if written today: state, replay, views, history.

`tests/fixtures/event_log_legacy.jsonl` is `event_log_current.jsonl` with every
`JobCompleted` in the v0 shape (see `tests/fixtures/event_logs.py`). Loaded into fresh
stores, the two must give the same events, states, replays, read models, timelines and
audit trail, through every read path: the mapper (history, load, snapshots,
`engine.notifications`), the fast log reader (projections, audit; SQLite and PostgreSQL),
and the determinism check (also as `stepflow replay --check`). Without its upcaster the
legacy log must not load at all, and a rule change must still show as a divergence.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from event_logs import CURRENT, LEGACY, from_v0, load_log, read_log
from pg_fixtures import PG_SERVER, fresh_schema
from test_projections_views import dump

from stepflow.adapters.cli import main
from stepflow.adapters.persistence import engine_env
from stepflow.engine import decisions
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.snapshots import WorkflowSnapshot
from stepflow.engine.upcasting import UPCASTERS, UpcastError
from stepflow.projections import ProjectionRunner, queries
from stepflow.projections.history import audit, timeline
from stepflow.projections.replay import check_determinism, replay

pytestmark = [pytest.mark.integration]

Open = Callable[..., WorkflowEngine]
NAMES = ("done", "retried", "stopped", "deleted", "worker_stopped", "running")
MISSING_UPCASTER = r"stored JobCompleted is version 0 .* no upcaster turns version 0 into 1"


def story_ids() -> dict[str, UUID]:
    """The fixture's workflows by story name (their first label)."""
    return {r.state["labels"][0]: r.originator_id for r in read_log(CURRENT) if r.topic == "WorkflowStarted"}


def plain(value: Any) -> Any:
    return msgspec.to_builtins(value, order="deterministic")


@pytest.fixture
def upcaster_v0(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(UPCASTERS, ("JobCompleted", 0), from_v0)


@pytest.fixture(name="open_log")
def open_log_fixture(tmp_path: Path) -> Iterator[Open]:
    """Load a fixture log into a fresh SQLite store: `open_log(path, snapshots=True)`."""
    engines: list[WorkflowEngine] = []

    def open_log(path: Path, *, snapshots: bool = True) -> WorkflowEngine:
        name = f"{path.stem}-{len(engines)}.sqlite"
        engine = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                     "SQLITE_DBNAME": str(tmp_path / name)})
        engines.append(engine)
        load_log(engine, path, snapshots=snapshots)
        return engine

    yield open_log
    for engine in engines:
        engine.close()


def test_the_legacy_log_holds_the_same_events_in_an_older_shape() -> None:
    current, legacy = read_log(CURRENT), read_log(LEGACY)
    assert len(current) == len(legacy) > 60
    changed = [(a, b) for a, b in zip(current, legacy, strict=True) if a != b]
    assert {a.topic for a, _ in changed} == {"JobCompleted"} and len(changed) == 7
    assert {b.state["type"] for _, b in changed} == {"JobCompleted.v0"}
    assert all("outputs" not in b.state and "parameters" in b.state for _, b in changed)
    assert {r.topic for r in current} >= {"LateAnswerReceived", "MessageQuarantined", "ActionRefused",
                                          "WorkflowSnapshot"}


@pytest.mark.usefixtures("upcaster_v0")
@pytest.mark.parametrize("snapshots", [False, True])
def test_it_loads_the_same_events_and_states(open_log: Open, snapshots: bool) -> None:
    current, legacy = open_log(CURRENT, snapshots=snapshots), open_log(LEGACY, snapshots=snapshots)
    ids = story_ids()
    for name, workflow_id in ids.items():
        assert legacy.history(workflow_id) == current.history(workflow_id), name
        assert plain(legacy.workflow_state(workflow_id)) == plain(current.workflow_state(workflow_id)), name
    assert legacy.notifications(0, 1000) == current.notifications(0, 1000)
    done = legacy.workflow_state(ids["done"])
    probe = done.jobs[done.steps["probe"].jobs[0]]
    assert (probe.status, probe.outputs, probe.execution_duration) == ("completed", {"ok": True}, 2.0)
    assert {name: legacy.workflow_state(i).status for name, i in ids.items()} == {
        "done": "completed", "retried": "completed", "stopped": "stopped", "deleted": "deleted",
        "worker_stopped": "error", "running": "running"}
    late = next(e for e in legacy.history(ids["done"]) if isinstance(e, ev.LateAnswerReceived))
    assert (late.answer, late.outputs) == ("completed", {"ok": False})


@pytest.mark.usefixtures("upcaster_v0")
def test_snapshots_written_before_keep_loading(open_log: Open) -> None:
    legacy, rebuilt = open_log(LEGACY), open_log(LEGACY, snapshots=False)
    done = story_ids()["done"]
    (snapshot,) = legacy.snapshots.get(done)  # type: ignore[union-attr]
    assert isinstance(snapshot, WorkflowSnapshot) and snapshot.originator_version == 5
    assert snapshot.state.jobs[snapshot.state.steps["probe"].jobs[0]].outputs == {"ok": True}
    for version in (5, 6, 20, len(legacy.history(done))):
        assert plain(legacy.load(done, version).state) == plain(rebuilt.load(done, version).state), version


@pytest.mark.usefixtures("upcaster_v0")
def test_it_replays_identically(open_log: Open, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    current, legacy = open_log(CURRENT), open_log(LEGACY)
    for name, workflow_id in story_ids().items():
        for version, event in enumerate(legacy.history(workflow_id), start=1):
            ours, theirs = replay(legacy, workflow_id, at=version), replay(current, workflow_id, at=version)
            assert plain(ours) == plain(theirs), (name, version)
            assert ours.differences == [], (name, version, type(event).__name__)
    report = check_determinism(legacy)
    assert report.ok and plain(report) == plain(check_determinism(current))
    assert (report.workflows, report.events) == (len(NAMES), 67)
    assert main(["replay", "--check", "--store", f"sqlite:///{tmp_path / 'event_log_legacy-1.sqlite'}"]) == 0
    assert "checked 6 workflow(s), 67 events: 0 divergence(s)" in capsys.readouterr().err


@pytest.mark.usefixtures("upcaster_v0")
def test_a_rule_change_is_still_flagged_on_the_legacy_log(open_log: Open, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    current, legacy = open_log(CURRENT), open_log(LEGACY)
    monkeypatch.setattr(decisions, "MAX_PRIORITY", 0)
    report = check_determinism(legacy)
    assert not report.ok and plain(report) == plain(check_determinism(current))
    ids = story_ids()
    assert {d.workflow_id for d in report.divergences} == {str(ids["done"]), str(ids["running"])}
    assert report.divergences[0].fact == "JobCompleted" and "priority: stored 1, now 0" in report.divergences[0].message
    assert main(["replay", "--check", "--store", f"sqlite:///{tmp_path / 'event_log_legacy-1.sqlite'}"]) == 1


@pytest.mark.usefixtures("upcaster_v0")
def test_it_rebuilds_the_same_views_and_history(open_log: Open) -> None:
    current, legacy = open_log(CURRENT), open_log(LEGACY)
    views = {}
    for engine in (current, legacy):
        runner = ProjectionRunner(engine, batch_size=7)  # the fast log reader, in small batches
        runner.rebuild()
        views[engine] = (dump(runner.store), plain(queries.list_workflows(runner.store, limit=100)),
                         plain(queries.job_stats(runner.store)),
                         [plain(queries.get_workflow(runner.store, i)) for i in story_ids().values()])
        runner.close()
    assert views[legacy] == views[current]
    assert views[legacy][0]["sf_jobs"] and len(views[legacy][3]) == len(NAMES)
    for workflow_id in story_ids().values():
        assert timeline(legacy.history(workflow_id)) == timeline(current.history(workflow_id))
    trail = list(audit(legacy, batch_size=7))
    assert trail == list(audit(current, batch_size=7)) and len(trail) == 69
    first = next(e for e in trail if e.event == "JobCompleted")
    assert (first.data["outputs"], first.data["execution_duration"]) == ({"ok": True}, 2.0)


def test_without_its_upcaster_the_old_shape_fails_loudly(open_log: Open) -> None:
    legacy = open_log(LEGACY, snapshots=False)
    done = story_ids()["done"]
    with pytest.raises(UpcastError, match=MISSING_UPCASTER):
        legacy.workflow_state(done)  # the mapper
    with pytest.raises(UpcastError, match=MISSING_UPCASTER):
        list(audit(legacy))  # the fast log reader
    runner = ProjectionRunner(legacy)
    try:
        with pytest.raises(UpcastError, match=MISSING_UPCASTER):
            runner.rebuild()
    finally:
        runner.close()
    with pytest.raises(UpcastError, match=MISSING_UPCASTER):
        check_determinism(legacy)


@pytest.mark.postgres
@pytest.mark.usefixtures("upcaster_v0")
def test_the_postgres_log_reader_upcasts_too(open_log: Open) -> None:
    current = open_log(CURRENT)
    with fresh_schema() as schema:
        legacy = WorkflowEngine(env=engine_env(f"{PG_SERVER}?schema={schema}"))
        try:
            load_log(legacy, LEGACY)
            assert [(e.event, e.data) for e in audit(legacy, batch_size=7)] == [
                (e.event, e.data) for e in audit(current)]
            runner = ProjectionRunner(legacy)
            runner.rebuild(batch_size=7)
            detail = queries.get_workflow(runner.store, story_ids()["done"])
            runner.close()
            assert detail is not None and detail.workflow.status == "completed"
        finally:
            legacy.close()
