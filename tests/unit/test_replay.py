"""Replay at a version or time, history timelines, audit export, and the determinism check."""

from __future__ import annotations

from uuid import UUID

import msgspec
import pytest
from test_projections_views import (  # noqa: F401 (fixtures)
    INGEST,
    MEDIA,
    engine_fixture,
    play_story,
    runner_fixture,
)

from stepflow.engine import commands as cmd
from stepflow.engine import decisions
from stepflow.engine.application import WorkflowEngine
from stepflow.projections import ProjectionRunner, queries
from stepflow.projections.history import audit, timeline
from stepflow.projections.models import WorkflowDetail
from stepflow.projections.replay import (
    ReplayError,
    check_determinism,
    check_workflow,
    replay,
    workflow_ids,
)


def _without_seq(detail: WorkflowDetail) -> WorkflowDetail:
    """Replayed views number rows by stream version, live ones by notification id."""
    return msgspec.structs.replace(
        detail,
        workflow=msgspec.structs.replace(detail.workflow, seq=0),
        jobs=tuple(msgspec.structs.replace(j, seq=0) for j in detail.jobs),
    )


def test_replay_at_every_version_matches_the_live_state(engine: WorkflowEngine, runner: ProjectionRunner) -> None:
    live: dict[UUID, dict[int, WorkflowDetail]] = {}

    def capture(workflow_id: UUID) -> None:  # the live view, as the backend's runner sees it
        runner.run_once()
        detail = queries.get_workflow(runner.store, workflow_id)
        assert detail is not None
        live.setdefault(workflow_id, {})[detail.workflow.version] = detail

    ids = play_story(engine, after=capture)
    for name in ("done", "retried", "stopped"):  # finished ones
        workflow_id = ids[name]
        versions = len(engine.history(workflow_id))
        for n in range(1, versions + 1):
            result = replay(engine, workflow_id, at=n)
            assert result.version == n and result.versions == versions
            assert result.state.version == n
            assert result.differences == [], (name, n)
            if n in live[workflow_id]:
                assert _without_seq(result.view) == _without_seq(live[workflow_id][n]), (name, n)
        assert len(live[workflow_id]) > 3


def test_replay_until_a_time(engine: WorkflowEngine) -> None:
    ids = play_story(engine)
    events = engine.history(ids["retried"])
    failed_at = next(e.timestamp for e in events if type(e).__name__ == "WorkflowFailed")
    result = replay(engine, ids["retried"], until=failed_at)
    assert result.view.workflow.status == "error" and result.state.status == "error"
    assert result.version == max(e.originator_version for e in events if e.timestamp <= failed_at)
    with pytest.raises(ReplayError):
        replay(engine, ids["retried"], until=events[0].timestamp.replace(year=2000))
    with pytest.raises(ReplayError):
        replay(engine, ids["retried"], at=len(events) + 1)
    with pytest.raises(ReplayError):
        replay(engine, UUID(int=0))


