"""Shadow tracker: whether each device service's desired properties reached the device.

Fed by ``deviceDesiredPropertiesModifyStatusChanged``. Per (device, service) it keeps the last
DELIVERED properties, the last FAILED properties, and the last status overall, each "last" by
entry id, so a push applied late never overwrites a newer one. Statuses other than DELIVERED and
FAILED go to the history only.

The push does not say which write it answers. An application that wants to know whether its own
write arrived registers it with `expect_shadow`; the expectation is *confirmed* by a DELIVERED push
received at or after the expectation whose properties contain every expected property with an
equal value. A service is *unsynced* (`unsynced`) when its last status is FAILED (its newest
FAILED is newer than its newest DELIVERED), or when it has an expectation not yet confirmed.

Expectations are the application's input, not the inbox's: `RESET` keeps them (unconfirmed).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from ..models import DeviceDesiredPropertiesModifyStatusChanged, Notification
from ._common import (
    Cursor,
    Database,
    Finished,
    History,
    Tracker,
    dumps,
    key_cursor,
    key_pattern,
    limit_sql,
    loads,
    parse_key,
)
from .devices import DELETED

__all__ = [
    "CURSOR_PATTERN", "FINISHED", "HANDLES", "HISTORY", "PROJECTION", "RESET", "SCHEMA",
    "ShadowEvent", "ShadowRecord", "apply", "count_unsynced", "expect_shadow", "get_shadow",
    "parse_cursor", "shadow_history", "unsynced",
]  # fmt: skip

HANDLES: Final = (DeviceDesiredPropertiesModifyStatusChanged,)

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS shadows (
    device_id TEXT NOT NULL,
    service_id TEXT NOT NULL,
    status TEXT,
    properties TEXT,
    status_entry_id BIGINT,
    status_at DOUBLE PRECISION,
    delivered TEXT,
    delivered_entry_id BIGINT,
    delivered_at DOUBLE PRECISION,
    failed TEXT,
    failed_entry_id BIGINT,
    failed_at DOUBLE PRECISION,
    PRIMARY KEY (device_id, service_id)
);
CREATE INDEX IF NOT EXISTS shadows_failed ON shadows (device_id, service_id)
    WHERE status = 'FAILED';
CREATE TABLE IF NOT EXISTS shadow_events (
    entry_id BIGINT PRIMARY KEY,
    device_id TEXT NOT NULL,
    service_id TEXT NOT NULL,
    status TEXT NOT NULL,
    properties TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS shadow_events_service ON shadow_events (device_id, service_id, entry_id);
CREATE TABLE IF NOT EXISTS shadow_expectations (
    device_id TEXT NOT NULL,
    service_id TEXT NOT NULL,
    properties TEXT NOT NULL,
    expected_at DOUBLE PRECISION NOT NULL,
    confirmed_entry_id BIGINT,
    PRIMARY KEY (device_id, service_id)
);
CREATE INDEX IF NOT EXISTS shadow_expectations_pending ON shadow_expectations
    (device_id, service_id) WHERE confirmed_entry_id IS NULL;
"""

RESET: Final = (
    "DELETE FROM shadow_events",
    "DELETE FROM shadows",
    "UPDATE shadow_expectations SET confirmed_entry_id = NULL",
    "INSERT INTO shadows (device_id, service_id)"
    " SELECT device_id, service_id FROM shadow_expectations",
)

