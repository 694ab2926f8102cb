"""PostgreSQL for tests: one server URL, and a fresh schema per test, dropped afterwards.

A test that cannot reach the server FAILS saying where it looked; it never skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

PG_SERVER = (os.environ.get("STEPFLOW_TEST_PG") or os.environ.get("STEPFLOW_TEST_POSTGRES")
             or "postgresql://postgres@127.0.0.1:5432/test")


def pg_connect() -> psycopg.Connection:
    try:
        return psycopg.connect(PG_SERVER, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as error:
        where = PG_SERVER.split("@")[-1]
        pytest.fail(f"PostgreSQL is not reachable at {where}: {error} (set STEPFLOW_TEST_PG)".strip(),
                    pytrace=False)


@contextmanager
def fresh_schema() -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with pg_connect() as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with pg_connect() as connection:
            connection.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
