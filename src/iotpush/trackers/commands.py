"""Command tracker: one record per command id, its state, history and deadline.

Fed by NB-IoT command status pushes (``commandId``), v5 ``device.command.status:update`` pushes
(``body.command_id``, ``body.status``: the same status names, ``body.result`` the detail), and
for MQTT devices by ``messageConfirm``
(``header.status``: sent, delivered, executed) and ``commandRsp`` (the device answered: the
command succeeded, its body is the detail); both name the command by ``header.requestId``. All
three share one command id space.

States rank PENDING 0 < SENT 1 < DELIVERED 2 < SUCCESSFUL | FAILED | TIMEOUT | EXPIRED |
CANCELED 3. A terminal state never changes; a later state of higher rank advances; a late state of
lower or equal rank and an unknown code go to the history only. `next_state` is that rule.

A record's state is the fold of `next_state` over its history in entry-id order (entry ids are the
order the pushes arrived in), starting from PENDING when the command was registered with `expect`.
Every apply refolds the (short) history, so entries applied twice, late or in any order all give
the state that applying them once, in id order, gives: a replay rebuilds the same records.

Expectations (`expect`) are the application's input, not the inbox's: `RESET` keeps them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec

from ..formats.v5.models import DeviceCommandStatusUpdate
from ..models import CommandRsp, MessageConfirm, NBCommandStatusChanged, Notification
from ._common import (
    Cursor,
    Database,
    Finished,
    History,
    Tracker,
    dumps,
    loads,
    select_pages,
    upsert_sql,
)

__all__ = [
    "FINISHED", "HANDLES", "HISTORY", "PROJECTION", "RANKS", "RESET", "SCHEMA", "SPELLINGS",
    "TERMINAL", "CommandEvent", "CommandRecord", "apply", "count_commands", "count_overdue",
    "expect", "find_commands", "get_command", "next_state", "normalise", "overdue",
    "recent_commands",
]  # fmt: skip

HANDLES: Final = (NBCommandStatusChanged, MessageConfirm, CommandRsp, DeviceCommandStatusUpdate)

RANKS: Final[dict[str, int]] = {"PENDING": 0, "SENT": 1, "DELIVERED": 2} | dict.fromkeys(
    ("SUCCESSFUL", "FAILED", "TIMEOUT", "EXPIRED", "CANCELED"), 3
)
TERMINAL: Final = frozenset(state for state, rank in RANKS.items() if rank == 3)
# SDK pages say SUCCESS/FAIL, real bodies SUCCESSFUL/FAILED; messageConfirm says "executed".
_ALIASES: Final = dict(
    SUCCESS="SUCCESSFUL", FAIL="FAILED", EXECUTED="SUCCESSFUL", CANCELLED="CANCELED"
)
SPELLINGS: Final[tuple[str, ...]] = (*RANKS, *_ALIASES)
"""Every state name `normalise` accepts: the states, and the platform's other spellings."""

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT PRIMARY KEY,
    device_id TEXT,
    state TEXT,
    detail TEXT,
    terminal INTEGER NOT NULL,
    state_entry_id BIGINT,
    state_at DOUBLE PRECISION,
    deadline DOUBLE PRECISION,
    expected_at DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_device ON commands (device_id, command_id);
