"""The store contract on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_store_contract import MEDIA, EngineFactory, StoreContract

from stepflow.adapters.lease import FileLease, open_lease
from stepflow.adapters.persistence import SQLITE_MODULE, StoreURLError, engine_env, sqlite_path
from stepflow.adapters.persistence import open_engine as open_store
from stepflow.projections.opening import open_view_store

pytestmark = pytest.mark.integration


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def store_env(self, tmp_path: Path) -> dict[str, str]:
        path = tmp_path / "events.sqlite"
        env = engine_env(f"sqlite:///{path}")  # an absolute path gives sqlite:////tmp/...
        assert env["PERSISTENCE_MODULE"] == SQLITE_MODULE
        assert env["SQLITE_DBNAME"] == str(path)
        return env

    def test_the_events_live_in_the_file(self, store_env: dict[str, str], open_engine: EngineFactory) -> None:
        workflow_id = open_engine().start_workflow(MEDIA, {"source": "in.mov"})
        assert Path(store_env["SQLITE_DBNAME"]).stat().st_size > 0
        assert [type(e).__name__ for e in open_engine().history(workflow_id)] == ["WorkflowStarted", "JobSubmitted"]


class TestSqliteStoreSynchronousNormal(StoreContract):
    """The same contract with `?synchronous=normal` (an operator's trade: see TunedSQLiteFactory)."""

    @pytest.fixture
    def store_env(self, tmp_path: Path) -> dict[str, str]:
        return engine_env(f"sqlite:///{tmp_path / 'events.sqlite'}?synchronous=normal")

    def test_every_connection_syncs_at_checkpoints_only(self, open_engine: EngineFactory) -> None:
        engine = open_engine()
        engine.start_workflow(MEDIA, {"source": "in.mov"})  # a writer's connection and a reader's
        for commit in (True, False):
            with engine.factory.datastore.transaction(commit=commit) as cursor:  # type: ignore[attr-defined]
                cursor.execute("PRAGMA synchronous")
                assert cursor.fetchone()[0] == 1  # NORMAL


def test_the_default_syncs_every_commit(tmp_path: Path) -> None:
    engine = open_store(f"sqlite:///{tmp_path / 'events.sqlite'}")
    with engine.factory.datastore.transaction(commit=True) as cursor:  # type: ignore[attr-defined]
        cursor.execute("PRAGMA synchronous")
        assert cursor.fetchone()[0] == 2  # FULL


@pytest.mark.parametrize("value", ["off", "extra", "1"])
def test_a_synchronous_it_does_not_offer_is_refused_before_anything_is_opened(tmp_path: Path, value: str) -> None:
    with pytest.raises(StoreURLError, match=f"synchronous='{value}' in the store URL is not one of full, normal"):
        engine_env(f"sqlite:///{tmp_path / 'events.sqlite'}?synchronous={value}")
    assert not (tmp_path / "events.sqlite").exists()


def test_a_tuned_url_is_the_same_file_store_to_every_part(tmp_path: Path) -> None:
    """`?synchronous=normal` once took another factory, and what looked for eventsourcing's own
    missed it: the views went to memory, two backends got no lease, the CLI no file."""
    url = f"sqlite:///{tmp_path / 'events.sqlite'}?synchronous=normal"
    assert sqlite_path(url) == tmp_path / "events.sqlite"
    lease = open_lease(url)
    assert isinstance(lease, FileLease) and lease.path == tmp_path / "events.sqlite.lease"
    engine = open_store(url)
    try:
        store = open_view_store(engine)
        assert store.path == str(tmp_path / "events.sqlite")  # type: ignore[attr-defined]
        store.close()
    finally:
        engine.close()
