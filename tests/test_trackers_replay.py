"""All trackers together: dispatch, portable schema, and rebuild by replay after RESET."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iotpush import testing, trackers
from iotpush.models import Notification, Route, decode
from iotpush.trackers import (
    RESET,
    SCHEMA,
    TRACKED_TYPES,
    apply_all,
    expect,
    expect_shadow,
    find_commands,
    find_devices,
    find_upgrades,
    get_command,
    get_device,
    get_shadow,
    get_upgrade,
    overdue,
    reset,
    shadow_history,
    unsynced,
)
from tests.conftest import EXAMPLES, tracker_db

DEVICES = ["d1", "d2"]
COMMANDS = ["c1", "c2"]
OPERATIONS = ["op-1", "op-2"]
CODES = ["SENT", "DELIVERED", "SUCCESS", "FAILED", "TIMEOUT", "PENDING", "bogus"]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    with contextlib.closing(tracker_db(tmp_path / "t.db")) as conn:
        yield conn


def tables(db: sqlite3.Connection) -> list[str]:
    rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    return [name for (name,) in rows.fetchall()]


def dump(db: sqlite3.Connection) -> dict[str, list[str]]:
    """Every row of every tracker table, in a stable order."""
    return {
        table: sorted(repr(row) for row in db.execute(f"SELECT * FROM {table}").fetchall())
        for table in tables(db)
    }


def snapshot(db: sqlite3.Connection) -> tuple[Any, ...]:
    """Every query's answer, and every row."""
    return (
        [get_command(db, c) for c in COMMANDS],
        find_commands(db, limit=1000),
        overdue(db, now=5000.0),
        [get_shadow(db, d) for d in DEVICES],
        unsynced(db),
        [shadow_history(db, d, limit=1000) for d in DEVICES],
        [get_device(db, d) for d in DEVICES],
        find_devices(db, include_deleted=True, limit=1000),
        find_devices(db, status="ONLINE"),
        [get_upgrade(db, op) for op in OPERATIONS],
        find_upgrades(db, limit=1000),
        dump(db),
    )


# --- a stream of notifications about a few devices, commands and upgrades ----------------------


def build(kind: str, **overrides: Any) -> Notification:
    return testing.build(kind, seed=7, **overrides)


devices = st.sampled_from(DEVICES)
commands = st.sampled_from(COMMANDS)
operations = st.sampled_from(OPERATIONS)
seconds = st.integers(0, 3)


def _data(device: str, name: str, second: int, value: int) -> Notification:
    svc = {
        "service_id": "Meter",
        "data": {name: value},
        "event_time": f"20261121T1000{second:02d}Z",
    }
    return build("deviceDataChanged", device_id=device, gateway_id="gw", service=svc)


def _info(device: str, status: str | None, battery: str | None) -> Notification:
    info = {"status": status, "status_detail": None, "battery_level": battery}
    return build("deviceInfoChanged", device_id=device, gateway_id=device, device_info=info)


notifications = st.one_of(
    st.builds(
        lambda c, d, code: build(
            "nbCommandStatusChanged", command_id=c, device_id=d, result={"result_code": code}
        ),
        commands, devices, st.sampled_from(CODES),
    ),
    st.builds(
        lambda c, s: build("messageConfirm", header={"request_id": c, "status": s}),
        commands, st.sampled_from(["sent", "delivered", "executed"]),
    ),
    st.builds(lambda c: build("commandRsp", header={"request_id": c}), commands),
    st.builds(
        lambda d, svc, s, v: build(
            "deviceDesiredPropertiesModifyStatusChanged",
            device_id=d, service_id=svc, status=s, properties={"v": v},
        ),
        devices, st.sampled_from(["Device", "Net"]), st.sampled_from(["DELIVERED", "FAILED"]),
        st.integers(0, 2),
    ),
    st.builds(
        lambda d, s: build("deviceAdded", device_id=d, gateway_id=d, device_info={"status": s}),
        devices, st.sampled_from(["ONLINE", "OFFLINE"]),
    ),
    st.builds(
        _info, devices, st.sampled_from([None, "ONLINE", "ABNORMAL"]),
        st.sampled_from([None, "10", "90"]),
    ),
    st.builds(lambda d: build("deviceDeleted", device_id=d, gateway_id=d), devices),
    st.builds(
        lambda d, r: build("bindDevice", device_id=d, result_code=r),
        devices, st.sampled_from(["succeeded", "expired"]),
    ),
    st.builds(_data, devices, st.sampled_from(["a", "b"]), seconds, st.integers(0, 9)),
    st.builds(
        lambda op, d, s: build(
            "swUpgradeStateChangeNotify", operation_id=op, sub_operation_id="s", device_id=d,
            sw_upgrade_state=s,
        ),
        operations, devices, st.sampled_from(["downloading", "downloaded", "updating", "idle"]),
    ),
    st.builds(
        lambda op, d, step: build(
            "fwUpgradeStateChangeNotify", operation_id=op, sub_operation_id="s", device_id=d,
            step=step,
        ),
        operations, devices, st.sampled_from(["0", "1", "2", "3"]),
    ),
    st.builds(
        lambda op, d, r: build(
            "swUpgradeResultNotify", operation_id=op, sub_operation_id="s", device_id=d,
            sw_upgrade_result=r,
        ),
        operations, devices, st.sampled_from(["SUCCESS", "FAIL"]),
    ),
    st.builds(
        lambda op, d, r: build(
            "fwUpgradeResultNotify", operation_id=op, sub_operation_id="s", device_id=d, status=r
        ),
        operations, devices, st.sampled_from(["SUCCESS", "FAIL"]),
    ),
    st.builds(lambda: build("ruleEvent")),
)  # fmt: skip


def expectations(db: sqlite3.Connection) -> None:
    expect(db, "c1", "d1", deadline=1004.0, now=999.0)
    expect(db, "c9", "d2", deadline=1010.0, now=999.5)
    expect_shadow(db, "d1", "Device", {"v": 1}, now=1002.0)


@settings(max_examples=120, deadline=None)
@given(stream=st.lists(notifications, min_size=1, max_size=25), data=st.data())
def test_reset_and_replay_in_id_order_rebuilds_what_any_application_order_built(
    tmp_path_factory: pytest.TempPathFactory, stream: list[Notification], data: st.DataObject
) -> None:
    # Live, entries can be applied out of id order (an operator replays a dead entry) and twice.
    order = data.draw(st.permutations(range(len(stream))), "application order")
    again = data.draw(st.lists(st.sampled_from(order), max_size=5), "applied again")
    with contextlib.closing(tracker_db(tmp_path_factory.mktemp("replay") / "t.db")) as db:
        expectations(db)
        for index in [*order, *again]:
            apply_all(db, index + 1, 1000.0 + index, stream[index])
        live = snapshot(db)
        reset(db)
        for index, notification in enumerate(stream):
            apply_all(db, index + 1, 1000.0 + index, notification)
        assert snapshot(db) == live
        for index, notification in enumerate(stream):  # and once more: nothing changes
            apply_all(db, index + 1, 1000.0 + index, notification)
        assert snapshot(db) == live


def test_reset_keeps_expectations_and_drops_everything_else(db: sqlite3.Connection) -> None:
    expectations(db)
    apply_all(db, 1, 1000.0, build("nbCommandStatusChanged", command_id="c1", device_id="d1"))
    apply_all(db, 2, 1003.0, build("deviceDesiredPropertiesModifyStatusChanged", device_id="d1",
                                   service_id="Device", properties={"v": 1}))  # fmt: skip
    apply_all(db, 3, 1004.0, build("deviceAdded", device_id="d1"))
    assert get_shadow(db, "d1")[0].pending is False
    reset(db)
    record = get_command(db, "c1")
    assert record is not None
    assert (record.state, record.deadline, record.history) == ("PENDING", 1004.0, ())
    assert [r.command_id for r in find_commands(db)] == ["c1", "c9"]
    assert [(r.pending, r.status) for r in get_shadow(db, "d1")] == [(True, None)]
    assert find_devices(db, include_deleted=True) == []


def test_reset_statements_run_one_by_one_inside_a_transaction(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 1000.0, build("deviceAdded", device_id="d1"))
    db.execute("BEGIN")
    for sql in RESET:
        db.execute(sql)
    db.execute("ROLLBACK")
    assert get_device(db, "d1") is not None