# Each "last" moves only forward in entry ids: a late older push leaves it alone.
_SET_LAST: Final = """
UPDATE shadows SET status = ?, properties = ?, status_entry_id = ?, status_at = ?
WHERE device_id = ? AND service_id = ? AND (status_entry_id IS NULL OR status_entry_id < ?)
"""
_SET_STATUS: Final = {
    "DELIVERED": """
UPDATE shadows SET delivered = ?, delivered_entry_id = ?, delivered_at = ?
WHERE device_id = ? AND service_id = ? AND (delivered_entry_id IS NULL OR delivered_entry_id < ?)
""",
    "FAILED": """
UPDATE shadows SET failed = ?, failed_entry_id = ?, failed_at = ?
WHERE device_id = ? AND service_id = ? AND (failed_entry_id IS NULL OR failed_entry_id < ?)
""",
}
_SEED: Final = (
    "INSERT INTO shadows (device_id, service_id) VALUES (?, ?)"
    " ON CONFLICT (device_id, service_id) DO NOTHING"
)
_CONFIRM: Final = """
UPDATE shadow_expectations SET confirmed_entry_id = ?
WHERE device_id = ? AND service_id = ? AND (confirmed_entry_id IS NULL OR confirmed_entry_id > ?)
"""
_COLUMNS: Final = """
SELECT s.device_id, s.service_id, s.status, s.properties, s.status_entry_id, s.status_at,
    s.delivered, s.delivered_entry_id, s.delivered_at, s.failed, s.failed_entry_id, s.failed_at,
    x.properties, x.expected_at, x.confirmed_entry_id
"""
_EXPECTATION: Final = (
    " LEFT JOIN shadow_expectations AS x"
    " ON x.device_id = s.device_id AND x.service_id = s.service_id"
)
_SELECT: Final = _COLUMNS + " FROM shadows AS s" + _EXPECTATION
# The two kinds of unsynced service, each read in key order through its partial index
# (shadows_failed, shadow_expectations_pending): a page costs its own rows, not the table's.
_UNSYNCED_KEYS: Final = (
    "SELECT device_id, service_id FROM shadows WHERE status = 'FAILED'",
    "SELECT device_id, service_id FROM shadow_expectations WHERE confirmed_entry_id IS NULL",
)
CURSOR_PATTERN: Final = f"^{key_pattern(2)}$"
"""What every cursor of `unsynced` matches (a JSON Schema ``pattern``)."""
# A page of each kind with its records, ordered by the table whose partial index reads it: the
# expectation drives the second, so PostgreSQL looks its shadow up rather than hash the table.
_UNSYNCED_PAGES: Final = (
    (_SELECT + " WHERE s.status = 'FAILED'", ("s",)),
    (
        _COLUMNS + " FROM shadow_expectations AS x JOIN shadows AS s"
        " ON s.device_id = x.device_id AND s.service_id = x.service_id"
        " WHERE x.confirmed_entry_id IS NULL",
        ("x", "s"),  # both bounded: a merge join starts at the cursor in each
    ),
)


class ShadowRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Where a device service's desired properties stand.

    Attributes:
        status: The last status (DELIVERED or FAILED) by entry id, with its ``properties``.
        delivered: The properties of the last DELIVERED push, ``failed`` of the last FAILED one.
        expected: The properties registered with `expect_shadow`, if any.
        confirmed_entry_id: The first DELIVERED push that confirmed ``expected``.
        pending: An expectation is registered and not confirmed yet.
        synced: Neither FAILED last nor ``pending``.
    """

    device_id: str
    service_id: str
    status: str | None
    properties: dict[str, Any] | None
    status_entry_id: int | None
    status_at: float | None
    delivered: dict[str, Any] | None
    delivered_entry_id: int | None
    delivered_at: float | None
    failed: dict[str, Any] | None
    failed_entry_id: int | None
    failed_at: float | None
    expected: dict[str, Any] | None
    expected_at: float | None
    confirmed_entry_id: int | None
    pending: bool
    synced: bool

    @property
    def cursor(self) -> str:
        """The ``after`` of `unsynced` that continues just after this record."""
        return key_cursor((self.device_id, self.service_id))


class ShadowEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One shadow status push, as received."""

    entry_id: int
    received_at: float
    device_id: str
    service_id: str
    status: str
    properties: dict[str, Any]


def _matches(expected: dict[str, Any], delivered: dict[str, Any]) -> bool:
    return all(key in delivered and delivered[key] == value for key, value in expected.items())


def apply(db: Database, entry_id: int, received_at: float, notification: Notification) -> None:
    """Record a shadow status push and move the service's "last" values it is newer than.

    Applying an entry already recorded does nothing.
    """
    if not isinstance(notification, DeviceDesiredPropertiesModifyStatusChanged):
        return
    n = notification
    properties = dumps(n.properties)
    inserted = db.execute(
        "INSERT INTO shadow_events (entry_id, device_id, service_id, status, properties,"
        " received_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (entry_id) DO NOTHING",
        (entry_id, n.device_id, n.service_id, n.status, properties, received_at),
    )
    key = (n.device_id, n.service_id)
    status = n.status.strip().upper()
    # Asked before the row count is read: a backend that queues statements (PostgreSQL's
    # pipeline) waits for the database once for both.
    asked = _expectation(db, key) if status == "DELIVERED" else None
    if not inserted.rowcount:
        return
    db.execute(_SEED, key)
    if status not in _SET_STATUS:
        return
    db.execute(_SET_LAST, (status, properties, entry_id, received_at, *key, entry_id))
    db.execute(_SET_STATUS[status], (properties, entry_id, received_at, *key, entry_id))
    if asked is not None:
        _confirm(db, key, [(entry_id, received_at, n.properties)], asked)


