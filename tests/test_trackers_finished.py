"""Finished records: each record in a final state that nothing was heard about since a bound
goes whole, with every row about it; records still open, and those heard about since, stay.

Each tracker's `FINISHED.prune` runs on SQLite and on PostgreSQL (`tests.conftest.tracker_conn`).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from iotpush import testing
from iotpush.models import Notification
from iotpush.trackers import (
    FINISHED,
    HISTORIES,
    Finished,
    apply_all,
    commands,
    devices,
    expect,
    expect_shadow,
    finished_purges,
    get_command,
    get_device,
    get_shadow,
    get_upgrade,
    messages,
    shadow,
    tasks,
    upgrades,
)

BEFORE = 100.0  # the bound: records last heard of before it are old


@pytest.fixture
def db(tracker_conn: sqlite3.Connection) -> sqlite3.Connection:
    """Each test runs on SQLite and on PostgreSQL (`tests.conftest.tracker_conn`)."""
    return tracker_conn


def feed(db: sqlite3.Connection, *pushes: tuple[int, float, Notification]) -> None:
    for entry_id, received_at, notification in pushes:
        apply_all(db, entry_id, received_at, notification)


def drop_all(db: sqlite3.Connection, records: Finished, before: float = BEFORE) -> int:
    total, done = 0, False
    while not done:
        deleted, done = records.prune(db, before, 2)
        total += deleted
    return total


def count(db: sqlite3.Connection, table: str) -> int:
    return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def nb(code: str, command: str, device: str = "d1") -> Notification:
    result = {"result_code": code, "result_detail": None}
    return testing.build("nbCommandStatusChanged", command_id=command, device_id=device,
                         result=result)  # fmt: skip


def test_finished_names_every_tracker_that_has_final_records_shadows_before_devices() -> None:
    kinds = [records.kind for records in FINISHED]
    assert sorted(kinds) == ["commands", "devices", "messages", "shadows", "tasks", "upgrades"]
    assert kinds.index("shadows") < kinds.index("devices")  # they find theirs through the device
    assert len(HISTORIES) == 6


def test_finished_commands_go_whole_open_and_recent_ones_stay(db: sqlite3.Connection) -> None:
    expect(db, "done", "d1", deadline=500.0, now=5.0)
    feed(db, (1, 10, nb("SENT", "done")), (2, 20, nb("SUCCESSFUL", "done")),
         (3, 10, nb("SENT", "open")), (4, 30, nb("DELIVERED", "open")),
         (5, 40, nb("FAILED", "recent")), (6, 150, nb("SENT", "recent")),
         (7, 50, nb("TIMEOUT", "late")))  # fmt: skip
    assert drop_all(db, commands.FINISHED) == 2  # "done" and "late"
    assert get_command(db, "done") is None and get_command(db, "late") is None
    assert [get_command(db, c) is not None for c in ("open", "recent")] == [True, True]
    assert count(db, "command_events") == 4  # open's and recent's
    assert count(db, "command_expectations") == 0  # a rebuild cannot make it PENDING again
    assert finished_purges(db) == {"commands": (2, BEFORE)}
    assert drop_all(db, commands.FINISHED) == 0
    assert finished_purges(db) == {"commands": (2, BEFORE)}


def test_finished_upgrades_go_once_they_have_a_result(db: sqlite3.Connection) -> None:
    def key(op: str) -> dict[str, str]:
        return {"operation_id": op, "sub_operation_id": "s", "device_id": "d1"}

    def state(op: str) -> Notification:
        return testing.build("swUpgradeStateChangeNotify", **key(op), sw_upgrade_state="idle")

    def result(op: str) -> Notification:
        return testing.build("swUpgradeResultNotify", **key(op), sw_upgrade_result="SUCCESS")

    feed(db, (1, 10, state("done")), (2, 20, result("done")), (3, 30, state("open")),
         (4, 40, result("heard")), (5, 120, state("heard")))  # fmt: skip
    assert drop_all(db, upgrades.FINISHED) == 1
    assert get_upgrade(db, "done") == []
    assert [len(get_upgrade(db, op)) for op in ("open", "heard")] == [1, 1]
    assert count(db, "upgrade_events") == 3


def test_deleted_devices_go_with_their_data_and_services_live_ones_stay(
    db: sqlite3.Connection,
) -> None:
    def added(device: str) -> Notification:
        return testing.build("deviceAdded", device_id=device)

    def deleted(device: str) -> Notification:
        return testing.build("deviceDeleted", device_id=device)

    def data(device: str) -> Notification:
        return testing.build("deviceDataChanged", device_id=device)

    def desired(device: str) -> Notification:
        return testing.build("deviceDesiredPropertiesModifyStatusChanged", device_id=device,
                             service_id="Svc", properties={"a": 1}, status="DELIVERED")  # fmt: skip

    expect_shadow(db, "gone", "Svc", {"a": 1}, now=5.0)
    feed(db, (1, 10, added("gone")), (2, 11, data("gone")), (3, 12, desired("gone")),
         (4, 20, deleted("gone")),
         (5, 10, added("live")), (6, 11, data("live")), (7, 12, desired("live")),
         (8, 10, added("back")), (9, 20, deleted("back")), (10, 30, added("back")),
         (11, 10, added("talks")), (12, 20, deleted("talks")), (13, 150, data("talks")),
         (14, 10, added("late")), (15, 20, deleted("late")),
         (16, 150, desired("late")))  # fmt: skip
    assert get_device(db, "gone") is not None  # a soft delete: queryable until it goes
    dropped = {records.kind: drop_all(db, records) for records in FINISHED}
    assert (dropped["shadows"], dropped["devices"]) == (1, 2)  # gone's service; gone and late
    assert get_device(db, "gone") is None and get_shadow(db, "gone") == []
    for table in ("device_events", "device_data", "shadow_events", "shadow_expectations"):
        sql = f"SELECT count(*) FROM {table} WHERE device_id = 'gone'"
        assert db.execute(sql).fetchone()[0] == 0, table
    assert [get_device(db, d) is not None for d in ("live", "back", "talks")] == [True] * 3
    assert [len(get_shadow(db, d)) for d in ("live", "late")] == [1, 1]  # late's: heard since


@pytest.mark.parametrize(
    ("tracker", "build", "statuses"),
    [
        (
            messages,
            lambda id, status: testing.build(
                "device.message.status:update",
                notify_data={
                    "header": {"device_id": "d1"},
                    "body": {"message_id": id, "status": status},
                },
            ),
            ("SENT", "DELIVERED"),
        ),
        (
            tasks,
            lambda id, status: testing.build(
                "batchtask:update", notify_data={"body": {"task_id": id, "status": status}}
            ),
            ("Processing", "Success"),
        ),
    ],
    ids=["messages", "tasks"],
)
def test_finished_folded_records_go_once_final_and_quiet(
    db: sqlite3.Connection, tracker: Any, build: Any, statuses: tuple[str, str]
) -> None:
    moving, final = statuses
    feed(db, (1, 10, build("done", moving)), (2, 20, build("done", final)),
         (3, 30, build("done", final)), (4, 10, build("open", moving)),
         (5, 20, build("heard", final)), (6, 120, build("heard", moving)))  # fmt: skip
    assert drop_all(db, tracker.FINISHED) == 1
    get = messages.get_message if tracker is messages else tasks.get_task
    assert get(db, "done") is None
    assert [get(db, id) is not None for id in ("open", "heard")] == [True, True]
    assert finished_purges(db) == {tracker.FINISHED.kind: (1, BEFORE)}


def test_finished_prune_looks_at_a_bounded_batch(db: sqlite3.Connection) -> None:
    feed(db, *((i, 10.0 + i, nb("SUCCESSFUL", f"c{i}")) for i in range(1, 6)))
    assert commands.FINISHED.prune(db, BEFORE, 2) == (2, False)
    assert commands.FINISHED.prune(db, BEFORE, 2) == (2, False)
    assert commands.FINISHED.prune(db, BEFORE, 2) == (1, True)
    assert count(db, "commands") == 0
    assert shadow.FINISHED.prune(db, BEFORE, 2) == (0, True)
    assert devices.FINISHED.prune(db, BEFORE, 2) == (0, True)
