"""stepflow's backend for the benchmark: `stepflow serve`, plus the load and two stopwatches.

    python -m benchmarks.harness.stepflow_backend --store URL --prefix P --load '{"workflows": 100, ...}' --out FILE

The same `Backend` and `AmqpBackendBroker` with the same defaults as `stepflow serve` (batch
256, prefetch 512, outbox poll 0.5 s). Two additions:

- it starts the load's workflows itself, as an embedding service would: all at once (chunks
  of 500 `Workflow.start` saved per transaction, waking the outbox after each) or at the
  load's rate (what is due every 5 ms, each start a `Backend.start_workflow` call of its own);
- the broker notes when a `job_completed` message arrives (per workflow) and when the orders
  it caused are confirmed: step-to-step latency, completion received -> next order confirmed.

It also times the stages a step goes through (`stages`: the wait for and the run of each
store-thread call, by function; the wait for and the run of each outbox-thread call; each
publish until confirmed; for a timed load, each answer's trip from its worker's job end, the
output `t`, to its arrival here), so a latency figure comes with where its time went.

On SIGTERM it writes those samples, its counters and its CPU time to --out and stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.harness.common import AMQP_URL, Load
from stepflow.adapters import protocol as p
from stepflow.adapters.amqp import AmqpBackendBroker
from stepflow.adapters.amqp.connection import AmqpDelivery
from stepflow.adapters.backend import Backend, default_backend
from stepflow.adapters.cli import loop as event_loop
from stepflow.adapters.logging import configure
from stepflow.adapters.persistence import open_engine
from stepflow.adapters.start_batch import with_position
from stepflow.engine import events as ev
from stepflow.engine.definitions import WorkflowDefinition, build_definition
from stepflow.engine.workflow import Workflow

START_CHUNK = 500
RECEIVED_BOUND = 20_000


def definition_for(load: Load) -> tuple[WorkflowDefinition, dict[str, Any]]:
    if load.fan_out:
        return build_definition({
            "identifier": "bench-fanout",
            "parameters": [{"id": "items", "type": "array_of_integers"}],
            "steps": [{"id": "fan", "job_type": "noop", "fan_out": "{workflow.items}", "parameters": {"n": "{item}"}},
                      {"id": "join", "job_type": "noop", "parents": ["fan"]}],
        }), {"items": list(range(load.fan_out))}
    steps: list[dict[str, Any]] = []
    for i in range(load.steps):
        step: dict[str, Any] = {"id": f"s{i}", "job_type": "noop"}
        if i:
            step["parents"] = [f"s{i - 1}"]
        if load.timed:
            step["parameters"] = {"prev": f"{{steps.s{i - 1}.outputs.t}}"} if i else {"timed": True}
        steps.append(step)
    return build_definition({"identifier": f"bench-chain-{load.steps}", "steps": steps}), {}


class TimedBroker(AmqpBackendBroker):
    """Notes completion arrival and order confirmation times, per workflow."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # arrivals per workflow, oldest first; a workflow's last completion is never followed by
        # an order, so the oldest are dropped past a bound (RSS is measured: it must not grow)
        self.received: OrderedDict[str, list[float]] = OrderedDict()
        self.step_latency: list[float] = []
        self.completions = 0
        self.orders = 0
        self.stages = Stages()

    async def _received(self, delivery: AmqpDelivery) -> None:
        if delivery.queue == p.JOB_COMPLETED:
            self.completions += 1
            self.received.setdefault(str(delivery.headers.get("workflow_id")), []).append(time.perf_counter())
            sent = _answer_sent(delivery.body)
            if sent is not None:  # a timed load's job: its end time, the output `t` (noop_worker)
                self.stages.note("answer sent until received", time.time() - sent)
            if len(self.received) > RECEIVED_BOUND:
                self.received.popitem(last=False)
        await super()._received(delivery)

    async def publish_orders(self, orders: Sequence[ev.JobSubmitted]) -> None:
        begun = time.perf_counter()
        await super().publish_orders(orders)
        confirmed = time.perf_counter()
        self.stages.note("publish until confirmed", confirmed - begun)
        self.orders += len(orders)
        for workflow_id in {str(order.originator_id) for order in orders}:
            # The completions received before this publish began caused these orders (the
            # last of them, for a join); later ones answer orders published since.
            received = self.received.get(workflow_id)
            if not received or received[0] >= begun:
                continue
            before = [t for t in received if t < begun]
            self.step_latency.append(confirmed - before[-1])
            self.stages.note("received until published", begun - before[-1])
            rest = received[len(before):]
            if rest:
                self.received[workflow_id] = rest
            else:
                del self.received[workflow_id]


def _answer_sent(body: bytes) -> float | None:
    try:
        sent = msgspec.json.decode(body, type=p.JobResult).parameter("t")
    except msgspec.DecodeError:
        return None
    return float(sent) if isinstance(sent, (int, float)) else None