CREATE INDEX IF NOT EXISTS commands_state ON commands (state, command_id);
CREATE INDEX IF NOT EXISTS commands_deadline ON commands (terminal, deadline);
CREATE INDEX IF NOT EXISTS commands_finished ON commands (terminal, updated_at);
CREATE TABLE IF NOT EXISTS command_events (
    command_id TEXT NOT NULL,
    entry_id BIGINT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    source TEXT NOT NULL,
    device_id TEXT,
    code TEXT,
    state TEXT,
    detail TEXT,
    PRIMARY KEY (command_id, entry_id)
);
CREATE INDEX IF NOT EXISTS command_events_entry ON command_events (entry_id);
CREATE TABLE IF NOT EXISTS command_expectations (
    command_id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    deadline DOUBLE PRECISION NOT NULL,
    expected_at DOUBLE PRECISION NOT NULL
);
"""

RESET: Final = (
    "DELETE FROM command_events",
    "DELETE FROM commands",
    # What `_refresh` makes of an expectation without history.
    "INSERT INTO commands (command_id, device_id, state, detail, terminal, state_entry_id,"
    " state_at, deadline, expected_at, created_at, updated_at)"
    " SELECT command_id, device_id, 'PENDING', NULL, 0, NULL, expected_at, deadline, expected_at,"
    " expected_at, expected_at FROM command_expectations",
)

_COLUMNS: Final = (
    "command_id", "device_id", "state", "detail", "terminal", "state_entry_id", "state_at",
    "deadline", "expected_at", "created_at", "updated_at",
)  # fmt: skip
_EVENT_COLUMNS: Final = ("entry_id", "received_at", "source", "code", "state", "detail")
_UPSERT: Final = upsert_sql("commands", _COLUMNS, ["command_id"])
_SELECT: Final = ", ".join([*(f"c.{x}" for x in _COLUMNS), *(f"e.{x}" for x in _EVENT_COLUMNS)])
_JOIN: Final = "LEFT JOIN command_events AS e ON e.command_id = c.command_id"


class CommandEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One status push about a command, as kept in its history.

    Attributes:
        code: The status as received (``resultCode``, ``header.status``); ``None`` for a
            ``commandRsp``, which carries none.
        state: ``code`` normalised, ``None`` when unknown.
        source: The ``notifyType`` it came in (``nbCommandStatusChanged`` for NB-IoT).
        applied: Whether it moved the command's state (a late or unknown one did not).
    """

    entry_id: int
    received_at: float
    source: str
    code: str | None
    state: str | None
    detail: Any
    applied: bool


class CommandRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A command's current state, the detail that came with it, its deadline and history."""

    command_id: str
    device_id: str | None
    state: str | None
    detail: Any
    terminal: bool
    state_entry_id: int | None
    state_at: float | None
    deadline: float | None
    expected_at: float | None
    created_at: float
    updated_at: float
    history: tuple[CommandEvent, ...] = ()

    def overdue(self, now: float) -> bool:
        """Tell whether the deadline has passed at ``now`` without a terminal state."""
        return not self.terminal and self.deadline is not None and now > self.deadline


def normalise(code: str | None) -> str | None:
    """Return a status code's state (``success`` -> ``SUCCESSFUL``), or ``None`` if unknown."""
    if not isinstance(code, str):
        return None
    key = code.strip().upper()
    key = _ALIASES.get(key, key)
    return key if key in RANKS else None


def next_state(current: str | None, incoming: str) -> str | None:
    """Return a command's state after ``incoming`` arrives in ``current`` (``None``: none yet).

    Terminal states never change; a higher rank advances (skipping states is fine); a lower or
    equal rank, or an unknown code, leaves ``current`` as it is.
    """
    new = normalise(incoming)
    old = normalise(current)
    if new is None or old in TERMINAL:
        return old
    if old is None or RANKS[new] > RANKS[old]:
        return new
    return old


def _fold(
    start: str | None, events: Iterable[tuple[int, str | None]]
) -> tuple[str | None, int | None, set[int]]:
    """Fold ``next_state`` over ``(entry_id, state)`` in order: state, its entry, movers."""
    state, setter, applied = start, None, set()
    for entry_id, incoming in events:
        if incoming is None:
            continue
        new = next_state(state, incoming)
        if new != state:
            state, setter = new, entry_id
            applied.add(entry_id)
    return state, setter, applied


def _event(n: Notification) -> tuple[str, str | None, str | None, str | None, Any] | None:
    """The command id, device, code, state and detail a notification carries."""
    match n:
        case NBCommandStatusChanged():
            code = n.result.result_code
            return n.command_id, n.device_id, code, normalise(code), n.result.result_detail
        case MessageConfirm():
            code = n.header.status
            return n.header.request_id, n.device, code, normalise(code), n.body
        case CommandRsp():
            return n.header.request_id, n.header.device_id, None, "SUCCESSFUL", n.body
        case DeviceCommandStatusUpdate():  # v5: the same status names
            code = n.body.status
            return n.body.command_id, n.device, code, normalise(code), n.body.result
    return None


