"""Retention of the trackers' histories: old events go, the current state and its events stay.

Each tracker's `HISTORY.prune` runs on SQLite and on PostgreSQL (`tests.conftest.tracker_conn`):
events received before the bound go, except those the current state came from, and the record
each query answers is the same before and after (its history aside).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec
import pytest

from iotpush import testing
from iotpush.models import Notification
from iotpush.trackers import (
    HISTORIES,
    apply_all,
    commands,
    devices,
    get_command,
    get_device,
    get_shadow,
    get_upgrade,
    messages,
    shadow,
    tasks,
    upgrades,
)
from iotpush.trackers._common import History

BEFORE = 100.0  # the bound: events received before it are old


@pytest.fixture
def db(tracker_conn: sqlite3.Connection) -> sqlite3.Connection:
    """Each test runs on SQLite and on PostgreSQL (`tests.conftest.tracker_conn`)."""
    return tracker_conn


def feed(db: sqlite3.Connection, *pushes: tuple[int, float, Notification]) -> None:
    for entry_id, received_at, notification in pushes:
        apply_all(db, entry_id, received_at, notification)


def prune_all(db: sqlite3.Connection, history: History, before: float = BEFORE) -> int:
    total, after, done = 0, 0, False
    while not done:
        deleted, after, done = history.prune(db, after, before, 2)
        total += deleted
    return total


def kept(db: sqlite3.Connection, history: History) -> list[int]:
    sql = f"SELECT entry_id FROM {history.table} ORDER BY entry_id"
    return [row[0] for row in db.execute(sql).fetchall()]


def without_history(record: Any) -> dict[str, Any]:
    fields = msgspec.structs.asdict(record)
    fields.pop("history", None)
    return fields


def nb(code: str, command: str = "c1") -> Notification:
    result = {"result_code": code, "result_detail": {"code": code}}
    return testing.build("nbCommandStatusChanged", command_id=command, device_id="d1",
                         result=result)  # fmt: skip


def test_histories_name_every_tracker_history_table() -> None:
    assert {history.table for history in HISTORIES} == {
        "command_events", "shadow_events", "device_events", "upgrade_events", "message_events",
        "task_events",
    }  # fmt: skip


def test_prune_commands_keeps_the_push_that_set_each_state(db: sqlite3.Connection) -> None:
    feed(db, (1, 10, nb("SENT")), (2, 20, nb("DELIVERED")), (3, 30, nb("SUCCESSFUL")),
         (4, 40, nb("DELIVERED")), (5, 50, nb("SENT", "c2")),
         (6, 150, nb("DELIVERED", "c2")))  # fmt: skip
    before = [get_command(db, c) for c in ("c1", "c2")]
    assert prune_all(db, commands.HISTORY) == 4  # c2's SENT too: its DELIVERED is newer
    after = [get_command(db, c) for c in ("c1", "c2")]
    assert kept(db, commands.HISTORY) == [3, 6]
    for old, new in zip(before, after, strict=True):
        assert old is not None and new is not None
        assert (new.state, new.detail, new.state_entry_id, new.state_at) == (
            old.state, old.detail, old.state_entry_id, old.state_at,
        )  # fmt: skip
    feed(db, (7, 160, nb("FAILED")))  # a new push folds over what is kept: still final
    record = get_command(db, "c1")
    assert record is not None and (record.state, record.state_entry_id) == ("SUCCESSFUL", 3)


def shadow_push(status: str, value: int, service: str = "Device") -> Notification:
    return testing.build(
        "deviceDesiredPropertiesModifyStatusChanged",
        device_id="d1", service_id=service, properties={"interval": value}, status=status,
    )  # fmt: skip


def test_prune_shadow_keeps_the_pushes_of_the_last_values(db: sqlite3.Connection) -> None:
    feed(db, (1, 10, shadow_push("DELIVERED", 1)), (2, 20, shadow_push("FAILED", 2)),
         (3, 30, shadow_push("DELIVERED", 3)), (4, 40, shadow_push("DELIVERED", 4, "Other")),
         (5, 50, shadow_push("SENT", 5, "Other")))  # fmt: skip
    before = get_shadow(db, "d1")
    assert prune_all(db, shadow.HISTORY) == 2
    assert kept(db, shadow.HISTORY) == [2, 3, 4]
    assert get_shadow(db, "d1") == before


def test_prune_devices_keeps_the_pushes_the_record_holds(db: sqlite3.Connection) -> None:
    added = testing.build("deviceAdded", device_id="d1", gateway_id="gw", node_type="ENDPOINT",
                          device_info={"node_id": "n1", "status": "OFFLINE"})  # fmt: skip
    empty = dict.fromkeys(("status", "status_detail"))

    def changed(**info: Any) -> Notification:
        return testing.build("deviceInfoChanged", device_id="d1", gateway_id="gw",
                             device_info={**empty, **info})  # fmt: skip

    feed(db, (1, 10, added), (2, 20, changed(name="a")), (3, 30, changed(name="b")),
         (12, 40, changed(status="ONLINE")))  # fmt: skip
    before = get_device(db, "d1")
    assert prune_all(db, devices.HISTORY) == 1  # entry 2: its name was replaced by entry 3
    assert kept(db, devices.HISTORY) == [1, 3, 12]
    assert get_device(db, "d1") == before


def test_prune_upgrades_keeps_state_result_and_latest(db: sqlite3.Connection) -> None:
    key = {"operation_id": "op-1", "sub_operation_id": "sub-1", "device_id": "d1"}

    def state(value: str) -> Notification:
        return testing.build("swUpgradeStateChangeNotify", **key, sw_upgrade_state=value)

    result = testing.build("swUpgradeResultNotify", **key, sw_upgrade_result="SUCCESS")
    feed(db, (1, 10, state("downloading")), (2, 20, state("installing")), (3, 30, result),
         (4, 40, state("downloading")), (5, 50, result))  # fmt: skip
    before = [without_history(r) for r in get_upgrade(db, "op-1")]
    assert prune_all(db, upgrades.HISTORY) == 2
    assert kept(db, upgrades.HISTORY) == [3, 4, 5]
    assert [without_history(r) for r in get_upgrade(db, "op-1")] == before


@pytest.mark.parametrize(
    ("tracker", "build", "get"),
    [
        (
            messages,
            lambda status: testing.build(
                "device.message.status:update",
                notify_data={
                    "header": {"device_id": "d1"},
                    "body": {"message_id": "m1", "status": status},
                },
            ),
            messages.get_message,
        ),
        (
            tasks,
            lambda status: testing.build(
                "batchtask:update", notify_data={"body": {"task_id": "m1", "status": status}}
            ),
            tasks.get_task,
        ),
    ],
    ids=["messages", "tasks"],
)
def test_prune_folded_history_keeps_the_pushes_that_moved_it_and_the_latest(
    db: sqlite3.Connection, tracker: Any, build: Any, get: Any
) -> None:
    final = "DELIVERED" if tracker is messages else "Success"
    first, second = ("PENDING", "SENT") if tracker is messages else ("Waitting", "Processing")
    feed(db, (1, 10, build(first)), (2, 20, build(second)), (3, 30, build(second)),
         (4, 40, build("bogus")), (5, 50, build(final)), (6, 60, build(second)))  # fmt: skip
    before = get(db, "m1")
    assert prune_all(db, tracker.HISTORY) == 2
    assert kept(db, tracker.HISTORY) == [1, 2, 5, 6]
    after = get(db, "m1")
    assert without_history(after) == without_history(before)
    assert [e.applied for e in after.history] == [True, True, True, False]


def test_prune_stops_at_the_first_push_received_since_and_resumes_there(
    db: sqlite3.Connection,
) -> None:
    feed(db, *((i, 10.0 * i, nb("SENT", f"c{i}")) for i in range(1, 8)))
    feed(db, *((i + 10, 10.0 * i, nb("DELIVERED", f"c{i}")) for i in range(1, 8)))
    history = commands.HISTORY
    # Entries 1-7 were received at 10..70 and 11-17 again at 10..70: before 35, entries 1-3
    # are old, and the first pass stops at entry 4 (received since).
    deleted, after, done = history.prune(db, 0, 35, 2)
    assert (deleted, after, done) == (2, 2, False)  # looked at 2 rows at most: a bounded batch
    deleted, after, done = history.prune(db, after, 35, 2)
    assert (deleted, after, done) == (1, 3, True)
    assert history.prune(db, after, 35, 2) == (0, 3, True)
    assert prune_all(db, history, before=1000) == 4  # later: 4-7 go, 11-17 set the states
    assert kept(db, history) == list(range(11, 18))
