"""Backends starting at the same moment on a store nobody has opened yet.

Each creates the same tables: eventsourcing's events and tracking tables (its start-up DDL has
a `CREATE OR REPLACE FUNCTION` on PostgreSQL, and a check-then-insert of its "__migration__"
tracking row on both), the outbox and hooks positions, and the views. Real processes, released
together by a barrier, do exactly what `stepflow serve` does before it takes its first message;
every one of them must come up, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_fixtures import PG_SERVER, fresh_schema

pytestmark = [pytest.mark.integration]

PROCESSES = 6


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite'}"
        return
    with fresh_schema() as schema:
        yield f"{PG_SERVER}?schema={schema}"


def test_backends_starting_at_once_on_a_fresh_store_all_come_up(fresh_store: str) -> None:
    for _round in range(2):  # the second round: the store exists, the same code path must pass
        context = multiprocessing.get_context("spawn")
        start, outcomes = context.Barrier(PROCESSES), context.Queue()
        processes = [context.Process(target=_start_up, args=(fresh_store, start, outcomes))
                     for _ in range(PROCESSES)]
        for process in processes:
            process.start()
        results = [outcomes.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=10)
        assert results == ["up"] * PROCESSES


def _start_up(url: str, start: Any, outcomes: Any) -> None:
    """What `serve` opens before its first message, in its order, with its retries."""
    from stepflow.adapters.notify.hooks import HookReader
    from stepflow.adapters.outbox import OutboxReader
    from stepflow.adapters.persistence import despite_ddl_race, open_engine
    from stepflow.adapters.read_side import ReadSide

    async def up() -> None:
        engine = await despite_ddl_race(lambda: open_engine(url))
        try:
            read_side = await despite_ddl_race(lambda: ReadSide(engine))
            await despite_ddl_race(lambda: OutboxReader(engine))
            await despite_ddl_race(lambda: HookReader(engine))
            read_side.stop()
        finally:
            engine.close()

    start.wait()
    try:
        asyncio.run(up())
    except Exception as error:  # noqa: BLE001  reported to the test, which shows it
        outcomes.put(repr(error))
    else:
        outcomes.put("up")