def _expectation(db: Database, key: tuple[str, str]) -> Cursor:
    return db.execute(
        "SELECT properties, expected_at FROM shadow_expectations"
        " WHERE device_id = ? AND service_id = ?",
        key,
    )


def _confirm(
    db: Database,
    key: tuple[str, str],
    delivered: list[tuple[int, float, dict[str, Any]]],
    asked: Cursor | None = None,
) -> None:
    """Confirm the service's expectation with the first matching DELIVERED push given
    (``asked``: the expectation, asked already by `_expectation`)."""
    row = (_expectation(db, key) if asked is None else asked).fetchone()
    if row is None:
        return
    expected, expected_at = loads(row[0]), row[1]
    for entry_id, received_at, properties in delivered:
        if received_at >= expected_at and _matches(expected, properties):
            db.execute(_CONFIRM, (entry_id, *key, entry_id))
            return


def expect_shadow(
    db: Database, device_id: str, service_id: str, properties: dict[str, Any], now: float
) -> None:
    """Register desired properties just written, so the service is unsynced until delivered.

    Replaces the service's earlier expectation. A DELIVERED push already recorded that was
    received at or after ``now`` and matches confirms it at once (pushes can beat the caller).

    Args:
        db: The connection.
        device_id: The device.
        service_id: The service whose desired properties were written.
        properties: The properties written; a DELIVERED push must carry each with an equal value.
        now: The current Unix time.
    """
    key = (device_id, service_id)
    db.execute(
        "INSERT INTO shadow_expectations (device_id, service_id, properties, expected_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (device_id, service_id) DO UPDATE"
        " SET properties = excluded.properties, expected_at = excluded.expected_at,"
        " confirmed_entry_id = NULL",
        (*key, dumps(properties), now),
    )
    db.execute(_SEED, key)
    rows = db.execute(
        "SELECT entry_id, received_at, status, properties FROM shadow_events"
        " WHERE device_id = ? AND service_id = ? AND received_at >= ? ORDER BY entry_id",
        (*key, now),
    ).fetchall()
    delivered = [(r[0], r[1], loads(r[3])) for r in rows if r[2].strip().upper() == "DELIVERED"]
    _confirm(db, key, delivered)


def _record(row: Any) -> ShadowRecord:
    status, expected_at, confirmed = row[2], row[13], row[14]
    pending = expected_at is not None and confirmed is None
    return ShadowRecord(
        device_id=row[0], service_id=row[1], status=status, properties=loads(row[3]),
        status_entry_id=row[4], status_at=row[5],
        delivered=loads(row[6]), delivered_entry_id=row[7], delivered_at=row[8],
        failed=loads(row[9]), failed_entry_id=row[10], failed_at=row[11],
        expected=loads(row[12]), expected_at=expected_at, confirmed_entry_id=confirmed,
        pending=pending, synced=not pending and status != "FAILED",
    )  # fmt: skip


def get_shadow(db: Database, device: str) -> list[ShadowRecord]:
    """Return a device's shadow records, one per service, ordered by service id."""
    sql = _SELECT + " WHERE s.device_id = ? ORDER BY s.service_id"
    return [_record(row) for row in db.execute(sql, (device,)).fetchall()]


