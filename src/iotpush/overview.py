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
from .inbox._sqlbase import SQLInbox
from .trackers import count_unsynced

__all__ = ["Entries", "Overview", "OverviewReader", "read_entries"]

# Each groups a small table, or counts through an index (commands_state, commands_deadline,
# devices_status); the shadow count is `trackers.count_unsynced`.
_COMMANDS = "SELECT COALESCE(state, 'unknown'), count(*) FROM commands GROUP BY 1"
_OVERDUE = "SELECT count(*) FROM commands WHERE terminal = 0 AND deadline < ?"
_DEVICES = (
    "SELECT COALESCE(status, 'unknown'), count(*) FROM devices"
    " WHERE deleted_entry_id IS NULL OR deleted_entry_id < COALESCE(added_entry_id, 0)"
    " GROUP BY 1"
)


@dataclass(frozen=True, slots=True)
class Entries:
    """The inbox's figures: entries by state, the oldest waiting, quarantine, each sink's outbox."""

    by_state: dict[str, int]
    oldest_pending_at: float | None
    quarantined: int
    unpublished: dict[str, int]


def _sql_entries(db: Any) -> Entries:
    def one(sql: str) -> Any:
        row = db.execute(sql, ()).fetchone()
        return None if row is None else row[0]

    total = int(one("SELECT count(*) FROM inbox"))
    by_state = {
        state: int(one(f"SELECT count(*) FROM inbox WHERE state = '{state}'"))  # noqa: S608 - a constant
        for state in ("pending", "claimed", "dead")
    }
    by_state["done"] = total - sum(by_state.values())
    oldest = [  # each through its partial index (an ORDER BY id would walk the whole table)
        one("SELECT received_at FROM inbox WHERE state = 'pending' ORDER BY id LIMIT 1"),
        one("SELECT min(received_at) FROM inbox WHERE state = 'claimed'"),
    ]
    waiting = [at for at in oldest if at is not None]
    unpublished = dict(db.execute("SELECT sink, count(*) FROM outbox GROUP BY sink", ()).fetchall())
    return Entries(
        by_state={state: by_state[state] for state in STATES},
        oldest_pending_at=min(waiting) if waiting else None,
        quarantined=int(one("SELECT count(*) FROM quarantine")),
        unpublished=unpublished,
    )


async def read_entries(inbox: Inbox) -> Entries:
    """The inbox's figures, counted where indexes make it cheap.

    Counting every entry by state is a scan of the inbox; on a SQL store this asks instead for
    what partial indexes answer at once (pending, claimed, dead, the oldest waiting) and one
    ``count(*)``, and computes done from them.
    """
    if isinstance(inbox, SQLInbox):
        return await inbox.read(_sql_entries)
    stats = await inbox.stats()  # the memory inbox: no index to spare a scan, nor a need
    return Entries(
        {state: stats.by_state.get(state, 0) for state in STATES},
        stats.oldest_pending_at, stats.quarantined, stats.unpublished,
    )  # fmt: skip


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
        entries = await read_entries(self.inbox)
        now = self.clock()

        def trackers(db: Any) -> tuple[dict[str, int], int, int, dict[str, int]]:
            commands = {str(state): int(n) for state, n in db.execute(_COMMANDS, ()).fetchall()}
            (overdue,) = db.execute(_OVERDUE, (now,)).fetchone()
            unsynced = count_unsynced(db)
            devices = {str(status): int(n) for status, n in db.execute(_DEVICES, ()).fetchall()}
            return commands, int(overdue), int(unsynced), devices

        commands, overdue, unsynced, devices = await self.inbox.read(trackers)
        oldest = entries.oldest_pending_at
        age = None if oldest is None else self.inbox.clock() - oldest
        overview = Overview(
            entries=entries.by_state,
            oldest_pending_seconds=max(0.0, age) if age is not None else 0.0,
            quarantined=entries.quarantined,
            unpublished={sink: entries.unpublished.get(sink, 0) for sink in self.inbox.outbox},
            commands=commands,
            commands_overdue=overdue,
            shadow_unsynced=unsynced,
            devices=devices,
            taken_at=now,
        )
        self._last = overview
        return overview
