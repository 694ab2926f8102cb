"""Stored definitions: the workflow definitions the HTTP API can start, by identifier.

Loaded from files at start (`--definitions PATH`, repeatable, or `STEPFLOW_DEFINITIONS`, a
list of paths separated by the OS path separator): a `.toml` or `.json` file, or a directory
of them. Several versions of one identifier may be present; without an explicit version the
highest semantic version is used. A file that fails validation stops the start with the
file's name and the bad field, so a broken definition never goes live unnoticed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from stepflow.engine.definitions import DefinitionError, WorkflowDefinition, load_definition

_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?")


def version_key(version: str) -> tuple[int, int, int, int, str]:
    """Semantic-version order: 1.2.0-rc1 < 1.2.0 < 1.10.0."""
    match = _VERSION.match(version)
    if match is None:
        return (0, 0, 0, 0, version)
    major, minor, patch, pre = match.groups()
    return (int(major), int(minor), int(patch), 0 if pre else 1, pre or "")


class DefinitionCatalog:
    def __init__(self, definitions: Iterable[WorkflowDefinition] = ()) -> None:
        self._by_id: dict[str, dict[str, WorkflowDefinition]] = {}
        for definition in definitions:
            self.add(definition)

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path]) -> DefinitionCatalog:
        catalog = cls()
        for path in paths:
            path = Path(path)
            files = sorted([*path.glob("*.toml"), *path.glob("*.json")]) if path.is_dir() else [path]
            for file in files:
                try:
                    catalog.add(load_definition(file))
                except DefinitionError as error:
                    raise DefinitionError(error.path, f"{file}: {error.reason}") from None
                except OSError as error:
                    raise DefinitionError("$", f"{file}: {error.strerror or error}") from None
        return catalog

    @classmethod
    def from_env(cls, extra: Iterable[str | Path] = ()) -> DefinitionCatalog:
        paths = [p for p in os.environ.get("STEPFLOW_DEFINITIONS", "").split(os.pathsep) if p]
        return cls.from_paths([*paths, *extra])

    def add(self, definition: WorkflowDefinition) -> None:
        self._by_id.setdefault(definition.identifier, {})[definition.version] = definition

    def get(self, identifier: str, version: str | None = None) -> WorkflowDefinition | None:
        versions = self._by_id.get(identifier)
        if not versions:
            return None
        if version is not None:
            return versions.get(version)
        return versions[max(versions, key=version_key)]

    def versions(self, identifier: str) -> list[str]:
        return sorted(self._by_id.get(identifier, {}), key=version_key)

    def latest(self) -> list[WorkflowDefinition]:
        """The highest version of each identifier, by identifier."""
        return [d for i in sorted(self._by_id) if (d := self.get(i)) is not None]

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_id.values())
