"""Schema versions: ``iotpush db status`` and ``db upgrade``, and the frozen migrations.

A store made by the migrations has exactly the tables, columns and indexes the code's live schema
text describes; a store at any older version, upgraded, has the same catalogue as a fresh one (on
SQLite and PostgreSQL); a store newer than this iotpush is refused. PostgreSQL's other migration
behaviour (never applied silently) is in `tests.test_inbox_postgres`.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from iotpush import trackers
from iotpush.cli import main
from iotpush.exceptions import ConfigError
from iotpush.inbox import _migrations
from iotpush.inbox._postgres_sql import INBOX_SCHEMA, collated
from iotpush.inbox._sqlite_sql import SCHEMA as SQLITE_INBOX_SCHEMA
from iotpush.inbox._sqlite_sql import clustered
from iotpush.inbox.postgres import PostgresInbox
from iotpush.inbox.sqlite import SQLiteInbox
from tests.conftest import postgres_schema, run

FIRST = "inbox, quarantine and tracker tables"


def test_db_status_missing_sqlite_file_is_version_0_and_creates_nothing(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'iotpush.db'}"
    result = CliRunner().invoke(main, ["db", "status", "--store", store])
    assert result.exit_code == 1
    assert result.output.splitlines()[:2] == [
        f"schema version 0 of {_migrations.LATEST} (sqlite)",
        f"pending 1: {FIRST}",
    ]
    assert not (tmp_path / "iotpush.db").exists()


def test_db_upgrade_sqlite_twice_applies_once_and_records_the_version(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'iotpush.db'}"
    runner = CliRunner()
    first = runner.invoke(main, ["db", "upgrade", "--store", store])
    second = runner.invoke(main, ["db", "upgrade", "--store", store])
    latest = _migrations.LATEST
    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[0] == f"applied 1: {FIRST}"
    assert first.output.splitlines()[-1] == f"{store} is at schema version {latest}"
    assert second.output.splitlines() == [f"{store} is at schema version {latest}"]
    with sqlite3.connect(tmp_path / "iotpush.db") as conn:
        rows = conn.execute("SELECT version, description FROM iotpush_schema_version").fetchall()
    assert rows == [(step.version, step.description) for step in _migrations.MIGRATIONS]


def test_sqlite_inbox_open_creates_its_schema_and_records_its_version(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with SQLiteInbox(tmp_path / "iotpush.db"):
            pass

    run(scenario())
    status = _migrations.status(f"sqlite:///{tmp_path / 'iotpush.db'}")
    latest = _migrations.LATEST
    assert (status.current, status.latest, status.up_to_date) == (latest, latest, True)


def test_db_status_memory_store_has_no_schema() -> None:
    result = CliRunner().invoke(main, ["db", "status", "--store", "memory://"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: memory:// has no schema to upgrade"


# the catalogue of a store --------------------------------------------------------------------


def _words(sql: str | None) -> str:
    return " ".join((sql or "").replace("IF NOT EXISTS ", "").split())


def sqlite_catalogue(path: Path) -> set[tuple[Any, ...]]:
    """Every table (its columns), index (its definition) of a SQLite file, but the versions."""
    with sqlite3.connect(path) as conn:
        found: set[tuple[Any, ...]] = set()
        objects = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
        for type_, name, table, sql in objects:
            if name == "sqlite_sequence":
                continue
            if type_ == "table":
                columns = tuple(conn.execute(f"PRAGMA table_xinfo({name})").fetchall())
                without_rowid = "WITHOUT ROWID" in (sql or "")
                found.add(("table", name, columns, without_rowid))
            else:  # an index: created whole, never altered, so its text says it all
                columns = tuple(conn.execute(f"PRAGMA index_xinfo({name})").fetchall())
                found.add((type_, name, table, columns, _words(sql)))
    return found


def postgres_catalogue(url: str) -> set[tuple[Any, ...]]:
    """Every column, index and constraint of a PostgreSQL schema, the schema's name left out."""
    import psycopg

    schema = url.rsplit("schema=", 1)[1]
    with psycopg.connect(url.split("?")[0], autocommit=True) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, ordinal_position, data_type, is_nullable,"
            " column_default, collation_name, is_identity FROM information_schema.columns"
            " WHERE table_schema = %s",
            (schema,),
        ).fetchall()
        indexes = conn.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = %s",
            (schema,),
        ).fetchall()
        constraints = conn.execute(
            "SELECT table_name, constraint_name, constraint_type"
            " FROM information_schema.table_constraints WHERE table_schema = %s"
            " AND constraint_type <> 'CHECK'",  # NOT NULL checks have generated names
            (schema,),
        ).fetchall()
    unqualified = re.compile(rf"\b{schema}\.")
    return (
        {("column", *row) for row in columns}
        | {("index", t, n, unqualified.sub("", d)) for t, n, d in indexes}
        | {("constraint", *row) for row in constraints}
    )


