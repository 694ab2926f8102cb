"""The store contract on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_store_contract import MEDIA, EngineFactory, StoreContract

from stepflow.adapters.persistence import engine_env

pytestmark = pytest.mark.integration


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def store_env(self, tmp_path: Path) -> dict[str, str]:
        path = tmp_path / "events.sqlite"
        env = engine_env(f"sqlite:///{path}")  # an absolute path gives sqlite:////tmp/...
        assert env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite"
        assert env["SQLITE_DBNAME"] == str(path)
        return env

    def test_the_events_live_in_the_file(self, store_env: dict[str, str], open_engine: EngineFactory) -> None:
        workflow_id = open_engine().start_workflow(MEDIA, {"source": "in.mov"})
        assert Path(store_env["SQLITE_DBNAME"]).stat().st_size > 0
        assert [type(e).__name__ for e in open_engine().history(workflow_id)] == ["WorkflowStarted", "JobSubmitted"]
