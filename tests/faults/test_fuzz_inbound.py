"""Bad input over the real RabbitMQ: at least 10,000 malformed inbound messages (invalid
JSON, wrong types, missing fields, unknown job ids, unknown workflow ids, responses for jobs
already completed, bodies over the size limit, wrong content types, duplicated and missing
message ids, ...) published straight to the backend's queues of a real `stepflow serve`,
interleaved with real workflows run by real workers.

Each lands in `stepflow_quarantine` with its reason (header `x-quarantine-reason`) and a
`MessageQuarantined` event (keyed by message id: duplicated ids collapse to one event, by
design); a completion re-sent with its original message id is acked as a duplicate and
changes nothing. The real workflows complete exactly once; the backend never crashes, and
never blocks: workflows started in the middle of the flood complete too.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aio_pika
import amqp_fixtures
import pytest
from amqp_fixtures import Procs, Rabbit, sqlite_store, wait_until
from badinput import DUPLICATE, QUARANTINE, Bad, Generator, Targets, quarantine_events_expected
from fault_kit import FAULT_WORKERS, audit, figures, pipeline, ready, scaled, wait_all_final
from fault_workers import FAULT_TYPES

from stepflow.adapters import protocol as p
from stepflow.adapters.persistence import open_engine
from stepflow.engine import events as ev

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.rabbitmq]
rabbit, procs_factory = amqp_fixtures.rabbit, amqp_fixtures.procs_factory

MESSAGES = 10_000  # in CI too; x10 with --soak
MAX_BODY = 4096  # the serve's --max-body for this test (STEPFLOW_MAX_BODY)
CHUNK = 500


async def publish_all(rabbit: Rabbit, bad: list[Bad], between: Callable[[], None]) -> None:
    connection = await aio_pika.connect(rabbit.url, timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchanges = {name: await channel.get_exchange(rabbit.prefix + name, ensure=False)
                     for name in (p.JOB_RESPONSE, p.WORKER_RESPONSE, p.JOB_QUEUE_NOT_FOUND)}
        for start in range(0, len(bad), CHUNK):
            await asyncio.gather(*(
                exchanges[b.exchange].publish(
                    aio_pika.Message(b.body, message_id=b.message_id, content_type=b.content_type,
                                     headers=b.headers, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=b.key)
                for b in bad[start:start + CHUNK]))
            between()  # real traffic, interleaved with the garbage
    finally:
        await connection.close()


def test_ten_thousand_bad_inbound_messages_are_quarantined_and_real_workflows_complete(
        rabbit: Rabbit, tmp_path: Path, procs_factory: Callable[[str], Procs]) -> None:
    seed = int(os.environ.get("STEPFLOW_FAULT_SEED") or time.time_ns() % 100_000)
    rng = random.Random(seed)
    rabbit.job_types.update(FAULT_TYPES)
    store = sqlite_store(tmp_path)
    procs = procs_factory(store)
    engine = open_engine(store)
    try:
        serve = procs.serve(STEPFLOW_MAX_BODY=str(MAX_BODY))
        procs.worker("w1", FAULT_WORKERS)
        procs.worker("w2", FAULT_WORKERS)
        ready(rabbit, procs, job_completed=1, fault_a=2, fault_b=2)
        context = lambda: f"seed={seed}\n{procs.logs()}"  # noqa: E731

        # targets: a finished workflow (its jobs are "already completed") and a live one
        done = engine.start_workflow(pipeline(2), {"name": "done"})
        wait_all_final(engine, [done], 60, context)
        done_jobs = list(engine.workflow_state(done).jobs)
        live = engine.start_workflow(pipeline(2), {"name": "live"})
        real = [done, live]
        generator = Generator(rng, Targets(str(live), str(done), done_jobs), MAX_BODY)
        bad: list[Bad] = []
        while len(bad) < scaled(MESSAGES):
            bad.extend(generator.one())
        rng.shuffle(bad)

        def more_real() -> None:
            for _ in range(2):
                real.append(engine.start_workflow(pipeline(rng.randint(2, 4)), {"name": f"r{len(real)}"}))

        started = time.monotonic()
        asyncio.run(publish_all(rabbit, bad, more_real))
        published_s = time.monotonic() - started

        expected_q = sum(b.expect == QUARANTINE for b in bad)
        wait_all_final(engine, real, 300, context)
        asyncio.run(rabbit.wait_depth(p.QUARANTINE, messages=expected_q, timeout=300))
        for queue in (*p.RESPONSE_KEYS, *p.WORKER_KEYS, p.JOB_QUEUE_NOT_FOUND):
            asyncio.run(rabbit.wait_depth(queue, messages=0, timeout=60))
        drained_s = time.monotonic() - started
        assert serve.alive(), context()

        # the quarantine queue: every bad message, with its reason, body kept as data
        kept = asyncio.run(rabbit.take_all(p.QUARANTINE))
        assert len(kept) == expected_q
        by_id: dict[str | None, list[Bad]] = {}
        for b in bad:
            by_id.setdefault(b.message_id, []).append(b)
        unmatched = []
        for message in kept:
            reason = message.headers.get("x-quarantine-reason", "")
            reason = reason.decode() if isinstance(reason, bytes) else str(reason)
            assert reason, message
            # aiormq gives every message published without an id a random one: match by body
            candidates = by_id.get(message.message_id, []) or by_id.get(None, [])
            if not any(c.body == message.body and c.reason.lower() in reason.lower() for c in candidates):
                unmatched.append((message.message_id, reason, message.body[:80]))
        assert not unmatched, unmatched[:10]
        # nothing that was only a duplicate went to quarantine
        assert not any(message.message_id in {b.message_id for b in bad if b.expect == DUPLICATE}
                       for message in kept)

        # the events: one MessageQuarantined per distinct key
        recorded = [e for _, e in engine.notifications(0, 10 * len(bad) + 1000, topics=("MessageQuarantined",))]
        assert all(isinstance(e, ev.MessageQuarantined) and e.reason for e in recorded)
        expected_events = quarantine_events_expected(bad)
        assert len(recorded) == expected_events

        # the real workflows: completed, exactly once, untouched by the garbage
        result = audit(engine, real)
        categories = Counter(b.category for b in bad)
        figures("fuzz over RabbitMQ", bad_inputs_sent=len(bad), quarantined_messages=len(kept),
                message_quarantined_events=expected_events,
                duplicates_acked=sum(b.expect == DUPLICATE for b in bad),
                real_workflows=result.workflows, jobs_lost=result.jobs_lost,
                transitions_doubled=result.doubled, publish_s=round(published_s, 1),
                drained_s=round(drained_s, 1), seed=seed)
        figures("fuzz categories", **dict(sorted(categories.items())))
        result.check()
        assert len(bad) >= scaled(MESSAGES)
        assert set(categories) >= {"invalid_json", "wrong_types", "missing_fields", "unknown_job",
                                   "unknown_workflow", "completed_job_new_id", "completed_job_same_id",
                                   "huge_body", "wrong_content_type", "duplicated_message_id"}
    finally:
        engine.close()
