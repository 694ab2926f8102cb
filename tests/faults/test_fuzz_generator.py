"""The bad-input generator (badinput.py) against a real `Backend` and a real `Worker` in one
process: the in-memory broker (which dead-letters rejected orders as RabbitMQ does) and a
SQLite store. Every family's messages meet the fate the generator says, to the kind and the
reason fragment, and the ledger balances: each message is quarantined, recorded as a late
answer, or counted (duplicate, late progress); each bad order is answered or dead-lettered.

Seconds, not minutes: a wrong prediction shows here first. The same ledger is checked over
RabbitMQ, with `stepflow serve` and `stepflow worker` processes, by test_fuzz_inbound.py.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import badinput as bi
from fault_kit import audit, figures, pipeline, scaled

from stepflow.adapters.backend import default_backend
from stepflow.adapters.memory.broker import BACKEND_QUEUES, MemoryBroker, MemoryDelivery
from stepflow.adapters.persistence import open_engine
from stepflow.engine import events as ev
from stepflow.engine.statuses import WORKFLOW_FINAL

MESSAGES = 5_000
ORDERS = 1_000
MAX_BODY = 32_768


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.engine = open_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
        self.broker = MemoryBroker()
        for job_type in (bi.DONE_TYPE, bi.HELD_TYPE):
            self.broker.bindings[job_type] = job_type  # declared, and nobody consumes them
        self.backend = default_backend(self.engine, self.broker.backend(), max_body=MAX_BODY,
                                       outbox_poll_s=0.05, timeout_check_s=0.2)
        self.worker = bi.quiet_worker()
        self.stop = asyncio.Event()

    async def send(self, queue: str, body: bytes, message_id: str | None, *, headers: Any = None,
                   content_type: str | None = bi.p.CONTENT_TYPE, routing_key: str = "") -> None:
        self.broker.queue(queue).put(MemoryDelivery(
            queue=queue, body=body, message_id=message_id, headers=bi.delivered_headers(headers or {}),
            content_type=content_type, routing_key=routing_key or queue))
        await self.broker._notify()

    async def settled(self, timeout: float, *workflows: Any) -> None:
        """Until every queue the fuzz reaches is empty, nothing is held, every workflow ended."""
        deadline = time.monotonic() + timeout
        queues = (*BACKEND_QUEUES, *bi.ORDER_TYPES)
        while True:
            idle = (not any(len(self.broker.queue(q)) for q in queues) and not self.broker._unacked
                    and not self.worker._chores and not self.worker._jobs)
            if idle:
                states = [await self.backend.in_store(self.engine.workflow_state, w) for w in workflows]
                if all(s.status in WORKFLOW_FINAL for s in states):
                    return
            assert time.monotonic() < deadline, f"not settled after {timeout}s"
            await asyncio.sleep(0.01)


async def test_every_family_meets_its_fate(tmp_path: Path) -> None:
    seed = int(os.environ.get("STEPFLOW_FAULT_SEED") or time.time_ns() % 100_000)
    rng = random.Random(seed)
    rig = Rig(tmp_path)
    await rig.backend.start()
    worker = asyncio.create_task(rig.worker.run(rig.broker.worker(), stop=rig.stop))
    try:
        # the targets: a workflow finished by answers the test sent (so their bodies are known),
        # and one held running
        done = await rig.backend.start_workflow(bi.done_definition(24))
        held = await rig.backend.start_workflow(bi.held_definition())
        jobs = list((await rig.backend.in_store(rig.engine.workflow_state, done)).jobs)
        applied = {}
        for queue, message_id, body in bi.answers(str(done), jobs):
            await rig.send(queue, body, message_id)
            applied[message_id] = (queue, body)
        await rig.settled(30, done)
        targets = bi.Targets(str(held), str(done), jobs, applied, order_jobs=jobs[: len(jobs) // 2])
        generator = bi.Generator(rng, targets, MAX_BODY)
        bad: list[bi.Bad] = []
        for kind in generator.kinds:  # every family at least once, then at random
            bad.extend(kind())
        while len(bad) < scaled(MESSAGES):
            bad.extend(generator.one())
        orders: list[bi.Bad] = generator.limit_orders()
        for kind in generator.order_kinds:
            orders.extend(kind())
        while len(orders) < scaled(ORDERS):
            orders.extend(generator.one_order())
        sent = bad + orders
        rng.shuffle(sent)
        before = dict(rig.backend.stats)

        real = []
        started = time.monotonic()
        for n, b in enumerate(sent):
            await rig.send(b.key, b.body, b.seen_id, headers=b.headers, content_type=bi.as_read(b.content_type))
            if n % 500 == 0:
                real.append(await rig.backend.start_workflow(pipeline(rng.randint(2, 4)), {"name": f"r{n}"}))
        await rig.settled(120, *real)
        drained_s = time.monotonic() - started

        observed = await rig.backend.in_store(observe, rig, before)
        ledger = bi.account(sent, observed)
        result = await rig.backend.in_store(audit, rig.engine, [done, *real])
        categories = Counter(("order " if b.order else "") + b.category for b in sent)
        figures("fuzz in-process", **ledger.figures(), real_workflows=result.workflows, drained_s=round(drained_s, 1),
                seed=seed)
        figures("fuzz in-process categories", **dict(sorted(categories.items())))
        assert not ledger.problems, f"seed={seed}\n" + "\n".join(ledger.problems[:40])
        assert ledger.unaccounted == 0 and ledger.sent >= scaled(MESSAGES) and ledger.orders >= scaled(ORDERS)
        # every fate was met at least once
        assert {b.expect for b in bad} == {bi.QUARANTINE, bi.DUPLICATE, bi.LATE, bi.LATE_PROGRESS}
        assert {b.expect for b in orders} == {bi.ANSWERED, bi.DEAD_LETTERED, bi.RUN}
        assert {b.kind for b in bad if b.expect == bi.QUARANTINE} == {bi.MALFORMED, bi.UNKNOWN, bi.CONFLICT}
        assert {b.answer_expect for b in orders if b.expect == bi.ANSWERED} == {bi.QUARANTINE, bi.LATE}
        result.check()
        assert not worker.done(), "the worker stopped"
        rig.backend.check()
        assert (await rig.backend.in_store(rig.engine.workflow_state, held)).status == "running"
    finally:
        rig.stop.set()
        await asyncio.wait_for(worker, 30)
        await rig.backend.stop()
        rig.engine.close()


def observe(rig: Rig, before: dict[str, int]) -> bi.Observed:
    """What the in-memory broker kept, and what the store and the backend's counters say."""
    kept = []
    for delivery, reason in rig.broker.quarantined:  # the backend's, and the orders a worker rejected
        dead = delivery.queue in rig.broker.bindings.values()
        kept.append(bi.Kept(delivery.message_id, delivery.body, None if dead else reason, delivery.queue, dead))
    late = [bi.Late(e.cause, e.answer, e.message)
            for _, e in rig.engine.notifications(0, 10**6, topics=("LateAnswerReceived",))
            if isinstance(e, ev.LateAnswerReceived)]
    records = [bi.Record(e.originator_id, e.message_id, e.kind, e.reason, e.digest)
               for _, e in rig.engine.notifications(0, 10**6, topics=("MessageQuarantined",))
               if isinstance(e, ev.MessageQuarantined)]
    stats = rig.backend.stats
    return bi.Observed(kept, late, records, duplicates=stats["duplicates"] - before["duplicates"],
                       late_progress=stats["late_progress"] - before["late_progress"],
                       quarantined_counter=stats["quarantined"] - before["quarantined"],
                       late_counter=stats["late_answers"] - before["late_answers"])
