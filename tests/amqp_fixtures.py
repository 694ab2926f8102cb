"""Fixtures and helpers for the RabbitMQ tests (tests/integration/test_amqp_*, tests/e2e/test_amqp_*).

Import what a test module needs: `from tests.amqp_fixtures import rabbit, ...` (pytest finds
fixtures imported into a test module). The waits on a condition (`wait_until`, and `eventually`
on the event loop) serve every test layer. Every test gets its own name prefix, so tests never
see each other's queues, and its exchanges and queues are deleted afterwards.

If RabbitMQ (or PostgreSQL, for the tests that ask for it) cannot be reached, the test
FAILS with a message saying so: these tests are the proof that stepflow works on a real
broker, and a skipped proof proves nothing.

The test workers at the bottom are loaded by `stepflow worker tests/amqp_fixtures.py:slow`
in the process tests, and used in-process by the integration tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stepflow.sdk import JobContext, Worker

AMQP_URL = os.environ.get("STEPFLOW_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MEDIA_WORKERS = f"{EXAMPLES / 'media' / 'workers.py'}:media"
MEDIA_TYPES = ("media_probe", "media_transcode", "media_package")
FIXTURE_WORKERS = f"{Path(__file__).resolve()}:slow"


# --- RabbitMQ ----------------------------------------------------------------------------


@dataclass
class Rabbit:
    """The broker as one test sees it: its URL and its own prefix."""

    url: str
    prefix: str
    job_types: set[str] = field(default_factory=set)  # job-type queues to delete afterwards

    @property
    def topology(self) -> Any:
        from stepflow.adapters.amqp import Topology

        return Topology(self.prefix)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a stepflow process of this test."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("STEPFLOW_")}
        env.update(STEPFLOW_AMQP_URL=self.url, STEPFLOW_PREFIX=self.prefix, STEPFLOW_LOG_LEVEL="info",
                   STEPFLOW_LOG_FORMAT="console", PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env.update(extra)
        return env

    async def channel_do(self, fn: Callable[[Any], Any]) -> Any:
        """Run `await fn(channel)` on a fresh connection (plain, not robust)."""
        import aio_pika

        connection = await aio_pika.connect(self.url, timeout=5)
        try:
            channel = await connection.channel()
            return await fn(channel)
        finally:
            await connection.close()

    async def depth(self, queue: str) -> tuple[int, int]:
        """(messages ready, consumers) of a queue, by its protocol name."""

        import aio_pika

        async def look(channel: Any) -> tuple[int, int]:
            try:
                result = await channel.declare_queue(self.prefix + queue, passive=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                return -1, 0  # not declared (yet)
            ok = result.declaration_result
            return ok.message_count, ok.consumer_count

        return await self.channel_do(look)

    async def wait_depth(self, queue: str, *, messages: int | None = None, consumers: int | None = None,
                         timeout: float = 15.0) -> tuple[int, int]:
        deadline = time.monotonic() + timeout
        while True:
            seen = await self.depth(queue)
            if (messages is None or seen[0] == messages) and (consumers is None or seen[1] >= consumers):
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"queue {queue}: {seen} (ready, consumers), wanted {messages}, {consumers}")
            await asyncio.sleep(0.05)

    async def take_all(self, queue: str) -> list[Any]:
        """Consume (ack) every ready message of a queue; return them."""

        async def take(channel: Any) -> list[Any]:
            q = await channel.declare_queue(self.prefix + queue, passive=True)
            got = []
            while (message := await q.get(no_ack=True, fail=False)) is not None:
                got.append(message)
            return got

        return await self.channel_do(take)

    async def publish(self, exchange: str, routing_key: str, body: bytes, **properties: Any) -> None:
        import aio_pika

        async def send(channel: Any) -> None:
            ex = await channel.get_exchange(self.prefix + exchange, ensure=False)
            await ex.publish(aio_pika.Message(body, **properties), routing_key=routing_key)

        await self.channel_do(send)

    async def declare(self, *job_types: str) -> None:
        """The common topology and these job-type queues (as a worker would)."""

        async def declare(channel: Any) -> None:
            await self.topology.declare(channel)
            for job_type in job_types:
                await self.topology.declare_job_queue(channel, job_type)

        self.job_types.update(job_types)
        await self.channel_do(declare)

    async def cleanup(self) -> None:
        async def delete(channel: Any) -> None:
            extra = tuple(self.topology.job_queue(t) for t in sorted(self.job_types))
            await self.topology.delete(channel, extra)

        await self.channel_do(delete)


def _probe_rabbit(url: str) -> None:
    import aio_pika

    async def probe() -> None:
        connection = await aio_pika.connect(url, timeout=5)
        await connection.close()

    try:
        asyncio.run(probe())
    except Exception as error:  # noqa: BLE001  whatever it is, the test fails saying so
        pytest.fail(f"RabbitMQ is not reachable at {url.split('@')[-1]} ({error!r}). These tests need a real "
                    "broker: start it (`rabbitmq-server -detached`) or set STEPFLOW_TEST_AMQP_URL.",
                    pytrace=False)


@pytest.fixture
def rabbit() -> Iterator[Rabbit]:
    _probe_rabbit(AMQP_URL)
    handle = Rabbit(AMQP_URL, f"t{uuid.uuid4().hex[:8]}_", set(MEDIA_TYPES) | set(SLOW_TYPES))
    yield handle
    with contextlib.suppress(Exception):
        asyncio.run(handle.cleanup())


def close_connections(name_part: str) -> int:
    """Close, broker side, every connection whose client name contains `name_part`."""
    listing = subprocess.run(
        ["rabbitmqctl", "list_connections", "pid", "client_properties", "-q", "--no-table-headers"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    closed = 0
    for line in listing.splitlines():
        if name_part in line:
            pid = line.split("\t", 1)[0].strip()
            subprocess.run(["rabbitmqctl", "close_connection", pid, "stepflow test: broker went away"],
                           capture_output=True, timeout=30, check=True)
            closed += 1
    return closed


# --- stores ------------------------------------------------------------------------------


@pytest.fixture
def postgres_store() -> Iterator[str]:
    """A store URL on its own PostgreSQL schema, dropped afterwards."""
    from pg_fixtures import PG_SERVER, fresh_schema

    with fresh_schema() as schema:
        yield f"{PG_SERVER}?schema={schema}"


def sqlite_store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.sqlite'}"


# --- processes ---------------------------------------------------------------------------


class Proc:
    """A `python -m stepflow ...` child with its output in a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.instance_id = ""
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen([sys.executable, "-m", "stepflow", *args], env=env, cwd=ROOT,
                                      stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> int:
        """SIGKILL: a crash, nothing runs on the way out."""
        self.popen.send_signal(signal.SIGKILL)
        return self.popen.wait(10)

    def terminate(self, timeout: float = 15) -> int:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(5)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def close(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait(5)
        self._log.close()


class Procs:
    """The processes of one test, all ended at teardown; their logs on failure."""

    def __init__(self, rabbit: Rabbit, store: str, log_dir: Path) -> None:
        self.rabbit = rabbit
        self.store = store
        self.log_dir = log_dir
        self.all: list[Proc] = []

    def serve(self, name: str = "serve", **env: str) -> Proc:
        return self._start(name, ["serve", "--store", self.store, "--outbox-poll", "0.2"], env)

    def worker(self, name: str, target: str, *job_types: str, extra_args: Sequence[str] = (), **env: str) -> Proc:
        instance_id = f"{name}-{uuid.uuid4().hex[:6]}"
        args = ["worker", target, "--instance-id", instance_id, "--heartbeat", "1", *extra_args]
        for job_type in job_types:
            args += ["--job-type", job_type]
        proc = self._start(name, args, env)
        proc.instance_id = instance_id
        return proc

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(f"{name}-{len(self.all)}", args, self.rabbit.env(**env), self.log_dir)
        self.all.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} (pid {p.pid}) ---\n{p.log()[-4000:]}" for p in self.all)

    def close(self) -> None:
        for proc in self.all:
            proc.close()


@pytest.fixture
def procs_factory(rabbit: Rabbit, tmp_path: Path) -> Iterator[Callable[[str], Procs]]:
    """`make(store)` -> Procs; every process is stopped at teardown (logs stay in tmp_path)."""
    made: list[Procs] = []

    def make(store: str) -> Procs:
        procs = Procs(rabbit, store, tmp_path)
        made.append(procs)
        return procs

    yield make
    for procs in made:
        for proc in procs.all:
            proc.terminate(5)
        procs.close()


# --- workflows ---------------------------------------------------------------------------


def wait_final(engine: Any, workflow_id: uuid.UUID, timeout: float = 30.0, *,
               context: Callable[[], str] | None = None) -> Any:
    """Poll a workflow's state (from another process's store) until it ended; on time-out,
    fail with the jobs' statuses and `context()` (e.g. the processes' logs)."""
    from stepflow.engine.statuses import WORKFLOW_FINAL

    deadline = time.monotonic() + timeout
    while True:
        state = engine.workflow_state(workflow_id)
        if state.status in WORKFLOW_FINAL:
            return state
        if time.monotonic() > deadline:
            jobs = {j.job_id[:8]: j.status for j in state.jobs.values()}
            raise AssertionError(f"workflow {workflow_id} still {state.status} after {timeout}s: {jobs}\n"
                                 + (context() if context else ""))
        time.sleep(0.05)


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition",
               context: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n" + (context() if context else ""))
        time.sleep(0.05)


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
                     context: Callable[[], str] | None = None) -> Any:
    """`wait_until` for a test on the event loop: poll `predicate` (a plain or an async
    function) without blocking the loop, and return its first true value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n" + (context() if context else ""))
        await asyncio.sleep(0.01)


def event_counts(engine: Any, workflow_id: uuid.UUID, job_id: str | None = None) -> Counter[str]:
    return Counter(type(e).__name__ for e in engine.history(workflow_id)
                   if job_id is None or getattr(e, "job_id", None) == job_id)


def one_step(job_type: str, **step: Any) -> Any:
    from stepflow.engine.definitions import build_definition

    return build_definition({"identifier": f"test-{job_type}", "steps": [{"id": "only", "job_type": job_type,
                                                                           **step}]})


# --- test workers ------------------------------------------------------------------------

SLOW_TYPES = ("slow_sleep",)

slow = Worker("slow-test", version="1.0.0", description="holds a job while a file exists", prefetch=1,
              heartbeat_s=1.0)


def _note(path: str | None, line: str) -> None:
    if path:
        with open(path, "a") as journal:
            journal.write(line + "\n")


@slow.job("slow_sleep")
async def slow_sleep(params: dict, ctx: JobContext) -> dict:
    """Journal start/cancel/done lines; run while `hold` (a file) exists, at most 60 s."""
    journal, hold = params.get("journal"), params.get("hold")
    _note(journal, f"start {ctx.job_id} {os.getpid()}")
    await ctx.progress(10, "holding")
    try:
        deadline = time.monotonic() + 60
        while hold and os.path.exists(hold) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    except asyncio.CancelledError:
        _note(journal, f"cancelled {ctx.job_id} {os.getpid()}")
        raise
    _note(journal, f"done {ctx.job_id} {os.getpid()}")
    return {"pid": os.getpid()}


def journal_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []
