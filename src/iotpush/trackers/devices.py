"""Device tracker: the registry of devices and the latest value of each reported property.

The registry is fed by ``deviceAdded``, ``bindDevice``, ``deviceInfoChanged`` and
``deviceDeleted``. Device information merges member by member, under the platform's member names
(``nodeId``, ``swVersion``; unknown members kept); ``null`` members are "unchanged". Each member,
the gateway, the node type and the bind result remember the entry that set them, and only a newer
entry replaces them, so a late push never undoes a newer one. A device is deleted while its newest
``deviceDeleted`` is newer than its newest ``deviceAdded`` (a soft delete: it stays queryable).

``deviceDataChanged`` and ``deviceDatasChanged`` set one row per (device, service, property):
the value with the latest ``eventTime`` wins, the higher entry id on a tie. An ``eventTime`` that
does not parse counts as the time the push was received. Data reports also make a device known.

A device's ``created_at`` and ``updated_at`` are the receive times of the first and the latest
push about it (registry or data).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from ..models import (
    BindDevice,
    DeviceAdded,
    DeviceDataChanged,
    DeviceDatasChanged,
    DeviceDeleted,
    DeviceInfoChanged,
    Notification,
    parse_time,
)
from ._common import (
    Cursor,
    Database,
    Finished,
    History,
    Tracker,
    dumps,
    limit_sql,
    loads,
    upsert_sql,
)

__all__ = [
    "DELETED", "FINISHED", "HANDLES", "HISTORY", "PROJECTION", "RESET", "SCHEMA", "DataPoint",
    "DeviceRecord", "apply", "find_devices", "get_device",
]  # fmt: skip

HANDLES: Final = (
    DeviceAdded,
    BindDevice,
    DeviceInfoChanged,
    DeviceDeleted,
    DeviceDataChanged,
    DeviceDatasChanged,
)

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    info_entries TEXT NOT NULL,
    status TEXT,
    gateway_id TEXT,
    gateway_entry_id BIGINT,
    node_type TEXT,
    node_type_entry_id BIGINT,
    bind_result TEXT,
    bind_entry_id BIGINT,
    added_entry_id BIGINT,
    deleted_entry_id BIGINT,
    deleted_at DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS devices_status ON devices (status, device_id);
CREATE INDEX IF NOT EXISTS devices_deleted ON devices (updated_at)
    WHERE deleted_entry_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS device_events (
    entry_id BIGINT PRIMARY KEY,
    device_id TEXT NOT NULL,
    notify_type TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS device_events_device ON device_events (device_id, entry_id);
CREATE TABLE IF NOT EXISTS device_data (
    device_id TEXT NOT NULL,
    service_id TEXT NOT NULL,
    property TEXT NOT NULL,
    service_type TEXT,
    value TEXT NOT NULL,
    event_time TEXT NOT NULL,
    event_ts DOUBLE PRECISION NOT NULL,
    entry_id BIGINT NOT NULL,
    PRIMARY KEY (device_id, service_id, property)
);
"""

RESET: Final = ("DELETE FROM device_events", "DELETE FROM device_data", "DELETE FROM devices")

_COLUMNS: Final = (
    "device_id", "info", "info_entries", "status", "gateway_id", "gateway_entry_id", "node_type",
    "node_type_entry_id", "bind_result", "bind_entry_id", "added_entry_id", "deleted_entry_id",
    "deleted_at", "created_at", "updated_at",
)  # fmt: skip
_UPSERT: Final = upsert_sql("devices", _COLUMNS, ["device_id"])
_LOAD: Final = f"SELECT {', '.join(_COLUMNS)} FROM devices WHERE device_id = ?"  # noqa: S608
_SET_DATA: Final = """
INSERT INTO device_data (device_id, service_id, property, service_type, value, event_time,
    event_ts, entry_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (device_id, service_id, property) DO UPDATE SET service_type = excluded.service_type,
    value = excluded.value, event_time = excluded.event_time, event_ts = excluded.event_ts,
    entry_id = excluded.entry_id
WHERE excluded.event_ts > device_data.event_ts
    OR (excluded.event_ts = device_data.event_ts AND excluded.entry_id > device_data.entry_id)
"""
# A data report only makes the device known, moves its times and may set its gateway: one
# statement instead of loading and rewriting the row (data reports are most of the traffic).
_TOUCH: Final = """
INSERT INTO devices (device_id, info, info_entries, gateway_id, gateway_entry_id, created_at,
    updated_at)
VALUES (?, '{}', '{}', ?, ?, ?, ?)
ON CONFLICT (device_id) DO UPDATE SET
    created_at = CASE WHEN excluded.created_at < devices.created_at
        THEN excluded.created_at ELSE devices.created_at END,
    updated_at = CASE WHEN excluded.updated_at > devices.updated_at
        THEN excluded.updated_at ELSE devices.updated_at END,
    gateway_id = CASE WHEN excluded.gateway_entry_id > COALESCE(devices.gateway_entry_id, 0)
        THEN excluded.gateway_id ELSE devices.gateway_id END,
    gateway_entry_id = CASE WHEN excluded.gateway_entry_id > COALESCE(devices.gateway_entry_id, 0)
        THEN excluded.gateway_entry_id ELSE devices.gateway_entry_id END
"""
_DATA_COLUMNS: Final = (
    "device_id", "service_id", "property", "value", "event_time", "event_ts", "entry_id",
)  # fmt: skip
_RECORD_COLUMNS: Final = (
    "device_id", "info", "status", "gateway_id", "node_type", "bind_result", "created_at",
    "updated_at", "deleted_at", "deleted_entry_id", "added_entry_id",
)  # fmt: skip
# A page's devices, then their data in a second query: joined, each data row would carry its
# device's whole row again (the info JSON six times over for six properties).
_PAGE: Final = f"SELECT {', '.join(_RECORD_COLUMNS)} FROM devices"  # noqa: S608
_DATA: Final = (
    f"SELECT {', '.join(_DATA_COLUMNS)} FROM device_data"  # noqa: S608
    " WHERE device_id IN ({marks}) ORDER BY device_id, service_id, property"
)
_VERSIONED: Final = (
    ("gateway_id", "gateway_entry_id"),
    ("node_type", "node_type_entry_id"),
    ("bind_result", "bind_entry_id"),
)
_LIVE: Final = "(deleted_entry_id IS NULL OR deleted_entry_id < COALESCE(added_entry_id, 0))"


class DataPoint(msgspec.Struct, frozen=True, kw_only=True):
    """A property's latest reported value: its platform ``eventTime`` and that as Unix time."""

    value: Any
    event_time: str
    event_ts: float
    entry_id: int


class DeviceRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What is known of a device.

    Attributes:
        info: The merged ``deviceInfo`` members, by platform name (``swVersion``).
        status: ``info["status"]`` (ONLINE, OFFLINE, INACTIVE, ABNORMAL), if known.
        deleted_at: When it was deleted, while it is (``None`` once added again).
        data: The latest value of each property, by service id and property name.
    """

    device_id: str
    info: dict[str, Any]
    status: str | None
    gateway_id: str | None
    node_type: str | None
    bind_result: str | None
    created_at: float
    updated_at: float
    deleted_at: float | None
    data: dict[str, dict[str, DataPoint]]


@dataclass
class _Row:
    """A devices row being merged: each versioned value with the entry id that set it."""

    device_id: str
    created_at: float
    updated_at: float
    info: dict[str, Any] = field(default_factory=dict)
    info_entries: dict[str, int] = field(default_factory=dict)
    versioned: dict[str, tuple[Any, int | None]] = field(default_factory=dict)
    added_entry_id: int | None = None
    deleted_entry_id: int | None = None
    deleted_at: float | None = None

    def set(self, name: str, value: Any, entry_id: int) -> None:
        if value is not None and entry_id > (self.versioned.get(name, (None, None))[1] or 0):
            self.versioned[name] = (value, entry_id)

    def merge_info(self, info: Any, entry_id: int) -> None:
        if not isinstance(info, dict):
            return
        for member, value in info.items():
            if value is not None and entry_id > self.info_entries.get(member, 0):
                self.info[member] = value
                self.info_entries[member] = entry_id

    def values(self) -> tuple[Any, ...]:
        def pair(name: str) -> tuple[Any, int | None]:
            return self.versioned.get(name, (None, None))

        return (
            self.device_id, dumps(self.info), dumps(self.info_entries), self.info.get("status"),
            *pair("gateway_id"), *pair("node_type"), *pair("bind_result"),
            self.added_entry_id, self.deleted_entry_id, self.deleted_at,
            self.created_at, self.updated_at,
        )  # fmt: skip


def _load(asked: Cursor, device_id: str, received_at: float) -> _Row:
    """The device's row from ``asked`` (the answer of `_LOAD`), or a new one."""
    row = asked.fetchone()
    if row is None:
        return _Row(device_id, received_at, received_at)
    r = dict(zip(_COLUMNS, row, strict=True))
    versioned = {
        name: (r[name], r[entry_column]) for name, entry_column in _VERSIONED if r[name] is not None
    }
    return _Row(
        device_id, min(r["created_at"], received_at), max(r["updated_at"], received_at),
        loads(r["info"]), loads(r["info_entries"]), versioned,
        r["added_entry_id"], r["deleted_entry_id"], r["deleted_at"],
    )  # fmt: skip


def _timestamp(event_time: str, received_at: float) -> float:
    try:
        return parse_time(event_time).timestamp()
    except (TypeError, ValueError):
        return received_at


def apply(db: Database, entry_id: int, received_at: float, notification: Notification) -> None:
    """Merge a registry push into its device, or a data report into the latest values.

    Applying an entry twice changes nothing: registry entries are logged and skipped when
    seen, and data and times only move to strictly newer values.
    """
    n = notification
    if not isinstance(n, HANDLES):
        return
    if isinstance(n, DeviceDataChanged | DeviceDatasChanged):
        services = [n.service] if isinstance(n, DeviceDataChanged) else n.services
        for service in services:
            ts = _timestamp(service.event_time, received_at)
            for name, value in service.data.items():
                db.execute(
                    _SET_DATA,
                    (n.device_id, service.service_id, name, service.service_type, dumps(value),
                     service.event_time, ts, entry_id),
                )  # fmt: skip
        db.execute(_TOUCH, (n.device_id, n.gateway_id, entry_id, received_at, received_at))
        return
    logged = db.execute(
        "INSERT INTO device_events (entry_id, device_id, notify_type, received_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (entry_id) DO NOTHING",
        (entry_id, n.device_id, n.notify_type, received_at),
    )
    # Asked before the row count is read: a backend that queues statements (PostgreSQL's
    # pipeline) waits for the database once for both.
    asked = db.execute(_LOAD, (n.device_id,))
    if not logged.rowcount:
        return
    row = _load(asked, n.device_id, received_at)
    if not isinstance(n, BindDevice):
        row.set("gateway_id", n.gateway_id, entry_id)
    if isinstance(n, DeviceAdded | BindDevice | DeviceInfoChanged):
        info = n.json.get("deviceInfo")  # the raw object keeps members the model does not know
        row.merge_info(info, entry_id)
    if isinstance(n, DeviceAdded):
        row.set("node_type", n.node_type, entry_id)
        row.added_entry_id = max(row.added_entry_id or 0, entry_id)
    elif isinstance(n, BindDevice):
        row.set("bind_result", n.result_code, entry_id)
    elif isinstance(n, DeviceDeleted) and entry_id > (row.deleted_entry_id or 0):
        row.deleted_entry_id, row.deleted_at = entry_id, received_at
    db.execute(_UPSERT, row.values())


def _select(
    db: Database, clauses: Sequence[str], params: Sequence[Any], limit: int | None
) -> list[DeviceRecord]:
    args = list(params)
    where = " AND ".join(clauses) or "1 = 1"
    sql = f"{_PAGE} WHERE {where} ORDER BY device_id{limit_sql(limit, args)}"
    records: dict[str, DeviceRecord] = {}
    for row in db.execute(sql, args).fetchall():
        deleted = row[9] is not None and row[9] > (row[10] or 0)
        records[row[0]] = DeviceRecord(
            device_id=row[0], info=loads(row[1]), status=row[2], gateway_id=row[3],
            node_type=row[4], bind_result=row[5], created_at=row[6], updated_at=row[7],
            deleted_at=row[8] if deleted else None, data={},
        )  # fmt: skip
    if not records:
        return []
    data = _DATA.format(marks=", ".join("?" * len(records)))
    for device, service, name, value, event_time, event_ts, entry_id in db.execute(
        data, list(records)
    ).fetchall():
        point = DataPoint(
            value=loads(value), event_time=event_time, event_ts=event_ts, entry_id=entry_id
        )
        records[device].data.setdefault(service, {})[name] = point
    return list(records.values())


def get_device(db: Database, device_id: str) -> DeviceRecord | None:
    """Return what is known of a device (deleted or not), or ``None`` if it never was seen."""
    found = _select(db, ["device_id = ?"], [device_id], None)
    return found[0] if found else None


def find_devices(
    db: Database,
    status: str | None = None,
    include_deleted: bool = False,
    limit: int = 100,
    after: str | None = None,
) -> list[DeviceRecord]:
    """Return devices ordered by device id, one page at a time.

    Pass the last device id of a page as ``after`` to get the next one.

    Args:
        db: The connection.
        status: Only devices whose ``deviceInfo.status`` is this (``ONLINE``).
        include_deleted: Include devices deleted and not added again.
        limit: Page size, 1 to 1000.
        after: Only devices whose id sorts after this one.

    Raises:
        ValueError: ``limit`` is out of range.
    """
    clauses: list[str] = [] if include_deleted else [_LIVE]
    params: list[Any] = []
    if status is not None:
        clauses.append("status = ?")
        params.append(status)
    if after is not None:
        clauses.append("device_id > ?")
        params.append(after)
    return _select(db, clauses, params, limit)


HISTORY: Final = History(
    "device_events",
    "EXISTS (SELECT 1 FROM devices AS d WHERE d.device_id = device_events.device_id"
    " AND (device_events.entry_id IN (d.gateway_entry_id, d.node_type_entry_id,"
    " d.bind_entry_id, d.added_entry_id, d.deleted_entry_id)"
    # `info_entries` is compact JSON, member -> entry id: {"name":12,"nodeId":9}
    " OR d.info_entries LIKE '%:' || CAST(device_events.entry_id AS TEXT) || ',%'"
    " OR d.info_entries LIKE '%:' || CAST(device_events.entry_id AS TEXT) || '}'))",
)
"""What retention keeps of the registry's history: the pushes whose values the device record
holds (its information members, gateway, node type, bind result, addition and deletion)."""

DELETED: Final = "deleted_entry_id IS NOT NULL AND deleted_entry_id >= COALESCE(added_entry_id, 0)"
"""SQL: the device (a row of ``devices``) is deleted (the opposite of the live devices)."""

FINISHED: Final = Finished(
    "devices",
    f"SELECT device_id FROM devices WHERE {DELETED} AND updated_at < ? ORDER BY updated_at",  # noqa: S608
    f"DELETE FROM devices WHERE device_id = ? AND {DELETED} AND updated_at < ?",  # noqa: S608
    (
        "DELETE FROM device_events WHERE device_id = ?",
        "DELETE FROM device_data WHERE device_id = ?",
    ),
)
"""What finished-retention deletes: each deleted device's registry record, latest data and
history, once nothing was heard about it (a push of data makes it heard of)."""

PROJECTION: Final = Tracker("devices", HANDLES, apply, RESET)
"""This tracker as a `iotpush.projections.Projection`."""
