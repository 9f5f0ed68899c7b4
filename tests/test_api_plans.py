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

from iotpush import testing, trackers
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
    "upgrades-after": lambda db: trackers.find_upgrades(db, None, 100, "1.5,6f70,73,64"),
    "upgrade": lambda db: trackers.get_upgrade(db, "op-1"),
    "unsynced": lambda db: trackers.unsynced(db, 100, None),
    "unsynced-after": lambda db: trackers.unsynced(db, 100, "6465762d31,41"),
}

# Reads that must go through these indexes (by name; SQLite names a WITHOUT ROWID table's key
# index "PRIMARY KEY"), where a scan in key order with a filter would pass for an index read.
_DEVICE_DATA = {"sqlite": "PRIMARY KEY", "postgres": "device_data_pkey"}
_UNSYNCED = ("shadows_failed", "shadow_expectations_pending")
INDEXES: dict[str, tuple[str, ...]] = {
    "unsynced": _UNSYNCED,
    "unsynced-after": _UNSYNCED,
    "devices": ("device_data",),
    "devices-status": ("devices_status", "device_data"),
    "upgrades": ("upgrades_updated",),
    "upgrades-after": ("upgrades_updated",),
    "upgrades-device": ("upgrades_device",),
    "commands-device": ("commands_device",),
    "commands-state": ("commands_state",),
    "commands-overdue": ("commands_deadline",),
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


def _seed(db: Any) -> None:
    """A few records, so that each read runs every statement (a page's data, say)."""
    for entry, device in enumerate(["dev-0", "dev-1"], 1):
        trackers.apply_all(db, entry, T0, testing.build("deviceDataChanged", device_id=device))
    online = testing.build("deviceInfoChanged", device_id="dev-1", device_info={"status": "ONLINE"})
    trackers.apply_all(db, 3, T0, online)
    failed = testing.build(
        "deviceDesiredPropertiesModifyStatusChanged", device_id="dev-1", status="FAILED"
    )
    trackers.apply_all(db, 4, T0, failed)
    trackers.expect_shadow(db, "dev-2", "Config", {"interval": 5}, T0)


def _tracker_plans(inbox_factory: InboxFactory, name: str) -> tuple[list[str], bool]:
    read = TRACKER_READS[name]

    async def plans(inbox: SQLInbox, sqlite: bool) -> tuple[list[str], bool]:
        await inbox.transact(_seed)

        def run(db: Any) -> list[str]:
            recording = _Recording(db)
            read(recording)
            return [_plan(db, sqlite, sql, params) for sql, params in recording.statements]

        return await inbox.read(run), sqlite

    found: tuple[list[str], bool] = _with_store(inbox_factory, plans)
    return found


@pytest.mark.parametrize("inbox_factory", SQL_BACKENDS, indirect=True)
@pytest.mark.parametrize("name", list(TRACKER_READS))
def test_tracker_read_of_the_api_plan_scans_no_table(
    inbox_factory: InboxFactory, name: str
) -> None:
    plans, sqlite = _tracker_plans(inbox_factory, name)
    assert [line for plan in plans for line in _scans(plan, sqlite)] == []


@pytest.mark.parametrize("inbox_factory", SQL_BACKENDS, indirect=True)
@pytest.mark.parametrize("name", list(INDEXES))
def test_tracker_list_of_the_api_plan_reads_its_indexes(
    inbox_factory: InboxFactory, name: str
) -> None:
    plans, sqlite = _tracker_plans(inbox_factory, name)
    found = "\n".join(plans)
    for index in INDEXES[name]:
        if index == "device_data":
            index = _DEVICE_DATA["sqlite" if sqlite else "postgres"]
        assert index in found, found
