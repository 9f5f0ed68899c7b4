"""An inbox in process memory: for unit tests and trying things out. Nothing survives a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..exceptions import EntryNotFound
from . import (
    Accepted,
    Entry,
    Inbox,
    InboxStats,
    Incoming,
    Purged,
    Rejection,
    Selection,
    Tally,
    _migrations,
    log_takeover,
)

__all__ = ["MemoryInbox"]

T = TypeVar("T")

_Record = TypeVar("_Record", Entry, Rejection)


def _matches(entry: Entry, sel: Selection) -> bool:
    return (
        (sel.ids is None or entry.id in sel.ids)
        and (sel.states is None or entry.state in sel.states)
        and (sel.type is None or entry.type == sel.type)
        and (sel.device is None or entry.device == sel.device)
        and (sel.since is None or entry.received_at >= sel.since)
        and (sel.until is None or entry.received_at < sel.until)
    )


def _copy(record: _Record) -> _Record:
    # Callers get snapshots, as from a durable store: mutating one must not reach the inbox.
    return dataclasses.replace(record, headers=dict(record.headers))


class MemoryInbox(Inbox):
    """`Inbox` kept in dicts, with the same semantics as the durable backends."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self._entries: dict[int, Entry] = {}
        self._slots: dict[str, int] = {}
        self._quarantine: dict[int, Rejection] = {}
        self._next_id = 1
        self._next_quarantine_id = 1
        self._purges: list[Purged] = []
        self._work = asyncio.Event()
        # Per sink: id -> (lease owner, lease end); dicts keep insertion (= id) order.
        self._outboxes: dict[str, dict[int, tuple[str | None, float]]] = {
            sink: {} for sink in self.outbox
        }
        # Projections' tables live in an in-memory SQLite database: projections speak SQL.
        self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        _migrations.migrate_sqlite(self._db, "memory://")

    async def append(self, item: Incoming) -> Accepted:
        existing = self._entries.get(self._slots.get(item.slot, 0))
        if (
            existing is not None
            and existing.key == item.key
            and existing.received_at >= item.received_at - self.dedupe_window
        ):
            existing.duplicates += 1
            existing.last_duplicate_at = item.received_at
            return Accepted(existing.id, duplicate=True)
        entry = Entry(
            id=self._next_id,
            received_at=item.received_at,
            type=item.type,
            device=item.device,
            key=item.key,
            path=item.path,
            body=item.body,
            headers=dict(item.headers),
            state="pending",
            due_at=item.received_at,
        )
        self._next_id += 1
        self._entries[entry.id] = entry
        self._slots[item.slot] = entry.id
        notification = item.notification
        if notification is not None and self.projections.wants(notification.notify_type):
            self.projections.apply(self._db, entry.id, item.received_at, notification)
        for outbox in self._outboxes.values():
            outbox[entry.id] = (None, 0.0)
        if self._outboxes:
            self._outbox_added()
        self._work.set()
        return Accepted(entry.id, duplicate=False)

    async def quarantine(self, rejection: Rejection) -> int:
        id = self._next_quarantine_id
        self._next_quarantine_id += 1
        self._quarantine[id] = _copy(dataclasses.replace(rejection, id=id))
        bound = self.quarantine_max_rows
        if bound is not None and len(self._quarantine) > bound:
            oldest = list(self._quarantine)[: len(self._quarantine) - bound]  # ids in order
            for old in oldest:
                del self._quarantine[old]
            self._quarantine_full(len(oldest))
        return id

    def _blocked(self, entry: Entry, owner: str, now: float) -> bool:
        # An earlier entry of the same device held elsewhere, or waiting for a retry, blocks it.
        if entry.device is None:
            return False
        for other in self._entries.values():
            if other.id >= entry.id:
                break
            if other.device != entry.device:
                continue
            if other.state == "claimed" and other.owner != owner:
                return True
            if other.state == "pending" and other.due_at > now:
                return True
        return False

    async def claim(self, owner: str, limit: int, lease: float) -> list[Entry]:
        now = self.clock()
        self._work.clear()
        taken: dict[str | None, int] = {}
        for entry in self._entries.values():
            if entry.state == "claimed" and entry.owner != owner and (entry.lease_until or 0) < now:
                taken[entry.owner] = taken.get(entry.owner, 0) + 1
                entry.state, entry.owner, entry.lease_until = "pending", None, None
        log_takeover(taken)
        claimed: list[Entry] = []
        for entry in self._entries.values():
            if len(claimed) >= limit:
                break
            if entry.state != "pending" or entry.due_at > now or self._blocked(entry, owner, now):
                continue
            entry.state, entry.owner, entry.lease_until = "claimed", owner, now + lease
            claimed.append(_copy(entry))
        return claimed

    async def begin(self, owner: str, id: int, attempt: int) -> bool:
        entry = self._entries.get(id)
        if entry is None or entry.state != "claimed" or entry.owner != owner:
            return False
        entry.attempts = attempt
        return True

    async def ack(self, ids: Sequence[int]) -> None:
        now = self.clock()
        for id in ids:
            entry = self._entries.get(id)
            if entry is not None and entry.state == "claimed":
                entry.state, entry.owner, entry.lease_until = "done", None, None
                entry.finished_at = now

    async def fail(self, id: int, error: str, attempts: int, retry_at: float) -> None:
        entry = self._entries.get(id)
        if entry is not None:
            entry.last_error, entry.attempts, entry.due_at = error, attempts, retry_at

    async def dead(self, id: int, error: str, attempts: int) -> None:
        entry = self._entries.get(id)
        if entry is not None:
            entry.state, entry.owner, entry.lease_until = "dead", None, None
            entry.last_error, entry.attempts, entry.finished_at = error, attempts, self.clock()

    async def renew(self, owner: str, lease: float) -> int:
        held = [e for e in self._entries.values() if e.state == "claimed" and e.owner == owner]
        for entry in held:
            entry.lease_until = self.clock() + lease
        return len(held)

    async def release(self, owner: str) -> int:
        held = [e for e in self._entries.values() if e.state == "claimed" and e.owner == owner]
        for entry in held:
            entry.state, entry.owner, entry.lease_until = "pending", None, None
        if held:
            self._work.set()
        return len(held)

    async def transact(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._db.execute("BEGIN")
        try:
            result = fn(self._db)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return result

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return fn(self._db)

    async def wait_for_work(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._work.wait(), timeout)
        except TimeoutError:
            pass

    async def unpublished(self, sink: str, owner: str, limit: int, lease: float) -> list[Entry]:
        outbox = self._outboxes.get(sink, {})
        now = self.clock()
        taken: list[Entry] = []
        for id, (holder, until) in outbox.items():
            if len(taken) >= limit:
                break
            if holder is None or holder == owner or until < now:
                outbox[id] = (owner, now + lease)
                taken.append(_copy(self._entries[id]))
        return taken

    async def published(self, sink: str, ids: Sequence[int]) -> None:
        outbox = self._outboxes.get(sink, {})
        for id in ids:
            outbox.pop(id, None)

    async def release_unpublished(self, sink: str, owner: str) -> int:
        outbox = self._outboxes.get(sink, {})
        held = [id for id, (holder, _) in outbox.items() if holder == owner]
        for id in held:
            outbox[id] = (None, 0.0)
        if held:
            self._outbox_added()
        return len(held)

    async def get(self, id: int) -> Entry:
        try:
            return _copy(self._entries[id])
        except KeyError:
            raise EntryNotFound(f"no inbox entry {id}") from None

    async def find(self, selection: Selection, *, limit: int = 100, after: int = 0) -> list[Entry]:
        found = [
            _copy(e) for e in self._entries.values() if e.id > after and _matches(e, selection)
        ]
        return found[:limit]

    async def stats(self) -> InboxStats:
        by_state: dict[str, int] = {}
        by_type: dict[str, dict[str, int]] = {}
        for e in self._entries.values():
            by_state[e.state] = by_state.get(e.state, 0) + 1
            counts = by_type.setdefault(e.type, {})
            counts[e.state] = counts.get(e.state, 0) + 1
        open_ = [e.received_at for e in self._entries.values() if e.state in ("pending", "claimed")]
        return InboxStats(
            by_state=by_state,
            by_type=by_type,
            duplicates=sum(e.duplicates for e in self._entries.values()),
            quarantined=len(self._quarantine),
            oldest_pending_at=min(open_, default=None),
            now=self.clock(),
            unpublished={sink: len(ids) for sink, ids in self._outboxes.items() if ids},
        )

    async def tally(
        self, selection: Selection, *, after: int = 0, limit: int | None = None
    ) -> Tally:
        counts: dict[tuple[str, str], int] = {}
        left = limit
        for e in self._entries.values():
            if left is not None and left <= 0:
                break
            if e.id > after and _matches(e, selection):
                counts[e.type, e.state] = counts.get((e.type, e.state), 0) + 1
                left = None if left is None else left - 1
        return Tally(counts)

    async def replay(self, selection: Selection) -> int:
        now = self.clock()
        count = 0
        replayable = selection.replayable()
        for e in self._entries.values():
            if _matches(e, replayable):
                e.state, e.due_at, e.attempts, e.finished_at = "pending", now, 0, None
                count += 1
        if count:
            self._work.set()
        return count

    def _purgeable(self, before: float, dead: bool = True) -> list[Entry]:
        states = ("done", "dead") if dead else ("done",)
        return [
            e
            for e in self._entries.values()
            if e.received_at < before
            and e.state in states
            and not any(e.id in outbox for outbox in self._outboxes.values())
        ]

    async def purgeable(self, before: float) -> Tally:
        counts: dict[tuple[str, str], int] = {}
        for e in self._purgeable(before):
            counts[e.type, e.state] = counts.get((e.type, e.state), 0) + 1
        return Tally(counts)

    async def purge(
        self,
        before: float,
        *,
        batch: int = 10_000,
        progress: Callable[[int], None] | None = None,
        dead: bool = True,
    ) -> int:
        old = self._purgeable(before, dead)
        for e in old:
            self._entries.pop(e.id)
        tracked = [e for e in old if self.projections.wants(e.type)]
        if tracked:
            times = [e.received_at for e in tracked]
            last_id = max(e.id for e in tracked)
            self._purges.append(Purged(len(tracked), min(times), max(times), self.clock(), last_id))
            self._purges[:] = [merged] if (merged := self._merged()) is not None else []
        self._slots = {s: i for s, i in self._slots.items() if i in self._entries}
        if progress is not None and old:
            progress(len(old))
        return len(old)

    async def purged(self) -> Purged | None:
        return self._merged()

    def _merged(self) -> Purged | None:
        """The purge records as one (retention purges often: the list must not grow)."""
        if not self._purges:
            return None
        return Purged(
            sum(p.entries for p in self._purges),
            min(p.first_received for p in self._purges),
            max(p.last_received for p in self._purges),
            min(p.first_purged for p in self._purges),
            max(p.last_id for p in self._purges),
        )

    async def forget_purged(self) -> None:
        self._purges.clear()

    async def requarantine(self, id: int, status: int, reason: str, field: str) -> None:
        if id not in self._quarantine:
            raise EntryNotFound(f"no quarantined body {id}")
        old = self._quarantine[id]
        self._quarantine[id] = dataclasses.replace(old, status=status, reason=reason, field=field)

    async def count_quarantined(self, before: float | None = None) -> int:
        return sum(1 for r in self._quarantine.values() if before is None or r.received_at < before)

    async def purge_quarantine(
        self, before: float, *, batch: int = 10_000, progress: Callable[[int], None] | None = None
    ) -> int:
        stale = [q for q, r in self._quarantine.items() if r.received_at < before]
        for q in stale:
            del self._quarantine[q]
        if progress is not None and stale:
            progress(len(stale))
        return len(stale)

    async def quarantined(self, *, limit: int = 100, after: int = 0) -> list[Rejection]:
        return [_copy(r) for q, r in self._quarantine.items() if q > after][:limit]

    async def get_quarantined(self, id: int) -> Rejection:
        try:
            return _copy(self._quarantine[id])
        except KeyError:
            raise EntryNotFound(f"no quarantined body {id}") from None
