"""The query API's lists read through indexes: the plan of each list query, not its timing.

Each list the API (and the console) serves is run on a real store of each SQL backend, and its
plan is read: ``EXPLAIN QUERY PLAN`` on a SQLite file, ``EXPLAIN`` on PostgreSQL with sequential
scans priced out (``enable_seqscan = off``: a tiny table would be scanned whatever its indexes).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest

from iotpush import trackers
from iotpush.inbox import Selection
from iotpush.inbox._sqlbase import SQLInbox
from tests._inbox import T0, InboxFactory

SQL_BACKENDS = ["sqlite", "postgres"]

# Notification lists by filter, and the indexes their plan must use.
NOTIFICATION_LISTS: dict[str, tuple[Selection, tuple[str, ...]]] = {
    "device": (Selection(device="dev-1"), ("inbox_device",)),
    "type": (Selection(type="deviceDataChanged"), ("inbox_type",)),
    "since": (Selection(since=T0), ("inbox_received",)),
    "device-since": (Selection(device="dev-1", since=T0), ("inbox_device", "inbox_received")),
}

# The tracker lists and detail reads behind the API's other endpoints.
TRACKER_READS: dict[str, Callable[[Any], object]] = {
    "commands": lambda db: trackers.find_commands(db, None, None, None, 100, None),
    "commands-device": lambda db: trackers.find_commands(db, "dev-1", None, None, 100, "c-1"),
    "commands-state": lambda db: trackers.find_commands(db, None, "SENT", None, 100, None),
    "commands-overdue": lambda db: trackers.find_commands(db, None, None, T0, 100, None),
    "command": lambda db: trackers.get_command(db, "c-1"),
    "devices": lambda db: trackers.find_devices(db, None, True, 100, "dev-0"),
    "devices-status": lambda db: trackers.find_devices(db, "ONLINE", False, 100, None),
    "device": lambda db: (
        trackers.get_device(db, "dev-1"),
        trackers.recent_commands(db, "dev-1", 100),
        trackers.get_shadow(db, "dev-1"),
        trackers.count_commands(db, "dev-1"),
    ),
    "upgrades": lambda db: trackers.find_upgrades(db, None, 100, None),
    "upgrades-device": lambda db: trackers.find_upgrades(db, "dev-1", 100, None),
    "upgrade": lambda db: trackers.get_upgrade(db, "op-1"),
    "unsynced": trackers.unsynced,
}


_TABLES = r"inbox|quarantine|outbox|commands|command_\w+|devices|device_\w+|shadow\w*|upgrade\w*"


class _Recording:
    """A database that keeps each statement run through it, to read their plans after."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.statements: list[tuple[str, Any]] = []

    def execute(self, sql: str, params: Any = ()) -> Any:
        self.statements.append((sql, params))
        return self.db.execute(sql, params)


def _plan(db: Any, sqlite: bool, sql: str, params: Any) -> str:
    if sqlite:
        rows = db.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
        return "\n".join(row[3] for row in rows)
    db.execute("SET enable_seqscan = off")
    try:
        return "\n".join(row[0] for row in db.execute(f"EXPLAIN {sql}", params).fetchall())
    finally:
        db.execute("RESET enable_seqscan")


def _scans(plan: str, sqlite: bool) -> list[str]:
    """The lines of ``plan`` that read a whole table without an index."""
    if sqlite:  # "SCAN c" of a subquery's rows is no table scan: tables are named in full here
        return re.findall(rf"^SCAN (?:{_TABLES})$", plan, re.MULTILINE)
    return re.findall(r"Seq Scan on \w+", plan)


def _with_store(inbox_factory: InboxFactory, fn: Callable[[SQLInbox, bool], Any]) -> Any:
    async def scenario() -> Any:
        async with inbox_factory() as inbox:
            assert isinstance(inbox, SQLInbox)
            return await fn(inbox, type(inbox).__name__ == "SQLiteInbox")

    return asyncio.run(scenario())


@pytest.mark.parametrize("inbox_factory", SQL_BACKENDS, indirect=True)
@pytest.mark.parametrize("name", list(NOTIFICATION_LISTS))
def test_notifications_list_by_filter_plan_uses_its_index(
    inbox_factory: InboxFactory, name: str
) -> None:
    selection, indexes = NOTIFICATION_LISTS[name]

    async def plan(inbox: SQLInbox, sqlite: bool) -> str:
        sql, params = inbox._find_query(selection, limit=100, after=0)
        return str(await inbox._read(lambda conn: _plan(conn, sqlite, sql, params)))

    found = _with_store(inbox_factory, plan)
    for index in indexes:
        assert index in found, found


@pytest.mark.parametrize("inbox_factory", SQL_BACKENDS, indirect=True)
@pytest.mark.parametrize("name", list(TRACKER_READS))
def test_tracker_read_of_the_api_plan_scans_no_table(
    inbox_factory: InboxFactory, name: str
) -> None:
    read = TRACKER_READS[name]

    async def plans(inbox: SQLInbox, sqlite: bool) -> list[str]:
        def run(db: Any) -> list[str]:
            recording = _Recording(db)
            read(recording)
            return [_plan(db, sqlite, sql, params) for sql, params in recording.statements]

        found: list[str] = await inbox.read(run)
        return [line for plan in found for line in _scans(plan, sqlite)]

    assert _with_store(inbox_factory, plans) == []
