"""The inbox: each delivery of an inbound batch settled in exactly one visible place.

`stepflow.adapters.inbox` turns ONE delivery into a command and trusts nothing; this module
settles a whole BATCH: the fresh deliveries' commands run as one `engine.execute` (one
transaction) in the backend's store thread, and only then is the batch acked. A crash before
the ack redelivers, and the aggregate ignores message ids it has already applied, so the
effect is exactly once. What cannot be used is quarantined (kept on the broker's quarantine
queue, and recorded as a `MessageQuarantined` event) with its kind: malformed, unknown,
conflicting_duplicate, poison, refused.

A redelivered message may be what killed the last backend, so each one is applied alone,
after its attempt is counted in the store (the crash-loop breaker): one whose attempts alone
ended `SUSPECT_ATTEMPTS` times with the backend dying is quarantined as poison instead, unless
its workflow had already applied it: then the deaths came from elsewhere, and it is a duplicate.

The `Backend` owns an `Inbox` and lends it its store thread, its job clocks (`track`) and its
"events were stored" signal (`stored`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec
import structlog
from eventsourcing.persistence import PersistenceError

from stepflow.adapters import protocol as p
from stepflow.adapters.alone import Alone
from stepflow.adapters.faults import FAULT, FAULT_MESSAGE, crash
from stepflow.adapters.inbox import body_digest, message_key, translate
from stepflow.adapters.start_batch import Riders, with_position
from stepflow.engine import commands as cmd
from stepflow.engine import events as ev
from stepflow.engine.application import GaveUp, WorkflowEngine
from stepflow.engine.ports import BackendBroker, Delivery

log = structlog.get_logger("stepflow.backend")

# A redelivered message whose attempts to be applied alone ended this many times with the
# backend dying is quarantined. Two, not one: a backend killed for another reason while it
# applied an innocent message alone must not lose that message.
SUSPECT_ATTEMPTS = 2
# The store itself failing is no fault of a message: stop (and be restarted), quarantine nothing.
STORE_FAILURES: tuple[type[BaseException], ...] = (PersistenceError, GaveUp)

WorkerListener = Callable[[p.WorkerDiscovery | p.WorkerStatus, datetime], None]
InStore = Callable[..., Awaitable[Any]]


class Reject(NamedTuple):
    delivery: Delivery
    kind: str  # malformed, unknown, conflicting_duplicate, poison, refused
    reason: str
    digest: str | None = None
    applied_digest: str | None = None


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[:500]}"


class Inbox:
    """Settles inbound batches; `counts` and `batch_sizes` say how each message ended."""

    def __init__(
        self,
        engine: WorkflowEngine,
        broker: BackendBroker,
        in_store: InStore,
        *,
        track: Callable[[cmd.Command, datetime], None],
        stored: Callable[[], None],
        max_body: int = p.MAX_BODY_BYTES,
        on_worker: WorkerListener | None = None,
        take_starts: Callable[[], Riders | None] | None = None,
        alone: Alone | None = None,
    ) -> None:
        self.engine = engine
        self.broker = broker
        self.in_store = in_store
        self.track = track  # an applied command: the job's clock goes on or stops
        self.stored = stored  # events were stored: wake the outbox and the other followers
        self.max_body = max_body
        self.on_worker = on_worker
        self.take_starts = take_starts  # starts waiting for the store, to ride on a batch's commit
        self.alone = alone if alone is not None else Alone()  # shared with the outbox
        self.counts = {"batches": 0, "messages": 0, "quarantined": 0, "duplicates": 0, "late_answers": 0,
                       "late_progress": 0}
        self.batch_sizes: Counter[int] = Counter()  # inbound batch size -> how many batches

    async def handle(self, batch: Sequence[Delivery]) -> None:
        """Settle every delivery of the batch in exactly one visible place: applied, counted
        (duplicate, late progress), recorded as a late answer, or quarantined with its kind.

        A redelivered message may be what killed the backend last time, so each one is applied
        alone and counted first (the crash-loop breaker); fresh ones go as one transaction.
        """
        fresh = [d for d in batch if not d.redelivered]
        if fresh:
            await self._apply(fresh, starts=True)
        for delivery in batch:
            if delivery.redelivered:
                await self._apply_suspect(delivery)
        self.counts["batches"] += 1
        self.counts["messages"] += len(batch)
        self.batch_sizes[len(batch)] += 1

    async def _apply(self, batch: Sequence[Delivery], also: Sequence[ev.Event] = (), *, starts: bool = False) -> None:
        """`starts`: take the waiting starts into the commit (not a suspect's: it may kill us)."""
        commands: list[cmd.Command] = []
        carriers: list[Delivery] = []
        done: list[Delivery] = []
        rejects: list[Reject] = []
        now = datetime.now(UTC)
        for delivery in batch:
            try:
                item = translate(delivery, self.max_body)
            except Exception as error:  # noqa: BLE001 - whatever the body does to a decoder (see `translate`)
                rejects.append(Reject(delivery, "malformed", _reason(error)))
                continue
            if isinstance(item, cmd.Command):
                commands.append(item)
                carriers.append(delivery)
            else:
                self._worker_seen(item, now)
                done.append(delivery)
        if commands:
            if FAULT == "poison_message" and any(c.cause == FAULT_MESSAGE for c in commands):
                crash()
            outcomes = await (self._execute(commands, also) if starts else self._execute_alone(commands, also))
            for delivery, command, outcome in zip(carriers, commands, outcomes, strict=True):
                if outcome.rejected:
                    rejects.append(Reject(delivery, outcome.kind or "refused", outcome.rejected,
                                          command.digest, outcome.applied_digest))
                else:
                    done.append(delivery)
                    self._settled(command, outcome, now)
            self.stored()
            if FAULT == "after_store_before_ack":
                crash()
            elif FAULT == "mid_batch" and len(done) >= 2:
                await self.broker.ack(done[: len(done) // 2])
                crash()
                done = done[len(done) // 2:]
        if rejects:
            await self._quarantine(rejects)
        await self.broker.ack(done)

    async def _execute(self, commands: list[cmd.Command], also: Sequence[ev.Event] = ()) -> list[cmd.Outcome]:
        """The batch as one transaction, with the starts waiting for the store (`take_starts`);
        if applying it raises anything but a store failure, the starts go back to be committed
        apart, and each command runs alone, so only the one that raises is quarantined."""
        riders = self.take_starts() if self.take_starts is not None else None
        if riders is None:
            return await self._execute_alone(commands, also)
        try:
            (outcomes, answers), position = await self.in_store(
                with_position, self.engine, self.engine.execute_and_start, commands, riders.starts, also)
        except STORE_FAILURES as error:
            riders.fail(error)
            raise
        except Exception:  # noqa: BLE001 - nothing was stored: sorted out below, without the starts
            riders.give_back()
            return await self._execute_alone(commands, also)
        except BaseException as error:  # cancelled while the store ran it: nobody can tell if it was
            riders.fail(error)
            raise
        riders.answer(answers, position)
        return list(outcomes)

    async def _execute_alone(self, commands: list[cmd.Command], also: Sequence[ev.Event] = ()) -> list[cmd.Outcome]:
        """The batch as one transaction; if applying it raises anything but a store failure,
        each command alone, so only the one that raises is quarantined (as `poison`)."""
        try:
            outcomes: list[cmd.Outcome] = await self.in_store(self.engine.execute, commands, also)
            return outcomes
        except STORE_FAILURES:
            raise
        except Exception as error:  # noqa: BLE001 - a bug met while applying one message
            if len(commands) == 1:
                log.error("message_poisoned", cause=commands[0].cause, error=_reason(error))
                return [cmd.Outcome(rejected=f"raised while applied: {_reason(error)}", kind="poison")]
            log.warning("batch_raised_applying_alone", commands=len(commands), error=_reason(error))
            return [outcome for command in commands for outcome in await self._execute_alone([command])]

    async def _apply_suspect(self, delivery: Delivery) -> None:
        """A redelivered message, alone: count the attempt in the store first, so that if it
        kills the backend again the next backend knows, and quarantines it instead. Alone
        means with the outbox at rest too, so that a death is not blamed on it unfairly."""
        async with self.alone.alone():
            await self._suspect(delivery)

    async def _suspect(self, delivery: Delivery) -> None:
        attempts, cleared = await self.in_store(self.engine.suspect, message_key(delivery),
                                                delivery.message_id, delivery.queue)
        if attempts == SUSPECT_ATTEMPTS and await self._applied_before(delivery):
            # The deaths came from elsewhere (a backend that dies at start-up, say, while its
            # redelivered messages are applied): it changes nothing, so it killed nobody. Only
            # one life may look (a look that kills counts one attempt more, and then it is poison).
            await self.in_store(self.engine.execute, [], (cleared,))
            self.counts["duplicates"] += 1
            log.info("suspect_was_a_duplicate", message_id=delivery.message_id, attempts=attempts)
            await self.broker.ack([delivery])
            return
        if attempts >= SUSPECT_ATTEMPTS:
            await self._quarantine([Reject(delivery, "poison", (
                f"the backend died {attempts} times while applying this message alone"))])
            return
        await self._apply([delivery], also=(cleared,))

    async def _applied_before(self, delivery: Delivery) -> bool:
        """The delivery is a message its workflow already applied, body and all."""
        try:
            item = translate(delivery, self.max_body)
        except Exception:  # noqa: BLE001 - unreadable: certainly not applied
            return False
        if not isinstance(item, cmd.Command):
            return False
        try:
            applied: bool = await self.in_store(self.engine.already_applied, item)
        except STORE_FAILURES:
            raise
        except Exception as error:  # noqa: BLE001 - then it is what it looks like: poison
            log.warning("suspect_look_failed", message_id=delivery.message_id, error=_reason(error))
            return False
        return applied

    def _worker_seen(self, item: p.WorkerDiscovery | p.WorkerStatus, now: datetime) -> None:
        if self.on_worker is None:
            return
        try:
            self.on_worker(item, now)
        except Exception as error:  # noqa: BLE001 - a view's bug must not stop the inbox
            log.error("worker_listener_failed", error=_reason(error))

    def _settled(self, command: cmd.Command, outcome: cmd.Outcome, now: datetime) -> None:
        if outcome.job_id is not None and outcome.workflow_id is not None:  # found by its wire id
            command = msgspec.structs.replace(command, job_id=outcome.job_id, workflow_id=outcome.workflow_id)
        if outcome.ignored is None:
            self.track(command, now)
            return
        key = {"duplicate": "duplicates", "late": "late_answers", "late_progress": "late_progress"}[outcome.ignored]
        self.counts[key] += 1
        log.debug("message_" + outcome.ignored, cause=command.cause, workflow_id=str(command.workflow_id))

    async def _quarantine(self, rejects: Sequence[Reject]) -> None:
        """Record the batch's unusable messages in one transaction, then keep and ack them."""
        self.counts["quarantined"] += len(rejects)
        messages = []
        for r in rejects:
            log.warning("message_quarantined", queue=r.delivery.queue, message_id=r.delivery.message_id,
                        kind=r.kind, reason=r.reason)
            messages.append(cmd.Quarantine(
                # one record per distinct body: a clash with an applied id is a record of its own
                key=f"{message_key(r.delivery)}#{body_digest(r.delivery.body)}",
                message_id=r.delivery.message_id, queue=r.delivery.queue, kind=r.kind, reason=r.reason,
                headers={str(k): str(v)[:200] for k, v in r.delivery.headers.items()},
                body=r.delivery.body, digest=r.digest, applied_digest=r.applied_digest,
            ))
        await self.in_store(self.engine.record_quarantined, messages)
        await self.broker.quarantine([(r.delivery, f"{r.kind}: {r.reason}") for r in rejects])
