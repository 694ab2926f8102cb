"""The raw loop: the same message exchange as stepflow, with no event store. The physical limit.

    python -m benchmarks.harness.raw_loop worker  --prefix P --prefetch 64 [--gaps FILE]
    python -m benchmarks.harness.raw_loop backend --prefix P --workflows N --widths 1,1,1 [--rate R] --out FILE

Backend: publishes each workflow's first order(s), then for every completion it receives
publishes the next step's order(s) once a step's jobs are all done. Orders and completions are
persistent JSON messages with a message id and a `workflow_id` header, through topic
exchanges (as stepflow's `job_submit` / `job_response`), published with publisher confirms.
Like stepflow's inbox, completions are taken in batches, and a batch is acked
(`basic.ack multiple`) only after the orders it caused are confirmed; batches are pipelined
(the next one is read while the last one's orders await their confirms), acks stay in order.
What it does not do is what stepflow adds: decoding into commands, the aggregate, the store
transaction, the outbox.

Worker: consumes orders with a prefetch, publishes a completion (confirmed), then acks the
order: what stepflow's worker SDK does per job, without its bookkeeping.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import msgspec
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, ExchangeType
from aiormq import spec

from benchmarks.harness.common import (
    AMQP_URL,
    PYTHON,
    BenchFailure,
    Load,
    Processes,
    RssSampler,
    RunResult,
    cpu_self,
    delete_broker_objects,
    summary_ms,
    unique_prefix,
    wait_consumers,
    wait_until,
    will_declare,
)
from stepflow.adapters.cli import loop as event_loop


class Order(msgspec.Struct, array_like=True):
    wf: int
    step: int
    index: int
    t: float | None = None  # timed loads: the previous job's end (wall clock)


encode = msgspec.json.Encoder().encode
decode = msgspec.json.Decoder(Order).decode


class Names:
    def __init__(self, prefix: str) -> None:
        self.orders_exchange = f"{prefix}job_submit"
        self.responses_exchange = f"{prefix}job_response"
        self.orders = f"{prefix}noop"
        self.completed = f"{prefix}job_completed"

    async def declare(self, channel: AbstractChannel) -> tuple[Any, Any, Any, Any]:
        orders_x = await channel.declare_exchange(self.orders_exchange, ExchangeType.TOPIC, durable=True)
        responses_x = await channel.declare_exchange(self.responses_exchange, ExchangeType.TOPIC, durable=True)
        # BENCH_RAW_PRIORITY=1: a priority queue, as stepflow's job queues (x-max-priority 10)
        arguments = {"x-max-priority": 10} if os.environ.get("BENCH_RAW_PRIORITY") else None
        orders = await channel.declare_queue(self.orders, durable=True, arguments=arguments)
        await orders.bind(orders_x, routing_key="noop")
        completed = await channel.declare_queue(self.completed, durable=True)
        await completed.bind(responses_x, routing_key="job_completed")
        return orders_x, responses_x, orders, completed


PRIORITY = 1 if os.environ.get("BENCH_RAW_PRIORITY") else None


def message(body: bytes, message_id: str, workflow: int) -> tuple[bytes, Any]:
    """The body and its AMQP properties, built as stepflow builds them (`topology.persistent`:
    not through `aio_pika.Message`, which costs ten times the CPU), so the two loops differ in
    what they do with a message, not in how they write one."""
    return body, spec.Basic.Properties(content_type="application/json", delivery_mode=2, message_id=message_id,
                                       timestamp=datetime.now(UTC), headers={"workflow_id": str(workflow)},
                                       priority=PRIORITY)


async def send_built(exchange: Any, outbound: tuple[bytes, Any], routing_key: str) -> None:
    """`Exchange.publish` with the properties built already (as stepflow's `connection.publish`)."""
    channel = await exchange.channel.get_underlay_channel()
    await channel.basic_publish(outbound[0], exchange=exchange.name, routing_key=routing_key,
                                properties=outbound[1], mandatory=True)


# --- backend -----------------------------------------------------------------------------


async def backend(args: argparse.Namespace) -> None:
    widths = [int(w) for w in args.widths.split(",")]
    names = Names(args.prefix)
    connection = await aio_pika.connect(args.amqp_url)
    consume = await connection.channel(publisher_confirms=False)
    await consume.set_qos(prefetch_count=args.prefetch)
    await names.declare(consume)
    publish = await connection.channel(publisher_confirms=True)
    orders_x = await publish.get_exchange(names.orders_exchange, ensure=False)
    inbox: asyncio.Queue[tuple[float, AbstractIncomingMessage]] = asyncio.Queue()
    completed_q = await consume.get_queue(names.completed, ensure=False)
    await completed_q.consume(lambda m: inbox.put_nowait((time.perf_counter(), m)))  # type: ignore[arg-type,func-returns-value]

    remaining: dict[int, int] = {}
    started_at: dict[int, float] = {}
    step_latency: list[float] = []
    e2e: list[float] = []
    done = 0
    jobs = 0
    orders_sent = 0
    finished = asyncio.Event()

    def orders_for(wf: int, step: int, t: float | None) -> list[Order]:
        remaining[wf] = widths[step]
        return [Order(wf, step, i, t) for i in range(widths[step])]

    async def send(orders: list[Order]) -> None:
        nonlocal orders_sent
        await asyncio.gather(*(send_built(orders_x, message(encode(o), f"{o.wf}/{o.step}/{o.index}", o.wf), "noop")
                               for o in orders))
        orders_sent += len(orders)

    async def start_all() -> None:
        if args.rate <= 0:
            for first in range(0, args.workflows, 500):
                batch: list[Order] = []
                for wf in range(first, min(args.workflows, first + 500)):
                    started_at[wf] = time.time()
                    batch.extend(orders_for(wf, 0, None))
                await send(batch)
            return
        began = time.perf_counter()
        next_wf = 0
        while next_wf < args.workflows:
            due = min(args.workflows, int((time.perf_counter() - began) * args.rate) + 1)
            batch = []
            while next_wf < due:
                started_at[next_wf] = time.time()
                batch.extend(orders_for(next_wf, 0, None))
                next_wf += 1
            if batch:
                asyncio.create_task(send(batch))
            await asyncio.sleep(0.005)

    async def settle(orders: list[Order], received: list[float], last: AbstractIncomingMessage,
                     before: asyncio.Task[None] | None) -> None:
        if orders:
            await send(orders)
            confirmed = time.perf_counter()
            step_latency.extend(confirmed - r for r in received)
        if before is not None:
            await before  # acks stay in order: a multiple ack never overtakes unconfirmed orders
        await last.ack(multiple=True)

    async def inbox_loop() -> None:
        nonlocal done, jobs
        previous: asyncio.Task[None] | None = None
        while done < args.workflows:
            batch = [await inbox.get()]
            while len(batch) < args.batch_size and not inbox.empty():
                batch.append(inbox.get_nowait())
            orders: list[Order] = []
            received: list[float] = []
            for recv, msg in batch:
                c = decode(msg.body)
                jobs += 1
                remaining[c.wf] -= 1
                if remaining[c.wf]:
                    continue
                if c.step + 1 < len(widths):
                    orders.extend(orders_for(c.wf, c.step + 1, c.t if args.timed else None))
                    received.append(recv)
                else:
                    del remaining[c.wf]
                    done += 1
                    e2e.append(time.time() - started_at[c.wf])
            previous = asyncio.create_task(settle(orders, received, batch[-1][1], previous))
        if previous is not None:
            await previous
        finished.set()

    t0 = time.time()
    loop_task = asyncio.create_task(inbox_loop())
    await start_all()
    await asyncio.wait_for(finished.wait(), args.timeout)
    t_end = time.time()
    await loop_task
    Path(args.out).write_text(json.dumps({
        "t0": t0, "t_end": t_end, "workflows": done, "jobs": jobs, "orders": orders_sent,
        "step_latency": step_latency, "e2e": e2e, "cpu_s": cpu_self(),
    }))
    await connection.close()


# --- worker ------------------------------------------------------------------------------


async def worker(args: argparse.Namespace) -> None:
    names = Names(args.prefix)
    connection = await aio_pika.connect(args.amqp_url)
    publish = await connection.channel(publisher_confirms=True)
    _, responses_x, _, _ = await names.declare(publish)
    consume = await connection.channel(publisher_confirms=False)
    await consume.set_qos(prefetch_count=args.prefetch, global_=True)
    orders_q = await consume.get_queue(names.orders, ensure=False)
    gaps: list[float] = []
    running: set[asyncio.Task[None]] = set()

    async def handle(msg: AbstractIncomingMessage) -> None:
        order = decode(msg.body)
        if order.t is not None:
            gaps.append(time.time() - order.t)
        reply = Order(order.wf, order.step, order.index, time.time())
        await send_built(responses_x, message(encode(reply), f"{msg.message_id}:completed", order.wf), "job_completed")
        await msg.ack()

    def on_message(msg: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(handle(msg))
        running.add(task)
        task.add_done_callback(running.discard)

    await orders_q.consume(on_message)  # type: ignore[arg-type]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    if args.gaps:
        Path(args.gaps).write_text(json.dumps(gaps))
    await connection.close()


# --- the harness side --------------------------------------------------------------------


def run(load: Load, log_dir: Path, *, workers: int = 2, prefetch: int = 64, tag: str = "raw") -> RunResult:
    prefix = unique_prefix("raw")
    names = Names(prefix)
    log_dir.mkdir(parents=True, exist_ok=True)
    out = log_dir / f"{tag}-result.json"
    gap_files = [log_dir / f"{tag}-gaps-{i}.json" for i in range(workers)]
    module = [PYTHON, "-m", "benchmarks.harness.raw_loop"]
    queues, exchanges = [names.orders, names.completed], [names.orders_exchange, names.responses_exchange]
    will_declare(queues, exchanges)
    spawned = time.time()  # the first process is started: for the time with start-up included
    try:
        with Processes(log_dir) as procs:
            worker_procs = [procs.start(f"worker-{tag}-{i}", [*module, "worker", "--prefix", prefix,
                                                             "--prefetch", str(prefetch), "--gaps", str(gap_files[i])])
                            for i in range(workers)]
            wait_consumers(names.orders, workers, procs)
            argv = [*module, "backend", "--prefix", prefix, "--workflows", str(load.workflows),
                    "--widths", ",".join(map(str, load.widths)), "--rate", str(load.rate), "--out", str(out),
                    "--timeout", str(load.deadline_s())]
            if load.timed:
                argv.append("--timed")
            backend_proc = procs.start(f"backend-{tag}", argv)
            with RssSampler(backend_proc) as rss:
                wait_until(lambda: not backend_proc.alive(), load.deadline_s() + 30, "the raw backend",
                           interval=0.05)
            if backend_proc.popen.returncode != 0 or not out.exists():
                raise BenchFailure(f"raw backend failed ({backend_proc.popen.returncode}):\n{backend_proc.tail()}")
            cpu = {"worker": sum(p.cpu_seconds() for p in worker_procs)}
        data = json.loads(out.read_text())
    finally:
        delete_broker_objects(queues, exchanges)
    cpu["backend"] = data["cpu_s"]
    if data["workflows"] != load.workflows or data["jobs"] != load.jobs or data["orders"] != load.jobs:
        raise BenchFailure(f"raw loop: {data['workflows']}/{load.workflows} workflows, {data['jobs']}/{load.jobs} "
                           f"jobs completed, {data['orders']} orders sent")
    gaps: list[float] = []
    for path in gap_files:
        if path.exists():
            gaps.extend(json.loads(path.read_text()))
    return RunResult(
        contender="raw", load=load, seconds=data["t_end"] - data["t0"], workflows=data["workflows"],
        jobs=data["jobs"], step_latency_ms=summary_ms(data["step_latency"]),
        handler_gap_ms=summary_ms(gaps) if load.timed else None, e2e_ms=summary_ms(data["e2e"]),
        rss_mb=rss.samples, cpu_s=cpu, extra={"with_startup_s": round(data["t_end"] - spawned, 4)},
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("backend", "worker"))
    parser.add_argument("--amqp-url", default=AMQP_URL)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--prefetch", type=int, default=None)
    parser.add_argument("--gaps", default=None)
    parser.add_argument("--workflows", type=int, default=0)
    parser.add_argument("--widths", default="1")
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--timed", action="store_true")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    # on the event loop stepflow's processes run on, so that the ratio measures the design, not the loop
    if args.role == "backend":
        args.prefetch = args.prefetch or 512
        event_loop.run(backend(args))
    else:
        args.prefetch = args.prefetch or 64
        event_loop.run(worker(args))


if __name__ == "__main__":
    main()
