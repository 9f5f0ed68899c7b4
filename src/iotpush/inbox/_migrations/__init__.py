"""Schema versions of the durable stores, and the steps that bring a store up to date.

Each migration is a module ``mNNNN_name.py`` in this package holding frozen SQL text for both
backends (``SQLITE``, ``POSTGRES``) and a ``DESCRIPTION``; `MIGRATIONS` lists them in order. A
store records those applied in the table ``iotpush_schema_version`` (version, description,
applied_at). Released migrations never change: stores in the field were made by them.

To change the schema (a new tracker table, a column, an index), add a migration:

1. copy ``m0001_initial.py`` to ``m0002_what_it_does.py``; write only the change, for both
   backends (``CREATE TABLE`` ..., ``ALTER TABLE`` ...; no ``;`` inside literals: the SQLite
   script is split on it);
2. add the module to `MIGRATIONS` (its version is its place in the tuple);
3. change the live schema text next to the code that uses it (``SCHEMA`` of the tracker module,
   or ``iotpush.inbox._sqlite_sql`` / ``_postgres_sql``): ``tests/test_migrations.py`` checks that
   a store made by the migrations has exactly the tables, columns and indexes of that text, and
   that a store at each older version, upgraded, has the same catalogue as a fresh one.

PostgreSQL is never changed silently: ``iotpush db upgrade`` applies what is missing, and a server
refuses a database whose schema is missing or behind (`require_current_postgres`). The embedded
SQLite file goes through the same steps when a server (or ``db upgrade``) opens it
(`migrate_sqlite`). A store at a newer version than this iotpush knows is refused on both.
``iotpush db status`` shows where a store stands.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ...exceptions import ConfigError
from .._store import StoreURL
from . import (
    m0001_initial,
    m0002_console_indexes,
    m0003_query_indexes,
    m0004_v5_messages_tasks,
    m0005_purges,
    m0006_query_pages,
    m0007_history_entry_indexes,
    m0008_ready_checks,
    m0009_finished_records,
    m0010_ordered_dedupe,
)

__all__ = [
    "LATEST",
    "MIGRATIONS",
    "Migration",
    "SchemaStatus",
    "backend",
    "migrate_sqlite",
    "require_current",
    "require_current_postgres",
    "shown",
    "sqlite_version",
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
    """One step of the schema: its version number, what it does, its SQL for each backend."""

    version: int
    description: str
    sqlite: str
    postgres: str

    def sql(self, which: Backend) -> str:
        """The script of this step for ``which`` backend."""
        return self.postgres if which == "postgres" else self.sqlite


MIGRATIONS: tuple[Migration, ...] = tuple(
    Migration(version, module.DESCRIPTION, module.SQLITE, module.POSTGRES)
    for version, module in enumerate(
        (
            m0001_initial,
            m0002_console_indexes,
            m0003_query_indexes,
            m0004_v5_messages_tasks,
            m0005_purges,
            m0006_query_pages,
            m0007_history_entry_indexes,
            m0008_ready_checks,
            m0009_finished_records,
            m0010_ordered_dedupe,
        ),
        start=1,
    )
)
LATEST = MIGRATIONS[-1].version


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
        ConfigError: The URL is malformed, or the store has no schema (``memory://``).
    """
    store = StoreURL.parse(url)
    if store.scheme == "memory":
        raise ConfigError(f"{url.split('://', 1)[0]}:// has no schema to upgrade")
    return store.scheme


def _sqlite_path(url: str) -> Path:
    path = StoreURL.parse(url).path
    assert path is not None
    return path


def _status(url: str, which: Backend, current: int) -> SchemaStatus:
    pending = tuple(step for step in MIGRATIONS if step.version > current)
    return SchemaStatus(url, which, current, LATEST, pending)


def _refuse_newer(name: str, current: int) -> None:
    if current > LATEST:
        raise ConfigError(
            f"{name} has schema version {current}, newer than this iotpush knows ({LATEST}):"
            " upgrade iotpush"
        )


def _postgres_version(conn: Any) -> int:
    (table,) = conn.execute("SELECT to_regclass('iotpush_schema_version')").fetchone()
    if table is None:
        return 0
    (version,) = conn.execute("SELECT max(version) FROM iotpush_schema_version").fetchone()
    return int(version or 0)


