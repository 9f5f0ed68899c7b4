"""The upgrade tracker: latest state by entry id, a final result, sw and fw names."""

from __future__ import annotations

import re
import sqlite3
from typing import Any

import msgspec
import pytest

from iotpush import testing
from iotpush.models import Notification
from iotpush.trackers import UpgradeRecord, apply_all, find_upgrades, get_upgrade
from iotpush.trackers.upgrades import CURSOR_PATTERN, parse_cursor

KEY: dict[str, Any] = {
    "operation_id": "op-1",
    "sub_operation_id": "sub-1",
    "device_id": "d1",
    "app_id": "app",
}


@pytest.fixture
def db(tracker_conn: sqlite3.Connection) -> sqlite3.Connection:
    """Each test runs on SQLite and on PostgreSQL (`tests.conftest.tracker_conn`)."""
    return tracker_conn


def sw_state(state: str, **key: Any) -> Notification:
    return testing.build("swUpgradeStateChangeNotify", **{**KEY, **key}, sw_upgrade_state=state)


def sw_result(result: str = "SUCCESS", **overrides: Any) -> Notification:
    return testing.build(
        "swUpgradeResultNotify", **{**KEY, "sw_upgrade_result": result, **overrides}
    )


def fw_state(step: str, **key: Any) -> Notification:
    return testing.build("fwUpgradeStateChangeNotify", **{**KEY, **key}, step=step, step_desc="x")


def only(db: sqlite3.Connection, operation: str = "op-1") -> UpgradeRecord:
    (record,) = get_upgrade(db, operation)
    return record


def test_apply_sw_states_newest_entry_wins(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, sw_state("downloading"))
    apply_all(db, 3, 12.0, sw_state("updating"))
    apply_all(db, 2, 13.0, sw_state("downloaded"))  # older, applied late
    record = only(db)
    assert (record.kind, record.state, record.raw_state, record.state_at) == (
        "sw", "updating", "updating", 12.0,
    )  # fmt: skip
    assert (record.result, record.app_id, record.created_at, record.updated_at) == (
        None, "app", 10.0, 13.0,
    )  # fmt: skip
    assert [e.entry_id for e in record.history] == [1, 2, 3]


@pytest.mark.parametrize(
    ("step", "state"),
    [("0", "idle"), ("1", "downloading"), ("2", "downloaded"), ("3", "updating"), ("9", None)],
    ids=["idle", "downloading", "downloaded", "updating", "unknown"],
)
def test_apply_fw_step_maps_to_a_state_keeping_the_raw_step(
    db: sqlite3.Connection, step: str, state: str | None
) -> None:
    apply_all(db, 1, 10.0, fw_state(step))
    record = only(db)
    assert (record.kind, record.state, record.raw_state, record.state_desc) == (
        "fw", state, step, "x",
    )  # fmt: skip


def test_apply_sw_result_records_versions_and_description(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, sw_state("updating"))
    result = sw_result(
        "FAIL", cur_version="1.0", target_version="1.5", source_version="1.0",
        result_desc="battery low", error_code="120", description="aborted", upgrade_time=95,
    )  # fmt: skip
    apply_all(db, 2, 11.0, result)
    record = only(db)
    assert (record.result, record.result_at, record.cur_version, record.target_version) == (
        "FAIL", 11.0, "1.0", "1.5",
    )  # fmt: skip
    assert (record.result_desc, record.error_code, record.description, record.upgrade_time) == (
        "battery low", "120", "aborted", 95,
    )  # fmt: skip


def test_apply_fw_result_uses_status_and_status_desc(db: sqlite3.Connection) -> None:
    n = testing.build("fwUpgradeResultNotify", **KEY, status="SUCCESS", status_desc="upgraded")
    apply_all(db, 1, 10.0, n)
    record = only(db)
    assert (record.kind, record.result, record.result_desc, record.error_code) == (
        "fw", "SUCCESS", "upgraded", None,
    )  # fmt: skip


def test_apply_state_after_result_keeps_the_result(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, sw_state("updating"))
    apply_all(db, 2, 11.0, sw_result("SUCCESS", cur_version="1.5"))
    apply_all(db, 3, 12.0, sw_state("downloading"))
    record = only(db)
    assert (record.result, record.cur_version, record.result_at) == ("SUCCESS", "1.5", 11.0)
    assert (record.state, [e.event for e in record.history]) == (
        "downloading", ["state", "result", "state"],
    )  # fmt: skip


def test_apply_first_result_by_entry_id_is_final(db: sqlite3.Connection) -> None:
    apply_all(db, 5, 15.0, sw_result("FAIL", cur_version="1.0"))
    apply_all(db, 3, 16.0, sw_result("SUCCESS", cur_version="1.5"))  # earlier, applied late
    apply_all(db, 7, 17.0, sw_result("FAIL", cur_version="1.0"))
    record = only(db)
    assert (record.result, record.cur_version, record.result_at) == ("SUCCESS", "1.5", 16.0)
    assert [(e.entry_id, e.value) for e in record.history] == [
        (3, "SUCCESS"), (5, "FAIL"), (7, "FAIL"),
    ]  # fmt: skip


def test_apply_same_entry_twice_changes_nothing(db: sqlite3.Connection) -> None:
    first = sw_state("downloading")
    apply_all(db, 1, 10.0, first)
    apply_all(db, 2, 11.0, sw_result())
    before = get_upgrade(db, "op-1")
    apply_all(db, 1, 99.0, first)
    assert get_upgrade(db, "op-1") == before


