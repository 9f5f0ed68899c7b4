"""The inbox: every accepted notification, persisted before its 200, until handlers are done.

An entry's life::

    append ──> pending ──claim──> claimed ──begin──> attempt ──ack──> done
                  ^                  │  └──fail (retry later, stays claimed)──┐
                  │                  └──dead──> dead                          │
                  └──── lease expired / release / replay (from done or dead) ─┘

Backends implement `Inbox`; all pass one contract suite (``tests/test_inbox_contract_*.py``).
An attempt counts when `Inbox.begin` records it, just before a handler starts: claiming and
giving back cost no attempt, so an entry that never reached a handler is never charged.
``claim`` keeps per-device order: it never hands out an entry while an earlier entry of the same
device is held by another owner or waits for a retry.

The outbox (for sinks, see `iotpush.sinks`) is separate from delivery: with ``outbox=["nats:X"]``
every new entry is also recorded as unpublished for sink ``nats:X`` in the transaction that keeps
it; the sink takes it with `Inbox.unpublished` and removes it with `Inbox.published` once the
destination acknowledged it. An inbox opened without ``outbox`` writes nothing more per entry.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias, TypeVar

from ..events import Events
from ..idempotency import key_and_slot, slot_order
from ..projections import Projection, Projections
from ._store import Mode, StoreURL

if TYPE_CHECKING:
    import sqlite3

    from ..models import Notification

T = TypeVar("T")

__all__ = [
    "Accepted",
    "AdminInbox",
    "DeliveryInbox",
    "Entry",
    "Inbox",
    "InboxStats",
    "Incoming",
    "Mode",
    "OutboxInbox",
    "Purged",
    "ReceiveInbox",
    "Rejection",
    "Selection",
    "State",
    "StoreURL",
    "Tally",
    "TrackingInbox",
    "decode_entry",
    "log_takeover",
    "new_owner",
    "open_inbox",
]

State: TypeAlias = Literal["pending", "claimed", "done", "dead"]
STATES: tuple[State, ...] = ("pending", "claimed", "done", "dead")
Clock: TypeAlias = Callable[[], float]

DEFAULT_DEDUPE_WINDOW = 48 * 3600.0


@dataclass(frozen=True, slots=True)
class Incoming:
    """A notification the app accepted, to be persisted.

    ``key`` and ``slot`` come from `iotpush.idempotency`: a push is a duplicate when the entry
    holding its ``slot`` has the same ``key`` and is inside the dedupe window.
    """

    body: bytes
    type: str
    device: str | None
    key: str
    slot: str
    path: str
    headers: dict[str, str]
    received_at: float
    notification: Notification | None = field(default=None, compare=False, repr=False)
    """The decoded body, when the caller has it: the inbox feeds it to its projections."""
    order: float | None = None
    """The time the key names, when it is its own slot and names one
    (`iotpush.idempotency.slot_order`): the SQLite inbox orders its dedupe index by it."""

    @classmethod
    def from_notification(
        cls,
        notification: Notification,
        *,
        body: bytes,
        path: str,
        headers: dict[str, str],
        received_at: float,
    ) -> Incoming:
        """What to append for ``notification``, decoded from ``body`` as received on ``path``:
        its type, device, and idempotency key and slot (`iotpush.idempotency.key_and_slot`)."""
        key, slot = key_and_slot(notification)
        order = slot_order(notification) if slot == key else None
        return cls(
            body, notification.notify_type, notification.device, key, slot, path, headers,
            received_at, notification, order,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Accepted:
    """What `Inbox.append` did: the entry's id, and whether it was a duplicate of a kept one."""

    id: int
    duplicate: bool


@dataclass(slots=True)
class Entry:
    """One persisted notification and its delivery state."""

    id: int
    received_at: float
    type: str
    device: str | None
    key: str
    path: str
    body: bytes
    headers: dict[str, str]
    state: State
    attempts: int = 0
    due_at: float = 0.0
    owner: str | None = None
    lease_until: float | None = None
    finished_at: float | None = None
    last_error: str | None = None
    duplicates: int = 0
    last_duplicate_at: float | None = None
    notification: Notification | None = field(default=None, compare=False, repr=False)
    """The decoded body, when the entry was handed over by the process that decoded it."""


