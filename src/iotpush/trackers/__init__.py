"""Lifecycle trackers: state that survives late, duplicated and out-of-order notifications.

Six trackers, each a module with its own tables and queries:

- `commands`: each command's state machine (NB-IoT status, ``messageConfirm``, ``commandRsp``,
  v5 ``device.command.status:update``), history and deadline watchdog;
- `shadow`: whether desired properties were delivered to each device service;
- `devices`: the device registry and the latest value of each reported property (`devices_v5`
  feeds the same tables from v5 pushes);
- `upgrades`: software and firmware upgrade progress and results;
- `messages`: the status and history of each message sent down to a device (v5);
- `tasks`: the progress of each v5 batch task (firmware and software upgrades...).

Each is a `iotpush.projections.Projection` (its module's ``PROJECTION``; `PROJECTIONS` lists
them, and `iotpush.server` gives them to the inbox): pure, synchronous functions over a DB-API
connection (`Database`; ``sqlite3`` in autocommit mode works) that never manage transactions:
the inbox applies them inside the transaction that keeps an entry. A new tracker is one module
with a ``PROJECTION`` and one line in `PROJECTIONS` (its tables: a new migration, see
`iotpush.inbox._migrations`); a history table adds a ``HISTORY`` line there and one in
`HISTORIES`, records that reach a final state a ``FINISHED`` line and one in `FINISHED`
(retention deletes them). Every tracker is idempotent by entry id (applying an entry again
changes nothing), orders what it keeps by entry id or event time rather than by when it is
applied, and so ``reset`` followed by applying every entry in id order rebuilds the same state.

The SQL is portable (``ON CONFLICT`` upserts, ``BIGINT`` entry ids and ``DOUBLE PRECISION`` times,
``?`` placeholders that another driver's backend translates).
"""

from __future__ import annotations

from typing import Final

from ..models import Notification
from ..projections import Projection, Projections
from . import commands, devices, devices_v5, messages, shadow, tasks, upgrades
from ._common import FINISHED_SCHEMA, Cursor, Database, Finished, History, finished_purges
from .commands import (
    CommandEvent,
    CommandRecord,
    count_commands,
    count_overdue,
    expect,
    find_commands,
    get_command,
    next_state,
    normalise,
    overdue,
    recent_commands,
)
from .devices import DataPoint, DeviceRecord, find_devices, get_device
from .shadow import (
    ShadowEvent,
    ShadowRecord,
    count_unsynced,
    expect_shadow,
    get_shadow,
    shadow_history,
    unsynced,
)
from .upgrades import UpgradeEvent, UpgradeRecord, find_upgrades, get_upgrade

__all__ = [
    "FINISHED",
    "HISTORIES",
    "PROJECTIONS",
    "RESET",
    "SCHEMA",
    "TRACKED_TYPES",
    "CommandEvent",
    "CommandRecord",
    "Cursor",
    "DataPoint",
    "Database",
    "DeviceRecord",
    "Finished",
    "History",
    "ShadowEvent",
    "ShadowRecord",
    "UpgradeEvent",
    "UpgradeRecord",
    "apply_all",
    "commands",
    "count_commands",
    "count_overdue",
    "count_records",
    "count_unsynced",
    "devices",
    "expect",
    "expect_shadow",
    "find_commands",
    "find_devices",
    "find_upgrades",
    "finished_purges",
    "get_command",
    "get_device",
    "get_shadow",
    "get_upgrade",
    "next_state",
    "normalise",
    "overdue",
    "recent_commands",
    "reset",
    "shadow",
    "shadow_history",
    "unsynced",
    "upgrades",
]

PROJECTIONS: Final[tuple[Projection, ...]] = (
    commands.PROJECTION,
    shadow.PROJECTION,
    devices.PROJECTION,
    devices_v5.PROJECTION,
    upgrades.PROJECTION,
    messages.PROJECTION,
    tasks.PROJECTION,
)
"""The trackers, in the order they are applied to an entry."""

_TRACKERS: Final = (commands, shadow, devices, devices_v5, upgrades, messages, tasks)
_ALL: Final = Projections(PROJECTIONS)

SCHEMA: Final[str] = "".join(tracker.SCHEMA for tracker in _TRACKERS) + FINISHED_SCHEMA
"""Every tracker table and index, as the code expects them (``CREATE ... IF NOT EXISTS``): a
store gets them from its migrations; tests of the trackers alone run it as a script."""

RESET: Final[tuple[str, ...]] = tuple(sql for tracker in _TRACKERS for sql in tracker.RESET)
"""Statements that delete every tracker row derived from notifications, run one by one.

Expectations (`expect`, `expect_shadow`) are the application's input, not derived from
notifications: they stay, unconfirmed, and their command and shadow rows are seeded again.
"""

HISTORIES: Final[tuple[History, ...]] = (
    commands.HISTORY,
    shadow.HISTORY,
    devices.HISTORY,
    upgrades.HISTORY,
    messages.HISTORY,
    tasks.HISTORY,
)
"""The trackers' histories, as retention purges them (each keeps what its current state needs);
`devices_v5` writes to the history of `devices`."""

FINISHED: Final[tuple[Finished, ...]] = (
    shadow.FINISHED,
    devices.FINISHED,
    commands.FINISHED,
    upgrades.FINISHED,
    messages.FINISHED,
    tasks.FINISHED,
)
"""The trackers' finished records, as finished-retention deletes them, in this order (the
services of a deleted device go before its record, which says it was deleted)."""

TRACKED_TYPES: Final[frozenset[str]] = _ALL.handles
"""The ``notifyType`` values some tracker uses; entries of other types can be skipped."""


def apply_all(db: Database, entry_id: int, received_at: float, notification: Notification) -> None:
    """Apply one inbox entry to every tracker that uses its type; other types do nothing.

    Runs in the caller's transaction. Safe to call again for the same entry (after a crash, or an
    operator's replay), and for an older entry after newer ones.

    Args:
        db: The connection, inside the caller's transaction.
        entry_id: The inbox entry id: the order notifications arrived in.
        received_at: When the entry was received (Unix time).
        notification: The entry's decoded notification.
    """
    _ALL.apply(db, entry_id, received_at, notification)


def reset(db: Database) -> None:
    """Run `RESET`: delete every row derived from notifications, ready for a replay."""
    _ALL.reset(db)


_RECORDS: Final = ("devices", "commands", "shadows", "upgrades")


def count_records(db: Database) -> dict[str, int]:
    """How many devices, commands, shadows (device services) and upgrades the trackers hold."""
    counts = {}
    for table in _RECORDS:
        (n,) = db.execute(f"SELECT count(*) FROM {table}", ()).fetchone()  # noqa: S608 - fixed names
        counts[table] = int(n)
    return counts