def test_get_upgrade_lists_every_sub_task_and_device(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, sw_state("idle", sub_operation_id="sub-2", device_id="d2"))
    apply_all(db, 2, 11.0, sw_state("idle", sub_operation_id="sub-1", device_id="d3"))
    apply_all(db, 3, 12.0, sw_state("idle", sub_operation_id="sub-1", device_id="d1"))
    apply_all(db, 4, 13.0, sw_state("idle", operation_id="op-2"))
    keys = [(r.sub_operation_id, r.device_id) for r in get_upgrade(db, "op-1")]
    assert keys == [("sub-1", "d1"), ("sub-1", "d3"), ("sub-2", "d2")]
    assert get_upgrade(db, "op-unknown") == []


def test_find_upgrades_newest_first_optionally_for_one_device(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, sw_state("idle", operation_id="op-a"))
    apply_all(db, 2, 11.0, fw_state("1", operation_id="op-b", device_id="d2"))
    apply_all(db, 3, 12.0, sw_state("updating", operation_id="op-c"))
    assert [r.operation_id for r in find_upgrades(db)] == ["op-c", "op-b", "op-a"]
    assert [r.operation_id for r in find_upgrades(db, device="d1")] == ["op-c", "op-a"]
    assert [r.operation_id for r in find_upgrades(db, limit=1)] == ["op-c"]


# Many records sharing each update time, ids holding the cursor's separator and escapes, and
# times that decimal text does not hold exactly.
TIMES = (10.0, 20.1, 1795304123.7214675)
KEYS = [
    (operation, sub, device)
    for operation in ("op-a", "op,b", "op/c%2C")
    for sub in ("s1", "s 2")
    for device in ("d1", "d2")
]


def fill(db: sqlite3.Connection) -> list[UpgradeRecord]:
    """One record per `KEYS` key, updated at one of `TIMES` (four records each); all of them."""
    for i, (operation, sub, device) in enumerate(KEYS):
        key = {"operation_id": operation, "sub_operation_id": sub, "device_id": device}
        apply_all(db, 2 * i + 1, 5.0, sw_state("downloading", **key))
        apply_all(db, 2 * i + 2, TIMES[i % 3], sw_state("updating", **key))
    return find_upgrades(db, limit=1000)


def page_through(
    db: sqlite3.Connection, limit: int, device: str | None = None, after: str | None = None
) -> list[UpgradeRecord]:
    """Every record from ``after`` on, read ``limit`` at a time, each page continuing the last."""
    seen: list[UpgradeRecord] = []
    for _ in range(len(KEYS) + 1):  # a cursor that does not move on would loop forever
        page = find_upgrades(db, device, limit, after)
        if not page:
            return seen
        assert len(page) <= limit
        seen += page
        after = page[-1].cursor
    raise AssertionError(f"more pages than records: {[key(r) for r in seen]}")


def key(record: UpgradeRecord) -> tuple[str, str, str]:
    return record.operation_id, record.sub_operation_id, record.device_id


def test_find_upgrades_orders_by_update_time_newest_first_then_key(db: sqlite3.Connection) -> None:
    every = fill(db)
    expected = sorted(
        zip(KEYS, [TIMES[i % 3] for i in range(len(KEYS))], strict=True),
        key=lambda pair: (-pair[1], pair[0]),
    )
    assert [(key(r), r.updated_at) for r in every] == expected


@pytest.mark.parametrize("limit", [1, 4, 5, 11, 12, 13])
def test_find_upgrades_pages_through_ties_on_updated_at_each_record_once(
    db: sqlite3.Connection, limit: int
) -> None:
    every = fill(db)
    assert len(every) == len(KEYS) == 3 * 4
    assert page_through(db, limit) == every
    assert page_through(db, limit, device="d2") == [r for r in every if r.device_id == "d2"]


def test_find_upgrades_record_updated_while_paging_moves_to_the_front(
    db: sqlite3.Connection,
) -> None:
    every = fill(db)
    first = find_upgrades(db, limit=4)
    moved = every[-1]
    apply_all(
        db,
        1000,
        2e9,
        sw_state(
            "downloaded",
            **dict(zip(["operation_id", "sub_operation_id", "device_id"], key(moved), strict=True)),
        ),
    )
    rest = page_through(db, 4, after=first[-1].cursor)
    assert [key(r) for r in first + rest] == [key(r) for r in every if r is not moved]
    (front,) = find_upgrades(db, limit=1)
    assert (key(front), front.updated_at, front.state) == (key(moved), 2e9, "downloaded")


def test_upgrade_cursor_reads_back_as_the_update_time_and_key(db: sqlite3.Connection) -> None:
    for record in fill(db):
        assert re.fullmatch(CURSOR_PATTERN, record.cursor)
        assert parse_cursor(record.cursor) == (record.updated_at, *key(record))


NOT_CURSORS = [
    "", "1", "op-1", "1.5,aa,bb", "1.5,aa,bb,cc,dd", "x,aa,bb,cc", "1.5;aa;bb;cc", "inf,aa,bb,cc",
    "1e+16,aa,bb,cc", "1.5,a,bb,cc", "1.5,AA,bb,cc", "1.5,zz,bb,cc",
]  # fmt: skip


@pytest.mark.parametrize("text", NOT_CURSORS, ids=[repr(t) for t in NOT_CURSORS])
def test_find_upgrades_after_not_a_cursor_raises(db: sqlite3.Connection, text: str) -> None:
    with pytest.raises(ValueError, match="not a cursor of the upgrades list"):
        find_upgrades(db, after=text)


def test_upgrade_record_encodes_as_json(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, fw_state("2"))
    apply_all(db, 2, 11.0, sw_result(upgrade_time="120"))
    record = only(db)
    assert msgspec.json.decode(msgspec.json.encode(record), type=UpgradeRecord) == record