def new_owner() -> str:
    """A name for what this process claims (``host:pid:random``): unique, and telling an operator
    which process holds an entry."""
    import os
    import socket
    import uuid

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def log_takeover(taken: dict[str | None, int]) -> None:
    """Log the claims a claim took over from owners whose lease ended (entries by owner)."""
    for owner, count in taken.items():
        logging.getLogger("iotpush.inbox").warning(
            "took over %d entries claimed by %s: its lease ended without renewal", count, owner
        )


def decode_entry(entry: Entry) -> Notification:
    """The typed notification an entry holds.

    Raises:
        NotificationError: The stored body does not decode (a model changed since).
    """
    from ..formats import FORMATS

    if entry.notification is not None:
        return entry.notification
    return FORMATS.decode_stored(entry.type, entry.body)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A body the app refused, kept in quarantine for the operator."""

    received_at: float
    path: str
    status: int
    reason: str
    field: str
    body: bytes
    headers: dict[str, str]
    id: int = 0


@dataclass(frozen=True, slots=True)
class Selection:
    """Which entries an operator command applies to; unset members match everything."""

    ids: Sequence[int] | None = None
    states: Sequence[State] | None = None
    type: str | None = None
    device: str | None = None
    since: float | None = None
    until: float | None = None

    def replayable(self) -> Selection:
        """The entries of this selection that `Inbox.replay` takes: done or dead ones; when
        picked by filter rather than by ids, dead ones only unless ``states`` says otherwise."""
        if self.states is not None:
            states: tuple[State, ...] = tuple(s for s in self.states if s in ("done", "dead"))
        else:
            states = ("done", "dead") if self.ids is not None else ("dead",)
        return dataclasses.replace(self, states=states)


@dataclass(frozen=True, slots=True)
class Tally:
    """How many entries an operator command takes, by type and state (to show before it runs)."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    """Entries by ``(type, state)``."""

    @property
    def total(self) -> int:
        """Entries in all."""
        return sum(self.counts.values())

    def by_state(self) -> dict[str, int]:
        """Entries by state, in `STATES` order (states with none left out)."""
        totals: dict[str, int] = dict.fromkeys(STATES, 0)
        for (_, state), n in self.counts.items():
            totals[state] = totals.get(state, 0) + n
        return {state: n for state, n in totals.items() if n}

    def by_type(self) -> dict[str, int]:
        """Entries by type, most first."""
        totals: dict[str, int] = {}
        for (type_, _), n in self.counts.items():
            totals[type_] = totals.get(type_, 0) + n
        return dict(sorted(totals.items(), key=lambda item: (-item[1], item[0])))


@dataclass(frozen=True, slots=True)
class Purged:
    """Entries of the types the trackers use that `Inbox.purge` deleted (since
    `Inbox.forget_purged`): tracker state that a rebuild from the kept entries would lose."""

    entries: int
    first_received: float
    """When the oldest of them was received."""
    last_received: float
    """When the newest of them was received."""
    first_purged: float
    """When the first purge that deleted some of them ran."""
    last_id: int
    """The highest entry id among them."""


@dataclass(frozen=True, slots=True)
class InboxStats:
    """Counts by state and type, and the age of the oldest undelivered entry."""

    by_state: dict[str, int]
    by_type: dict[str, dict[str, int]]
    duplicates: int
    quarantined: int
    oldest_pending_at: float | None
    now: float
    unpublished: dict[str, int] = field(default_factory=dict)
    """Entries not yet published, by sink (only sinks with any)."""

    @property
    def total(self) -> int:
        """Entries kept."""
        return sum(self.by_state.values())

    @property
    def oldest_pending_age(self) -> float | None:
        """Seconds since the oldest entry not yet done was received."""
        return None if self.oldest_pending_at is None else self.now - self.oldest_pending_at


class Inbox(abc.ABC):
    """Durable storage of accepted notifications and their delivery state.

    All methods are coroutines; ``now`` is the backend's injected clock. Writes that happen
    concurrently may be committed together (group commit): a coroutine returns once its own
    write is durable. An inbox is given its ``projections`` (`iotpush.projections`): each new
    entry whose `Incoming.notification` they handle is applied to them in the transaction that
    keeps it, isolated so that a failing projection costs no notification.
    """

    def __init__(
        self,
        *,
        dedupe_window: float = DEFAULT_DEDUPE_WINDOW,
        clock: Clock = time.time,
        outbox: Sequence[str] = (),
        quarantine_max_rows: int | None = None,
        projections: Iterable[Projection] = (),
        events: Events | None = None,
    ):
        self.dedupe_window = dedupe_window
        self.clock = clock
        self.quarantine_max_rows = quarantine_max_rows
        """The most refusals `quarantine` keeps: beyond, it deletes the oldest (None: no bound)."""
        self.quarantine_dropped = 0
        """Refusals this process deleted from a full quarantine to make room."""
        self.outbox = tuple(outbox)
        """The sinks whose outbox `append` fills: each new entry is unpublished for each."""
        self._outbox_events = {sink: asyncio.Event() for sink in self.outbox}
        self.projections = Projections(projections)
        """What `append` applies to each new entry of a type they handle, in its transaction
        (see `iotpush.projections`); `iotpush.server` gives the trackers."""
        self.events = events or Events()
        """Where the write path's events go (`Committed`, one per group-commit batch)."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Prepare the store (connections, threads); idempotent."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush pending writes and release resources."""

    async def __aenter__(self) -> Inbox:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # receive path -------------------------------------------------------------------------

    @abc.abstractmethod
    async def append(self, item: Incoming) -> Accepted:
        """Persist one notification durably; a duplicate ``key`` within the window is counted.

        Raises:
            InboxUnavailable: Nothing was persisted; the caller must not acknowledge.
        """

    @abc.abstractmethod
    async def quarantine(self, rejection: Rejection) -> int:
        """Keep a refused body for the operator; returns its quarantine id.

        With `quarantine_max_rows`, the oldest refusals beyond that many are deleted (counted in
        `quarantine_dropped`): anyone can send refused bodies, and they must not fill the disk.
        """

    def _quarantine_full(self, dropped: int) -> None:
        """Count ``dropped`` refusals deleted to make room, logging the first and every 1000th."""
        before, self.quarantine_dropped = self.quarantine_dropped, self.quarantine_dropped + dropped
        if dropped and (before == 0 or before // 1000 != self.quarantine_dropped // 1000):
            logging.getLogger("iotpush.inbox").warning(
                "the quarantine holds its maximum of %s refusals: deleted the oldest"
                " (%d so far); see `iotpush quarantine ls`",
                self.quarantine_max_rows,
                self.quarantine_dropped,
            )

    # delivery -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def claim(self, owner: str, limit: int, lease: float) -> list[Entry]:
        """Hand ``owner`` up to ``limit`` due entries in id order, held for ``lease`` seconds.

        Expired leases of other owners are released first (a takeover, logged); ``owner``'s own
        claims are never taken from it. Per-device order holds across owners. Claiming does not
        count an attempt (see `begin`).
        """

    @abc.abstractmethod
    async def begin(self, owner: str, id: int, attempt: int) -> bool:
        """Record that attempt number ``attempt`` of entry ``id`` starts now, durably, before any
        handler runs; False (nothing recorded) when ``owner`` no longer holds the entry."""

    async def begin_many(self, owner: str, attempts: Sequence[tuple[int, int]]) -> set[int]:
        """`begin` for each ``(id, attempt)``, recorded together (one write where the store
        allows it); the ids whose attempt was recorded."""
        return {id for id, attempt in attempts if await self.begin(owner, id, attempt)}

    @abc.abstractmethod
    async def ack(self, ids: Sequence[int]) -> None:
        """Mark entries done: every handler returned."""

    @abc.abstractmethod
    async def fail(self, id: int, error: str, attempts: int, retry_at: float) -> None:
        """Record a failed attempt; the entry stays claimed and is due again at ``retry_at``."""

    @abc.abstractmethod
    async def dead(self, id: int, error: str, attempts: int) -> None:
        """Give up on an entry: it keeps ``error`` (with traceback) until replayed."""

    @abc.abstractmethod
    async def renew(self, owner: str, lease: float) -> int:
        """Extend every claim ``owner`` holds by ``lease`` seconds from now; returns how many."""

    @abc.abstractmethod
    async def release(self, owner: str) -> int:
        """Give back every claim ``owner`` holds (on shutdown); returns how many."""

    def attach(  # noqa: B027 - optional: a backend may ignore it
        self,
        owner: str | None,
        *,
        lease: float = 60.0,
        on_claimed: Callable[[list[Entry]], None] | None = None,
        has_room: Callable[[], bool] = lambda: True,
    ) -> None:
        """Let ``owner`` claim new entries as they are appended (``None`` detaches).

        While ``has_room()``, an appended entry whose device has no earlier entry waiting or
        held by another owner is committed already claimed by ``owner`` (no attempt counted)
        and passed to ``on_claimed`` once committed, sparing a claim round trip. Backends may
        ignore this: their entries then wait for `claim`, with the same guarantees.
        """

    async def wait_for_work(self, timeout: float) -> None:
        """Return when new entries may be due, or after ``timeout`` seconds."""
        await asyncio.sleep(timeout)

    # outbox -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def unpublished(self, sink: str, owner: str, limit: int, lease: float) -> list[Entry]:
        """Lease ``owner`` up to ``limit`` entries of ``sink``'s outbox, in id order.

        An outbox entry is free when no one leases it, its lease has expired, or ``owner``
        itself holds it (so an owner that failed to publish gets the same entries again).
        Those returned are leased to ``owner`` until ``lease`` seconds from now; they stay in
        the outbox until `published`. Entries of a sink not in ``outbox`` are never recorded.
        """

    @abc.abstractmethod
    async def published(self, sink: str, ids: Sequence[int]) -> None:
        """Remove ``ids`` from ``sink``'s outbox: the destination acknowledged them.

        Ids not in the outbox are ignored. Only then may `purge` delete the entries.
        """

    @abc.abstractmethod
    async def release_unpublished(self, sink: str, owner: str) -> int:
        """Give back every outbox lease ``owner`` holds on ``sink`` (on shutdown); how many."""

    async def wait_for_unpublished(self, sink: str, timeout: float) -> None:
        """Return when entries may have entered ``sink``'s outbox, or after ``timeout`` seconds.

        Entries committed since the previous call returned wake it at once, so a sink that
        calls `unpublished` after each return misses none.
        """
        event = self._outbox_events.get(sink)
        if event is None:
            await asyncio.sleep(timeout)
            return
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        event.clear()

    def _outbox_added(self) -> None:
        """Wake `wait_for_unpublished` (backends call it when an append fills the outbox)."""
        for event in self._outbox_events.values():
            event.set()

    # tracker state ------------------------------------------------------------------------

    @abc.abstractmethod
    async def transact(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(db)`` in a write transaction of the store (group-committed with the rest).

        ``db`` has the ``sqlite3.Connection`` interface (``execute`` with ``?`` placeholders);
        projections and `iotpush.trackers` functions run on it.
        """

    @abc.abstractmethod
    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(db)`` on a read connection; it sees every committed transaction."""

    @contextlib.asynccontextmanager
    async def purge_turn(self) -> AsyncIterator[bool]:
        """Whether this process may run a retention round now, held until the block ends: of
        the processes sharing a store, one at a time (the others skip their round). A store
        of one process always lets it."""
        yield True

    async def free_pages(self) -> int:
        """How many free pages the store holds that `give_back` would return (0: none, or the
        store does not give pages back)."""
        return 0

    async def give_back(self, pages: int = 256) -> int:
        """Give up to ``pages`` free pages of the store back to the filesystem, in one short
        transaction; how many (0: none left, or the store does not: a SQLite file made without
        incremental vacuum reuses them, PostgreSQL's autovacuum does its own)."""
        return 0

    # operator -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def get(self, id: int) -> Entry:
        """One entry by id.

        Raises:
            EntryNotFound: No such entry.
        """

    @abc.abstractmethod
    async def find(self, selection: Selection, *, limit: int = 100, after: int = 0) -> list[Entry]:
        """Entries matching ``selection`` with id > ``after``, in id order."""

    @abc.abstractmethod
    async def stats(self) -> InboxStats:
        """Counts by state and type, duplicates, quarantine size, oldest pending."""

    @abc.abstractmethod
    async def tally(
        self, selection: Selection, *, after: int = 0, limit: int | None = None
    ) -> Tally:
        """Count the entries matching ``selection`` with id > ``after``, by type and state.

        With a ``limit``, count at most that many (which ones is unsaid): a count that reads at
        most ``limit`` entries, however many match.
        """

    @abc.abstractmethod
    async def replay(self, selection: Selection) -> int:
        """Make the entries of ``selection.replayable()`` pending again, due now; how many.

        That is done or dead entries; picked by filter (no ids), dead ones only unless the
        selection names states. `tally` of ``selection.replayable()`` counts them beforehand.
        """

    @abc.abstractmethod
    async def purgeable(self, before: float) -> Tally:
        """Count the entries `purge` would delete for ``before``."""

    @abc.abstractmethod
    async def purge(
        self,
        before: float,
        *,
        batch: int = 10_000,
        progress: Callable[[int], None] | None = None,
        dead: bool = True,
    ) -> int:
        """Delete finished entries received before ``before`` (not the quarantine), ``batch``
        at a time, each batch in its own transaction.

        Entries not yet done, and entries still in an outbox, are never purged; dead ones only
        with ``dead`` (retention leaves them to the operator). ``progress`` is called with the
        running total. Deleted entries of the types the trackers use are recorded (see
        `purged`) in the transaction that deletes them.
        """

    @abc.abstractmethod
    async def purged(self) -> Purged | None:
        """What purges deleted that the trackers had used (None: nothing)."""

    @abc.abstractmethod
    async def forget_purged(self) -> None:
        """Forget the purge records: the tracker state no longer holds what they deleted."""

    @abc.abstractmethod
    async def requarantine(self, id: int, status: int, reason: str, field: str) -> None:
        """Give quarantined body ``id`` a new refusal (it was checked again and still refused).

        Raises:
            EntryNotFound: No such record.
        """

    @abc.abstractmethod
    async def count_quarantined(self, before: float | None = None) -> int:
        """How many refused bodies are kept (received before ``before``, if given)."""

    @abc.abstractmethod
    async def purge_quarantine(
        self, before: float, *, batch: int = 10_000, progress: Callable[[int], None] | None = None
    ) -> int:
        """Delete the refused bodies received before ``before``; how many.

        ``progress`` is called with the running total.
        """

    @abc.abstractmethod
    async def quarantined(self, *, limit: int = 100, after: int = 0) -> list[Rejection]:
        """Quarantined bodies with id > ``after``, in id order."""

    @abc.abstractmethod
    async def get_quarantined(self, id: int) -> Rejection:
        """One quarantined body by id.

        Raises:
            EntryNotFound: No such record.
        """


def open_inbox(url: str | StoreURL, **options: object) -> Inbox:
    """Make the inbox a store URL names (see `StoreURL`): ``sqlite:///relative.db``,
    ``sqlite:////absolute.db``, a plain path, ``postgresql://host/db[?schema=NAME]``, or
    ``memory://``; ``mode`` says whether it may be created, written or only read (`Mode`).

    Raises:
        ConfigError: The URL is malformed, or its backend does not take one of ``options``.
    """
    store = url if isinstance(url, StoreURL) else StoreURL.parse(url)
    store.check_options(options)
    if store.scheme == "memory":
        from .memory import MemoryInbox

        options.pop("mode", None)  # a memory store is always new, and always writable
        return MemoryInbox(**options)
    if store.scheme == "sqlite":
        from .sqlite import SQLiteInbox

        assert store.path is not None
        return SQLiteInbox(store.path, **options)  # type: ignore[arg-type]
    from .postgres import PostgresInbox

    return PostgresInbox(store.url, **options)  # type: ignore[arg-type]


from ._roles import AdminInbox, DeliveryInbox, OutboxInbox, ReceiveInbox, TrackingInbox  # noqa: E402