async def start_load(backend: Backend, load: Load) -> None:
    definition, parameters = definition_for(load)
    engine = backend.engine

    def start(count: int) -> None:
        now = datetime.now(UTC)
        engine.save(*(Workflow.start(uuid.uuid4(), definition, parameters, now=now, actor="bench")
                      for _ in range(count)))

    if load.rate <= 0:
        for first in range(0, load.workflows, START_CHUNK):
            await backend.in_store(start, min(START_CHUNK, load.workflows - first))
            backend._stored()  # wake the outbox, as Backend.start_workflow does
        return
    # At a rate, each start is its own `start_workflow` call, as a service's requests would be;
    # the backend groups those that meet in one commit.
    began = time.perf_counter()
    started = 0
    calls: set[asyncio.Task[Any]] = set()
    while started < load.workflows:
        due = min(load.workflows, int((time.perf_counter() - began) * load.rate) + 1)
        for _ in range(due - started):
            call = asyncio.create_task(backend.start_workflow(definition, parameters, actor="bench"))
            calls.add(call)
            call.add_done_callback(calls.discard)
        started = due
        await asyncio.sleep(0.005)
    for call in list(calls):
        await call  # an error of any start fails the run


def _split_backend_stage(backend: Backend, broker: TimedBroker) -> None:
    """Split "received until published" at the inbox: "received until taken" is the wait for
    the inbox loop (the batch before, and the batch window), "received until stored" adds the
    batch's commit (the signal to the outbox follows at once)."""
    handle, stored = backend.inbox.handle, backend.inbox.stored
    arrivals: list[float] = []  # of the batch being handled

    async def timed_handle(batch: Sequence[Any]) -> None:
        now = time.perf_counter()
        arrivals.clear()
        for delivery in batch:
            received = broker.received.get(str(delivery.headers.get("workflow_id")))
            if received:
                arrivals.append(received[-1])
                broker.stages.note("received until taken", now - received[-1])
        await handle(batch)

    def timed_stored() -> None:
        now = time.perf_counter()
        for arrival in arrivals:
            broker.stages.note("received until stored", now - arrival)
        stored()

    backend.inbox.handle = timed_handle  # type: ignore[method-assign]
    backend.inbox.stored = timed_stored


class Stages:
    """Durations in ms by stage name, bounded (RSS is measured too)."""

    BOUND = 50_000

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    def note(self, stage: str, seconds: float) -> None:
        samples = self.samples.setdefault(stage, [])
        if len(samples) < self.BOUND:
            samples.append(seconds * 1000)

    def wrap_thread(self, backend: Backend, method: str, label: str) -> None:
        """Time `backend.<method>(fn, ...)`: the queue wait and the run, per function."""
        original = getattr(backend, method)

        async def timed(fn: Any, *args: Any, **kwargs: Any) -> Any:
            submitted = time.perf_counter()
            began: list[float] = []
            # `with_position(engine, fn, ...)` is named for the call it makes
            name = getattr(args[1] if fn is with_position else fn, "__name__", "call")

            def run(*a: Any, **kw: Any) -> Any:
                began.append(time.perf_counter())
                cpu = time.thread_time()
                try:
                    return fn(*a, **kw)
                finally:
                    self.note(f"{label} {name} wait", began[0] - submitted)
                    self.note(f"{label} {name} run", time.perf_counter() - began[0])
                    # the run's own CPU: the rest of the run waited (for the GIL, the disk, a lock)
                    self.note(f"{label} {name} run cpu", time.thread_time() - cpu)

            return await original(run, *args, **kwargs)

        setattr(backend, method, timed)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for stage, samples in sorted(self.samples.items()):
            ordered = sorted(samples)

            def pick(q: float, ordered: list[float] = ordered) -> float:
                return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

            out[stage] = {"count": len(ordered), "p50": pick(0.5), "p99": pick(0.99)}
        return out


async def main(args: argparse.Namespace) -> int:
    configure("console", "warning")
    load = Load(**json.loads(args.load))
    engine = open_engine(args.store)
    broker = TimedBroker(args.amqp_url, prefix=args.prefix, prefetch=args.prefetch)
    options = {} if args.batch_wait is None else {"batch_wait_s": args.batch_wait}
    backend = default_backend(engine, broker, batch_size=args.batch_size, outbox_poll_s=args.outbox_poll, **options)
    stages = broker.stages
    stages.wrap_thread(backend, "in_store", "store")
    backend.inbox.in_store = backend.in_store  # it was handed the store thread before the wrap
    stages.wrap_thread(backend, "in_outbox_thread", "outbox")
    _split_backend_stage(backend, broker)
    await backend.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starter = asyncio.create_task(start_load(backend, load))
    code = 0
    try:
        while not stop.is_set():
            backend.check()
            if starter.done():
                starter.result()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    finally:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        Path(args.out).write_text(json.dumps({
            "step_latency": broker.step_latency, "completions": broker.completions, "orders": broker.orders,
            "stats": backend.stats, "cpu_s": usage.ru_utime + usage.ru_stime, "stages": stages.summary(),
        }))
        starter.cancel()
        await backend.stop()
        engine.close()
    return code


def cli() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--amqp-url", default=AMQP_URL)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--load", required=True, help="the Load as JSON")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--prefetch", type=int, default=512)
    parser.add_argument("--outbox-poll", type=float, default=0.5)
    parser.add_argument("--batch-wait", type=float, default=None, help="default: Backend's")
    args = parser.parse_args()
    raise SystemExit(event_loop.run(main(args)))  # the loop `stepflow serve` runs on


if __name__ == "__main__":
    cli()
