"""What a backend that becomes active does about the orders the last active one left behind.

The outbox advances its position only over orders the broker confirmed. A holder that dies
leaves a window: orders it published whose position it had not written yet, and orders it
stored but never read. The next holder publishes from that position again, which would
duplicate every order of the window a worker already has; a worker that does not remember
the job id runs it twice. So (`Window`):

- an order whose job shows a worker's sign in the log after the position (progress, an
  answer, an end: `REACHED`) is not published again (job ids are never reused: a retry is a
  new id), whether or not this process took over from another;
- after a take-over, the window's other orders are mostly still queued behind a backlog or
  running: they are held back while the workers keep answering, and only those still unheard
  of once the workers are quiet (nothing stored for `QUIET_S`; at most `GRACE_S` in all) go
  out again. Quiet means no answer at all, not only none of the held orders: orders of later
  steps (higher priorities) go first and can starve that backlog for a while, and an order
  sent again while its first copy still waits in a queue runs twice when the copies reach
  two workers (the fault suite saw 35-88 of 1,487 jobs run twice that way when the quiet
  spell only counted the held orders). The outbox position cannot pass a held batch
  (`OutboxPump`), so a crash meanwhile loses nothing; orders stored later go out at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from stepflow.adapters.wakeup import woken
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.follower import LogFollower

log = structlog.get_logger("stepflow.backend")

# How long the inbox may take to store the answers the dead holder left unacked (they come
# back to the queues at once; an empty queue costs the whole wait, once per take-over).
DRAIN_S = 0.3
QUIET_S = 2.0
GRACE_S = 10.0

# A job with one of these stored has reached a worker (or ended): its order needs no republishing.
REACHED = ("JobProgressed", "JobCompleted", "JobErrored", "JobStopped", "JobTimedOut", "JobUnroutable")

InThread = Callable[..., Awaitable[Any]]


def _jobs_since(engine: WorkflowEngine, position: int, topics: tuple[str, ...],
                page: int = 1000) -> tuple[set[str], int]:
    """The job ids of these events after `position`, and the last notification id read."""
    follower = LogFollower(engine, "outbox", topics, batch_size=page)
    jobs: set[str] = set()
    while items := follower.read(position):
        jobs.update(event.job_id for _, event in items)  # type: ignore[attr-defined]
        position = items[-1][0]
    return jobs, position


def submitted_since(engine: WorkflowEngine, position: int) -> set[str]:
    """The ids of jobs submitted after `position`: the window."""
    return _jobs_since(engine, position, ("JobSubmitted",))[0]


def reached_since(engine: WorkflowEngine, position: int) -> set[str]:
    """The ids of jobs with a sign of a worker (or an end) stored after `position`."""
    return _jobs_since(engine, position, REACHED)[0]


class Window:
    def __init__(self, engine: WorkflowEngine, position: int = 0, reached: set[str] | None = None,
                 held: set[str] | None = None) -> None:
        self.engine = engine
        self.position = position
        self.reached = reached or set()  # jobs answered past the position when this backend became active
        self.held = held or set()  # after a take-over: the window's job ids not settled yet

    @classmethod
    async def open(cls, engine: WorkflowEngine, position: int, in_thread: InThread, *, takeover: bool) -> Window:
        reached = await in_thread(reached_since, engine, position)
        held = await in_thread(submitted_since, engine, position) if takeover else set()
        return cls(engine, position, reached, held)

    def split(self, orders: list[ev.JobSubmitted]) -> tuple[list[ev.JobSubmitted], list[ev.JobSubmitted]]:
        """(to publish now, to hold back), without the orders whose job already reached a worker."""
        if self.reached:
            orders = [order for order in orders if order.job_id not in self.reached]
        if not self.held:
            return orders, []
        return ([order for order in orders if order.job_id not in self.held],
                [order for order in orders if order.job_id in self.held])

    async def unheard_of(self, held: list[ev.JobSubmitted], in_thread: InThread,
                         answers_stored: asyncio.Event, *, quiet_s: float = QUIET_S,
                         grace_s: float = GRACE_S) -> list[ev.JobSubmitted]:
        """The held orders still unheard of once nothing was stored for `quiet_s` (the
        workers went quiet), or after `grace_s` in all (`answers_stored`: set on each store)."""
        began = quiet_since = time.monotonic()
        read_to = self.position
        while held and (now := time.monotonic()) - quiet_since < quiet_s and now - began < grace_s:
            answers_stored.clear()
            if await woken(answers_stored, 0.1):
                quiet_since = time.monotonic()  # still answering: a backlog may hold the rest
            reached, read_to = await in_thread(_jobs_since, self.engine, read_to, REACHED)  # only what is new
            held = [order for order in held if order.job_id not in reached]
        self.held.difference_update(order.job_id for order in held)
        log.info("takeover_window_republished", orders=len(held))
        return held