def test_apply_all_writes_inside_the_callers_transaction(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")
    apply_all(db, 1, 1000.0, build("deviceAdded", device_id="d1"))
    apply_all(db, 2, 1001.0, build("nbCommandStatusChanged", command_id="c1", device_id="d1"))
    assert get_device(db, "d1") is not None
    db.execute("ROLLBACK")
    assert (get_device(db, "d1"), get_command(db, "c1")) == (None, None)


# --- dispatch ---------------------------------------------------------------------------------


def test_tracked_types_are_the_lifecycle_notifications() -> None:
    assert sorted(TRACKED_TYPES) == sorted([
        "nbCommandStatusChanged", "messageConfirm", "commandRsp",
        "deviceDesiredPropertiesModifyStatusChanged",
        "deviceAdded", "bindDevice", "deviceInfoChanged", "deviceDeleted",
        "deviceDataChanged", "deviceDatasChanged",
        "swUpgradeStateChangeNotify", "swUpgradeResultNotify",
        "fwUpgradeStateChangeNotify", "fwUpgradeResultNotify",
        "device:create", "device:update", "device:delete", "device.status:update",
        "device.property:report", "device.data:update", "device.command.status:update",
        "device.message.status:update", "batchtask:update",
    ])  # fmt: skip


@pytest.mark.parametrize("kind", sorted(set(testing.ALL_KINDS) - TRACKED_TYPES))
def test_apply_all_untracked_type_writes_nothing(db: sqlite3.Connection, kind: str) -> None:
    apply_all(db, 1, 1000.0, testing.example(kind))
    assert all(rows == [] for rows in dump(db).values())


@pytest.mark.parametrize("kind", sorted(TRACKED_TYPES))
def test_apply_all_tracked_type_writes_rows(db: sqlite3.Connection, kind: str) -> None:
    apply_all(db, 1, 1000.0, testing.example(kind))
    assert any(rows for rows in dump(db).values())


def test_apply_all_spec_examples_are_tracked(db: sqlite3.Connection) -> None:
    for entry_id, (name, body) in enumerate(EXAMPLES.items(), start=1):
        route: Route = "command" if "nbCommandStatusChanged" in name else "notify"
        apply_all(db, entry_id, 1000.0 + entry_id, decode(body, route))
    device_id = "3f1e9a52-7c41-4b8e-9d2a-61f0c8b5e7a4"
    nb_id = "108a9c71e3d34d0a9a6b9a11c2f0b7e2"
    nb = get_command(db, nb_id)
    assert nb is not None and (nb.state, nb.device_id) == ("DELIVERED", device_id)
    assert [(r.command_id, r.state) for r in find_commands(db, device=device_id)] == [
        ("1005", "DELIVERED"), ("1006", "SUCCESSFUL"), (nb_id, "DELIVERED"),
    ]  # fmt: skip
    record = get_device(db, device_id)
    assert record is not None
    assert record.deleted_at == 1007.0  # example 07 deletes it
    assert record.data["Brightness"]["brightness"].value == 80
    assert record.status == "ONLINE"  # example 03 changed it
    assert [r.status for r in get_shadow(db, device_id)] == ["DELIVERED"]
    assert [(r.kind, r.result) for r in get_upgrade(db, "op-1")] == [("sw", "SUCCESS")]
    assert [(r.kind, r.state, r.result) for r in get_upgrade(db, "op-2")] == [
        ("fw", "downloading", "SUCCESS"),
    ]  # fmt: skip


# --- schema -----------------------------------------------------------------------------------


def test_schema_runs_twice_without_harm(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 1000.0, build("deviceAdded", device_id="d1"))
    db.executescript(SCHEMA)
    assert get_device(db, "d1") is not None


COLUMN = re.compile(r"^\w+ (TEXT|INTEGER|BIGINT|DOUBLE PRECISION)( NOT NULL)?( PRIMARY KEY)?,?$")


def test_schema_is_portable_sql() -> None:
    statements = [s.strip() for s in SCHEMA.split(";") if s.strip()]
    for statement in statements:
        head, *body = statement.splitlines()
        assert re.match(r"CREATE (TABLE|INDEX) IF NOT EXISTS \w+", head), head
        if head.startswith("CREATE TABLE"):
            for line in (line.strip() for line in body[:-1]):
                assert COLUMN.match(line) or line.startswith("PRIMARY KEY ("), line


@pytest.mark.parametrize("module", ["commands", "shadow", "devices", "upgrades", "_common"])
def test_tracker_sql_avoids_sqlite_only_syntax(module: str) -> None:
    source = (Path(trackers.__file__).parent / f"{module}.py").read_text()
    for word in ("INSERT OR", "REPLACE INTO", "AUTOINCREMENT", "WITHOUT ROWID", "RETURNING",
                 "datetime(", "json_extract", "IFNULL", " REAL"):  # fmt: skip
        assert word not in source, word
