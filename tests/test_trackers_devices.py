"""The device tracker: registry merge by entry id, soft delete, latest data by event time."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iotpush import testing
from iotpush.models import Notification, decode, format_time
from iotpush.trackers import DeviceRecord, apply_all, find_devices, get_device
from tests.conftest import tracker_db

T0 = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def db(tracker_conn: sqlite3.Connection) -> sqlite3.Connection:
    """Each test runs on SQLite and on PostgreSQL (`tests.conftest.tracker_conn`)."""
    return tracker_conn


def added(device: str = "d1", **info: Any) -> Notification:
    info = {"node_id": "861152449390928", "status": "OFFLINE", **info}
    return testing.build(
        "deviceAdded", device_id=device, gateway_id="gw", node_type="ENDPOINT", device_info=info
    )


def changed(device: str = "d1", gateway: str = "gw", **info: Any) -> Notification:
    # The default deviceInfoChanged sets status and statusDetail; start from nothing changed.
    empty = dict.fromkeys(("status", "status_detail"))
    return testing.build(
        "deviceInfoChanged", device_id=device, gateway_id=gateway, device_info={**empty, **info}
    )


def deleted(device: str = "d1") -> Notification:
    return testing.build("deviceDeleted", device_id=device, gateway_id="gw")


def report(
    data: dict[str, Any], seconds: int = 0, device: str = "d1", service: str = "Meter"
) -> Notification:
    when = format_time(T0 + dt.timedelta(seconds=seconds))
    svc = {"service_id": service, "service_type": service, "data": data, "event_time": when}
    return testing.build("deviceDataChanged", device_id=device, gateway_id="gw", service=svc)


def device(db: sqlite3.Connection, device_id: str = "d1") -> DeviceRecord:
    record = get_device(db, device_id)
    assert record is not None
    return record


# --- registry ---------------------------------------------------------------------------------


def test_apply_device_added_registers_the_device(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, added())
    record = device(db)
    assert record.info == {
        "nodeId": "861152449390928", "status": "OFFLINE", "statusDetail": "NOT_ACTIVE",
    }  # fmt: skip
    assert (record.status, record.gateway_id, record.node_type) == ("OFFLINE", "gw", "ENDPOINT")
    assert (record.created_at, record.updated_at, record.deleted_at) == (10.0, 10.0, None)


def test_apply_info_changed_merges_only_non_null_members(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, added(name="meter-1"))
    apply_all(db, 2, 11.0, changed(status="ONLINE", sw_version="1.2"))
    record = device(db)
    assert record.info == {
        "nodeId": "861152449390928", "name": "meter-1", "status": "ONLINE",
        "statusDetail": "NOT_ACTIVE", "swVersion": "1.2",
    }  # fmt: skip
    assert (record.status, record.updated_at) == ("ONLINE", 11.0)


def test_apply_older_info_change_late_keeps_newer_members(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, added())
    apply_all(db, 5, 15.0, changed(status="ONLINE", gateway="gw-new"))
    apply_all(db, 3, 16.0, changed(status="ABNORMAL", battery_level="40", gateway="gw-old"))
    record = device(db)
    assert record.info["status"] == "ONLINE"  # entry 5 set it; entry 3 is older
    assert record.info["batteryLevel"] == "40"  # nothing newer set it
    assert (record.status, record.gateway_id) == ("ONLINE", "gw-new")


def test_apply_bind_device_records_result_and_info(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, added())
    info = {"status": "ONLINE", "model": "WM-200", "node_id": "861152449390928"}
    apply_all(db, 2, 11.0, testing.build("bindDevice", device_id="d1", device_info=info))
    record = device(db)
    assert (record.bind_result, record.status, record.info["model"]) == (
        "succeeded", "ONLINE", "WM-200",
    )  # fmt: skip
    assert record.gateway_id == "gw"  # bindDevice carries no gateway


def test_apply_keeps_unknown_device_info_members(db: sqlite3.Connection) -> None:
    body = msgspec.json.decode(testing.encode(added()))
    body["deviceInfo"]["isHD"] = True
    body["deviceInfo"]["vendorThing"] = "x"
    apply_all(db, 1, 10.0, decode(msgspec.json.encode(body)))
    assert (device(db).info["isHD"], device(db).info["vendorThing"]) == (True, "x")


def test_apply_same_registry_entry_twice_changes_nothing(db: sqlite3.Connection) -> None:
    first = added()
    apply_all(db, 1, 10.0, first)
    apply_all(db, 2, 11.0, changed(status="ONLINE"))
    before = device(db)
    apply_all(db, 1, 50.0, first)
    assert device(db) == before


def test_apply_deleted_soft_deletes(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, added("d1"))
    apply_all(db, 2, 11.0, added("d2"))
    apply_all(db, 3, 12.0, deleted("d1"))
    record = device(db, "d1")
    assert (record.deleted_at, record.info["nodeId"]) == (12.0, "861152449390928")
    assert [r.device_id for r in find_devices(db)] == ["d2"]
    assert [r.device_id for r in find_devices(db, include_deleted=True)] == ["d1", "d2"]


def test_apply_newer_device_added_revives_a_deleted_device(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, added())
    apply_all(db, 2, 11.0, deleted())
    apply_all(db, 3, 12.0, added(status="ONLINE"))
    record = device(db)
    assert (record.deleted_at, record.status) == (None, "ONLINE")
    assert [r.device_id for r in find_devices(db)] == ["d1"]


def test_apply_older_device_added_late_does_not_revive(db: sqlite3.Connection) -> None:
    apply_all(db, 2, 11.0, deleted())
    apply_all(db, 1, 12.0, added())
    assert device(db).deleted_at == 11.0
    assert find_devices(db) == []


# --- data -------------------------------------------------------------------------------------


def test_apply_data_keeps_the_latest_event_time(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, report({"reading": 5, "flow": 1}, seconds=60))
    apply_all(db, 2, 11.0, report({"reading": 4}, seconds=30))  # stale, arrived later
    data = device(db).data["Meter"]
    assert (data["reading"].value, data["reading"].entry_id) == (5, 1)
    assert data["reading"].event_time == "20261121T100100Z"
    assert data["reading"].event_ts == (T0 + dt.timedelta(seconds=60)).timestamp()
    apply_all(db, 3, 12.0, report({"reading": 6}, seconds=60))  # same time, newer entry
    assert device(db).data["Meter"]["reading"].value == 6
    assert device(db).data["Meter"]["flow"].value == 1


def test_apply_datas_changed_sets_every_service(db: sqlite3.Connection) -> None:
    services = [
        {"service_id": "Battery", "service_type": "Battery", "data": {"batteryLevel": 87}},
        {"service_id": "Temperature", "service_type": "Temperature", "data": {"temp": 21.5}},
    ]
    n = testing.build("deviceDatasChanged", device_id="d1", gateway_id="gw", services=services)
    apply_all(db, 1, 10.0, n)
    data = device(db).data
    assert {s: {p: v.value for p, v in props.items()} for s, props in data.items()} == {
        "Battery": {"batteryLevel": 87}, "Temperature": {"temp": 21.5},
    }  # fmt: skip


def test_apply_data_makes_an_unregistered_device_known(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, report({"reading": {"nested": [1, 2]}}))
    record = device(db)
    assert (record.info, record.gateway_id, record.status, record.node_type) == (
        {},
        "gw",
        None,
        None,
    )
    assert record.data["Meter"]["reading"].value == {"nested": [1, 2]}


def test_apply_unparseable_event_time_counts_as_received(db: sqlite3.Connection) -> None:
    svc = {"service_id": "Meter", "service_type": "Meter", "data": {"r": 1}, "event_time": "soon"}
    apply_all(db, 1, 123.5, testing.build("deviceDataChanged", device_id="d1", service=svc))
    point = device(db).data["Meter"]["r"]
    assert (point.event_time, point.event_ts) == ("soon", 123.5)


@settings(max_examples=150, deadline=None)
@given(
    reports=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 3), st.integers(-5, 5)),
        min_size=1,
        max_size=10,
    ),
    data=st.data(),
)
def test_apply_data_in_any_order_keeps_max_event_time_then_entry_id(
    tmp_path_factory: pytest.TempPathFactory,
    reports: list[tuple[str, int, int]],
    data: st.DataObject,
) -> None:
    order = data.draw(st.permutations(range(len(reports))), "application order")
    again = data.draw(st.lists(st.sampled_from(order), max_size=3), "applied again")
    with contextlib.closing(tracker_db(tmp_path_factory.mktemp("devices") / "t.db")) as db:
        for index in [*order, *again]:
            name, seconds, value = reports[index]
            apply_all(db, index + 1, 100.0 + index, report({name: value}, seconds=seconds))
        latest = {p: (v.value, v.entry_id) for p, v in device(db).data["Meter"].items()}
    expected: dict[str, tuple[int, int]] = {}
    for name in {name for name, _, _ in reports}:
        winner = max(
            (seconds, i + 1, value) for i, (n, seconds, value) in enumerate(reports) if n == name
        )
        expected[name] = (winner[2], winner[1])
    assert latest == expected


# --- queries ----------------------------------------------------------------------------------


def test_get_device_unknown_is_none(db: sqlite3.Connection) -> None:
    assert get_device(db, "nope") is None


def test_find_devices_filters_by_status_and_pages_by_id(db: sqlite3.Connection) -> None:
    for i in range(7):
        apply_all(
            db, i + 1, 10.0 + i, added(f"dev-{6 - i}", status="ONLINE" if i % 2 else "OFFLINE")
        )
    apply_all(db, 20, 30.0, report({"r": 1}, device="dev-3"))
    seen: list[str] = []
    after: str | None = None
    while page := find_devices(db, limit=3, after=after):
        seen += [r.device_id for r in page]
        after = page[-1].device_id
    assert seen == [f"dev-{i}" for i in range(7)]
    assert [r.device_id for r in find_devices(db, status="ONLINE")] == ["dev-1", "dev-3", "dev-5"]
    assert find_devices(db, status="ONLINE")[1].data["Meter"]["r"].value == 1


def test_device_record_encodes_as_json(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, added())
    apply_all(db, 2, 11.0, report({"reading": 5}))
    record = device(db)
    encoded = msgspec.json.decode(msgspec.json.encode(record))
    assert encoded["data"]["Meter"]["reading"]["value"] == 5
    assert msgspec.json.decode(msgspec.json.encode(record), type=DeviceRecord) == record