@pytest.fixture(params=["sqlite", "postgres"])
def store_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty stores of one backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
        return
    with postgres_schema() as first, postgres_schema() as second:
        yield first, second


def catalogue(url: str) -> set[tuple[Any, ...]]:
    if url.startswith("sqlite:"):
        return sqlite_catalogue(Path(url.removeprefix("sqlite:///")))
    return postgres_catalogue(url)


def live_schema(url: str) -> None:
    """Make in an empty store the tables the code's live schema text describes."""
    if url.startswith("sqlite:"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            tracker_tables = clustered(trackers.SCHEMA)
            conn.executescript(SQLITE_INBOX_SCHEMA + tracker_tables + _migrations.VERSION_TABLE)
        return
    from iotpush.inbox._postgres_db import parse_url

    conn = parse_url(url).connect()
    try:
        conn.execute(INBOX_SCHEMA + collated(trackers.SCHEMA) + _migrations.VERSION_TABLE)
    finally:
        conn.close()


def test_migrations_fresh_store_has_the_catalogue_of_the_live_schema(
    store_pair: tuple[str, str],
) -> None:
    migrated, live = store_pair
    _migrations.upgrade(migrated)
    live_schema(live)
    assert catalogue(migrated) == catalogue(live), "the live schema changed: add a migration"


@pytest.mark.parametrize("version", [step.version for step in _migrations.MIGRATIONS])
def test_migrations_store_at_each_version_upgraded_has_the_catalogue_of_a_fresh_one(
    store_pair: tuple[str, str], version: int
) -> None:
    old, fresh = store_pair
    assert [step.version for step in _migrations.upgrade(old, to=version)] == list(
        range(1, version + 1)
    )
    assert _migrations.status(old).current == version
    _migrations.upgrade(old)
    _migrations.upgrade(fresh)
    assert catalogue(old) == catalogue(fresh)
    assert _migrations.status(old).up_to_date


# a store newer than this iotpush -------------------------------------------------------------


def _mark_newer(url: str) -> int:
    newer = _migrations.LATEST + 1
    insert = "INSERT INTO iotpush_schema_version VALUES (?, 'from the future', 0)"
    if url.startswith("sqlite:"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute(insert, (newer,))
        return newer
    from iotpush.inbox._postgres_db import parse_url

    conn = parse_url(url).connect()
    try:
        conn.execute(insert.replace("?", "%s"), (newer,))
    finally:
        conn.close()
    return newer


def test_migrations_store_newer_than_the_code_is_refused_with_one_line(
    store_pair: tuple[str, str],
) -> None:
    url, _ = store_pair
    _migrations.upgrade(url)
    newer = _mark_newer(url)

    async def open_it() -> None:
        inbox = (
            SQLiteInbox(url.removeprefix("sqlite:///")) if "sqlite" in url else PostgresInbox(url)
        )
        async with inbox:
            pass

    expected = f"has schema version {newer}, newer than this iotpush knows"
    with pytest.raises(ConfigError, match=expected) as refused:
        run(open_it())
    assert "\n" not in str(refused.value)
    result = CliRunner().invoke(main, ["db", "upgrade", "--store", url])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert expected in result.output
