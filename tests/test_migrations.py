"""Schema versions: ``iotpush db status`` and ``db upgrade`` on the embedded SQLite store.

PostgreSQL's migrations (never applied silently) are in `tests.test_inbox_postgres`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from click.testing import CliRunner

from iotpush.cli import main
from iotpush.inbox import _migrations
from iotpush.inbox.sqlite import SQLiteInbox
from tests.conftest import run


def test_db_status_missing_sqlite_file_is_version_0_and_creates_nothing(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'iotpush.db'}"
    result = CliRunner().invoke(main, ["db", "status", "--store", store])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "schema version 0 of 1 (sqlite)",
        "pending 1: inbox, quarantine and tracker tables",
    ]
    assert not (tmp_path / "iotpush.db").exists()


def test_db_upgrade_sqlite_twice_applies_once_and_records_the_version(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'iotpush.db'}"
    runner = CliRunner()
    first = runner.invoke(main, ["db", "upgrade", "--store", store])
    second = runner.invoke(main, ["db", "upgrade", "--store", store])
    assert first.exit_code == 0, first.output
    assert first.output.splitlines() == [
        "applied 1: inbox, quarantine and tracker tables",
        f"{store} is at schema version 1",
    ]
    assert second.output.splitlines() == [f"{store} is at schema version 1"]
    with sqlite3.connect(tmp_path / "iotpush.db") as conn:
        rows = conn.execute("SELECT version, description FROM iotpush_schema_version").fetchall()
    assert rows == [(1, "inbox, quarantine and tracker tables")]


def test_sqlite_inbox_open_creates_its_schema_and_records_its_version(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with SQLiteInbox(tmp_path / "iotpush.db"):
            pass

    run(scenario())
    status = _migrations.status(f"sqlite:///{tmp_path / 'iotpush.db'}")
    assert (status.current, status.latest, status.up_to_date) == (1, 1, True)


def test_db_status_memory_store_has_no_schema() -> None:
    result = CliRunner().invoke(main, ["db", "status", "--store", "memory://"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: memory:// has no schema to upgrade"