def test_replay_reads_through_snapshots(engine: WorkflowEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(type(engine).snapshotting_intervals, next(iter(type(engine).snapshotting_intervals)), 5)
    workflow_id = engine.start_workflow(INGEST)
    job = engine.workflow_state(workflow_id).steps["fetch"].jobs[0]
    engine.execute([cmd.RecordProgress(workflow_id=workflow_id, job_id=job, progression=p) for p in range(1, 13)])
    assert len(list(engine.snapshots.get(workflow_id))) == 2  # type: ignore[union-attr]
    for n in (4, 5, 6, 11, 14):
        result = replay(engine, workflow_id, at=n)
        assert result.differences == [] and result.state.version == n


def test_timeline_names_steps_and_attempts(engine: WorkflowEngine) -> None:
    ids = play_story(engine)
    entries = timeline(engine.history(ids["retried"]))
    assert [(e.event, e.step_id, e.attempt) for e in entries] == [
        ("WorkflowStarted", None, None),
        ("JobSubmitted", "fetch", 1),
        ("JobErrored", "fetch", 1),
        ("StepFailed", "fetch", None),
        ("WorkflowFailed", None, None),
        ("JobRetryRequested", "fetch", 1),
        ("JobRetryScheduled", "fetch", 1),
        ("JobSubmitted", "fetch", 2),
        ("JobCompleted", "fetch", 2),
        ("StepCompleted", "fetch", None),
        ("WorkflowCompleted", None, None),
    ]
    assert entries[0].actor == "tester" and entries[0].detail.startswith("ingest 1.0.0 [retried, story]")
    assert entries[2].cause is not None and entries[2].detail == "http: 404"
    assert entries[5].actor == "alice"
    assert entries[6].detail.startswith("attempt 2 as ")
    assert entries[8].detail == "in 3s"


def test_audit_filters(engine: WorkflowEngine) -> None:
    ids = play_story(engine)
    everything = list(audit(engine, batch_size=7))
    assert [e.notification_id for e in everything] == list(range(1, engine.max_notification_id() + 1))
    by_bob = list(audit(engine, actor="bob"))
    assert [e.event for e in by_bob] == ["WorkflowPaused", "JobRetryRequested", "WorkflowResumed", "WorkflowStopped"]
    assert by_bob[-1].data["reason"] == "enough" and by_bob[-1].workflow_id == str(ids["stopped"])
    since = by_bob[0].time
    later = list(audit(engine, since=since))
    assert later and all(e.time >= since for e in later) and len(later) < len(everything)
    assert all(e.time < since for e in audit(engine, until=since))
    only = list(audit(engine, workflow_id=ids["deleted"]))
    assert {e.workflow_id for e in only} == {str(ids["deleted"])}
    assert [e.notification_id for e in audit(engine, after=everything[-3].notification_id)] == [
        e.notification_id for e in everything[-2:]]


def test_the_determinism_check_passes_on_an_unchanged_engine(engine: WorkflowEngine) -> None:
    ids = play_story(engine)
    assert list(workflow_ids(engine, batch_size=2)) == list(ids.values())
    report = check_determinism(engine)
    assert report.ok and report.workflows == 6
    # every event but the six workflows' numbers (the wire-id index, in streams of their own)
    assert report.events == engine.max_notification_id() - 6


def test_the_determinism_check_finds_a_changed_priority_rule(engine: WorkflowEngine,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    ids = play_story(engine)
    monkeypatch.setattr(decisions, "MAX_PRIORITY", 0)
    report = check_determinism(engine)
    assert not report.ok
    # Only workflows that reached a step of order > 0 decided a priority above 0.
    assert {d.workflow_id for d in report.divergences} == {str(ids[n]) for n in ("done", "running")}
    first = report.divergences[0]
    assert first.fact == "JobCompleted" and "priority: stored 1, now 0" in first.message
    assert [e["type"] for e in first.stored] == ["StepCompleted", "JobSubmitted", "JobSubmitted",
                                                 "JobSubmitted", "StepSkipped"]


def test_the_determinism_check_finds_a_changed_retry_rule(engine: WorkflowEngine,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    ids = play_story(engine)
    monkeypatch.setattr(decisions, "retryable", lambda state, job: False)  # "we no longer retry"
    report = check_determinism(engine, [ids["done"], ids["retried"]])
    assert report.workflows == 2
    (divergence,) = report.divergences
    assert divergence.workflow_id == str(ids["done"]) and divergence.fact == "JobErrored"
    assert "differs" in divergence.message or "no longer decided" in divergence.message
    assert divergence.stored[0]["type"] == "JobRetryScheduled"
    assert divergence.produced[0]["type"] == "StepFailed"


def test_check_workflow_on_a_single_history() -> None:
    engine = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    workflow_id = engine.start_workflow(MEDIA)
    events = engine.history(workflow_id)
    assert check_workflow(events) is None
    divergence = check_workflow(events[:1])  # the start's decisions are missing
    assert divergence is not None and "re-deciding gives 1" in divergence.message