def unsynced(
    db: Database, limit: int | None = None, after: str | None = None
) -> list[ShadowRecord]:
    """Return services whose last status is FAILED or whose expectation is unconfirmed.

    Ordered by device id, then service id, one page at a time: pass the `ShadowRecord.cursor`
    of a page's last record as ``after`` to get the next one.

    Args:
        db: The connection.
        limit: Page size, 1 to 1000; ``None``: every one.
        after: Only services after the one this cursor was taken from.

    Raises:
        ValueError: ``limit`` is out of range, or ``after`` is not a cursor (`parse_cursor`).
    """
    key = parse_cursor(after) if after is not None else None
    found: dict[tuple[str, str], Any] = {}
    for select, aliases in _UNSYNCED_PAGES:
        params: list[Any] = []
        sql = select
        for alias in aliases if key is not None else ():
            sql += f" AND ({alias}.device_id, {alias}.service_id) > (?, ?)"
            params.extend(key or ())
        first = aliases[0]
        sql += f" ORDER BY {first}.device_id, {first}.service_id{limit_sql(limit, params)}"
        found.update(((row[0], row[1]), row) for row in db.execute(sql, params).fetchall())
    # Both pages are in byte order of the ids (C collation), which is code point order in Python.
    return [_record(found[k]) for k in sorted(found)[:limit]]


def count_unsynced(db: Database) -> int:
    """Return how many services `unsynced` lists (counted through its partial indexes)."""
    union = " UNION ".join(_UNSYNCED_KEYS)
    (count,) = db.execute(f"SELECT count(*) FROM ({union}) AS k", ()).fetchone()  # noqa: S608
    return int(count)


def parse_cursor(text: str) -> tuple[str, str]:
    """Read a cursor of `unsynced` (`ShadowRecord.cursor`): the key a page continues after.

    Raises:
        ValueError: ``text`` does not match `CURSOR_PATTERN`.
    """
    key = parse_key(text, 2)
    if key is None:
        raise ValueError(f"not a cursor of the unsynced list: {text!r}")
    return key[0], key[1]


def shadow_history(
    db: Database, device: str, service_id: str | None = None, limit: int = 100
) -> list[ShadowEvent]:
    """Return a device's shadow pushes, newest entry first.

    Raises:
        ValueError: ``limit`` is not between 1 and 1000.
    """
    params: list[Any] = [device]
    sql = "SELECT entry_id, received_at, device_id, service_id, status, properties"
    sql += " FROM shadow_events WHERE device_id = ?"
    if service_id is not None:
        sql += " AND service_id = ?"
        params.append(service_id)
    sql += " ORDER BY entry_id DESC" + limit_sql(limit, params)
    return [
        ShadowEvent(
            entry_id=r[0], received_at=r[1], device_id=r[2], service_id=r[3], status=r[4],
            properties=loads(r[5]),
        )
        for r in db.execute(sql, params).fetchall()
    ]  # fmt: skip


HISTORY: Final = History(
    "shadow_events",
    "EXISTS (SELECT 1 FROM shadows AS s WHERE s.device_id = shadow_events.device_id"
    " AND s.service_id = shadow_events.service_id AND shadow_events.entry_id"
    " IN (s.status_entry_id, s.delivered_entry_id, s.failed_entry_id))"
    " OR EXISTS (SELECT 1 FROM shadow_expectations AS x"
    " WHERE x.device_id = shadow_events.device_id AND x.service_id = shadow_events.service_id"
    " AND x.confirmed_entry_id = shadow_events.entry_id)",
)
"""What retention keeps of the history: the pushes that set each service's last status, last
DELIVERED and last FAILED values, and the one that confirmed its expectation."""

_QUIET: Final = "(status_at IS NULL OR status_at < ?)"
FINISHED: Final = Finished(
    "shadows",
    # Unqualified names are the device's: shadows have none of these columns.
    "SELECT s.device_id, s.service_id FROM devices AS d JOIN shadows AS s"  # noqa: S608
    f" ON s.device_id = d.device_id WHERE {DELETED} AND updated_at < ? AND {_QUIET}",
    "DELETE FROM shadows WHERE device_id = ? AND service_id = ?"  # noqa: S608 - constants
    f" AND {_QUIET} AND EXISTS (SELECT 1 FROM devices AS d"
    f" WHERE d.device_id = shadows.device_id AND {DELETED} AND updated_at < ?)",
    (
        "DELETE FROM shadow_events WHERE device_id = ? AND service_id = ?",
        "DELETE FROM shadow_expectations WHERE device_id = ? AND service_id = ?",
    ),
)
"""What finished-retention deletes: the services of each deleted device (`devices.FINISHED`
then deletes its record), with their history and expectations, once nothing was heard about
the device nor a service since. Retention runs it before `devices.FINISHED`."""

PROJECTION: Final = Tracker("shadow", HANDLES, apply, RESET)
"""This tracker as a `iotpush.projections.Projection`."""