def apply(db: Database, entry_id: int, received_at: float, notification: Notification) -> None:
    """Record a command status push in its command's history and refold the command's state.

    Applying an entry that is already in the history does nothing.
    """
    event = _event(notification)
    if event is None:
        return
    command_id, device_id, code, state, detail = event
    inserted = db.execute(
        "INSERT INTO command_events (command_id, entry_id, received_at, source, device_id,"
        " code, state, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (command_id, entry_id) DO NOTHING",
        (command_id, entry_id, received_at, notification.notify_type, device_id, code, state,
         dumps(detail)),
    )  # fmt: skip
    # The reads are asked before the row count is: a backend that queues statements
    # (PostgreSQL's pipeline) waits for the database once for the three, not three times.
    reads = _read(db, command_id)
    if inserted.rowcount:
        _refresh(db, command_id, reads)


def expect(db: Database, command_id: str, device_id: str, deadline: float, now: float) -> None:
    """Register a command just sent, so that it shows as PENDING and is watched for a deadline.

    A known command keeps its state (it never goes back to PENDING); its deadline is replaced.

    Args:
        db: The connection.
        command_id: The command id the platform returned.
        device_id: The device the command was sent to.
        deadline: Unix time by which a terminal state is expected; see `overdue`.
        now: The current Unix time.
    """
    db.execute(
        "INSERT INTO command_expectations (command_id, device_id, deadline, expected_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (command_id) DO UPDATE"
        " SET device_id = excluded.device_id, deadline = excluded.deadline",
        (command_id, device_id, deadline, now),
    )
    _refresh(db, command_id)


def _read(db: Database, command_id: str) -> tuple[Cursor, Cursor]:
    """Ask for a command's expectation and history (`_refresh` reads the answers)."""
    expectation = db.execute(
        "SELECT device_id, deadline, expected_at FROM command_expectations WHERE command_id = ?",
        (command_id,),
    )
    history = db.execute(
        "SELECT entry_id, received_at, state, detail, device_id FROM command_events"
        " WHERE command_id = ? ORDER BY entry_id",
        (command_id,),
    )
    return expectation, history


def _refresh(db: Database, command_id: str, reads: tuple[Cursor, Cursor] | None = None) -> None:
    """Recompute a command's record from its expectation and history (``reads``: asked
    already by `_read`)."""
    asked, history = _read(db, command_id) if reads is None else reads
    expectation = asked.fetchone()
    rows = history.fetchall()
    device, deadline, expected_at = expectation or (None, None, None)
    start = None if expectation is None else "PENDING"
    state, setter, _ = _fold(start, ((row[0], row[2]) for row in rows))
    by_entry = {row[0]: row for row in rows}
    detail, state_at = None, (None if state is None else expected_at)
    if setter is not None:
        state_at, detail = by_entry[setter][1], by_entry[setter][3]
    if device is None:
        device = next((row[4] for row in rows if row[4] is not None), None)
    times = [row[1] for row in rows] + ([] if expected_at is None else [expected_at])
    db.execute(
        _UPSERT,
        (command_id, device, state, detail, int(state in TERMINAL), setter, state_at, deadline,
         expected_at, min(times), max(times)),
    )  # fmt: skip


def _select(
    db: Database,
    clauses: Sequence[str],
    params: Sequence[Any],
    order: Sequence[str],
    limit: int | None,
) -> list[CommandRecord]:
    groups = select_pages(
        db, _SELECT, "commands", "c", clauses, params, order, limit, _JOIN, lambda row: row[0]
    )
    return [_record(group) for group in groups]


