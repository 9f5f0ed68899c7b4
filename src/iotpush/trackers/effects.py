"""What the trackers did with one inbox entry: the rows each one keeps that name the entry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ._common import Database
from .commands import get_command

__all__ = ["Effect", "effects"]


@dataclass(frozen=True, slots=True)
class Effect:
    """One thing a tracker recorded from an entry.

    Attributes:
        tracker: ``commands``, ``shadow``, ``devices`` or ``upgrades``.
        subject: What it is about: a command id, ``device/service``, a device id, an operation.
        what: What was recorded, in words (``SENT -> SENT``, ``status ONLINE``...).
        applied: Whether it changed the current state (False: history only, late or repeated).
    """

    tracker: str
    subject: str
    what: str
    applied: bool = True


_QUERIES: Final = (
    ("commands", "SELECT command_id, code, state FROM command_events WHERE entry_id = ?"),
    ("shadow", "SELECT device_id, service_id, status FROM shadow_events WHERE entry_id = ?"),
    ("devices", "SELECT device_id, notify_type, '' FROM device_events WHERE entry_id = ?"),
    ("data", "SELECT device_id, service_id, property, value FROM device_data WHERE entry_id = ?"),
    ("upgrades", "SELECT operation_id, event, value FROM upgrade_events WHERE entry_id = ?"),
)


def effects(db: Database, entry_id: int) -> list[Effect]:
    """Everything the trackers recorded from entry ``entry_id``, tracker by tracker."""
    found: list[Effect] = []
    for tracker, sql in _QUERIES:
        for row in db.execute(sql, (entry_id,)).fetchall():
            if tracker == "commands":
                command_id, code, _ = row
                record = get_command(db, command_id)
                applied = record is not None and any(
                    event.applied for event in record.history if event.entry_id == entry_id
                )
                now = f"; the command is {record.state}" if record is not None else ""
                what = f"status {code}" + ("" if applied else " (history only: late or repeated)")
                found.append(Effect(tracker, command_id, what + now, applied))
            elif tracker == "shadow":
                found.append(Effect(tracker, f"{row[0]}/{row[1]}", f"desired properties {row[2]}"))
            elif tracker == "devices":
                found.append(Effect(tracker, row[0], f"registry updated by {row[1]}"))
            elif tracker == "data":
                found.append(Effect("devices", row[0], f"latest {row[1]}.{row[2]} = {row[3]}"))
            else:
                found.append(Effect(tracker, row[0], f"{row[1]} {row[2]}"))
    return found