def sqlite_version(conn: sqlite3.Connection) -> int:
    """The schema version of a SQLite database (0: none)."""
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
        from .._postgres_db import parse_url

        conn = parse_url(url).connect()
        try:
            return _status(url, which, _postgres_version(conn))
        finally:
            conn.close()
    path = _sqlite_path(url)
    if not path.exists():
        return _status(url, which, 0)
    from .._sqlite_open import read_only

    _, conn = read_only(path)
    try:
        return _status(url, which, sqlite_version(conn))
    finally:
        conn.close()


def upgrade(url: str, *, to: int = LATEST) -> list[Migration]:
    """Apply the migrations a store lacks up to version ``to``, in order, in one transaction;
    return those applied.

    Idempotent: a store that is up to date is left as it is. For PostgreSQL, the ``schema`` of
    the URL is created if missing; two upgrades at once take turns.

    Raises:
        ConfigError: The store has no schema, or is newer than this iotpush.
        InboxUnavailable: The database cannot be reached.
    """
    which = backend(url)
    if which == "sqlite":
        return _upgrade_sqlite(url, to)
    from .._postgres_db import parse_url

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
            current = _postgres_version(conn)
            _refuse_newer(target.shown, current)
            pending = [step for step in _status(url, which, current).pending if step.version <= to]
            for step in pending:
                conn.execute(step.postgres)
                conn.execute(
                    "INSERT INTO iotpush_schema_version (version, description, applied_at)"
                    " VALUES (%s, %s, %s)",
                    (step.version, step.description, time.time()),
                )
    finally:
        conn.close()
    return pending


def _upgrade_sqlite(url: str, to: int) -> list[Migration]:
    from .._sqlite_open import describe, prepare, start

    path = _sqlite_path(url)
    prepare(path, "create")
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
        try:
            start(conn)
            return migrate_sqlite(conn, str(path), to=to)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise describe(path, exc) from None


def migrate_sqlite(conn: sqlite3.Connection, name: str, *, to: int = LATEST) -> list[Migration]:
    """Bring the SQLite database of ``conn`` (autocommit mode) to version ``to``, in one
    transaction; return the steps applied. A database that is up to date is not written.

    Raises:
        ConfigError: The database is newer than this iotpush (``name`` says which).
    """
    current = sqlite_version(conn)
    _refuse_newer(name, current)
    if current >= to:
        return []
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = sqlite_version(conn)  # another process may have migrated it meanwhile
        pending = [step for step in _status(name, "sqlite", current).pending if step.version <= to]
        conn.execute(VERSION_TABLE)
        for step in pending:
            for statement in _statements(step.sqlite):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO iotpush_schema_version (version, description, applied_at)"
                " VALUES (?, ?, ?) ON CONFLICT (version) DO NOTHING",
                (step.version, step.description, time.time()),
            )
            conn.execute(f"PRAGMA user_version = {step.version}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return pending


def _statements(script: str) -> list[str]:
    # executescript would commit the transaction first; split on ';' (no ';' in our literals).
    return [s.strip() for s in script.split(";") if s.strip()]


def require_current_postgres(conn: Any, url: str) -> None:
    """Refuse a PostgreSQL database whose schema is missing, behind or ahead of this iotpush.

    Raises:
        ConfigError: The schema needs ``iotpush db upgrade`` (the message says so), or is newer.
    """
    current = _postgres_version(conn)
    _refuse_newer(shown(url), current)
    if current >= LATEST:
        return
    has = "has no iotpush schema" if current == 0 else f"has schema version {current} of {LATEST}"
    raise ConfigError(f"{shown(url)} {has}: run `iotpush db upgrade --store {shown(url)}`")


def require_current(url: str) -> None:
    """Refuse a PostgreSQL store whose schema is missing or behind; SQLite creates its own.

    Raises:
        ConfigError: The schema needs ``iotpush db upgrade`` (the message says so).
        InboxUnavailable: The database cannot be reached.
    """
    if StoreURL.parse(url).scheme != "postgres":
        return
    from .._postgres_db import parse_url

    conn = parse_url(url).connect()
    try:
        require_current_postgres(conn, url)
    finally:
        conn.close()


def shown(url: str) -> str:
    """The store URL as messages show it: without a password."""
    return StoreURL.parse(url).shown
