"""The store contract on PostgreSQL, each test in a schema of its own.

Needs the server at 127.0.0.1:5432 (user postgres, database `test`; `STEPFLOW_TEST_PG` to
point elsewhere). An unreachable server is a failure, never a skip: a green run must mean
PostgreSQL was tested.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pg_fixtures import PG_SERVER, fresh_schema, pg_connect
from test_store_contract import MEDIA, EngineFactory, StoreContract

from stepflow.adapters.persistence import engine_env

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

SERVER = PG_SERVER
connect = pg_connect


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def schema(self) -> Iterator[str]:
        with fresh_schema() as name:
            yield name

    @pytest.fixture
    def store_env(self, schema: str) -> dict[str, str]:
        env = engine_env(f"{SERVER}?schema={schema}")
        assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
        assert env["POSTGRES_SCHEMA"] == schema
        return env

    def test_the_events_live_in_the_schema(self, schema: str, open_engine: EngineFactory) -> None:
        workflow_id = open_engine().start_workflow(MEDIA, {"source": "in.mov"})
        with connect() as connection:
            tables = {
                row[0]
                for row in connection.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
                )
            }
        assert "stepflow_events" in tables
        assert [type(e).__name__ for e in open_engine().history(workflow_id)] == ["WorkflowStarted", "JobSubmitted"]


