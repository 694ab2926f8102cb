"""The engine's application service: load a Workflow, run a command, save, on `eventsourcing`.

Thin on purpose: the rules live in the aggregate and `decide`. What this adds:
- msgspec storage (`MsgspecMapper`) and a snapshot every 1,000 events (`snapshotting_intervals`);
- `execute(commands)`: many commands, one transaction. The adapters feed it a batch of broker
  messages and ack them all once it returns, which is how one backend keeps up with the
  broker. An optimistic-concurrency conflict (another backend wrote the same workflow)
  evicts the cached aggregates and runs the batch again from the store;
- the reads the adapters need: a workflow's state, its history, the notification log.

Synchronous, like `eventsourcing`. Asynchronous callers run it in one dedicated thread
(see `stepflow.adapters.backend`), never on the event loop.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID

import msgspec
import structlog
from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.persistence import (
    JSONTranscoder,
    Mapper,
    Notification,
    RecordConflictError,
    Recording,
)

from stepflow.engine import commands as cmd
from stepflow.engine import events as ev
from stepflow.engine import wire
from stepflow.engine.mapper import MsgspecMapper
from stepflow.engine.model import WorkflowDefinition
from stepflow.engine.snapshots import WorkflowSnapshot
from stepflow.engine.state import WorkflowState
from stepflow.engine.workflow import Rejected, Workflow, project_workflow

log = structlog.get_logger("stepflow.engine")

CONFLICT_RETRIES = 30
NUMBER_DRAWS = 20  # a clash needs billions of workflows; twenty in a row means something else is wrong
NUMBERS_CACHED = 100_000  # workflow number -> id, so a worker's answer costs no index read  # with a jittered backoff, a few seconds at most before giving up


def utcnow() -> datetime:
    return datetime.now(UTC)


class GaveUp(RuntimeError):
    """Too many concurrency conflicts in a row: the store is contended, not the message."""


class _Stale(Exception):
    """A command was rejected by a cached aggregate that is behind the store."""


class Start(msgspec.Struct, frozen=True, kw_only=True):
    """One start of a batch (`WorkflowEngine.start_workflows`): `start_workflow`'s arguments."""

    definition: WorkflowDefinition
    parameters: dict[str, Any] = {}
    workflow_id: UUID | None = None
    labels: tuple[str, ...] = ()
    actor: str | None = None
    cause: str | None = None


class Collected(ProcessingEvent[UUID]):
    """eventsourcing's `collect_events` tells events from aggregates by `isinstance` against
    runtime-checkable Protocols, which Python 3.11 answers by walking every attribute of the
    Protocol each time: 20-40 us an object, about a tenth of a start's CPU and a few percent
    of a job's in the store thread. What the engine saves is its own `Event`s and `Workflow`s,
    told apart here by class; anything else goes the library's way."""

    def collect_events(self, *objs: Any, **kwargs: Any) -> None:
        for obj in objs:
            if isinstance(obj, ev.Event):
                self.events.append(obj)
            elif isinstance(obj, Workflow):
                self.events.extend(obj.collect_events())
                self.aggregates[obj.id] = obj
            elif obj is not None:
                super().collect_events(obj)
        self.saved_kwargs.update(kwargs)


