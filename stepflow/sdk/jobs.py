"""A job running in this worker, and the deliveries of its order waiting for its answer.

An order can reach a worker more than once while its job runs (a channel lost and back, a
republished order): all its deliveries are settled with the one answer, once, and a
delivery that comes after the list is closed is answered from memory instead.
"""

from __future__ import annotations

import asyncio

from stepflow.engine.ports import Delivery


class RunningJob:
    """Its task, the deliveries to settle with its answer, and whether a stop order still counts."""

    __slots__ = ("cancellable", "deliveries", "task")

    def __init__(self, delivery: Delivery) -> None:
        self.task: asyncio.Task[None] | None = None
        self.deliveries: list[Delivery] | None = [delivery]  # None once settled
        self.cancellable = True  # False once the handler is over: a stop order comes too late


def settle(held: RunningJob | list[Delivery]) -> list[Delivery]:
    """The deliveries to settle now; a job's list is closed, so none is added after."""
    if isinstance(held, list):
        return held
    deliveries, held.deliveries = held.deliveries or [], None
    return deliveries
