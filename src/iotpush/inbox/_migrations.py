"""Schema versions of the durable stores, and the steps that bring a store up to date.

Each backend has an ordered list of migrations; a store records those applied in the table
``iotpush_schema_version`` (version, description, applied_at). ``iotpush db upgrade`` applies
what is missing, ``iotpush db status`` shows where a store stands.

PostgreSQL is never changed silently: a server refuses a database whose schema is missing or
behind (`require_current_postgres`). The embedded SQLite file is created on open, as before, and
records its version the same way (`record_sqlite`).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .. import trackers
from ..exceptions import ConfigError
from ._postgres_sql import INBOX_SCHEMA, TRACKER_SCHEMA
from ._sqlite_sql import SCHEMA as SQLITE_SCHEMA

__all__ = [
    "POSTGRES",
    "SQLITE",
    "Migration",
    "SchemaStatus",
    "backend",
    "record_sqlite",
    "require_current",
    "require_current_postgres",
    "shown",
    "status",
    "upgrade",
]

Backend = Literal["postgres", "sqlite"]

VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS iotpush_schema_version (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)
"""
_UPGRADE_LOCK = "SELECT pg_advisory_xact_lock(7283, 0)"


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of a backend's schema: its version number, what it does, its SQL script."""

    version: int
    description: str
    sql: str


POSTGRES: tuple[Migration, ...] = (
    Migration(1, "inbox, quarantine and tracker tables", INBOX_SCHEMA + TRACKER_SCHEMA),
)
SQLITE: tuple[Migration, ...] = (
    Migration(1, "inbox, quarantine and tracker tables", SQLITE_SCHEMA + trackers.SCHEMA),
)


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """Where a store's schema stands: the version it has, the latest, the steps missing."""

    store: str
    backend: Backend
    current: int
    latest: int
    pending: tuple[Migration, ...]

    @property
    def up_to_date(self) -> bool:
        """Whether no migration is missing."""
        return not self.pending


def backend(url: str) -> Backend:
    """Which backend a store URL names.

    Raises:
        ConfigError: The store has no schema (``memory://``) or the scheme is unknown.
    """
    if url.startswith(("postgresql://", "postgres://")):
        return "postgres"
    if url.startswith("sqlite:") or "://" not in url:
        return "sqlite"
    raise ConfigError(f"{url.split('://', 1)[0]}:// has no schema to upgrade")


def _sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite://").removeprefix("/") if "://" in url else url)


def _steps(which: Backend) -> tuple[Migration, ...]:
    return POSTGRES if which == "postgres" else SQLITE


def _status(url: str, which: Backend, current: int) -> SchemaStatus:
    steps = _steps(which)
    pending = tuple(step for step in steps if step.version > current)
    return SchemaStatus(url, which, current, steps[-1].version, pending)


def _postgres_version(conn: Any) -> int:
    (table,) = conn.execute("SELECT to_regclass('iotpush_schema_version')").fetchone()
    if table is None:
        return 0
    (version,) = conn.execute("SELECT max(version) FROM iotpush_schema_version").fetchone()
    return int(version or 0)


def _sqlite_version(conn: sqlite3.Connection) -> int:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'iotpush_schema_version'"
    ).fetchone()
    if found:
        (version,) = conn.execute("SELECT max(version) FROM iotpush_schema_version").fetchone()
        return int(version or 0)
    (version,) = conn.execute("PRAGMA user_version").fetchone()  # before the table existed
    return int(version)


def status(url: str) -> SchemaStatus:
    """Read where a store's schema stands; changes nothing (a missing SQLite file is version 0).

    Raises:
        ConfigError: The store has no schema.
        InboxUnavailable: The database cannot be reached.
    """
    which = backend(url)
    if which == "postgres":
        from ._postgres_db import parse_url

        conn = parse_url(url).connect()
        try:
            return _status(url, which, _postgres_version(conn))
        finally:
            conn.close()
    path = _sqlite_path(url)
    if not path.exists():
        return _status(url, which, 0)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return _status(url, which, _sqlite_version(conn))


def upgrade(url: str) -> list[Migration]:
    """Apply the migrations a store lacks, in order, in one transaction; return those applied.

    Idempotent: a store that is up to date is left as it is. For PostgreSQL, the ``schema`` of
    the URL is created if missing; two upgrades at once take turns.

    Raises:
        ConfigError: The store has no schema.
        InboxUnavailable: The database cannot be reached.
    """
    which = backend(url)
    if which == "sqlite":
        return _upgrade_sqlite(url)
    from ._postgres_db import parse_url

    target = parse_url(url)
    conn = target.connect()
    try:
        with conn.transaction():
            conn.execute(_UPGRADE_LOCK)
            if target.schema is not None:
                from psycopg import sql

                create = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}")
                conn.execute(create.format(sql.Identifier(target.schema)))
            conn.execute(VERSION_TABLE)
            pending = _status(url, which, _postgres_version(conn)).pending
            for step in pending:
                conn.execute(step.sql)
                conn.execute(
                    "INSERT INTO iotpush_schema_version (version, description, applied_at)"
                    " VALUES (%s, %s, %s)",
                    (step.version, step.description, time.time()),
                )
    finally:
        conn.close()
    return list(pending)


def _upgrade_sqlite(url: str) -> list[Migration]:
    path = _sqlite_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, isolation_level=None, timeout=5.0) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        pending = _status(url, "sqlite", _sqlite_version(conn)).pending
        for step in pending:
            for statement in _statements(step.sql):
                conn.execute(statement)
        record_sqlite(conn)
        conn.execute("COMMIT")
    return list(pending)


def _statements(script: str) -> list[str]:
    # executescript would commit the transaction first; split on ';' (no ';' in our literals).
    return [s.strip() for s in script.split(";") if s.strip()]


def record_sqlite(conn: sqlite3.Connection) -> None:
    """Record in a SQLite file that every SQLite migration is applied (its schema was created)."""
    conn.execute(VERSION_TABLE)
    conn.executemany(
        "INSERT INTO iotpush_schema_version (version, description, applied_at) VALUES (?, ?, ?)"
        " ON CONFLICT (version) DO NOTHING",
        [(step.version, step.description, time.time()) for step in SQLITE],
    )
    conn.execute(f"PRAGMA user_version = {SQLITE[-1].version}")


def require_current_postgres(conn: Any, url: str) -> None:
    """Refuse a PostgreSQL database whose schema is missing or behind this iotpush.

    Raises:
        ConfigError: The schema needs ``iotpush db upgrade`` (the message says so).
    """
    current = _postgres_version(conn)
    latest = POSTGRES[-1].version
    if current >= latest:
        return
    has = "has no iotpush schema" if current == 0 else f"has schema version {current} of {latest}"
    raise ConfigError(f"{shown(url)} {has}: run `iotpush db upgrade --store {shown(url)}`")


def require_current(url: str) -> None:
    """Refuse a PostgreSQL store whose schema is missing or behind; SQLite creates its own.

    Raises:
        ConfigError: The schema needs ``iotpush db upgrade`` (the message says so).
        InboxUnavailable: The database cannot be reached.
    """
    if not url.startswith(("postgresql://", "postgres://")):
        return
    from ._postgres_db import parse_url

    conn = parse_url(url).connect()
    try:
        require_current_postgres(conn, url)
    finally:
        conn.close()


def shown(url: str) -> str:
    """The store URL as messages show it: without a password."""
    if not url.startswith(("postgresql://", "postgres://")):
        return url
    from ._postgres_db import parse_url

    return parse_url(url).shown