class WorkflowEngine(Application[UUID]):
    name = "stepflow"
    env: ClassVar[dict[str, str]] = {
        "AGGREGATE_CACHE_MAXSIZE": "5000",
        # The cache is kept right by `execute` (evict on failure), not by re-reading the store
        # before every command; a conflict with another backend is caught by the version check.
        "AGGREGATE_CACHE_FASTFORWARD": "n",
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
    }
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Workflow: 1000}
    snapshotting_projectors: ClassVar[dict[type[Any], Any]] = {Workflow: project_workflow}
    snapshot_class = WorkflowSnapshot  # type: ignore[assignment]

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)
        self._numbers: dict[int, UUID] = {}  # workflow number -> workflow id (`locate`)
        self._committed = threading.local()  # `committed_position`, per thread
        # Told of every commit, in the thread that made it, once it is durable: the outbox
        # publishes a commit's orders from here instead of reading them back from the log.
        self.on_saved: Callable[[list[Recording[UUID]]], None] | None = None

    def construct_mapper(self) -> Mapper[UUID]:
        return MsgspecMapper(
            transcoder=JSONTranscoder(),
            compressor=self.factory.compressor(),
            cipher=self.factory.cipher(),
        )

    # --- commands ----------------------------------------------------------------------

    def start_workflow(
        self,
        definition: WorkflowDefinition,
        parameters: dict[str, Any] | None = None,
        *,
        workflow_id: UUID | None = None,
        labels: Iterable[str] = (),
        actor: str | None = None,
        cause: str | None = None,
    ) -> UUID:
        """Validate the parameters, record the start and the first jobs; return the id.

        A `DefinitionError` (bad parameters) is raised before anything is stored. Starting
        again with the same `workflow_id` and `cause` is a no-op, so a retried request is safe.
        """
        workflow_id = workflow_id or uuid.uuid4()
        for _ in range(NUMBER_DRAWS):
            number = wire.new_number()
            workflow = Workflow.start(
                workflow_id, definition, parameters or {}, now=utcnow(), labels=labels, actor=actor, cause=cause,
                number=number,
            )
            numbered = ev.WorkflowNumbered(originator_id=wire.number_stream_id(number), originator_version=1,
                                           timestamp=utcnow(), workflow_id=workflow_id)
            try:
                self.save(numbered, workflow)
                break
            except RecordConflictError:
                if self.recorder.select_events(numbered.originator_id, limit=1):
                    continue  # the number is taken: draw another
                existing = self.load(workflow_id)
                if cause is not None and cause in existing.state.seen:
                    return workflow_id
                raise Rejected(f"workflow {workflow_id} already exists") from None
        else:
            raise GaveUp(f"no free workflow number after {NUMBER_DRAWS} draws")
        self._remember(number, workflow_id)  # its jobs' answers will ask
        log.info("workflow_started", workflow_id=str(workflow_id), definition=definition.identifier)
        return workflow_id

    def start_workflows(self, starts: Sequence[Start]) -> list[UUID | Exception]:
        """Many starts in ONE transaction; per start, its id or the error it alone would raise.

        Each item keeps `start_workflow`'s meaning: bad parameters give a `DefinitionError` and
        store nothing for that item; a retried start (same `workflow_id` and `cause`) answers
        its id; another start under an existing id is `Rejected`. The common case (every id new,
        every number free) is one `save`; a conflict of any kind falls back to starting the
        remaining items one by one, which sorts out which item clashed and draws new numbers.
        """
        prepared = _PreparedStarts(starts)
        try:
            if prepared.new:
                self.save(*prepared.new)
        except RecordConflictError:
            log.info("start_batch_conflict", starts=len(prepared.batch))
            for i, _, workflow in prepared.batch:
                start = starts[i]
                try:
                    prepared.results[i] = self.start_workflow(
                        start.definition, start.parameters, workflow_id=workflow.id, labels=start.labels,
                        actor=start.actor, cause=start.cause)
                except Exception as error:  # noqa: BLE001  this item's answer (Rejected, GaveUp...)
                    prepared.results[i] = error
            return prepared.answers()
        return self._started(prepared)

    def _started(self, prepared: _PreparedStarts) -> list[UUID | Exception]:
        for i, number, workflow in prepared.batch:
            self._remember(number, workflow.id)
            prepared.results[i] = workflow.id
        if prepared.batch:
            log.info("workflows_started", count=len(prepared.batch))
        return prepared.answers()

    def execute_and_start(self, commands: Sequence[cmd.Command], starts: Sequence[Start],
                          also: Sequence[ev.Event] = ()) -> tuple[list[cmd.Outcome], list[UUID | Exception]]:
        """`execute` and `start_workflows` in ONE transaction, so that under load a start rides
        on the inbound batch's commit instead of costing one of its own (the inbox takes the
        starts that wait for the store). A conflict of any kind falls back to the two calls
        apart, which sort it out; anything else raised is raised with nothing stored, as
        `execute` would."""
        if not starts:
            return self.execute(commands, also), []
        prepared = _PreparedStarts(starts)
        try:
            outcomes = self._attempt(commands, (*also, *prepared.new))
        except (RecordConflictError, _Stale):
            log.info("execute_and_start_conflict", commands=len(commands), starts=len(starts))
            return self.execute(commands, also), self.start_workflows(starts)
        return outcomes, self._started(prepared)

    def execute(self, commands: Sequence[cmd.Command], also: Sequence[ev.Event] = ()) -> list[cmd.Outcome]:
        """Run commands in order and store every resulting event, and `also`, in one transaction."""
        for attempt in range(CONFLICT_RETRIES):
            try:
                return self._attempt(commands, also)
            except (RecordConflictError, _Stale):
                log.info("execute_conflict_retry", attempt=attempt + 1, commands=len(commands))
                # Two backends racing on the same workflows collide again if they retry in
                # lockstep: back off a little, at random (this runs in the store thread).
                time.sleep(random.uniform(0, min(0.002 * 2**attempt, 0.2)))
        raise GaveUp(f"gave up after {CONFLICT_RETRIES} concurrency conflicts")

    def _attempt(self, commands: Sequence[cmd.Command], also: Sequence[ev.Event | Workflow]) -> list[cmd.Outcome]:
        """One try at `execute`: whatever it raises, the workflows it touched leave the cache."""
        touched: dict[UUID, Workflow] = {}
        loaded: dict[UUID, int] = {}
        try:
            outcomes = [self._run(command, touched, loaded) for command in commands]
            if touched or also:
                self.save(*touched.values(), *also)
            return outcomes
        except BaseException:
            self._evict(touched)
            raise

    def _run(self, command: cmd.Command, touched: dict[UUID, Workflow], loaded: dict[UUID, int]) -> cmd.Outcome:
        found_by_wire = isinstance(command, cmd.JobAnswer) and not command.job_id
        if found_by_wire:
            found = self._by_wire(command, touched, loaded)  # type: ignore[arg-type]
            if isinstance(found, cmd.Outcome):
                return found
            command = found
        outcome = self._apply(command, touched, loaded)
        if found_by_wire and outcome.ok:  # tell the caller which job it was (its clock)
            outcome = msgspec.structs.replace(outcome, job_id=command.job_id,  # type: ignore[attr-defined]
                                              workflow_id=command.workflow_id)
        return outcome

    def _apply(self, command: cmd.Command, touched: dict[UUID, Workflow], loaded: dict[UUID, int]) -> cmd.Outcome:
        workflow = touched.get(command.workflow_id)
        try:
            if workflow is None:
                workflow = self.load(command.workflow_id)
                touched[command.workflow_id] = workflow
                loaded[command.workflow_id] = workflow.version
            ignored = workflow.handle(command, utcnow())
        except Rejected as error:
            # A cached aggregate may be behind the store (another backend wrote this workflow):
            # a write would fail the version check, but a rejection writes nothing, so check
            # here, and run the batch again from the store rather than drop a good message.
            if self.recorder.select_events(command.workflow_id, gt=loaded[command.workflow_id], limit=1):
                raise _Stale from None
            return cmd.Outcome(rejected=str(error), kind=error.kind, applied_digest=error.applied_digest)
        except AggregateNotFoundError:
            return cmd.Outcome(rejected=f"unknown workflow {command.workflow_id}", kind="unknown")
        return cmd.Outcome(ignored=ignored) if ignored else cmd.OK

    def _by_wire(self, command: cmd.JobAnswer, touched: dict[UUID, Workflow],
                  loaded: dict[UUID, int]) -> cmd.JobAnswer | cmd.Outcome:
        """The answer with its workflow and job named, found from its wire id; or why not."""
        unknown = cmd.Outcome(rejected=f"no job has the wire id {command.wire_id}", kind="unknown")
        if command.wire_id is None:
            return cmd.Outcome(rejected="an answer that names no job", kind="unknown")
        workflow_id = command.workflow_id
        if workflow_id == cmd.NO_WORKFLOW:
            located = self.locate(wire.number_of(command.wire_id))
            if located is None:
                return unknown
            workflow_id = located
        workflow = touched.get(workflow_id)
        if workflow is None:
            try:
                workflow = self.load(workflow_id)
            except AggregateNotFoundError:
                return unknown
            touched[workflow_id] = workflow
            loaded[workflow_id] = workflow.version
        job_id = workflow.state.wires.get(command.wire_id)
        if job_id is None:
            if self.recorder.select_events(workflow_id, gt=loaded[workflow_id], limit=1):
                raise _Stale  # the job was submitted by another backend: read the store again
            return unknown
        return msgspec.structs.replace(command, workflow_id=workflow_id, job_id=job_id)

    def already_applied(self, command: cmd.Command) -> bool:
        """Whether its workflow applied this very message (same id, same body): read only.
        For the crash-loop breaker: applying such a message again changes nothing, so it
        cannot be what killed a backend, and it is a duplicate, not poison."""
        if command.cause is None:
            return False
        touched: dict[UUID, Workflow] = {}
        loaded: dict[UUID, int] = {}
        try:
            if isinstance(command, cmd.JobAnswer) and not command.job_id:
                found = self._by_wire(command, touched, loaded)
                if isinstance(found, cmd.Outcome):
                    return False
                command = found
            workflow = touched.get(command.workflow_id)
            if workflow is None:
                workflow = self.load(command.workflow_id)
        except (AggregateNotFoundError, _Stale):
            return False
        return workflow.applied(command.cause, command.digest)

    def locate(self, number: int) -> UUID | None:
        """The workflow holding a number, from the index streams (`WorkflowNumbered`), cached."""
        workflow_id = self._numbers.get(number)
        if workflow_id is None:
            records = self.recorder.select_events(wire.number_stream_id(number), limit=1)
            if not records:
                return None
            numbered = self.mapper.to_domain_event(records[0])
            assert isinstance(numbered, ev.WorkflowNumbered), numbered
            workflow_id = numbered.workflow_id
            self._remember(number, workflow_id)
        return workflow_id

    def _remember(self, number: int, workflow_id: UUID) -> None:
        if len(self._numbers) >= NUMBERS_CACHED:
            self._numbers.clear()
        self._numbers[number] = workflow_id

    def record_quarantined(self, messages: Sequence[cmd.Quarantine]) -> list[bool]:
        """Record each quarantined message once; True where this call recorded it.

        A flood of garbage must not cost a transaction per message, so the whole batch is one
        save, and a batch holding a redelivery is one more.
        """
        events: dict[str, ev.MessageQuarantined] = {}
        for message in messages:
            events.setdefault(message.key, ev.MessageQuarantined(
                originator_id=ev.quarantine_stream_id(message.key), originator_version=1,
                timestamp=utcnow(), cause=message.message_id, message_id=message.message_id,
                queue=message.queue, reason=message.reason, headers=message.headers,
                body_excerpt=message.body[:512].decode("utf-8", "replace"), body_size=len(message.body),
                kind=message.kind, digest=message.digest, applied_digest=message.applied_digest,
            ))
        recorded: set[str] = set()
        try:
            self.save(*events.values())
            recorded.update(events)
        except RecordConflictError:
            # Leave out what is there already (reads are cheap, commits are not) and try once
            # more; only a race with another backend gets down to one save each.
            fresh = {key: event for key, event in events.items()
                     if not self.recorder.select_events(event.originator_id, limit=1)}
            try:
                self.save(*fresh.values())
                recorded.update(fresh)
            except RecordConflictError:
                for key, event in fresh.items():
                    with contextlib.suppress(RecordConflictError):
                        self.save(event)
                        recorded.add(key)
        firsts = []
        for message in messages:  # a key shared in the batch: its first message recorded it
            firsts.append(message.key in recorded)
            recorded.discard(message.key)
        return firsts

    def suspect(self, key: str, message_id: str | None, queue: str) -> tuple[int, ev.Event]:
        """Count one more attempt to apply a redelivered message alone. Return how many
        attempts came before it and never finished (each time, the backend died), and the
        `SuspicionCleared` event to store with whatever applying it stores."""
        stream = ev.suspect_stream_id(key)
        for _ in range(CONFLICT_RETRIES):
            marks = self.recorder.select_events(stream)
            unfinished = 0
            for record in reversed(marks):
                if record.topic != "MessageSuspected":
                    break
                unfinished += 1
            version = len(marks) + 1
            try:
                self.save(ev.MessageSuspected(
                    originator_id=stream, originator_version=version, timestamp=utcnow(),
                    cause=message_id, message_id=message_id, queue=queue,
                ))
            except RecordConflictError:
                continue  # another backend counted an attempt at the same moment
            return unfinished, ev.SuspicionCleared(originator_id=stream, originator_version=version + 1,
                                                   timestamp=utcnow(), cause=message_id)
        raise GaveUp(f"gave up counting attempts of message {key}")

    def record_refused(
        self, *, actor: str, action: str, groups: Sequence[str] = (), definition: str | None = None,
        workflow_id: str | None = None, request: str = "", reason: str = "",
    ) -> UUID:
        """Record an action refused for lack of rights, in a stream of its own; return its id."""
        stream = ev.refusal_stream_id(str(uuid.uuid4()))
        self.save(ev.ActionRefused(
            originator_id=stream, originator_version=1, timestamp=utcnow(), actor=actor, action=action,
            groups=tuple(groups), definition=definition, workflow_id=workflow_id, request=request,
            reason=reason,
        ))
        log.info("action_refused", actor=actor, action=action, definition=definition, workflow_id=workflow_id)
        return stream

    def record_worker_order(self, *, actor: str, instance_id: str, order: str, via: str = "",
                            request: str = "") -> int:
        """Record a direct order sent to a worker, in a stream of its own; return its
        notification id (a position the views can be waited for)."""
        stream = ev.worker_order_stream_id(str(uuid.uuid4()))
        recordings = self.save(ev.WorkerOrdered(
            originator_id=stream, originator_version=1, timestamp=utcnow(), actor=actor,
            instance_id=instance_id, order=order, via=via, request=request,
        ))
        log.info("worker_ordered", actor=actor, instance_id=instance_id, order=order, via=via)
        return int(recordings[-1].notification.id) if recordings else self.max_notification_id()

    def command(self, command: cmd.Command) -> None:
        """One command from an operator or API: raise `Rejected` instead of returning it."""
        (outcome,) = self.execute([command])
        if outcome.rejected:
            raise Rejected(outcome.rejected)

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """`Application.save` (eventsourcing 9.5), step for step, with `Collected` instead of
        `ProcessingEvent`: see there why. `test_engine_save` checks both still agree."""
        processing_event = Collected()
        processing_event.collect_events(*objs, **kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # (deprecated in eventsourcing; kept, as its save does)
        return recordings

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        if recordings:
            self._committed.position = max(int(r.notification.id) for r in recordings)
        if self.on_saved is not None and recordings:
            self.on_saved(recordings)

    def committed_position(self) -> int:
        """The log position of the last commit this thread made (0 before any): a position
        that includes what it stored, without asking the store for its end."""
        return int(getattr(self._committed, "position", 0))

    # --- reads -------------------------------------------------------------------------

    def load(self, workflow_id: UUID, version: int | None = None) -> Workflow:
        workflow: Workflow = self.repository.get(workflow_id, version=version, projector_func=project_workflow)
        return workflow

    def cached_definition(self, workflow_id: UUID) -> WorkflowDefinition | None:
        """The workflow's definition if its aggregate is in the cache (no store read), else
        None. For the store thread's readers only: commands change cached aggregates there."""
        cache = self.repository.cache
        if cache is None:
            return None
        try:
            workflow = cache.get(workflow_id)
        except KeyError:
            return None
        return workflow.state.definition if isinstance(workflow, Workflow) else None

    def workflow_state(self, workflow_id: UUID, version: int | None = None) -> WorkflowState:
        if version is None:
            # A fresh copy from the store, never the cached aggregate a command may be changing.
            return self.repository._reconstruct_aggregate(workflow_id, None, project_workflow).state
        return self.load(workflow_id, version).state

    def history(self, workflow_id: UUID) -> list[ev.Event]:
        return list(self.events.get(workflow_id))  # type: ignore[arg-type]

    def notifications(
        self, after: int, limit: int, topics: Sequence[str] = (), stop: int | None = None
    ) -> list[tuple[int, ev.Event]]:
        """Stored events after a notification id (up to `stop`, inclusive), for outboxes and projections."""
        items: Sequence[Notification] = self.recorder.select_notifications(
            after, limit, stop=stop, topics=topics, inclusive_of_start=False
        )
        return [(n.id, self.mapper.to_domain_event(n)) for n in items]  # type: ignore[misc]

    def max_notification_id(self) -> int:
        return self.recorder.max_notification_id() or 0

    def _evict(self, touched: dict[UUID, Workflow]) -> None:
        cache = self.repository.cache
        if cache is None:
            return
        for workflow_id in touched:
            try:
                cache.get(workflow_id, evict=True)
            except KeyError:
                pass


class _PreparedStarts:
    """Starts made into events, not yet saved: `new` to save, `batch` (item, number, workflow)
    to answer once saved, and `results` already known (a bad item's error, a retry's id)."""

    def __init__(self, starts: Sequence[Start]) -> None:
        self.results: list[UUID | Exception | None] = [None] * len(starts)
        self.batch: list[tuple[int, int, Workflow]] = []
        self.new: list[Workflow | ev.WorkflowNumbered] = []
        ids: dict[UUID, int] = {}
        numbers: set[int] = set()
        now = utcnow()
        for i, start in enumerate(starts):
            workflow_id = start.workflow_id or uuid.uuid4()
            if workflow_id in ids:  # the same id twice in one batch: the second is a retry or a clash
                first = starts[ids[workflow_id]]
                self.results[i] = (workflow_id if start.cause is not None and start.cause == first.cause
                                   else Rejected(f"workflow {workflow_id} already exists"))
                continue
            number = wire.new_number()
            while number in numbers:
                number = wire.new_number()
            try:
                workflow = Workflow.start(workflow_id, start.definition, dict(start.parameters or {}), now=now,
                                          labels=start.labels, actor=start.actor, cause=start.cause, number=number)
            except Exception as error:  # noqa: BLE001  DefinitionError, or anything else: this item's answer
                self.results[i] = error
                continue
            ids[workflow_id] = i
            numbers.add(number)
            self.batch.append((i, number, workflow))
            self.new.append(workflow)
            self.new.append(ev.WorkflowNumbered(originator_id=wire.number_stream_id(number), originator_version=1,
                                                timestamp=now, workflow_id=workflow_id))

    def answers(self) -> list[UUID | Exception]:
        assert all(r is not None for r in self.results)
        return self.results  # type: ignore[return-value]
