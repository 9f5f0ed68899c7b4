"""Batch task tracker: the progress of each v5 batch task, beside the legacy upgrade records.

Fed by ``batchtask:update`` (firmware and software upgrades, device creation... by
``task_type``). Statuses rank ``Waitting`` (the platform's spelling; ``Waiting`` too) 0 <
``Processing`` 1 < ``Success`` | ``PartialSuccess`` | ``Fail`` | ``Stopped`` 2, compared without
case; a final status never changes, a late one of lower or equal rank and an unknown one go to
the history only. The record is that fold over the history in entry-id order, computed when read.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from ..formats.v5.models import BatchTaskUpdate
from ..models import Notification
from ._common import Database, History, Tracker, finished_events, fold_ranked, movers_and_latest

__all__ = [
    "FINISHED", "HANDLES", "HISTORY", "PROJECTION", "RANKS", "RESET", "SCHEMA", "TaskEvent",
    "TaskRecord", "apply", "get_task",
]  # fmt: skip

HANDLES: Final = (BatchTaskUpdate,)

RANKS: Final[dict[str, int]] = {"WAITTING": 0, "WAITING": 0, "PROCESSING": 1} | dict.fromkeys(
    ("SUCCESS", "PARTIALSUCCESS", "FAIL", "STOPPED"), 2
)
FINAL: Final = 2

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS task_events (
    task_id TEXT NOT NULL,
    entry_id BIGINT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    app_id TEXT,
    task_type TEXT,
    status TEXT NOT NULL,
    status_desc TEXT,
    PRIMARY KEY (task_id, entry_id)
);
CREATE INDEX IF NOT EXISTS task_events_entry ON task_events (entry_id);
CREATE INDEX IF NOT EXISTS task_events_final ON task_events (received_at)
    WHERE upper(status) IN ('SUCCESS', 'PARTIALSUCCESS', 'FAIL', 'STOPPED');
"""

RESET: Final = ("DELETE FROM task_events",)


class TaskEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One status push about a batch task; ``applied``: whether it moved the task's status."""

    entry_id: int
    received_at: float
    status: str
    status_desc: str | None
    applied: bool


class TaskRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A batch task's current status (as the platform spells it) and its history."""

    task_id: str
    app_id: str | None
    task_type: str | None
    status: str | None
    status_desc: str | None
    final: bool
    created_at: float
    updated_at: float
    history: tuple[TaskEvent, ...] = ()


def apply(db: Database, entry_id: int, received_at: float, notification: Notification) -> None:
    """Record a batch task status push in its task's history (once per entry)."""
    n = notification
    if not isinstance(n, BatchTaskUpdate):
        return
    b = n.body
    db.execute(
        "INSERT INTO task_events (task_id, entry_id, received_at, app_id, task_type, status,"
        " status_desc) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (task_id, entry_id) DO NOTHING",
        (b.task_id, entry_id, received_at, b.app_id or n.header.app_id, b.task_type, b.status,
         b.status_desc),
    )  # fmt: skip


def get_task(db: Database, task_id: str) -> TaskRecord | None:
    """Return a batch task's progress and history, or ``None`` if no push named it."""
    rows = db.execute(
        "SELECT entry_id, received_at, app_id, task_type, status, status_desc FROM task_events"
        " WHERE task_id = ? ORDER BY entry_id",
        (task_id,),
    ).fetchall()
    if not rows:
        return None
    _, setter, moved = fold_ranked(RANKS, FINAL, ((r[0], r[4].upper()) for r in rows))
    current = next((r for r in rows if r[0] == setter), None)

    def newest(column: int) -> Any:
        return next((r[column] for r in reversed(rows) if r[column] is not None), None)

    history = tuple(
        TaskEvent(entry_id=r[0], received_at=r[1], status=r[4], status_desc=r[5],
                  applied=r[0] in moved)
        for r in rows
    )  # fmt: skip
    return TaskRecord(
        task_id=task_id, app_id=newest(2), task_type=newest(3),
        status=None if current is None else current[4],
        status_desc=None if current is None else current[5],
        final=current is not None and RANKS[current[4].upper()] >= FINAL,
        created_at=min(r[1] for r in rows), updated_at=max(r[1] for r in rows), history=history,
    )  # fmt: skip


HISTORY: Final = History("task_events", movers_and_latest("task_events", "task_id", RANKS))
"""What retention keeps of the history: the pushes that moved each task's status, and its latest
push."""

FINISHED: Final = finished_events(
    "tasks",
    "task_events",
    "task_id",
    "upper(status) IN ('SUCCESS', 'PARTIALSUCCESS', 'FAIL', 'STOPPED')",
)
"""What finished-retention deletes: each task with a final status (its history is the
record), once no push about it came since."""

PROJECTION: Final = Tracker("tasks", HANDLES, apply, RESET)
"""This tracker as a `iotpush.projections.Projection`."""
