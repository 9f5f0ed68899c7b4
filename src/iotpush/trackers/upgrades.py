"""Upgrade tracker: where each device stands in each software or firmware upgrade task.

One record per (operation, sub-operation, device), fed by ``swUpgradeStateChangeNotify``,
``swUpgradeResultNotify``, ``fwUpgradeStateChangeNotify`` and ``fwUpgradeResultNotify``.

The state is the one of the newest state push by entry id: ``swUpgradeState``, or the firmware
``step`` mapped ("0" idle, "1" downloading, "2" downloaded, "3" updating), the raw value kept
beside it. The result (SUCCESS, FAIL) is final: the first result push by entry id sets it and its
versions, and nothing later changes it; a state push that follows a result still updates the state,
and a second result goes to the history only. Every apply refolds the record from its (short)
history, so the order entries are applied in does not matter.

`find_upgrades` lists the records most recently updated first and pages with a cursor (an
`UpgradeRecord.cursor`): the record's update time and key, so a page continues exactly after the
previous one even where records share an update time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final, Literal

import msgspec

from ..models import (
    FwUpgradeResultNotify,
    FwUpgradeStateChangeNotify,
    Notification,
    SwUpgradeResultNotify,
    SwUpgradeStateChangeNotify,
)
from ._common import (
    Database,
    Finished,
    History,
    Tracker,
    dumps,
    key_cursor,
    key_pattern,
    loads,
    parse_key,
    select_pages,
    upsert_sql,
)

__all__ = [
    "CURSOR_PATTERN", "FINISHED", "HANDLES", "HISTORY", "PROJECTION", "RESET", "SCHEMA",
    "UpgradeEvent", "UpgradeRecord", "apply", "find_upgrades", "get_upgrade", "parse_cursor",
]  # fmt: skip

HANDLES: Final = (
    SwUpgradeStateChangeNotify,
    SwUpgradeResultNotify,
    FwUpgradeStateChangeNotify,
    FwUpgradeResultNotify,
)
_FW_STEPS: Final = {"0": "idle", "1": "downloading", "2": "downloaded", "3": "updating"}
_SW_STATES: Final = frozenset(_FW_STEPS.values())

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS upgrades (
    operation_id TEXT NOT NULL,
    sub_operation_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_id TEXT,
    state TEXT,
    raw_state TEXT,
    state_desc TEXT,
    state_entry_id BIGINT,
    state_at DOUBLE PRECISION,
    result TEXT,
    result_entry_id BIGINT,
    result_at DOUBLE PRECISION,
    detail TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (operation_id, sub_operation_id, device_id)
);
CREATE INDEX IF NOT EXISTS upgrades_device ON upgrades (device_id);
CREATE INDEX IF NOT EXISTS upgrades_updated ON upgrades (updated_at);
CREATE INDEX IF NOT EXISTS upgrades_finished ON upgrades (updated_at)
    WHERE result IS NOT NULL;
CREATE TABLE IF NOT EXISTS upgrade_events (
    entry_id BIGINT PRIMARY KEY,
    operation_id TEXT NOT NULL,
    sub_operation_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    event TEXT NOT NULL,
    value TEXT NOT NULL,
    detail TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS upgrade_events_key
    ON upgrade_events (operation_id, sub_operation_id, device_id, entry_id);
"""

RESET: Final = ("DELETE FROM upgrade_events", "DELETE FROM upgrades")

_KEY_COLUMNS: Final = ("operation_id", "sub_operation_id", "device_id")
_COLUMNS: Final = (
    *_KEY_COLUMNS, "kind", "app_id", "state", "raw_state", "state_desc", "state_entry_id",
    "state_at", "result", "result_entry_id", "result_at", "detail", "created_at", "updated_at",
)  # fmt: skip
_EVENT_COLUMNS: Final = ("entry_id", "received_at", "kind", "event", "value", "detail")
_SELECT: Final = ", ".join([*(f"u.{x}" for x in _COLUMNS), *(f"e.{x}" for x in _EVENT_COLUMNS)])
_JOIN: Final = (
    "LEFT JOIN upgrade_events AS e ON e.operation_id = u.operation_id"
    " AND e.sub_operation_id = u.sub_operation_id AND e.device_id = u.device_id"
)
_UPSERT: Final = upsert_sql("upgrades", _COLUMNS, _KEY_COLUMNS)
# A cursor: the update time (its ``repr``, which reads back exactly), then the key (`key_cursor`).
_CURSOR: Final = rf"-?[0-9]+(\.[0-9]+)?(e-?[0-9]+)?,{key_pattern(3)}"
CURSOR_PATTERN: Final = f"^{_CURSOR}$"
"""What every cursor matches (a JSON Schema ``pattern``); `parse_cursor` reads any such text."""
_AFTER: Final = (
    "updated_at <= ? AND (updated_at < ?"
    " OR (operation_id, sub_operation_id, device_id) > (?, ?, ?))"
)
_RESULT_MEMBERS: Final = (
    "cur_version",
    "target_version",
    "source_version",
    "result_desc",
    "error_code",
    "description",
    "upgrade_time",
)


class UpgradeEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One upgrade push: a ``state`` (value: state or step) or a ``result`` (SUCCESS/FAIL)."""

    entry_id: int
    received_at: float
    kind: Literal["sw", "fw"]
    event: Literal["state", "result"]
    value: str
    detail: dict[str, Any]


class UpgradeRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A device's progress in one upgrade sub-task.

    Attributes:
        state: idle, downloading, downloaded or updating; ``None`` for a value not known.
        raw_state: ``swUpgradeState`` or the firmware ``step`` as received.
        result: SUCCESS or FAIL (as received, upper case) once the upgrade finished.
        result_desc: ``resultDesc`` (software) or ``statusDesc`` (firmware).
        error_code, description: Sent for software upgrades only.
        upgrade_time: As received: a string or a number.
    """

    operation_id: str
    sub_operation_id: str
    device_id: str
    kind: Literal["sw", "fw"]
    app_id: str | None
    state: str | None
    raw_state: str | None
    state_desc: str | None
    state_at: float | None
    result: str | None
    result_at: float | None
    cur_version: str | None = None
    target_version: str | None = None
    source_version: str | None = None
    result_desc: str | None = None
    error_code: str | None = None
    description: str | None = None
    upgrade_time: str | int | float | None = None
    created_at: float
    updated_at: float
    history: tuple[UpgradeEvent, ...] = ()

    @property
    def cursor(self) -> str:
        """The ``after`` of `find_upgrades` that continues just after this record."""
        key = (self.operation_id, self.sub_operation_id, self.device_id)
        when = repr(float(self.updated_at)).replace("+", "")  # 1e+16 reads back from 1e16
        return f"{when},{key_cursor(key)}"


def _event(n: Notification) -> tuple[str, str, str, dict[str, Any]] | None:
    """A push's kind, event, value and detail."""
    match n:
        case SwUpgradeStateChangeNotify():
            return "sw", "state", n.sw_upgrade_state, {"app_id": n.app_id}
        case FwUpgradeStateChangeNotify():
            return "fw", "state", n.step, {"app_id": n.app_id, "state_desc": n.step_desc}
        case SwUpgradeResultNotify():
            members = {m: getattr(n, m) for m in _RESULT_MEMBERS}
            return "sw", "result", n.sw_upgrade_result, {"app_id": n.app_id, **members}
        case FwUpgradeResultNotify():
            members = {m: getattr(n, m) for m in _RESULT_MEMBERS if hasattr(n, m)}
            members["result_desc"] = n.status_desc
            return "fw", "result", n.status, {"app_id": n.app_id, **members}
    return None


def _state(kind: str, raw: str) -> str | None:
    value = raw.strip()
    if kind == "fw":
        return _FW_STEPS.get(value)
    value = value.lower()
    return value if value in _SW_STATES else None


def apply(db: Database, entry_id: int, received_at: float, notification: Notification) -> None:
    """Record an upgrade push and refold its record. Applying an entry twice does nothing."""
    event = _event(notification)
    if event is None:
        return
    assert isinstance(notification, HANDLES)
    key = (notification.operation_id, notification.sub_operation_id, notification.device_id)
    kind, name, value, detail = event
    inserted = db.execute(
        "INSERT INTO upgrade_events (entry_id, operation_id, sub_operation_id, device_id, kind,"
        " event, value, detail, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (entry_id) DO NOTHING",
        (entry_id, *key, kind, name, value, dumps(detail), received_at),
    )
    # The history is asked before the row count is read: a backend that queues statements
    # (PostgreSQL's pipeline) waits for the database once for both.
    history = db.execute(
        "SELECT entry_id, received_at, kind, event, value, detail FROM upgrade_events"
        " WHERE operation_id = ? AND sub_operation_id = ? AND device_id = ? ORDER BY entry_id",
        key,
    )
    if inserted.rowcount:
        _refresh(db, key, history.fetchall())


def _refresh(db: Database, key: tuple[str, str, str], rows: list[Any]) -> None:
    states = [row for row in rows if row[3] == "state"]
    results = [row for row in rows if row[3] == "result"]
    state = states[-1] if states else None
    result = results[0] if results else None
    main = result or rows[-1]
    result_detail = {} if result is None else loads(result[5])
    state_detail = {} if state is None else loads(state[5])
    detail = {m: result_detail.get(m) for m in _RESULT_MEMBERS}
    times = [row[1] for row in rows]
    db.execute(
        _UPSERT,
        (*key, main[2], loads(rows[-1][5]).get("app_id"),
         None if state is None else _state(state[2], state[4]),
         None if state is None else state[4], state_detail.get("state_desc"),
         None if state is None else state[0], None if state is None else state[1],
         None if result is None else result[4].strip().upper(),
         None if result is None else result[0], None if result is None else result[1],
         dumps(detail), min(times), max(times)),
    )  # fmt: skip


