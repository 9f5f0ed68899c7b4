"""The v5 message and batch task trackers, and v5 pushes in the device and command trackers, on
SQLite and PostgreSQL: replays, late and repeated pushes."""

from __future__ import annotations

from typing import Any

import pytest

from iotpush import testing, trackers
from iotpush.trackers.messages import get_message
from iotpush.trackers.tasks import get_task


@pytest.fixture
def db(tracker_conn: Any) -> Any:
    return tracker_conn


def message(status: str, message_id: str = "m-1", **body: Any) -> Any:
    notify = {
        "header": {"device_id": "dev-1"},
        "body": {"message_id": message_id, "status": status, **body},
    }
    return testing.build("device.message.status:update", notify_data=notify)


def task(status: str, task_id: str = "t-1", **body: Any) -> Any:
    notify = {"body": {"task_id": task_id, "status": status, **body}}
    return testing.build("batchtask:update", notify_data=notify)


def apply(db: Any, *notifications: Any, first: int = 1) -> None:
    for entry_id, n in enumerate(notifications, start=first):
        trackers.apply_all(db, entry_id, 1000.0 + entry_id, n)


def test_message_status_final_never_moves_back_and_keeps_its_error(db: Any) -> None:
    error = {"error_code": "E1", "error_msg": "device offline"}
    apply(db, message("PENDING"), message("FAILED", error_info=error), message("DELIVERED"))
    record = get_message(db, "m-1")
    assert record is not None
    assert (record.status, record.final, record.device_id) == ("FAILED", True, "dev-1")
    assert record.error == error
    assert [(e.status, e.applied) for e in record.history] == [
        ("PENDING", True), ("FAILED", True), ("DELIVERED", False)
    ]  # fmt: skip
    assert get_message(db, "nope") is None


def test_message_late_pending_after_delivered_and_unknown_status_go_to_history_only(
    db: Any,
) -> None:
    apply(db, message("DELIVERED"), message("PENDING"), message("WEIRD"))
    record = get_message(db, "m-1")
    assert record is not None
    assert record.status == "DELIVERED"
    assert [e.applied for e in record.history] == [True, False, False]


def test_message_and_task_applied_twice_or_replayed_give_the_same_record(db: Any) -> None:
    pushes = [message("PENDING"), message("DELIVERED"), task("Waitting"), task("Processing")]
    apply(db, *pushes)
    first = (get_message(db, "m-1"), get_task(db, "t-1"))
    apply(db, *pushes)  # the same entries again: nothing changes
    assert (get_message(db, "m-1"), get_task(db, "t-1")) == first
    trackers.reset(db)
    assert get_message(db, "m-1") is None and get_task(db, "t-1") is None
    apply(db, *pushes)
    assert (get_message(db, "m-1"), get_task(db, "t-1")) == first


def test_task_progress_uses_the_platform_spelling_and_stops_at_a_final_status(db: Any) -> None:
    apply(
        db,
        task("Waitting", task_type="firmwareUpgrade"),
        task("Processing", status_desc="2 of 10"),
        task("PartialSuccess", status_desc="9 of 10"),
        task("Processing", status_desc="late"),
    )
    record = get_task(db, "t-1")
    assert record is not None
    assert (record.status, record.status_desc, record.final) == ("PartialSuccess", "9 of 10", True)
    assert record.task_type == "firmwareUpgrade"
    assert [e.applied for e in record.history] == [True, True, True, False]
