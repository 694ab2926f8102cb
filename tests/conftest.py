"""Fixtures shared by every test layer. Generic on purpose: no workflow shapes here."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stepflow.engine.application import WorkflowEngine

MEMORY_ENV = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


@pytest.fixture(autouse=True, scope="session")
def stepflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The per-user data directory (the default store) of every test and the processes it
    starts: a fresh one, never the real `~/.local/share/stepflow`."""
    home = tmp_path_factory.mktemp("stepflow-home")
    patch = pytest.MonkeyPatch()
    patch.setenv("STEPFLOW_HOME", str(home))
    yield home
    patch.undo()


@pytest.fixture
def now() -> datetime:
    """A fixed, timezone-aware moment, so events built in a test are reproducible."""
    return datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def memory_engine() -> Iterator[WorkflowEngine]:
    """A `WorkflowEngine` on plain Python objects (no files, no server)."""
    engine = WorkflowEngine(env=MEMORY_ENV)
    yield engine
    engine.close()
