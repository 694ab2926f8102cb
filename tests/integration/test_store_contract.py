"""What every event store must give the engine, run against each real store.

Not collected on its own (`StoreContract` is no `Test*` class): `test_store_sqlite.py` and
`test_store_postgres.py` subclass it and provide the `store_env` fixture, the environment
`eventsourcing` is configured by.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar
from uuid import UUID

import msgspec
import pytest

from stepflow.engine import commands as cmd
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition
from stepflow.engine.state import WorkflowState
from stepflow.engine.statuses import JOB_ACTIVE
from stepflow.engine.workflow import Workflow, project_workflow

MEDIA = build_definition({
    "identifier": "media",
    "version": "1.0.0",
    "parameters": [
        {"id": "source"},
        {"id": "thumbnails", "type": "boolean", "default": False},
    ],
    "steps": [
        {"id": "probe", "job_type": "ffprobe", "parameters": {"src": "{workflow.source}"}, "outputs": ["segments"]},
        {"id": "thumbs", "job_type": "thumbs", "parents": ["probe"], "condition": "{workflow.thumbnails}"},
        {"id": "encode", "job_type": "ffmpeg", "parents": ["probe"], "fan_out": "{steps.probe.outputs.segments}",
         "parameters": {"src": "{workflow.source}", "start": "{item}"}, "retry": {"max_attempts": 2, "backoff_s": 0}},
        {"id": "audio", "job_type": "sox", "parents": ["probe"]},
        {"id": "mux", "job_type": "mux", "parents": ["encode", "audio", "thumbs"],
         "parameters": {"video": "{steps.encode.outputs.file}", "audio": "{steps.audio.outputs.file}"}},
    ],
})

EngineFactory = Callable[..., WorkflowEngine]


class SnapshottingEngine(WorkflowEngine):
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Workflow: 5}


def as_data(state: WorkflowState) -> Any:
    """A state as plain data; sets sorted, so equal states compare equal."""
    return msgspec.to_builtins(state, order="deterministic")


def outputs_for(step_id: str, parameters: dict[str, Any]) -> dict[str, Any]:
    if step_id == "probe":
        return {"segments": [0, 10, 20]}
    if step_id == "encode":
        return {"file": f"seg{parameters['start']}.mp4"}
    return {"file": f"{step_id}.out"}


def drive(engine: WorkflowEngine, workflow_id: UUID) -> int:
    """Answer every active job (the 2nd segment errors once) until the workflow ends."""
    batches = 0
    while (state := engine.workflow_state(workflow_id)).status == "running":
        commands: list[cmd.Command] = []
        for job in state.jobs.values():
            if job.status not in JOB_ACTIVE:
                continue
            if (job.step_id, job.index, job.attempt) == ("encode", 1, 1):
                commands.append(cmd.RecordError(workflow_id=workflow_id, job_id=job.job_id, message="glitch",
                                                cause=f"err-{job.job_id}"))
                continue
            commands += [
                cmd.RecordProgress(workflow_id=workflow_id, job_id=job.job_id, progression=50,
                                   cause=f"prog-{job.job_id}", worker="w1"),
                cmd.RecordCompleted(workflow_id=workflow_id, job_id=job.job_id, cause=f"done-{job.job_id}",
                                    outputs=outputs_for(job.step_id, job.parameters), execution_duration=1.5),
            ]
        assert commands, f"stuck: {state.status} {[s.status for s in state.steps.values()]}"
        assert all(o.ok for o in engine.execute(commands))
        batches += 1
        assert batches < 20
    return batches


class StoreContract:
    @pytest.fixture
    def store_env(self) -> dict[str, str]:
        raise NotImplementedError

    @pytest.fixture
    def open_engine(self, store_env: dict[str, str]) -> Iterator[EngineFactory]:
        opened: list[WorkflowEngine] = []

        def factory(cls: type[WorkflowEngine] = WorkflowEngine) -> WorkflowEngine:
            engine = cls(env=store_env)
            opened.append(engine)
            return engine

        yield factory
        for engine in opened:
            engine.close()

    def test_a_workflow_runs_to_completion_and_reloads_equal(self, open_engine: EngineFactory) -> None:
        engine = open_engine()
        workflow_id = engine.start_workflow(MEDIA, {"source": "in.mov"}, cause="req-1")
        drive(engine, workflow_id)
        in_memory = engine.load(workflow_id).state  # the aggregate the engine has cached

        assert in_memory.status == "completed"
        assert in_memory.steps["thumbs"].status == "skipped"
        assert in_memory.steps["encode"].outputs == {"file": ["seg0.mp4", "seg10.mp4", "seg20.mp4"]}
        assert sum(job.step_id == "encode" for job in in_memory.jobs.values()) == 4  # one retry
        mux = in_memory.jobs[in_memory.steps["mux"].jobs[0]]
        assert mux.parameters == {"video": ["seg0.mp4", "seg10.mp4", "seg20.mp4"], "audio": "audio.out"}

        reloaded = open_engine().workflow_state(workflow_id)
        assert as_data(reloaded) == as_data(in_memory)
        replayed = project_workflow(None, engine.history(workflow_id))
        assert replayed is not None and as_data(replayed.state) == as_data(in_memory)

    def test_a_new_engine_recognises_messages_the_old_one_stored(self, open_engine: EngineFactory) -> None:
        first = open_engine()
        workflow_id = first.start_workflow(MEDIA, {"source": "in.mov"})
        probe = first.workflow_state(workflow_id).steps["probe"].jobs[0]
        done = cmd.RecordCompleted(workflow_id=workflow_id, job_id=probe, cause="m-1", outputs={"segments": []})
        assert first.execute([done]) == [cmd.OK]
        stored = first.max_notification_id()

        second = open_engine()
        assert second.execute([done]) == [cmd.Outcome(ignored="duplicate")]
        assert second.max_notification_id() == stored
        assert second.execute([msgspec.structs.replace(done, cause="m-2")]) == [cmd.Outcome(ignored="late")]
        assert second.max_notification_id() == stored + 1  # the LateAnswerReceived

    def test_snapshots_load_the_same_state(self, open_engine: EngineFactory) -> None:
        engine = open_engine(SnapshottingEngine)
        workflow_id = engine.start_workflow(MEDIA, {"source": "in.mov"})
        drive(engine, workflow_id)
        in_memory = engine.load(workflow_id).state
        history = engine.history(workflow_id)
        assert engine.snapshots is not None
        snapshots = [s.originator_version for s in engine.snapshots.get(workflow_id)]
        assert snapshots == list(range(5, len(history) + 1, 5))

        fresh = open_engine(SnapshottingEngine)
        assert fresh.snapshots is not None
        reads: list[Any] = []
        real_get = fresh.repository.event_store.get

        def spy(*args: Any, **kwargs: Any) -> Any:
            reads.append(kwargs.get("gt"))
            return real_get(*args, **kwargs)

        fresh.repository.event_store.get = spy  # type: ignore[method-assign]
        assert as_data(fresh.workflow_state(workflow_id)) == as_data(in_memory)
        assert reads == [snapshots[-1]]  # only the events after the last snapshot were read

        for version in range(1, len(history) + 1):
            at_version = fresh.workflow_state(workflow_id, version=version)
            replayed = project_workflow(None, history[:version])
            assert replayed is not None
            assert as_data(at_version) == as_data(replayed.state), f"differs at version {version}"

    def test_a_stale_engine_is_corrected_by_the_version_check(self, open_engine: EngineFactory) -> None:
        a, b = open_engine(), open_engine()
        workflow_id = a.start_workflow(MEDIA, {"source": "in.mov"})  # a has it cached at version 2
        probe = a.workflow_state(workflow_id).steps["probe"].jobs[0]
        progress = cmd.RecordProgress(workflow_id=workflow_id, job_id=probe, progression=10, cause="p-1")
        assert b.execute([progress]) == [cmd.OK]  # b writes version 3

        done = cmd.RecordCompleted(workflow_id=workflow_id, job_id=probe, cause="m-1", outputs={"segments": [0]})
        assert a.execute([done]) == [cmd.OK]  # conflict, reload, apply
        late = cmd.RecordCompleted(workflow_id=workflow_id, job_id=probe, cause="m-2")
        # b's cache is stale: conflict, reload, then kept as a late answer (the job is done)
        assert b.execute([late]) == [cmd.Outcome(ignored="late")]

        names = [type(e).__name__ for e in b.history(workflow_id)]
        assert names.count("LateAnswerReceived") == 1
        names = [type(e).__name__ for e in a.history(workflow_id)]
        assert names[:4] == ["WorkflowStarted", "JobSubmitted", "JobProgressed", "JobCompleted"]
        assert names.count("JobCompleted") == 1
        assert as_data(a.workflow_state(workflow_id)) == as_data(b.workflow_state(workflow_id))

    def test_a_batch_over_many_workflows_is_stored_in_order(self, open_engine: EngineFactory) -> None:
        engine = open_engine()
        ids = [engine.start_workflow(MEDIA, {"source": f"{n}.mov"}) for n in range(3)]
        before = engine.max_notification_id()
        probes = [engine.workflow_state(i).steps["probe"].jobs[0] for i in ids]
        outcomes = engine.execute([
            cmd.RecordCompleted(workflow_id=i, job_id=p, cause=f"m-{p}", outputs={"segments": [1]})
            for i, p in zip(ids, probes)
        ])
        assert outcomes == [cmd.OK] * 3
        stored = engine.notifications(before, 100)
        assert [n for n, _ in stored] == list(range(before + 1, before + 1 + len(stored)))
        assert [e.originator_id for _, e in stored if type(e).__name__ == "JobCompleted"] == ids

    def test_quarantined_messages_are_recorded_once_each_in_one_batch(self, open_engine: EngineFactory) -> None:
        engine = open_engine()

        def kept(key: str, reason: str = "invalid JSON") -> cmd.Quarantine:
            return cmd.Quarantine(key=key, message_id=key, queue="job_completed", reason=reason,
                                  headers={"h": "v"}, body=b"{not json")

        before = engine.max_notification_id()
        assert engine.record_quarantined([kept("a"), kept("b"), kept("a", "again")]) == [True, True, False]
        one_commit = engine.notifications(before, 100)
        assert [(e.message_id, e.reason) for _, e in one_commit] == [("a", "invalid JSON"), ("b", "invalid JSON")]

        # "b" is a redelivery: the batch conflicts as a whole, and the others still land once
        assert engine.record_quarantined([kept("c"), kept("b"), kept("d")]) == [True, False, True]
        recorded = [e.message_id for _, e in engine.notifications(before, 100)]
        assert sorted(recorded) == ["a", "b", "c", "d"]
