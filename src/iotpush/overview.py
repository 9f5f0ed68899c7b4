"""What the store holds now, in a few figures: the inbox, the outbox and the trackers.

The figures come from the store, not from this process's memory, so that every process of a
cluster on one PostgreSQL database tells the same: the `/metrics` gauges, the readiness check's
sink backlog and the start-up summary read them. `OverviewReader` caches one reading for a second,
so that a scrape, a probe and a console page arriving together cost one round of queries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .inbox import STATES, Inbox

__all__ = ["Overview", "OverviewReader"]

# Each groups a small table, or counts through an index (commands_state, commands_deadline,
# devices_status); the shadow count follows `trackers.shadow.unsynced`.
_COMMANDS = "SELECT COALESCE(state, 'unknown'), count(*) FROM commands GROUP BY 1"
_OVERDUE = "SELECT count(*) FROM commands WHERE terminal = 0 AND deadline < ?"
_UNSYNCED = (
    "SELECT count(*) FROM shadows AS s LEFT JOIN shadow_expectations AS x"
    " ON x.device_id = s.device_id AND x.service_id = s.service_id"
    " WHERE s.status = 'FAILED' OR (x.expected_at IS NOT NULL AND x.confirmed_entry_id IS NULL)"
)
_DEVICES = (
    "SELECT COALESCE(status, 'unknown'), count(*) FROM devices"
    " WHERE deleted_entry_id IS NULL OR deleted_entry_id < COALESCE(added_entry_id, 0)"
    " GROUP BY 1"
)


@dataclass(frozen=True, slots=True)
class Overview:
    """The store's figures at ``taken_at`` (Unix seconds)."""

    entries: dict[str, int]
    """Inbox entries by state: every state, 0 where none."""
    oldest_pending_seconds: float
    """Age of the oldest entry not yet done (pending or claimed); 0 when there is none."""
    quarantined: int
    unpublished: dict[str, int]
    """Entries waiting in each configured sink's outbox (0 where none)."""
    commands: dict[str, int]
    """Tracked commands by state."""
    commands_overdue: int
    """Commands past their deadline without a final state."""
    shadow_unsynced: int
    """Device services whose desired properties failed or are unconfirmed."""
    devices: dict[str, int]
    """Devices not deleted, by status."""
    taken_at: float


class OverviewReader:
    """Reads an `Overview` from ``inbox``, at most once per ``ttl`` seconds.

    Concurrent callers share one reading. A reading that fails raises to every caller waiting
    for it (`iotpush.InboxError` and the like) and is not cached.
    """

    def __init__(
        self, inbox: Inbox, *, ttl: float = 1.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.inbox = inbox
        self.ttl = ttl
        self.clock = clock
        self._last: Overview | None = None
        self._reading: asyncio.Future[Overview] | None = None

    async def read(self) -> Overview:
        """The figures, at most ``ttl`` seconds old."""
        last = self._last
        if last is not None and self.clock() - last.taken_at < self.ttl:
            return last
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read())
        reading = self._reading
        try:
            return await asyncio.shield(reading)
        finally:
            if reading.done() and self._reading is reading:
                self._reading = None

    async def _read(self) -> Overview:
        stats = await self.inbox.stats()
        now = self.clock()

        def trackers(db: Any) -> tuple[dict[str, int], int, int, dict[str, int]]:
            commands = {str(state): int(n) for state, n in db.execute(_COMMANDS, ()).fetchall()}
            (overdue,) = db.execute(_OVERDUE, (now,)).fetchone()
            (unsynced,) = db.execute(_UNSYNCED, ()).fetchone()
            devices = {str(status): int(n) for status, n in db.execute(_DEVICES, ()).fetchall()}
            return commands, int(overdue), int(unsynced), devices

        commands, overdue, unsynced, devices = await self.inbox.read(trackers)
        age = stats.oldest_pending_age
        overview = Overview(
            entries={state: stats.by_state.get(state, 0) for state in STATES},
            oldest_pending_seconds=max(0.0, age) if age is not None else 0.0,
            quarantined=stats.quarantined,
            unpublished={sink: stats.unpublished.get(sink, 0) for sink in self.inbox.outbox},
            commands=commands,
            commands_overdue=overdue,
            shadow_unsynced=unsynced,
            devices=devices,
            taken_at=now,
        )
        self._last = overview
        return overview
