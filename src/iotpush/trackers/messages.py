"""Message tracker: the status and history of each message sent down to a device (v5).

Fed by ``device.message.status:update``. Statuses rank PENDING 0 < SENT 1 < DELIVERED | FAILED |
TIMEOUT 2; a final status never changes, a later one of higher rank advances, a late one of lower
or equal rank and an unknown one go to the history only. The record is that fold over the
history in entry-id order, computed when read: entries applied twice, late or in any order, and a
replay, all give the same answer.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from ..formats.v5.models import DeviceMessageStatusUpdate, enc_hook
from ..models import Notification
from ._common import (
    Database,
    History,
    Tracker,
    dumps,
    finished_events,
    fold_ranked,
    loads,
    movers_and_latest,
)

__all__ = [
    "FINISHED", "HANDLES", "HISTORY", "PROJECTION", "RANKS", "RESET", "SCHEMA", "MessageEvent",
    "MessageRecord", "apply", "get_message",
]  # fmt: skip

HANDLES: Final = (DeviceMessageStatusUpdate,)

RANKS: Final[dict[str, int]] = {"PENDING": 0, "SENT": 1} | dict.fromkeys(
    ("DELIVERED", "FAILED", "TIMEOUT"), 2
)
FINAL: Final = 2

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS message_events (
    message_id TEXT NOT NULL,
    entry_id BIGINT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    device_id TEXT,
    name TEXT,
    topic TEXT,
    status TEXT NOT NULL,
    status_time TEXT,
    error TEXT,
    PRIMARY KEY (message_id, entry_id)
);
CREATE INDEX IF NOT EXISTS message_events_entry ON message_events (entry_id);
CREATE INDEX IF NOT EXISTS message_events_final ON message_events (received_at)
    WHERE status IN ('DELIVERED', 'FAILED', 'TIMEOUT');
"""

RESET: Final = ("DELETE FROM message_events",)

_COLUMNS: Final = (
    "entry_id", "received_at", "device_id", "name", "topic", "status", "status_time", "error",
)  # fmt: skip


class MessageEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One status push about a message.

    Attributes:
        status: The status as received (upper-cased).
        status_time: The platform's time of the status (``timestamp``), if it sent one.
        error: ``error_info`` (``error_code``, ``error_msg``), if any.
        applied: Whether it moved the message's status (a late or unknown one did not).
    """

    entry_id: int
    received_at: float
    status: str
    status_time: str | None
    error: Any
    applied: bool


class MessageRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A message's current status, the error that came with it, and its history."""

    message_id: str
    device_id: str | None
    name: str | None
    topic: str | None
    status: str | None
    final: bool
    error: Any
    created_at: float
    updated_at: float
    history: tuple[MessageEvent, ...] = ()


def apply(db: Database, entry_id: int, received_at: float, notification: Notification) -> None:
    """Record a message status push in its message's history (once per entry)."""
    n = notification
    if not isinstance(n, DeviceMessageStatusUpdate):
        return
    b = n.body
    error = None if b.error_info is None else msgspec.to_builtins(b.error_info)
    when = b.timestamp or n.time
    db.execute(
        "INSERT INTO message_events (message_id, entry_id, received_at, device_id, name, topic,"
        " status, status_time, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (message_id, entry_id) DO NOTHING",
        (b.message_id, entry_id, received_at, n.device, b.name, b.topic, b.status.upper(),
         None if when is None else enc_hook(when), None if error is None else dumps(error)),
    )  # fmt: skip


def get_message(db: Database, message_id: str) -> MessageRecord | None:
    """Return a message's status and history, or ``None`` if no push named it."""
    rows = db.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM message_events"  # noqa: S608 - constant columns
        " WHERE message_id = ? ORDER BY entry_id",
        (message_id,),
    ).fetchall()
    if not rows:
        return None
    status, setter, moved = fold_ranked(RANKS, FINAL, ((r[0], r[5]) for r in rows))
    by_entry = {r[0]: r for r in rows}

    def newest(column: int) -> Any:
        return next((r[column] for r in reversed(rows) if r[column] is not None), None)

    history = tuple(
        MessageEvent(
            entry_id=r[0], received_at=r[1], status=r[5], status_time=r[6], error=loads(r[7]),
            applied=r[0] in moved,
        )
        for r in rows
    )  # fmt: skip
    return MessageRecord(
        message_id=message_id, device_id=newest(2), name=newest(3), topic=newest(4),
        status=status, final=status is not None and RANKS[status] >= FINAL,
        error=None if setter is None else loads(by_entry[setter][7]),
        created_at=min(r[1] for r in rows), updated_at=max(r[1] for r in rows),
        history=history,
    )  # fmt: skip


HISTORY: Final = History("message_events", movers_and_latest("message_events", "message_id", RANKS))
"""What retention keeps of the history: the pushes that moved each message's status, and its
latest push."""

FINISHED: Final = finished_events(
    "messages", "message_events", "message_id", "status IN ('DELIVERED', 'FAILED', 'TIMEOUT')"
)
"""What finished-retention deletes: each message with a final status (its history is the
record), once no push about it came since."""

PROJECTION: Final = Tracker("messages", HANDLES, apply, RESET)
"""This tracker as a `iotpush.projections.Projection`."""