def _select(
    db: Database,
    clauses: Sequence[str],
    params: Sequence[Any],
    order: Sequence[str],
    limit: int | None,
) -> list[UpgradeRecord]:
    groups = select_pages(
        db, _SELECT, "upgrades", "u", clauses, params, order, limit, _JOIN, lambda row: row[:3]
    )
    return [_record(group) for group in groups]


def _record(rows: list[Any]) -> UpgradeRecord:
    values = dict(zip(_COLUMNS, rows[0][: len(_COLUMNS)], strict=True))
    for name in ("state_entry_id", "result_entry_id"):
        del values[name]
    detail = loads(values.pop("detail"))
    history = tuple(
        UpgradeEvent(
            entry_id=e[0], received_at=e[1], kind=e[2], event=e[3], value=e[4],
            detail=loads(e[5]),
        )
        for e in (row[len(_COLUMNS) :] for row in rows)
        if e[0] is not None
    )  # fmt: skip
    return UpgradeRecord(**values, **detail, history=history)


def get_upgrade(db: Database, operation_id: str) -> list[UpgradeRecord]:
    """Return an upgrade task's records, ordered by sub-operation id, then device id."""
    order = ["sub_operation_id", "device_id"]
    return _select(db, ["operation_id = ?"], [operation_id], order, None)


def parse_cursor(text: str) -> tuple[float, str, str, str]:
    """Read a cursor (`UpgradeRecord.cursor`): the update time and key a page continues after.

    Raises:
        ValueError: ``text`` does not match `CURSOR_PATTERN`.
    """
    if re.fullmatch(_CURSOR, text) is None:
        raise ValueError(f"not a cursor of the upgrades list: {text!r}")
    updated_at, rest = text.split(",", 1)
    key = parse_key(rest, 3)
    assert key is not None  # the pattern matched
    return float(updated_at), key[0], key[1], key[2]


def find_upgrades(
    db: Database, device: str | None = None, limit: int = 100, after: str | None = None
) -> list[UpgradeRecord]:
    """Return upgrade records, most recently updated first, one page at a time.

    Records are ordered by update time, newest first, then by operation, sub-operation and device
    id; pass the `UpgradeRecord.cursor` of a page's last record as ``after`` to get the next page.
    A page continues exactly after that record, so paging returns every record once even where
    many share an update time. A record updated while you page moves to the front: the pages
    after that skip it (the first page shows it again), and every other record still appears
    once.

    Args:
        db: The connection.
        device: Only this device's records.
        limit: Page size, 1 to 1000.
        after: Only records after the one this cursor was taken from.

    Raises:
        ValueError: ``limit`` is out of range, or ``after`` is not a cursor (`parse_cursor`).
    """
    clauses: list[str] = []
    params: list[Any] = []
    if device is not None:
        clauses.append("device_id = ?")
        params.append(device)
    if after is not None:
        updated_at, *key = parse_cursor(after)
        clauses.append(_AFTER)
        params.extend([updated_at, updated_at, *key])
    order = ["updated_at DESC", "operation_id", "sub_operation_id", "device_id"]
    return _select(db, clauses, params, order, limit)


HISTORY: Final = History(
    "upgrade_events",
    "EXISTS (SELECT 1 FROM upgrades AS u WHERE u.operation_id = upgrade_events.operation_id"
    " AND u.sub_operation_id = upgrade_events.sub_operation_id"
    " AND u.device_id = upgrade_events.device_id"
    " AND upgrade_events.entry_id IN (u.state_entry_id, u.result_entry_id))"
    " OR NOT EXISTS (SELECT 1 FROM upgrade_events AS n"
    " WHERE n.operation_id = upgrade_events.operation_id"
    " AND n.sub_operation_id = upgrade_events.sub_operation_id"
    " AND n.device_id = upgrade_events.device_id AND n.entry_id > upgrade_events.entry_id)",
)
"""What retention keeps of the history: the pushes that set each upgrade's state and result,
and its latest push."""

_KEY: Final = "operation_id = ? AND sub_operation_id = ? AND device_id = ?"
FINISHED: Final = Finished(
    "upgrades",
    "SELECT operation_id, sub_operation_id, device_id FROM upgrades"
    " WHERE result IS NOT NULL AND updated_at < ? ORDER BY updated_at",
    f"DELETE FROM upgrades WHERE {_KEY} AND result IS NOT NULL AND updated_at < ?",  # noqa: S608
    (f"DELETE FROM upgrade_events WHERE {_KEY}",),  # noqa: S608 - constants
)
"""What finished-retention deletes: each upgrade with a result, with its history."""

PROJECTION: Final = Tracker("upgrades", HANDLES, apply, RESET)
"""This tracker as a `iotpush.projections.Projection`."""
