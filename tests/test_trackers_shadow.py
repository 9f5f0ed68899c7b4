"""The shadow tracker: last DELIVERED/FAILED by entry id, expectations, unsynced services."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iotpush import testing
from iotpush.models import Notification
from iotpush.trackers import (
    ShadowRecord,
    apply_all,
    count_unsynced,
    expect_shadow,
    get_shadow,
    shadow_history,
    unsynced,
)
from tests.conftest import tracker_db


@pytest.fixture
def db(tracker_conn: sqlite3.Connection) -> sqlite3.Connection:
    """Each test runs on SQLite and on PostgreSQL (`tests.conftest.tracker_conn`)."""
    return tracker_conn


def push(
    status: str, properties: dict[str, Any], device: str = "d1", service: str = "Device"
) -> Notification:
    return testing.build(
        "deviceDesiredPropertiesModifyStatusChanged",
        device_id=device, service_id=service, properties=properties, status=status,
    )  # fmt: skip


def one(db: sqlite3.Connection, device: str = "d1") -> ShadowRecord:
    (record,) = get_shadow(db, device)
    return record


def test_apply_delivered_sets_the_last_status_and_delivered(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, push("DELIVERED", {"reportInterval": 60}))
    record = one(db)
    assert (record.status, record.properties, record.status_entry_id) == (
        "DELIVERED", {"reportInterval": 60}, 1,
    )  # fmt: skip
    assert (record.delivered, record.delivered_at, record.failed) == (
        {"reportInterval": 60},
        10.0,
        None,
    )
    assert record.synced
    assert unsynced(db) == []


def test_apply_failed_after_delivered_is_unsynced(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, push("DELIVERED", {"reportInterval": 60}))
    apply_all(db, 2, 11.0, push("failed", {"reportInterval": 900}))
    record = one(db)
    assert (record.status, record.failed, record.delivered) == (
        "FAILED", {"reportInterval": 900}, {"reportInterval": 60},
    )  # fmt: skip
    assert not record.synced
    assert unsynced(db) == [record]


def test_apply_older_entry_late_does_not_overwrite_the_newer_last(db: sqlite3.Connection) -> None:
    apply_all(db, 5, 15.0, push("DELIVERED", {"v": "new"}))
    apply_all(db, 3, 16.0, push("FAILED", {"v": "old"}))
    apply_all(db, 2, 17.0, push("DELIVERED", {"v": "older"}))
    record = one(db)
    assert (record.status, record.properties, record.status_entry_id) == (
        "DELIVERED",
        {"v": "new"},
        5,
    )
    assert (record.delivered, record.delivered_entry_id) == ({"v": "new"}, 5)
    assert (record.failed, record.failed_entry_id) == ({"v": "old"}, 3)
    assert record.synced


def test_apply_same_entry_twice_changes_nothing(db: sqlite3.Connection) -> None:
    first = push("DELIVERED", {"v": 1})
    apply_all(db, 1, 10.0, first)
    apply_all(db, 2, 11.0, push("FAILED", {"v": 2}))
    before = get_shadow(db, "d1"), shadow_history(db, "d1")
    apply_all(db, 1, 99.0, first)
    assert (get_shadow(db, "d1"), shadow_history(db, "d1")) == before


def test_apply_unknown_status_goes_to_history_only(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, push("DELIVERED", {"v": 1}))
    apply_all(db, 2, 11.0, push("PENDING", {"v": 2}))
    record = one(db)
    assert (record.status, record.status_entry_id) == ("DELIVERED", 1)
    assert [(e.entry_id, e.status) for e in shadow_history(db, "d1")] == [
        (2, "PENDING"), (1, "DELIVERED"),
    ]  # fmt: skip


STATUSES = ["DELIVERED", "FAILED", "delivered", "SOMETHING"]


@settings(max_examples=150, deadline=None)
@given(
    pushes=st.lists(
        st.tuples(st.sampled_from(STATUSES), st.integers(0, 3)), min_size=1, max_size=8
    ),
    data=st.data(),
)
def test_apply_in_any_order_keeps_the_last_of_each_by_entry_id(
    tmp_path_factory: pytest.TempPathFactory,
    pushes: list[tuple[str, int]],
    data: st.DataObject,
) -> None:
    order = data.draw(st.permutations(range(len(pushes))), "application order")
    again = data.draw(st.lists(st.sampled_from(order), max_size=3), "applied again")
    with contextlib.closing(tracker_db(tmp_path_factory.mktemp("shadow") / "t.db")) as db:
        for index in [*order, *again]:
            status, value = pushes[index]
            apply_all(db, index + 1, 100.0 + index, push(status, {"v": value}))
        record = one(db)

    def last(*statuses: str) -> tuple[int | None, dict[str, Any] | None]:
        found = [(i + 1, {"v": v}) for i, (s, v) in enumerate(pushes) if s.upper() in statuses]
        return found[-1] if found else (None, None)

    assert (record.status_entry_id, record.properties) == last("DELIVERED", "FAILED")
    assert (record.delivered_entry_id, record.delivered) == last("DELIVERED")
    assert (record.failed_entry_id, record.failed) == last("FAILED")
    assert record.synced == (record.status != "FAILED")


# --- expectations -----------------------------------------------------------------------------


def test_expect_shadow_is_pending_until_a_matching_delivery(db: sqlite3.Connection) -> None:
    expect_shadow(db, "d1", "Device", {"reportInterval": 300}, now=100.0)
    record = one(db)
    assert (record.pending, record.synced, record.status) == (True, False, None)
    assert unsynced(db) == [record]
    apply_all(db, 1, 101.0, push("DELIVERED", {"reportInterval": 60}))  # someone else's write
    assert one(db).pending
    apply_all(db, 2, 102.0, push("DELIVERED", {"reportInterval": 300, "other": 1}))
    record = one(db)
    assert (record.pending, record.synced, record.confirmed_entry_id) == (False, True, 2)
    assert unsynced(db) == []


def test_expect_shadow_ignores_deliveries_received_before_it(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 90.0, push("DELIVERED", {"reportInterval": 300}))
    expect_shadow(db, "d1", "Device", {"reportInterval": 300}, now=100.0)
    assert one(db).pending


def test_expect_shadow_confirmed_by_a_delivery_already_recorded(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 101.0, push("DELIVERED", {"reportInterval": 300}))
    expect_shadow(db, "d1", "Device", {"reportInterval": 300}, now=100.0)
    record = one(db)
    assert (record.pending, record.confirmed_entry_id) == (False, 1)


def test_expect_shadow_failed_is_not_a_confirmation(db: sqlite3.Connection) -> None:
    expect_shadow(db, "d1", "Device", {"reportInterval": 300}, now=100.0)
    apply_all(db, 1, 101.0, push("FAILED", {"reportInterval": 300}))
    record = one(db)
    assert record.pending and record.status == "FAILED"


def test_expect_shadow_confirmed_then_failed_is_unsynced(db: sqlite3.Connection) -> None:
    expect_shadow(db, "d1", "Device", {"reportInterval": 300}, now=100.0)
    apply_all(db, 1, 101.0, push("DELIVERED", {"reportInterval": 300}))
    apply_all(db, 2, 102.0, push("FAILED", {"reportInterval": 900}))
    record = one(db)
    assert (record.pending, record.status, record.synced) == (False, "FAILED", False)


def test_expect_shadow_again_waits_for_the_new_write(db: sqlite3.Connection) -> None:
    expect_shadow(db, "d1", "Device", {"v": 1}, now=100.0)
    apply_all(db, 1, 101.0, push("DELIVERED", {"v": 1}))
    expect_shadow(db, "d1", "Device", {"v": 2}, now=110.0)
    record = one(db)
    assert (record.pending, record.expected, record.expected_at) == (True, {"v": 2}, 110.0)


def test_expect_shadow_first_matching_delivery_confirms_in_any_order(
    db: sqlite3.Connection,
) -> None:
    expect_shadow(db, "d1", "Device", {"v": 1}, now=100.0)
    apply_all(db, 7, 107.0, push("DELIVERED", {"v": 1}))
    apply_all(db, 4, 104.0, push("DELIVERED", {"v": 1}))
    assert one(db).confirmed_entry_id == 4


# --- queries ----------------------------------------------------------------------------------


def test_get_shadow_one_record_per_service_in_service_order(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, push("DELIVERED", {"a": 1}, service="Zeta"))
    apply_all(db, 2, 11.0, push("DELIVERED", {"b": 2}, service="Alpha"))
    apply_all(db, 3, 12.0, push("DELIVERED", {"c": 3}, device="d2"))
    assert [r.service_id for r in get_shadow(db, "d1")] == ["Alpha", "Zeta"]
    assert get_shadow(db, "unknown") == []


def test_unsynced_lists_failed_and_pending_in_key_order(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, push("FAILED", {"a": 1}, device="d2"))
    apply_all(db, 2, 11.0, push("DELIVERED", {"a": 1}, device="d3"))
    expect_shadow(db, "d1", "Device", {"a": 1}, now=12.0)
    assert [(r.device_id, r.pending, r.status) for r in unsynced(db)] == [
        ("d1", True, None), ("d2", False, "FAILED"),
    ]  # fmt: skip


def test_shadow_history_newest_first_filtered_by_service(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, push("DELIVERED", {"a": 1}, service="S1"))
    apply_all(db, 2, 11.0, push("FAILED", {"a": 2}, service="S2"))
    apply_all(db, 3, 12.0, push("DELIVERED", {"a": 3}, service="S1"))
    assert [e.entry_id for e in shadow_history(db, "d1")] == [3, 2, 1]
    assert [e.entry_id for e in shadow_history(db, "d1", "S1", limit=1)] == [3]


def test_shadow_record_encodes_as_json(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, push("DELIVERED", {"Firmware Version": "v1.1.0"}))
    record = one(db)
    assert msgspec.json.decode(msgspec.json.encode(record), type=ShadowRecord) == record


def test_unsynced_pages_through_failed_and_pending_with_cursors(db: sqlite3.Connection) -> None:
    for entry, (device, service) in enumerate([("d2", "A"), ("d1", "B"), ("d1/x", "A")], 1):
        apply_all(db, entry, 10.0, push("FAILED", {"a": entry}, device=device, service=service))
    apply_all(db, 4, 11.0, push("DELIVERED", {"a": 4}, device="d1", service="A"))
    for device, service in [("d1", "A"), ("d1", "C"), ("d2", "A")]:  # d2/A FAILED and pending
        expect_shadow(db, device, service, {"a": 9}, now=12.0)
    pages, after = [], None
    while True:
        page = unsynced(db, limit=2, after=after)
        pages.append([(r.device_id, r.service_id) for r in page])
        if len(page) < 2:
            break
        after = page[-1].cursor
    assert pages == [
        [("d1", "A"), ("d1", "B")], [("d1", "C"), ("d1/x", "A")], [("d2", "A")],
    ]  # fmt: skip
    assert [(r.device_id, r.service_id) for r in unsynced(db)] == [
        key for page in pages for key in page
    ]


def test_unsynced_cursor_that_is_not_one_is_refused(db: sqlite3.Connection) -> None:
    with pytest.raises(ValueError, match="not a cursor of the unsynced list"):
        unsynced(db, limit=2, after="d1,A")


def test_count_unsynced_counts_what_unsynced_lists(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, push("FAILED", {"a": 1}, device="d2"))
    expect_shadow(db, "d2", "Device", {"a": 1}, now=9.0)  # FAILED and pending: one service
    expect_shadow(db, "d1", "Device", {"a": 1}, now=12.0)
    assert count_unsynced(db) == len(unsynced(db)) == 2
