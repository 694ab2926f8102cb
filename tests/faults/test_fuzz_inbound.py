"""Bad input over the real RabbitMQ: at least 10,000 bad messages published straight to the
backend queues of a real `stepflow serve` (with `--http`, so its counters are read from
/metrics), and bad job orders of the same families on the job queues of real `stepflow
worker` processes, interleaved with real workflows those workers run.

The families and the fate of each message are in badinput.py: invalid JSON and UTF-8, lone
surrogates, NUL bytes, nesting up to 5,000 deep, wide recursive values, huge numbers and
strings, bodies at the size limit +-1, wrong-typed headers, unknown jobs and workflows, late
answers and progressions, exact and conflicting duplicates, no message id, ...

Checked at the end, message by message (`badinput.account`):
- the backend: sent = quarantined (copies in `stepflow_quarantine` with their kind and
  reason) + late answers (`LateAnswerReceived`, and the counter) + counted duplicates + counted
  late progressions, nothing unaccounted; one `MessageQuarantined` per distinct key (message
  key + body digest), of the expected kind;
- the workers: every bad order answered `job_error` of kind invalid_order (each answer then
  met its own fate at the backend) or dead-lettered to the quarantine queue, and none left
  in a job queue, ready or unacked; a forged well-formed order ran, and its answer was refused;
- the real workflows completed exactly once (`fault_kit.audit`); every process is alive, and
  the backend still stops cleanly.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import amqp_fixtures
import badinput as bi
import httpx
import pytest
from amqp_fixtures import Proc, Procs, Rabbit, sqlite_store, wait_until
from fault_kit import HERE, audit, figures, pipeline, ready, scaled, wait_all_final

from stepflow.adapters import protocol as p
from stepflow.adapters.amqp.worker_broker import REJECTED_HEADER
from stepflow.adapters.persistence import open_engine
from stepflow.engine import events as ev

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.rabbitmq]
rabbit, procs_factory = amqp_fixtures.rabbit, amqp_fixtures.procs_factory

MESSAGES = 10_000  # to the backend; x10 with --soak
ORDERS = 1_500  # to the workers
MAX_BODY = 32_768  # the serve's STEPFLOW_MAX_BODY: 5,000 levels of {"a": fit under it
CHUNK = 500
QUIET_WORKERS = f"{HERE / 'badinput.py'}:quiet"
COUNTERS = {"duplicates": "stepflow_duplicates_ignored_total", "late_progress": "stepflow_late_progress_total",
            "late_answers": "stepflow_late_answers_total", "quarantined": "stepflow_quarantined_total"}


def serve_with_http(procs: Procs) -> tuple[Proc, str]:
    serve = procs._start("serve", ["serve", "--store", procs.store, "--outbox-poll", "0.2", "--http", "127.0.0.1:0"],
                         {"STEPFLOW_MAX_BODY": str(MAX_BODY)})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(r"url=(http://127\.0\.0\.1:\d+)", serve.log())
        if match:
            return serve, match.group(1)
        assert serve.alive(), serve.log()
        time.sleep(0.05)
    raise AssertionError(f"serve printed no http url:\n{serve.log()}")


def counters(url: str) -> dict[str, int]:
    text = httpx.get(url + "/metrics", timeout=10).text
    values = {}
    for key, name in COUNTERS.items():
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)  # a Prometheus number: 3.0
        assert match, f"{name} not in /metrics"
        values[key] = int(float(match.group(1)))
    return values


def queue_counts(rabbit: Rabbit, *names: str) -> dict[str, tuple[int, int]]:
    """(ready, unacked) of queues by protocol name, from the broker itself."""
    listing = subprocess.run(["rabbitmqctl", "list_queues", "name", "messages_ready", "messages_unacknowledged",
                              "-q", "--no-table-headers"], capture_output=True, text=True, timeout=60, check=True)
    counts = {}
    for line in listing.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].removeprefix(rabbit.prefix) in names and parts[0].startswith(rabbit.prefix):
            counts[parts[0].removeprefix(rabbit.prefix)] = (int(parts[1]), int(parts[2]))
    return counts


def message(b: bi.Bad | None = None, *, body: bytes = b"", message_id: str | None = None,
            headers: dict[str, Any] | None = None) -> aio_pika.Message:
    if b is not None:
        body, message_id, headers = b.body, b.message_id, b.headers
    amqp = aio_pika.Message(body, content_type=b.content_type if b else p.CONTENT_TYPE, headers=headers or {},
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
    amqp.message_id = message_id if message_id is not None else bi.NoId()
    return amqp


async def publish(rabbit: Rabbit, items: list[tuple[str, str, aio_pika.Message]],
                  between: Callable[[], None] = lambda: None) -> None:
    """(exchange, routing key, message), CHUNK at a time with confirms; `between` after each chunk."""
    connection = await aio_pika.connect(rabbit.url, timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchanges = {name: await channel.get_exchange(rabbit.prefix + name, ensure=False)
                     for name in {exchange for exchange, _, _ in items}}
        for start in range(0, len(items), CHUNK):
            await asyncio.gather(*(exchanges[exchange].publish(amqp, routing_key=key)
                                   for exchange, key, amqp in items[start:start + CHUNK]))
            between()
    finally:
        await connection.close()


def test_ten_thousand_bad_messages_and_bad_orders_each_end_in_one_visible_place(
        rabbit: Rabbit, tmp_path: Path, procs_factory: Callable[[str], Procs]) -> None:
    seed = int(os.environ.get("STEPFLOW_FAULT_SEED") or time.time_ns() % 100_000)
    rng = random.Random(seed)
    job_types = (*bi.ORDER_TYPES, bi.DONE_TYPE, bi.HELD_TYPE)
    asyncio.run(rabbit.declare(*job_types))  # the done and held types: declared, and nobody consumes them
    store = sqlite_store(tmp_path)
    procs = procs_factory(store)
    engine = open_engine(store)
    try:
        serve, url = serve_with_http(procs)
        ready(rabbit, procs, job_completed=1)
        context = lambda: f"seed={seed}\n{procs.logs()}"

        # the targets: a workflow the test finishes itself (so it knows the bodies applied), and
        # one held running until the end
        done = engine.start_workflow(bi.done_definition(24), {})
        held = engine.start_workflow(bi.held_definition(), {})
        jobs = list(engine.workflow_state(done).jobs)
        applied = {mid: (queue, body) for queue, mid, body in bi.answers(str(done), jobs)}
        for step in (p.JOB_PROGRESSION, p.JOB_COMPLETED):  # in turn: the queues are consumed side by side
            asyncio.run(publish(rabbit, [(p.JOB_RESPONSE, queue, message(body=body, message_id=mid,
                                                                         headers={"workflow_id": str(done)}))
                                         for mid, (queue, body) in applied.items() if queue == step]))
            wait_until(lambda step=step: {e.cause for e in engine.history(done)} >= {
                mid for mid, (queue, _) in applied.items() if queue == step}, 60, f"{step} applied", context)
        wait_all_final(engine, [done], 60, context)
        workers = [procs.worker(name, QUIET_WORKERS) for name in ("w1", "w2")]
        ready(rabbit, procs, fault_a=2, fault_b=2)

        generator = bi.Generator(rng, bi.Targets(str(held), str(done), jobs, applied,
                                                 order_jobs=jobs[: len(jobs) // 2]), MAX_BODY)
        bad: list[bi.Bad] = []
        for kind in generator.kinds:  # every family at least once, then at random
            bad.extend(kind())
        while len(bad) < scaled(MESSAGES):
            bad.extend(generator.one())
        orders = generator.limit_orders()
        for kind in generator.order_kinds:
            orders.extend(kind())
        while len(orders) < scaled(ORDERS):
            orders.extend(generator.one_order())
        sent = bad + orders
        rng.shuffle(sent)
        before = counters(url)
        real = [held]

        def more_real() -> None:
            for _ in range(2):
                real.append(engine.start_workflow(pipeline(rng.randint(2, 4)), {"name": f"r{len(real)}"}))

        started = time.monotonic()
        asyncio.run(publish(rabbit, [(b.exchange, b.key, message(b)) for b in sent], more_real))
        published_s = time.monotonic() - started

        # settled: every copy in the quarantine queue, every counter where it should be
        direct = [b for b in sent if not b.order]
        answered = [b for b in orders if b.expect in (bi.ANSWERED, bi.RUN)]
        expect = {
            "duplicates": sum(b.expect == bi.DUPLICATE for b in direct),
            "late_progress": sum(b.expect == bi.LATE_PROGRESS for b in direct),
            "late_answers": sum(b.expect == bi.LATE for b in direct)
                            + sum(b.answer_expect == bi.LATE for b in answered),
            "quarantined": sum(b.expect == bi.QUARANTINE for b in direct)
                           + sum(b.answer_expect == bi.QUARANTINE for b in answered),
        }
        kept_expected = expect["quarantined"] + sum(b.expect == bi.DEAD_LETTERED for b in orders)
        settled = False
        deadline = time.monotonic() + scaled(180)
        while time.monotonic() < deadline and not settled:
            now = counters(url)
            depth, _ = asyncio.run(rabbit.depth(p.QUARANTINE))
            settled = depth == kept_expected and all(now[k] - before[k] == v for k, v in expect.items())
            if not settled:
                time.sleep(0.2)
        real_done = [w for w in real if w != held]
        wait_all_final(engine, real_done, scaled(120), context)
        drained_s = time.monotonic() - started
        # (worker_discovery is left out: the workers' heartbeats keep coming)
        settle_queues = (*p.RESPONSE_KEYS, p.WORKER_STATUS, p.JOB_QUEUE_NOT_FOUND, *bi.ORDER_TYPES)
        left = queue_counts(rabbit, *settle_queues)
        assert serve.alive() and all(w.alive() for w in workers), context()

        # what happened, message by message
        after = counters(url)
        kept = [bi.Kept(m.message_id, m.body, _header(m, "x-quarantine-reason"), _header(m, "x-original-queue"),
                        bool({"x-death", REJECTED_HEADER} & set(m.headers or {})))
                for m in asyncio.run(rabbit.take_all(p.QUARANTINE))]
        late = [bi.Late(e.cause, e.answer, e.message)
                for _, e in engine.notifications(0, 10**7, topics=("LateAnswerReceived",))
                if isinstance(e, ev.LateAnswerReceived)]
        records = [bi.Record(e.originator_id, e.message_id, e.kind, e.reason, e.digest)
                   for _, e in engine.notifications(0, 10**7, topics=("MessageQuarantined",))
                   if isinstance(e, ev.MessageQuarantined)]
        ledger = bi.account(sent, bi.Observed(
            kept, late, records, duplicates=after["duplicates"] - before["duplicates"],
            late_progress=after["late_progress"] - before["late_progress"],
            quarantined_counter=after["quarantined"] - before["quarantined"],
            late_counter=after["late_answers"] - before["late_answers"]))
        invalid_logged = sum(len(re.findall(r"\border_invalid\b(?!_)", w.log())) for w in workers)

        # the held workflow ends now, answered as a worker would
        (held_job,) = engine.workflow_state(held).jobs
        asyncio.run(publish(rabbit, [(p.JOB_RESPONSE, p.JOB_COMPLETED, message(
            body=bi.dumps(bi.result(held_job, "completed", str(held))), message_id=f"{held_job}:completed"))]))
        wait_all_final(engine, [held], 60, context)
        result = audit(engine, [done, *real])
        categories = Counter(("order " if b.order else "") + b.category for b in sent)
        figures("fuzz over RabbitMQ", **ledger.figures(), orders_invalid_logged=invalid_logged,
                real_workflows=result.workflows, jobs_lost=result.jobs_lost, transitions_doubled=result.doubled,
                publish_s=round(published_s, 1), drained_s=round(drained_s, 1), seed=seed)
        figures("fuzz over RabbitMQ categories", **dict(sorted(categories.items())))

        assert not ledger.problems, f"seed={seed}\n" + "\n".join(ledger.problems[:40])
        assert ledger.unaccounted == 0 and settled, (expect, before, after, kept_expected, len(kept))
        assert left == {q: (0, 0) for q in settle_queues}, left  # nothing ready, nothing held
        assert invalid_logged == sum(b.expect in (bi.ANSWERED, bi.DEAD_LETTERED) for b in orders)
        result.check()
        assert len(bad) >= scaled(MESSAGES) and len(orders) >= scaled(ORDERS)
        assert len({b.category for b in bad}) >= 15 and {"deep_nesting", "recursive_wide"} <= set(categories)
        assert serve.terminate() == 0, serve.log()[-3000:]  # and it still stops cleanly
    finally:
        engine.close()


def _header(message: Any, name: str) -> str | None:
    value = (message.headers or {}).get(name)
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)
