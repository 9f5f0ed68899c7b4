"""What the operator sees at start-up, in the readiness probe and from `iotpush inbox ...` reads
through indexes: the plans of their statements, not their timing.

The start-up summary (`overview.read_backlog`) and `/health/ready`'s sink backlog
(`overview.read_unpublished`) run on a real store of each SQL backend; each statement they send
is recorded and its plan read as `tests.test_api_plans` does. A whole count of the inbox (a
`RowCount`'s first, a ``count(*)`` by state) would pass for a fine plan on SQLite (a range of
the primary key), so the statements are pinned to their partial indexes, and the start-up is
checked to leave no `RowCount` behind.

The inbox commands' reads (`inbox ls`, `show`, `replay`, `purge`, and the console's lists and
replay of dead letters, which share them) are pinned the same way: each through its index, none
walking the table or a whole index (``SCAN inbox USING INDEX inbox_type`` reads every entry as
surely as ``SCAN inbox``). `inbox stats` and `trackers rebuild` read every entry, and say so.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from iotpush import overview, testing
from iotpush.inbox import Selection
from iotpush.inbox._sqlbase import SQLInbox
from iotpush.server import Config, create_app
from tests._inbox import T0, FakeClock, InboxFactory, incoming
from tests.test_api_plans import SQL_BACKENDS, _plan, _Recording, _scans

# Each statement of the reading, by what it counts, and the index its plan must read.
BACKLOG = {
    "state = 'pending'": "inbox_pending",
    "state = 'claimed'": "inbox_claimed",
    "state = 'dead'": "inbox_dead",
    "FROM outbox": "outbox",
}


def _statements(inbox_factory: InboxFactory, read: Any) -> tuple[list[tuple[str, str]], bool]:
    """(statement, plan) of each statement ``read(inbox)`` sends, on a store of the backend."""

    async def scenario() -> tuple[list[tuple[str, str]], bool]:
        async with inbox_factory(outbox=["nats"]) as inbox:
            assert isinstance(inbox, SQLInbox)
            sqlite = type(inbox).__name__ == "SQLiteInbox"
            recorded: list[tuple[str, Any]] = []
            plain = inbox.read

            async def recording(fn: Any) -> Any:
                def run(db: Any) -> Any:
                    into = _Recording(db)
                    try:
                        return fn(into)
                    finally:
                        recorded.extend(into.statements)

                return await plain(run)

            inbox.read = recording  # type: ignore[method-assign]
            await read(inbox)
            inbox.read = plain  # type: ignore[method-assign]
            plans = await inbox.read(
                lambda db: [(sql, _plan(db, sqlite, sql, params)) for sql, params in recorded]
            )
            return plans, sqlite

    found: tuple[list[tuple[str, str]], bool] = asyncio.run(scenario())
    return found


@pytest.mark.parametrize("inbox_factory", SQL_BACKENDS, indirect=True)
def test_startup_backlog_reads_each_state_through_its_partial_index(
    inbox_factory: InboxFactory,
) -> None:
    plans, sqlite = _statements(inbox_factory, overview.read_backlog)
    assert len(plans) == len(BACKLOG), plans
    for what, index in BACKLOG.items():
        [plan] = [plan for sql, plan in plans if what in sql]
        assert index in plan, plan
        if what != "FROM outbox":  # its rows are the backlog: a scan of it reads only that
            assert _scans(plan, sqlite) == [], plan
    assert not any(re.search(r"\bid > ", sql) for sql, _ in plans), plans  # no `RowCount`


@pytest.mark.parametrize("inbox_factory", SQL_BACKENDS, indirect=True)
def test_ready_probe_backlog_reads_the_outbox_alone(inbox_factory: InboxFactory) -> None:
    plans, _ = _statements(inbox_factory, overview.read_unpublished)
    assert [sql for sql, _ in plans] == [overview._UNPUBLISHED]
    assert "inbox" not in plans[0][1]


def test_startup_summary_counts_no_whole_table(tmp_path: Path) -> None:
    async def scenario() -> tuple[bool, bool]:
        app = create_app(Config(store=f"sqlite:///{tmp_path / 'inbox.db'}"))
        async with testing.lifespan(app):
            started_without = app.inbox not in overview._counts
            await overview.read_entries(app.inbox)  # the metrics' reading: it keeps one
            return started_without, app.inbox in overview._counts

    started_without, kept_after = asyncio.run(scenario())
    assert started_without
    assert kept_after  # the check above can fail


# The operator's reads of the inbox, and the index each must read ("pkey": the primary key; a
# pattern where either of two will do).
# `tally` with a limit (what `inbox ls` counts after its page) is bounded by its LIMIT, which no
# plan shows: not here.
_PKEY = {"sqlite": "INTEGER PRIMARY KEY", "postgres": "inbox_pkey"}
OPERATOR_READS: dict[str, tuple[Callable[[Any], Any], tuple[str, ...]]] = {
    "ls": (lambda inbox: inbox.find(Selection(), limit=50), ("pkey",)),
    "ls-dead": (lambda inbox: inbox.find(Selection(states=["dead"]), limit=50), ("inbox_dead",)),
    "ls-pending": (
        lambda inbox: inbox.find(Selection(states=["pending"]), limit=50),
        ("inbox_pending",),
    ),
    "show": (lambda inbox: inbox.get(1), ("pkey",)),
    "replay-dead": (lambda inbox: inbox.tally(Selection().replayable()), ("inbox_dead",)),
    "replay-ids": (lambda inbox: inbox.tally(Selection(ids=[1, 2]).replayable()), ("pkey",)),
    "replay-done-since": (
        lambda inbox: inbox.tally(Selection(states=["done"], since=T0).replayable()),
        ("inbox_received",),
    ),
    "replay-dead-of-a-device": (
        lambda inbox: inbox.tally(Selection(device="dev-1").replayable()),
        ("inbox_device|inbox_dead",),  # either reads that device's entries or the dead ones
    ),
    "purge": (lambda inbox: inbox.purgeable(T0), ("inbox_received",)),
}


def _operator_plans(inbox_factory: InboxFactory, name: str) -> tuple[list[str], bool]:
    read, _ = OPERATOR_READS[name]

    async def scenario() -> tuple[list[str], bool]:
        async with inbox_factory() as inbox:
            assert isinstance(inbox, SQLInbox)
            sqlite = type(inbox).__name__ == "SQLiteInbox"
            await inbox.append(incoming(FakeClock(), "a"))
            recorded: list[tuple[str, Any]] = []
            plain = inbox._read

            async def recording(fn: Any) -> Any:
                def run(conn: Any) -> Any:
                    into = _Recording(conn)
                    try:
                        return fn(into)
                    finally:
                        recorded.extend(into.statements)

                return await plain(run)

            inbox._read = recording  # type: ignore[method-assign]
            await read(inbox)
            inbox._read = plain  # type: ignore[method-assign]
            plans = await inbox._read(
                lambda conn: [_plan(conn, sqlite, sql, params) for sql, params in recorded]
            )
            return plans, sqlite

    found: tuple[list[str], bool] = asyncio.run(scenario())
    return found


@pytest.mark.parametrize("inbox_factory", SQL_BACKENDS, indirect=True)
@pytest.mark.parametrize("name", list(OPERATOR_READS))
def test_operator_read_of_the_inbox_reads_its_index_not_every_entry(
    inbox_factory: InboxFactory, name: str
) -> None:
    plans, sqlite = _operator_plans(inbox_factory, name)
    assert plans
    found = "\n".join(plans)
    for index in OPERATOR_READS[name][1]:
        index = _PKEY["sqlite" if sqlite else "postgres"] if index == "pkey" else index
        assert re.search(index, found), found
    assert _whole_scans(found, sqlite) == [], found


_PARTIAL = "inbox_pending|inbox_claimed|inbox_dead|inbox_open_device"


def _whole_scans(plan: str, sqlite: bool) -> list[str]:
    """The lines of ``plan`` that read every entry: the table, or an index that is not partial
    (walked whole on SQLite, or without a condition on PostgreSQL)."""
    if sqlite:
        return re.findall(
            rf"^SCAN inbox(?! USING (?:COVERING )?INDEX (?:{_PARTIAL})\b).*$", plan, re.M
        )
    lines = plan.splitlines()
    return [
        line
        for i, line in enumerate(lines)
        if "Seq Scan on inbox " in line
        or (
            re.search(rf"Index (?:Only )?Scan using (?!{_PARTIAL})\w+ on inbox\b", line)
            and "Index Cond" not in "".join(lines[i + 1 : i + 2])
        )
    ]
