"""A SQLite store gives purged space back: new files use incremental vacuum, `db vacuum` converts
an older one (server stopped, after saying what it does)."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from iotpush.cli import main
from iotpush.inbox import _sqlite_open
from iotpush.inbox.sqlite import SQLiteInbox
from iotpush.retention import Retention
from iotpush.trackers import HISTORIES
from tests._inbox import LEASE, T0, FakeClock, append_all, incoming
from tests.conftest import run

BODY = b'{"data": "' + b"x" * 4000 + b'"}'


def pages(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA page_count").fetchone()[0])


async def fill_and_purge(path: Path, count: int = 300) -> tuple[int, int, int]:
    """Keep ``count`` big delivered entries, let them age, purge twice; the pages each round
    gave back, and the free pages left."""
    clock = FakeClock()
    async with SQLiteInbox(path, clock=clock) as inbox:
        items = [incoming(clock, f"k{i}", body=BODY, device=f"d{i}") for i in range(count)]
        ids = await append_all(inbox, *items)
        while claimed := await inbox.claim("w", 100, LEASE):
            await inbox.ack([e.id for e in claimed])
        assert len(ids) == count
        clock.now = T0 + 10
        retention = Retention(inbox, HISTORIES, keep=5, batch=100, clock=clock)
        first, second = await retention.purge(), await retention.purge()
        (free,) = await inbox.read(lambda db: db.execute("PRAGMA freelist_count").fetchone())
    assert first is not None and second is not None
    assert first.purged["entries"] == count
    return first.pages_freed, second.pages_freed, int(free)


def test_new_store_gives_back_pages_no_insert_took_for_a_round_and_the_file_shrinks(
    tmp_path: Path,
) -> None:
    first, second, free = run(fill_and_purge(tmp_path / "new.db"))
    assert first < 10  # what was free before it; what it freed waits for the next inserts
    assert second > 300  # no insert took them since: each entry had a page of its own and more
    assert free == 0
    assert pages(tmp_path / "new.db") < second


def make_old_store(path: Path) -> None:
    """A store as iotpush made them before incremental vacuum: auto_vacuum NONE."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x)")  # the file's first table: auto_vacuum is fixed
        conn.execute("DROP TABLE t")
    assert not _sqlite_open.gives_back(sqlite3.connect(path))


def test_old_store_warns_reuses_its_pages_and_db_vacuum_converts_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.db"
    make_old_store(path)

    async def opened() -> None:
        async with SQLiteInbox(path, exclusive=True):
            pass

    with caplog.at_level(logging.WARNING, "iotpush.inbox"):
        run(opened())
    assert "made without incremental vacuum" in caplog.text
    assert "iotpush db vacuum" in caplog.text
    first, second, free = run(fill_and_purge(path))
    assert first == second == 0 and free > 300  # kept for reuse, the file does not shrink
    before = pages(path)
    store = f"sqlite:///{path}"
    dry = CliRunner().invoke(main, ["db", "vacuum", "--store", store, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.startswith(f"would rewrite {path} (")
    assert pages(path) == before
    done = CliRunner().invoke(main, ["db", "vacuum", "--store", store, "--yes"])
    assert done.exit_code == 0, done.output
    assert done.output.splitlines()[-1].startswith(f"rewrote {path}: ")
    assert pages(path) < before
    assert _sqlite_open.gives_back(sqlite3.connect(path))
    again = CliRunner().invoke(main, ["db", "vacuum", "--store", store, "--yes"])
    assert again.output.strip().endswith(
        "gives space back already (incremental vacuum): nothing to do"
    )


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ("memory://", "Error: db vacuum is for SQLite stores, not memory"),
        ("sqlite:///{tmp}/missing.db", "Error: there is no store at {tmp}/missing.db"),
    ],
    ids=["memory", "missing"],
)
def test_db_vacuum_refuses_on_one_line(tmp_path: Path, store: str, message: str) -> None:
    result = CliRunner().invoke(main, ["db", "vacuum", "--store", store.format(tmp=tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip().startswith(message.format(tmp=tmp_path))
    assert len(result.output.strip().splitlines()) == 1


def test_db_vacuum_refuses_while_a_server_uses_the_store(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_old_store(path)
    lock = _sqlite_open.take_lock(path)
    try:
        result = CliRunner().invoke(main, ["db", "vacuum", "--store", f"sqlite:///{path}", "-y"])
    finally:
        os.close(lock)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: another iotpush server is using {path}"
    )
