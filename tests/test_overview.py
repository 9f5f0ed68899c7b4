"""`iotpush.overview`: the store's figures, and `RowCount`, which counts a table without reading
it whole each time (the figures of every ``/metrics`` scrape)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from iotpush.inbox import STATES
from iotpush.overview import RowCount, read_entries
from iotpush.server import open_inbox
from tests.conftest import EXAMPLES, RECEIVE, run

T = TypeVar("T")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE inbox (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT)")
    yield conn
    conn.close()


def add(db: sqlite3.Connection, *ids: int, count: int = 0) -> None:
    db.executemany("INSERT INTO inbox (id) VALUES (?)", [(i,) for i in ids])
    db.executemany("INSERT INTO inbox (v) VALUES ('x')", [()] * count)


def steps(db: sqlite3.Connection, read: Callable[[sqlite3.Connection], T]) -> tuple[T, int]:
    """``read(db)`` and the SQLite virtual machine steps it took (in hundreds)."""
    taken = 0

    def step() -> int:
        nonlocal taken
        taken += 1
        return 0

    db.set_progress_handler(step, 100)
    try:
        return read(db), taken
    finally:
        db.set_progress_handler(None, 0)


def test_row_count_reads_only_the_rows_past_its_mark(db: sqlite3.Connection) -> None:
    add(db, count=20_000)
    count = RowCount("inbox")
    total, first = steps(db, count)
    assert total == 20_000
    add(db, count=10)
    total, then = steps(db, count)
    assert total == 20_010
    assert first > 200 and then < 5, (first, then)  # the whole table once, then what is new
    assert steps(db, count) == (20_010, 0)


def test_row_count_sees_a_deletion_at_the_next_whole_count(db: sqlite3.Connection) -> None:
    clock = Clock()
    count = RowCount("inbox", recount_every=300, clock=clock)
    add(db, count=10)
    assert count(db) == 10
    db.execute("DELETE FROM inbox WHERE id <= 3")  # a purge, below the mark
    clock.now = 299
    assert count(db) == 10  # not seen yet: the cost of not reading the whole table
    clock.now = 300
    assert count(db) == 7
    add(db, count=2)
    assert count(db) == 9


def test_row_count_with_settle_counts_an_id_committed_after_a_later_one(
    db: sqlite3.Connection,
) -> None:
    """PostgreSQL hands out ids before commit: id 11 may commit after id 12 was counted."""
    clock = Clock()
    count = RowCount("inbox", settle=5, clock=clock)
    add(db, *range(1, 11))
    assert count(db) == 10
    add(db, 12)
    clock.now = 1
    assert count(db) == 11
    add(db, 11)  # the late commit
    clock.now = 6  # id 10 settled: the mark moves there
    assert count(db) == 12
    add(db, 14)
    clock.now = 7
    assert count(db) == 13
    add(db, 13)  # late, but above the mark (10): seen
    clock.now = 12  # id 12 settled
    assert count(db) == 14
    add(db, count=1)
    clock.now = 13
    assert count(db) == 15
    (exact,) = db.execute("SELECT count(*) FROM inbox").fetchone()
    assert exact == 15


def test_row_count_of_an_empty_table_is_zero(db: sqlite3.Connection) -> None:
    count = RowCount("inbox", settle=5)
    assert count(db) == 0
    assert count(db) == 0
    add(db, count=3)
    assert count(db) == 3


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'o.db'}"
    url: str = request.getfixturevalue("postgres_store")
    return url


def test_read_entries_equal_the_inbox_stats(store: str) -> None:
    """Every state, across appends, deliveries and dead letters, and the quarantine."""
    from iotpush import decode
    from iotpush.inbox import Incoming, Rejection

    body = EXAMPLES["04-deviceDataChanged"]

    async def scenario() -> list[tuple[dict[str, int], int, dict[str, int], int]]:
        seen = []
        async with open_inbox(store) as inbox:
            for round_ in range(3):
                for n in range(5):
                    stamp = f"20151212T12{round_:02}{n:02}Z".encode()
                    made = body.replace(b"20151212T121212Z", stamp)
                    await inbox.append(
                        Incoming.from_notification(
                            decode(made), body=made, path=RECEIVE, headers={},
                            received_at=time.time(),
                        )
                    )  # fmt: skip
                claimed = await inbox.claim("me", 3, 60)
                await inbox.ack([claimed[0].id])
                await inbox.dead(claimed[1].id, "boom", 1)
                await inbox.quarantine(
                    Rejection(time.time(), RECEIVE, 400, "bad_json", "$", b"{", {})
                )
                entries = await read_entries(inbox)
                stats = await inbox.stats()
                seen.append(
                    (
                        entries.by_state,
                        entries.quarantined,
                        {state: stats.by_state.get(state, 0) for state in STATES},
                        stats.quarantined,
                    )
                )
        return seen

    for by_state, quarantined, expected, expected_quarantined in run(scenario()):
        assert by_state == expected
        assert quarantined == expected_quarantined


def test_read_entries_on_sqlite_reads_no_more_as_the_store_grows(tmp_path: Path) -> None:
    """Once counted, a reading of a store of delivered entries (none claimed) takes a few
    hundred steps of SQLite's machine, not one per entry."""
    from iotpush import overview

    path = tmp_path / "big.db"
    run(_create(f"sqlite:///{path}"))
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO inbox (received_at, type, device, key, path, body, headers, state, due_at)"
        " VALUES (?, 'deviceDataChanged', 'd', ?, ?, x'7b7d', '{}', 'done', ?)",
        [(n, f"k{n}", RECEIVE, n) for n in range(20_000)],
    )
    db.execute("COMMIT")
    db.execute("ANALYZE")
    counts = overview._Counts(settle=0.0)
    first = overview._sql_entries(db, counts)
    assert first.by_state == {"pending": 0, "claimed": 0, "done": 20_000, "dead": 0}
    again, taken = steps(db, lambda db: overview._sql_entries(db, counts))
    db.close()
    assert again == first
    assert taken < 20, taken  # hundreds of steps; a walk of the entries takes 20,000 and more


async def _create(url: str) -> None:
    async with open_inbox(url):
        pass
