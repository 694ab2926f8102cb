"""Two `stepflow serve` processes on one PostgreSQL schema and one RabbitMQ prefix, with real
`stepflow worker` processes: one backend holds the lease and does the work, the other stands
by. A spy queue bound to `job_submit` with `#` captures every order that goes out.

- Nobody killed: every order published exactly once.
- The active backend SIGKILLed twice (a fresh standby started after the first kill): all
  workflows complete, nothing lost or doubled in the log, few jobs run twice (only orders
  republished from the dead holder's last unadvanced outbox window), and the standby takes
  over within 2 s each time (kill -> its `lease_acquired`, and -> the first order it publishes).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import aio_pika
import amqp_fixtures
import pytest
from amqp_fixtures import Proc, Procs, Rabbit
from fault_kit import FAULT_WORKERS, audit, figures, pipeline, ready, scaled, wait_all_final
from fault_workers import FAULT_TYPES

from stepflow.adapters.persistence import open_engine
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.decisions import job_id_for
from stepflow.engine.definitions import build_definition

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.rabbitmq, pytest.mark.postgres]
rabbit, procs_factory, postgres_store = amqp_fixtures.rabbit, amqp_fixtures.procs_factory, amqp_fixtures.postgres_store

WORKFLOWS = 300  # x10 with --soak
FAILOVER_BOUND_S = 2.0


class Spy:
    """Every order published to `job_submit`, with the moment it arrived (a thread of its own,
    so the test's waits do not delay the timestamps). Its queue is exclusive: it goes with
    the connection, whatever happens to the test."""

    def __init__(self, rabbit: Rabbit) -> None:
        self.url = rabbit.url
        self.exchange = rabbit.prefix + "job_submit"
        self.arrivals: list[tuple[str, float]] = []
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="order-spy", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise AssertionError(f"spy queue not bound: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._consume())
        except BaseException as error:  # noqa: BLE001  reported by __enter__ or the counts
            self._error = error
            self._ready.set()

    async def _consume(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        connection = await aio_pika.connect(self.url)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(self.exchange, "#")

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                self.arrivals.append((message.message_id or "", time.time()))

            await queue.consume(on_message, no_ack=True)
            self._ready.set()
            await self._stop.wait()
        finally:
            await connection.close()

    def count(self) -> int:
        return len(self.arrivals)

    def twice(self) -> int:
        """Orders that arrived more than once (counting each extra copy)."""
        return sum(n - 1 for n in Counter(m for m, _ in self.arrivals).values() if n > 1)


def log_events(proc: Proc, *names: str) -> list[tuple[str, float]]:
    """(event, unix time) of the JSON log lines named `names`."""
    out = []
    for line in proc.log().splitlines():
        if line.startswith("{") and any(f'"{n}"' in line for n in names):
            record = json.loads(line)
            if record.get("event") in names:
                out.append((record["event"], datetime.fromisoformat(record["timestamp"]).timestamp()))
    return out


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, context: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout}s\n{context()}")
        time.sleep(0.02)
    return value


def active_one(backends: list[Proc], context: Callable[[], str]) -> Proc:
    """The live backend that acquired the lease last (and has not lost it since)."""

    def holder() -> Proc | None:
        holders = [p for p in backends if p.alive() and (events := log_events(p, "lease_acquired", "lease_lost"))
                   and events[-1][0] == "lease_acquired"]
        return holders[0] if len(holders) == 1 else None

    return wait_for(holder, 15, "one active backend", context)


def start_backend(procs: Procs, name: str) -> Proc:
    proc = procs.serve(name, STEPFLOW_LOG_FORMAT="json")
    wait_for(lambda: log_events(proc, "backend_started") or not proc.alive(), 30, f"{name} started", procs.logs)
    assert proc.alive(), procs.logs()
    return proc


def start_run(rabbit: Rabbit, procs: Procs, journal: Path, backends: int) -> list[Proc]:
    rabbit.job_types.update(FAULT_TYPES)
    served = [start_backend(procs, f"serve-{n}") for n in range(backends)]
    for name in ("w1", "w2"):
        procs.worker(name, FAULT_WORKERS, STEPFLOW_FAULT_JOURNAL=str(journal))
    ready(rabbit, procs, job_completed=1, fault_a=2, fault_b=2)  # one consumer: the active backend
    return served


def start_workflows(engine: WorkflowEngine, rng: random.Random) -> tuple[list[uuid.UUID], int]:
    workflow_ids, jobs = [], 0
    for n in range(scaled(WORKFLOWS)):
        fan = rng.randint(2, 4)
        workflow_ids.append(engine.start_workflow(pipeline(fan), {"name": f"wf{n}"}))
        jobs += fan + 2
    return workflow_ids, jobs


def runs_twice(journal: Path) -> tuple[int, int]:
    """(jobs run, jobs run more than once) from the workers' journal."""
    runs = Counter(line.split()[1] for line in journal.read_text().splitlines() if line.startswith("run "))
    return len(runs), sum(1 for n in runs.values() if n > 1)


@pytest.mark.parametrize("n", [2, 3], ids=["two", "three"])
def test_n_backends_publish_every_order_once(n: int, rabbit: Rabbit, postgres_store: str,
                                             procs_factory: Callable[[str], Procs], tmp_path: Path) -> None:
    procs = procs_factory(postgres_store)
    journal = tmp_path / "runs.journal"
    engine = open_engine(postgres_store)
    try:
        backends = start_run(rabbit, procs, journal, backends=n)  # declares job_submit
        with Spy(rabbit) as spy:
            active = active_one(backends, procs.logs)
            started = time.monotonic()
            workflow_ids, jobs = start_workflows(engine, random.Random(13))
            wait_all_final(engine, workflow_ids, 120, procs.logs)
            elapsed = time.monotonic() - started
            # every order has reached a worker by now; a second copy from the standby would be
            # just as quick, so a short quiet spell is enough to see one
            wait_for(lambda: spy.count() >= jobs, 5, "every order seen by the spy", procs.logs)
            time.sleep(0.5)
        result = audit(engine, workflow_ids)
        logs = "".join(p.log() for p in backends)
        ran, ran_twice = runs_twice(journal)
        figures(f"{n} backends, lease, no kill", workflows=result.workflows, jobs=result.jobs,
                orders_seen=spy.count(), orders_twice=spy.twice(), jobs_run_twice=ran_twice,
                conflict_retries=logs.count("execute_conflict_retry"), seconds=round(elapsed, 1))
        result.check()
        assert result.jobs == jobs and spy.count() == jobs, (result.jobs, jobs, spy.count())
        assert spy.twice() == 0 and ran_twice == 0 and ran == jobs
        for standby in (p for p in backends if p is not active):
            assert not log_events(standby, "lease_acquired"), "a standby took the lease though nobody died"
        assert "Traceback" not in logs and "backend_failed" not in logs, procs.logs()
        assert all(p.terminate() == 0 for p in backends)
    finally:
        engine.close()


@pytest.mark.parametrize("n", [2, 3], ids=["two", "three"])
def test_the_active_backend_killed_twice_a_standby_takes_over_within_two_seconds(
        n: int, rabbit: Rabbit, postgres_store: str, procs_factory: Callable[[str], Procs], tmp_path: Path) -> None:
    procs = procs_factory(postgres_store)
    journal = tmp_path / "runs.journal"
    engine = open_engine(postgres_store)
    failovers: list[tuple[float, float]] = []  # (kill -> lease_acquired, kill -> first order) in s
    try:
        backends = start_run(rabbit, procs, journal, backends=n)
        with Spy(rabbit) as spy:
            started = time.monotonic()
            workflow_ids, jobs = start_workflows(engine, random.Random(31))
            for kill in (1, 2):
                victim = active_one(backends, procs.logs)
                wait_for(lambda k=kill, n=jobs: spy.count() >= n * k // 3, 60, f"a third of the orders (kill {kill})",
                         procs.logs)
                survivors = [p for p in backends if p is not victim and p.alive()]
                killed_at = time.time()
                victim.kill()
                acquired = wait_for(
                    lambda ss=survivors, k=killed_at: max((t for s in ss for e, t in log_events(s, "lease_acquired")
                                                           if t >= k), default=None), 10,
                    "a standby's lease_acquired", procs.logs)
                # A workflow started once a standby holds the lease: its order can only come from
                # the new holder (the run may be so quick that every other order is out already).
                # The dead holder's unconfirmed window is held back meanwhile (`Backend._publish`).
                probe = engine.start_workflow(pipeline(1), {"name": f"probe{kill}"})
                workflow_ids.append(probe)
                jobs += 3
                probe_job = job_id_for(probe, "a", 0, 1)
                first_order = wait_for(
                    lambda j=probe_job: next((t for m, t in spy.arrivals if m == j), None), 10,
                    "the probe's order from the new holder",
                    lambda k=killed_at, n=jobs: f"spy: {spy.count()} of {n}, last at "
                                        f"{max(t for _, t in spy.arrivals)}, killed at {k}\n{procs.logs()}")
                failovers.append((acquired - killed_at, first_order - killed_at))
                backends = [*survivors, start_backend(procs, f"serve-{n + kill - 1}")]  # a fresh standby
            wait_all_final(engine, workflow_ids, 120, procs.logs)
            elapsed = time.monotonic() - started
        result = audit(engine, workflow_ids)
        ran, ran_twice = runs_twice(journal)
        logs = "".join(p.log() for p in procs.all if p.name.startswith("serve"))
        figures(f"{n} backends, lease, active killed twice", workflows=result.workflows, jobs=result.jobs,
                jobs_lost=result.jobs_lost, transitions_doubled=result.doubled, orders_seen=spy.count(),
                orders_twice=spy.twice(), jobs_run_twice=ran_twice,
                jobs_run_twice_pct=round(100 * ran_twice / max(result.jobs, 1), 2),
                failover_lease_s=[round(a, 3) for a, _ in failovers],
                failover_first_order_s=[round(o, 3) for _, o in failovers],
                conflict_retries=logs.count("execute_conflict_retry"), seconds=round(elapsed, 1))
        print(f"fail-over (kill -> lease_acquired, kill -> first order): {failovers}")
        result.check()
        assert ran >= result.jobs
        assert ran_twice <= result.jobs * 0.01, (ran_twice, result.jobs)
        for to_lease, to_order in failovers:
            assert to_lease <= FAILOVER_BOUND_S and to_order <= FAILOVER_BOUND_S, failovers
        assert "Traceback" not in logs and "backend_failed" not in logs, procs.logs()
        assert all(p.terminate() == 0 for p in backends)
    finally:
        engine.close()


class HookReceiver:
    """An HTTP endpoint counting the calls to each path (the workflows' end hooks)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        lock = threading.Lock()
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    calls[self.path] += 1
                self.send_response(204)
                self.end_headers()

            do_GET = do_POST

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_timers_retries_and_hooks_fire_once_with_three_backends(
        rabbit: Rabbit, postgres_store: str, procs_factory: Callable[[str], Procs]) -> None:
    """Deadlines, retries with backoff and end hooks belong to the active backend alone: with
    three backends, each workflow's first attempt times out once, is retried once, and its
    hook is called once. (The timeout leaves the retry room under a loaded CI machine: with 1 s,
    every retry once timed out too, and no workflow completed.)"""
    procs = procs_factory(postgres_store)
    engine = open_engine(postgres_store)
    workflows = 20
    try:
        with HookReceiver() as hooks:
            rabbit.job_types.update(FAULT_TYPES)
            backends = []
            for n in range(3):
                proc = procs.serve(f"serve-{n}", STEPFLOW_LOG_FORMAT="json", STEPFLOW_NOTIFICATION_HOSTS="127.0.0.1")
                wait_for(lambda p=proc: log_events(p, "backend_started") or not p.alive(), 30, "started", procs.logs)
                backends.append(proc)
            procs.worker("w1", FAULT_WORKERS)
            ready(rabbit, procs, job_completed=1, fault_hang=1)
            definition = build_definition({
                "identifier": "lease-timers",
                "steps": [{"id": "slow", "job_type": "fault_hang", "parameters": {"hang": True}, "timeout_s": 3,
                           "retry": {"max_attempts": 2, "backoff_s": 0.2}}],
                "hooks": {"on_completed": [{"url": hooks.url + "/done/{run.id}", "method": "POST"}]},
            })
            with Spy(rabbit) as spy:
                ids = [engine.start_workflow(definition, {}) for _ in range(workflows)]
                wait_all_final(engine, ids, 60, procs.logs)
                wait_for(lambda: sum(hooks.calls.values()) >= workflows, 15, "every end hook", procs.logs)
                time.sleep(0.5)  # a second call or order from another backend would come as quickly
            timed_out = Counter(e.originator_id for i in ids for e in engine.history(i)
                                if type(e).__name__ == "JobTimedOut")
            figures("3 backends, timers and hooks", workflows=workflows, hook_calls=sum(hooks.calls.values()),
                    timeouts=sum(timed_out.values()), orders=spy.count(), orders_twice=spy.twice())
            assert hooks.calls == Counter({f"/done/{i}": 1 for i in ids}), hooks.calls
            assert timed_out == Counter({i: 1 for i in ids}), timed_out
            assert spy.count() == 2 * workflows and spy.twice() == 0  # each first attempt and its one retry
            assert all(engine.workflow_state(i).status == "completed" for i in ids)
            assert all(p.terminate() == 0 for p in backends)
    finally:
        engine.close()
