"""Persistence settings: a store URL becomes the environment `eventsourcing` is configured by.

    sqlite:///file.sqlite, sqlite:////abs/file.sqlite   (default: ./stepflow.sqlite)
    postgresql://user:password@host:port/dbname?schema=NAME
    memory://                       (plain Python objects, for tests and throwaway runs)

This is the only place that knows connection strings. A password is read from the URL or
from `POSTGRES_PASSWORD`, and never logged: `describe()` gives a safe form for logs.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, unquote, urlparse

from stepflow.engine.application import WorkflowEngine

DEFAULT_STORE = "sqlite:///stepflow.sqlite"


def store_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get("STEPFLOW_STORE") or DEFAULT_STORE


def engine_env(url: str) -> dict[str, str]:
    parsed = urlparse(url)
    if parsed.scheme == "memory":
        return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    if parsed.scheme == "sqlite":
        # As in SQLAlchemy: sqlite:///relative.sqlite, sqlite:////absolute.sqlite
        path = unquote(url.split("://", 1)[1].removeprefix("/").split("?", 1)[0])
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path or "stepflow.sqlite",
            "SQLITE_LOCK_TIMEOUT": "10",
        }
    if parsed.scheme in ("postgres", "postgresql"):
        query = parse_qs(parsed.query)
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parsed.path.lstrip("/") or "stepflow",
            "POSTGRES_HOST": parsed.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parsed.port or 5432),
            "POSTGRES_USER": unquote(parsed.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parsed.password or os.environ.get("POSTGRES_PASSWORD", "")),
            "POSTGRES_POOL_SIZE": "5",
            "POSTGRES_MAX_OVERFLOW": "10",
        }
        if "schema" in query:
            env["POSTGRES_SCHEMA"] = query["schema"][0]
        return env
    raise ValueError(f"unsupported store URL scheme {parsed.scheme!r} (sqlite, postgresql, memory)")


def describe(url: str) -> str:
    """The URL without its password, fit for a log line."""
    parsed = urlparse(url)
    if parsed.password:
        netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
        return parsed._replace(netloc=netloc).geturl()
    return url


def open_engine(url: str | None = None) -> WorkflowEngine:
    return WorkflowEngine(env=engine_env(store_url(url)))