def _record(rows: list[Any]) -> CommandRecord:
    head = rows[0]
    values = dict(zip(_COLUMNS, head[: len(_COLUMNS)], strict=True))
    events = [row[len(_COLUMNS) :] for row in rows if row[len(_COLUMNS)] is not None]
    start = None if values["expected_at"] is None else "PENDING"
    _, _, applied = _fold(start, ((e[0], e[4]) for e in events))
    history = tuple(
        CommandEvent(
            entry_id=e[0], received_at=e[1], source=e[2], code=e[3], state=e[4],
            detail=loads(e[5]), applied=e[0] in applied,
        )
        for e in events
    )  # fmt: skip
    values.update(detail=loads(values["detail"]), terminal=bool(values["terminal"]))
    return CommandRecord(**values, history=history)


def get_command(db: Database, command_id: str) -> CommandRecord | None:
    """Return a command's record with its history in entry-id order, or ``None`` if unknown."""
    found = _select(db, ["command_id = ?"], [command_id], ["command_id"], None)
    return found[0] if found else None


def find_commands(
    db: Database,
    device: str | None = None,
    state: str | None = None,
    overdue_at: float | None = None,
    limit: int = 100,
    after: str | None = None,
) -> list[CommandRecord]:
    """Return commands ordered by command id, one page at a time.

    Pages by command id, which never changes (an updated time would move a command between
    pages while paging): pass the last id of a page as ``after`` to get the next one.

    Args:
        db: The connection.
        device: Only this device's commands.
        state: Only commands in this state (aliases accepted: ``success``).
        overdue_at: Only commands overdue at this Unix time (see `CommandRecord.overdue`).
        limit: Page size, 1 to 1000.
        after: Only commands whose id sorts after this one.

    Raises:
        ValueError: ``limit`` is out of range.
    """
    clauses: list[str] = []
    params: list[Any] = []
    for clause, value in (
        ("device_id = ?", device),
        ("state = ?", None if state is None else normalise(state) or state),
        ("terminal = 0 AND deadline < ?", overdue_at),
        ("command_id > ?", after),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return _select(db, clauses, params, ["command_id"], limit)


def recent_commands(db: Database, device: str, limit: int = 100) -> list[CommandRecord]:
    """Return a device's ``limit`` most recently updated commands, newest first.

    Commands updated at the same time are ordered by command id. For all of a device's commands,
    page through `find_commands` with ``device``.

    Raises:
        ValueError: ``limit`` is not between 1 and 1000.
    """
    return _select(db, ["device_id = ?"], [device], ["updated_at DESC", "command_id"], limit)


def count_commands(db: Database, device: str) -> int:
    """Return how many commands a device has."""
    row = db.execute("SELECT COUNT(*) FROM commands WHERE device_id = ?", (device,)).fetchone()
    return int(row[0])


def count_overdue(db: Database, now: float) -> int:
    """Return how many commands are `overdue` at ``now`` (through the index on the deadline)."""
    sql = "SELECT count(*) FROM commands WHERE terminal = 0 AND deadline < ?"
    return int(db.execute(sql, (now,)).fetchone()[0])


def overdue(db: Database, now: float) -> list[CommandRecord]:
    """Return every command whose deadline passed before ``now`` without a terminal state.

    Ordered by deadline (oldest first), then command id.
    """
    clauses = ["terminal = 0 AND deadline < ?"]
    return _select(db, clauses, [now], ["deadline", "command_id"], None)


HISTORY: Final = History(
    "command_events",
    "EXISTS (SELECT 1 FROM commands AS c WHERE c.command_id = command_events.command_id"
    " AND c.state_entry_id = command_events.entry_id)",
)
"""What retention keeps of the history: the push that set each command's state."""

FINISHED: Final = Finished(
    "commands",
    "SELECT command_id FROM commands WHERE terminal = 1 AND updated_at < ? ORDER BY updated_at",
    "DELETE FROM commands WHERE command_id = ? AND terminal = 1 AND updated_at < ?",
    (
        "DELETE FROM command_events WHERE command_id = ?",
        "DELETE FROM command_expectations WHERE command_id = ?",
    ),
)
"""What finished-retention deletes: each command in a terminal state, with its history and its
expectation (a rebuild would otherwise make it PENDING again)."""

PROJECTION: Final = Tracker("commands", HANDLES, apply, RESET)
"""This tracker as a `iotpush.projections.Projection`."""
