"""The backend lease on the real stores: one holder at a time, handed over when the holder's
session or file goes, lost (and noticed) when its connection is cut; and a standby's stored
order reaches the broker through the holder without waiting a poll (PostgreSQL `NOTIFY`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import amqp_fixtures
import pytest
from amqp_fixtures import Rabbit, one_step
from pg_fixtures import PG_SERVER, fresh_schema, pg_connect

from stepflow.adapters.amqp.backend_broker import AmqpBackendBroker
from stepflow.adapters.backend import default_backend
from stepflow.adapters.lease import FileLease, PostgresLease, open_lease
from stepflow.adapters.persistence import open_engine

rabbit = amqp_fixtures.rabbit


@pytest.fixture
def pg_store() -> Iterator[str]:
    with fresh_schema() as schema:
        yield f"{PG_SERVER}?schema={schema}"


def lease_of(store: str, channel: str | None = None) -> PostgresLease:
    lease = open_lease(store, channel=channel)
    assert isinstance(lease, PostgresLease)
    return lease


@pytest.mark.postgres
async def test_one_postgres_holder_at_a_time_and_the_next_takes_over_when_it_goes(pg_store: str) -> None:
    a, b = lease_of(pg_store), lease_of(pg_store)
    other_schema = lease_of(pg_store.replace("schema=", "schema=x"))
    try:
        assert await a.try_acquire()
        assert not await b.try_acquire()
        assert await other_schema.try_acquire()  # another store, another lock
        await a.close()  # the session ends (the server notices a moment later): so does the lock
        async with asyncio.timeout(1):
            while not await b.try_acquire():
                await asyncio.sleep(0.01)
        assert not await a.try_acquire()
    finally:
        for lease in (a, b, other_schema):
            await lease.close()


@pytest.mark.postgres
async def test_a_holder_whose_session_is_cut_steps_down_before_long(pg_store: str) -> None:
    a, b = lease_of(pg_store), lease_of(pg_store)
    try:
        assert await a.try_acquire()
        watching = asyncio.create_task(a.watch())
        await asyncio.sleep(0.1)
        assert not watching.done()
        with pg_connect() as admin:  # the server drops the holder's session (and lock)
            (killed,) = admin.execute("SELECT pg_terminate_backend(%s)", (a._conn.info.backend_pid,)).fetchone()
        assert killed
        cut = time.monotonic()
        await asyncio.wait_for(watching, 3)
        noticed = time.monotonic() - cut
        print(f"lock session cut -> holder noticed: {noticed:.3f} s")
        assert noticed < 1.0, noticed  # CHECK_S + a round trip
        assert await b.try_acquire()
    finally:
        await a.close()
        await b.close()


@pytest.mark.postgres
async def test_the_holder_hears_an_event_stored_by_another_process(pg_store: str) -> None:
    engine = open_engine(pg_store)
    lease = lease_of(pg_store, channel=engine.recorder.channel_name)
    heard = asyncio.Event()
    lease.on_wake = heard.set
    try:
        assert await lease.try_acquire()
        watching = asyncio.create_task(lease.watch())
        await asyncio.to_thread(engine.start_workflow, one_step("lease_probe"), {})
        await asyncio.wait_for(heard.wait(), 2)
        watching.cancel()
    finally:
        await lease.close()
        engine.close()


async def test_one_file_holder_at_a_time(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'store.sqlite'}"
    a, b = open_lease(store), open_lease(store)
    assert isinstance(a, FileLease) and a.path == tmp_path / "store.sqlite.lease"
    try:
        assert await a.try_acquire()
        assert not await b.try_acquire()
        await a.close()
        assert await b.try_acquire()
    finally:
        await a.close()
        await b.close()


@pytest.mark.postgres
@pytest.mark.rabbitmq
@pytest.mark.integration
async def test_an_order_stored_by_a_standby_is_published_by_the_holder_at_once(
        pg_store: str, rabbit: Rabbit) -> None:
    """The holder polls the log only every 5 s here: the order must come through NOTIFY."""
    rabbit.job_types.add("lease_probe")
    await rabbit.declare("lease_probe")
    engines = [open_engine(pg_store), open_engine(pg_store)]
    backends = [default_backend(e, AmqpBackendBroker(rabbit.url, prefix=rabbit.prefix), outbox_poll_s=5.0,
                                lease=open_lease(pg_store, channel=e.recorder.channel_name)) for e in engines]
    connection = await aio_pika.connect(rabbit.url)
    try:
        channel = await connection.channel()
        spy = await channel.declare_queue(exclusive=True, auto_delete=True)
        await spy.bind(rabbit.prefix + "job_submit", "#")
        for backend in backends:
            await backend.start()
        holder, standby = backends
        assert holder.active and not standby.active
        latencies = []
        async with spy.iterator() as orders:
            for _ in range(5):
                began = time.monotonic()
                await standby.start_workflow(one_step("lease_probe"), {})
                async with asyncio.timeout(3):
                    await orders.__anext__()
                latencies.append(time.monotonic() - began)
        assert standby.stats["orders"] == 0 and holder.stats["orders"] == 5
        print(f"standby start -> order published by the holder: {[round(s * 1000) for s in latencies]} ms")
        assert max(latencies) < 1.0, latencies  # well under the 5 s poll
    finally:
        for backend in backends:
            await backend.stop()
        for engine in engines:
            engine.close()
        await connection.close()


@pytest.mark.postgres
@pytest.mark.rabbitmq
@pytest.mark.integration
async def test_a_holder_that_loses_its_lock_steps_down_and_the_standby_takes_over(
        pg_store: str, rabbit: Rabbit) -> None:
    rabbit.job_types.add("lease_probe")
    await rabbit.declare("lease_probe")
    engines = [open_engine(pg_store), open_engine(pg_store)]
    backends = [default_backend(e, AmqpBackendBroker(rabbit.url, prefix=rabbit.prefix),
                                lease=open_lease(pg_store, channel=e.recorder.channel_name)) for e in engines]
    try:
        for backend in backends:
            await backend.start()
        holder, standby = backends
        await rabbit.wait_depth("job_completed", consumers=1)
        lease = holder.lease
        assert isinstance(lease, PostgresLease) and lease._conn is not None
        with pg_connect() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (lease._conn.info.backend_pid,))
        cut = time.monotonic()
        async with asyncio.timeout(5):
            while holder.active or not standby.active:
                await asyncio.sleep(0.01)
        print(f"lock session cut -> holder stepped down and standby active: {time.monotonic() - cut:.3f} s")
        assert not holder.running and standby.running
        async with asyncio.timeout(5):  # one consumer: the old holder consumes no more
            while (await rabbit.depth("job_completed"))[1] != 1:
                await asyncio.sleep(0.05)
        await standby.start_workflow(one_step("lease_probe"), {})
        await rabbit.wait_depth("lease_probe", messages=1)
        async with asyncio.timeout(5):  # counted once its confirm is in, which may follow the queue's count
            while standby.stats["orders"] != 1:
                await asyncio.sleep(0.01)
        holder.check()  # stepping down is not a failure
    finally:
        for backend in backends:
            await backend.stop()
        for engine in engines:
            engine.close()
