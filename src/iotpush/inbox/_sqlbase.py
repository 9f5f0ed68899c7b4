"""What the SQL inboxes (SQLite, PostgreSQL) do alike, written once.

`SQLInbox` holds the statements and loops both backends run the same way: keeping a new entry
(the dedupe retry, its outbox rows, its tracker writes), the quarantine bound, delivery updates by
id, the outbox lease release, operator reads (entries, quarantine, stats), replay, purge, and the
savepoints around tracker writes. Its SQL uses ``?`` placeholders; a backend whose driver wants
others translates them in `SQLInbox._q`. What differs stays in the backends: connections, group
commit, ``RETURNING`` and ``SKIP LOCKED``, lists bound one by one (SQLite) or as arrays
(PostgreSQL).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import msgspec

from ..exceptions import EntryNotFound, InboxUnavailable
from ..models import Notification
from ..projections import Database
from . import STATES, Entry, Inbox, InboxStats, Incoming, Purged, Rejection, Selection, Tally

__all__ = ["COLUMNS", "Hot", "SQLInbox", "entry", "rejection", "slot_digest", "where"]

_json_encode = msgspec.json.encode
_headers_decoder = msgspec.json.Decoder(dict[str, str])

log = logging.getLogger("iotpush.inbox")

T = TypeVar("T")

COLUMNS = (
    "id, received_at, type, device, key, path, body, headers, state, attempts, due_at, owner,"
    " lease_until, finished_at, last_error, duplicates, last_duplicate_at"
)

_QUARANTINE_COLUMNS = "received_at, path, status, reason, field, body, headers, id"

# Entries `purge` deletes: finished before the time bound, and published by every sink.
_PURGEABLE = (
    "received_at < ? AND state IN ('done', 'dead')"
    " AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.id = inbox.id)"
)
_DELIVERED = _PURGEABLE.replace("state IN ('done', 'dead')", "state = 'done'")  # not dead

# The purge records are kept as one row (retention purges every few minutes): each purge takes
# the rows there are and puts back their sum. Its DELETE sees only committed rows, so two
# processes purging at once may leave two rows, each counting its own: never one twice.
_TAKE_PURGES = (
    "DELETE FROM purges RETURNING purged_at, entries, first_received, last_received, last_id"
)


# `find` lists entries in id order; with ``since``, it starts at the lowest id among the first
# entries received since then (by the received_at index), not at the first entry of the store.
# Entries are kept roughly in the order they are received, but not exactly (several requests in
# one group commit, several processes on PostgreSQL), so the bound is the lowest id of the first
# 1000 in received_at order; an entry out of order by more (a clock stepped back) can be missed.
# One expression bounds the id (the page's ``after`` or that, whichever is higher; none received
# since: past every id), so the planner starts its range there.
_SINCE_AFTER = (
    "(SELECT CASE WHEN min(id) IS NULL THEN 9223372036854775806"
    " WHEN min(id) - 1 > ? THEN min(id) - 1 ELSE ? END"
    " FROM (SELECT id FROM inbox WHERE received_at >= ? ORDER BY received_at LIMIT 1000)"
    " AS earliest)"
)


def slot_digest(slot: str) -> bytes:
    """The ``dedupe`` column of the entry holding ``slot``: 16 bytes, whatever the slot's length."""
    return hashlib.blake2b(slot.encode(), digest_size=16).digest()


def entry(row: Sequence[Any]) -> Entry:
    """An `Entry` from a row of `COLUMNS`."""
    return Entry(*row[:7], _headers_decoder.decode(row[7]), *row[8:])  # type: ignore[call-arg]


def rejection(row: Sequence[Any]) -> Rejection:
    """A `Rejection` from a row of quarantine columns (``received_at, ..., headers, id``)."""
    return Rejection(*row[:6], _headers_decoder.decode(row[6]), row[7])  # type: ignore[call-arg]


def where(
    sel: Selection, *, mark: str, one_of: Callable[[str, Sequence[Any]], tuple[str, list[Any]]]
) -> tuple[str, list[Any]]:
    """A WHERE clause (placeholders only) and its parameters for a selection.

    Args:
        sel: The selection.
        mark: The driver's placeholder (``?``, ``%s``).
        one_of: The clause and parameters for "``column`` is one of ``values``".
    """
    clauses: list[str] = []
    params: list[Any] = []
    if sel.ids is not None:
        clause, bound = one_of("id", sel.ids)
        clauses.append(clause)
        params.extend(bound)
    if sel.states is not None:
        # Written out, not bound: the planner then uses the partial indexes of a state. One
        # state as an equality: SQLite takes `state IN ('dead')` for no partial index's WHERE.
        known = [state for state in STATES if state in sel.states]
        listed = ", ".join(repr(state) for state in known)
        clauses.append(
            f"state = {listed}" if len(known) == 1 else f"state IN ({listed})" if known else "FALSE"
        )
    for column, value in (("type", sel.type), ("device", sel.device)):
        if value is not None:
            clauses.append(f"{column} = {mark}")
            params.append(value)
    if sel.since is not None:
        clauses.append(f"received_at >= {mark}")
        params.append(sel.since)
    if sel.until is not None:
        clauses.append(f"received_at < {mark}")
        params.append(sel.until)
    return " AND ".join(clauses) or "TRUE", params


def _sum_purges(rows: Sequence[Sequence[Any]]) -> tuple[Any, ...]:
    """Purge records (``purged_at, entries, first_received, last_received, last_id``) as one."""
    return (
        min(r[0] for r in rows), sum(r[1] for r in rows), min(r[2] for r in rows),
        max(r[3] for r in rows), max(r[4] for r in rows),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Hot:
    """The owner `Inbox.attach` named: new entries go to it claimed, as they are appended."""

    owner: str
    lease: float
    on_claimed: Callable[[list[Entry]], None]
    has_room: Callable[[], bool]


class _Writer(Protocol):
    commits: int
    writes: int

    async def write(self, fn: Callable[[Any], T], *, wakes: bool, bounded: bool) -> T: ...

    async def close(self) -> None: ...


class SQLInbox(Inbox):
    """The part of an `Inbox` on a SQL database that does not depend on the dialect.

    A backend sets ``_writer`` (its group commit) once open and implements `_read`, `_where`,
    `_fill_outbox` and `_insert_rejection`; `_q`, `_tracker_db`, `_lost`, `_sync` and `_recover`
    have defaults for ``sqlite3``.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._writer: _Writer | None = None
        self._tracked: list[tuple[int, float, Notification]] = []  # new in the transaction
        self._pending_added = False  # that transaction appended an entry for `claim`
        self._work: asyncio.Event | None = None
        self._hot: Hot | None = None
        self._handed: list[Entry] = []  # claimed by `_hot` in the transaction under way
        self._claims = 0  # claims of a backend that claims outside its writer, under way
        self._held_back: list[Entry] = []  # handed over while one was: see `_hand_over`

    @property
    def commits(self) -> int:
        """Transactions committed (with `writes`, shows group commit at work)."""
        return 0 if self._writer is None else self._writer.commits

    @property
    def writes(self) -> int:
        """Writes those transactions held."""
        return 0 if self._writer is None else self._writer.writes

    # what the backends provide ---------------------------------------------------------------

    @property
    @abc.abstractmethod
    def _name(self) -> str:
        """The store, as messages name it (no password)."""

    @abc.abstractmethod
    async def _read(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(conn)`` on a read connection, in a worker thread."""

    @abc.abstractmethod
    def _where(self, selection: Selection) -> tuple[str, list[Any]]:
        """`where` in the backend's placeholders."""

    @abc.abstractmethod
    def _fill_outbox(self, conn: Any, id: int) -> None:
        """Record the new entry ``id`` as unpublished for every sink of `outbox`."""

    @abc.abstractmethod
    def _insert_rejection(self, conn: Any, row: tuple[Any, ...]) -> int:
        """Insert a quarantine row (`_QUARANTINE_COLUMNS` but the id); return its id."""

    def _q(self, sql: str) -> str:
        """``sql`` (with ``?`` placeholders) as the driver takes it."""
        return sql

    _UNINDEXED: ClassVar[str] = "+"
    """Put before a column, keeps SQLite's planner off its indexes: a count grouped by type
    would otherwise walk the whole of ``inbox_type`` to spare a sort of a few rows. ("" where the
    planner needs no such hint, and ``+`` on a text column is no expression.)"""

    def _tracker_db(self, conn: Any) -> Database:
        """The writer connection as the projections use it, ready for their writes."""
        db: Database = conn
        return db

    def _lost(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the connection is gone (the whole batch fails)."""
        return False

    def _sync(self, conn: Any) -> None:
        """Wait until the statements run so far on the writer ``conn`` are done, raising their
        first error (a backend that queues statements: PostgreSQL's pipeline)."""

    def _recover(self, conn: Any) -> None:
        """After an error on the writer ``conn``: make it run statements again (the rollback)."""

    # group commit ----------------------------------------------------------------------------

    async def _write(
        self,
        fn: Callable[[Any], T],
        *,
        wakes: bool = False,
        bounded: bool = False,
        opens: bool = True,
    ) -> T:
        """Queue ``fn`` for the next transaction; ``opens=False`` promises that it leaves no
        entry pending or claimed by another owner (see `_may_open`)."""
        if self._writer is None:
            raise InboxUnavailable(self._unwritable())
        if opens:
            fn = self._may_open(fn)
        return await self._writer.write(fn, wakes=wakes, bounded=bounded)

    def _may_open(self, fn: Callable[[Any], T]) -> Callable[[Any], T]:
        """``fn``, as a write that may leave entries open for others (a backend that keeps
        what it knows of them in the transaction forgets it there)."""
        return fn

    def _unwritable(self) -> str:
        """Why writes fail while the store has no writer."""
        return f"the inbox {self._name} is not open"

    def _before_commit(self, conn: Any) -> None:
        if self._tracked:
            self._track(conn)

    def _track(self, conn: Any) -> None:
        # In the transaction that keeps the entries, so projected state is as durable as the 200.
        # A projection that fails must not cost a notification: its changes alone roll back, it
        # is logged, and `Tracking.rebuild` can apply the entry again.
        tracked, self._tracked = self._tracked, []
        db = self._tracker_db(conn)
        apply = self.projections.apply
        conn.execute("SAVEPOINT track")
        try:
            for id, received_at, notification in tracked:
                apply(db, id, received_at, notification)
            self._sync(conn)
        except Exception as exc:  # the slow path below finds and logs the culprit
            if self._lost(exc):
                raise
            self._recover(conn)
            conn.execute("ROLLBACK TO SAVEPOINT track")
            for id, received_at, notification in tracked:  # again, one by one
                conn.execute("SAVEPOINT one")
                try:
                    apply(db, id, received_at, notification)
                    self._sync(conn)
                except Exception as one:
                    if self._lost(one):
                        raise
                    self._recover(conn)
                    conn.execute("ROLLBACK TO SAVEPOINT one")
                    log.exception("tracking entry %d failed; the entry is kept all the same", id)
                conn.execute("RELEASE SAVEPOINT one")
        conn.execute("RELEASE SAVEPOINT track")

    def _hand_over(self) -> None:
        """Once a transaction committed: give the attached owner the entries it claimed."""
        # Called after the futures were resolved, so a claim committed in the same batch is
        # queued by its owner before these entries can start (their lanes keep id order anyway).
        handed, self._handed = self._handed, []
        if handed and self._hot is not None:
            if self._claims:  # see `_claiming`
                self._held_back += handed
                return
            self._hot.on_claimed(handed)

    @contextlib.contextmanager
    def _claiming(self) -> Iterator[None]:
        """Around a claim that commits outside the writer (PostgreSQL's, on its read pool).

        Once it committed, the hot handoff's rule counts its entries as the owner's: a later
        entry of one of their devices is claimed for the owner as it is appended. Were that
        one handed over before the claim's rows reached the owner, it could begin before them.
        So what is handed over while a claim is under way waits, and goes to the owner just
        after the claim returned (`call_soon`: after its caller queued the claimed entries).
        """
        self._claims += 1
        try:
            yield
        finally:
            self._claims -= 1
            held, self._held_back = ([], self._held_back) if self._claims else (self._held_back, [])
            if held and self._hot is not None:
                asyncio.get_running_loop().call_soon(self._hot.on_claimed, held)

    def attach(
        self,
        owner: str | None,
        *,
        lease: float = 60.0,
        on_claimed: Callable[[list[Entry]], None] | None = None,
        has_room: Callable[[], bool] = lambda: True,
    ) -> None:
        if owner is None or on_claimed is None:
            self._hot = None
        else:
            self._hot = Hot(owner, lease, on_claimed, has_room)

    # receive path ----------------------------------------------------------------------------

    def _insert(
        self, conn: Any, insert: str, row: tuple[Any, ...], dedupe: bytes
    ) -> tuple[int, bool]:
        """Run the backend's ``insert`` (an upsert on the slot digest ``dedupe``) of ``row``.

        Returns the id of the new entry, or of the kept one it duplicates, and whether it did.
        """
        found = self._inserted(conn, conn.execute(insert, row), insert, row, dedupe)
        return found[0], found[1] > 0

    def _inserted(self, conn: Any, cursor: Any, insert: str, row: Any, dedupe: bytes) -> Any:
        """The row `_insert` returns (id, duplicates...), once ``cursor`` ran ``insert`` of
        ``row`` the first time."""
        found = cursor.fetchone()
        if found is None:  # the slot's entry has another key, or is outside the window
            conn.execute(self._q("UPDATE inbox SET dedupe = NULL WHERE dedupe = ?"), (dedupe,))
            found = conn.execute(insert, row).fetchone()
        return found

    def _keep(
        self, conn: Any, insert: str, row: tuple[Any, ...], item: Incoming, dedupe: bytes
    ) -> tuple[int, bool]:
        """Run the backend's ``insert`` of ``row`` for ``item``, whose slot digest is
        ``dedupe``; fill the outbox and queue the projection writes of a new entry.

        Returns the entry's id and whether it was a duplicate of a kept one.
        """
        id, duplicate = self._insert(conn, insert, row, dedupe)
        if not duplicate:
            self._kept(conn, id, item)
        return id, duplicate

    def _kept(self, conn: Any, id: int, item: Incoming) -> None:
        """Fill the outbox and queue the projection writes of ``item``, new entry ``id``."""
        if self.outbox:  # published only after it is kept
            self._fill_outbox(conn, id)
        notification = item.notification
        if notification is not None and self.projections.wants(notification.notify_type):
            self._tracked.append((id, item.received_at, notification))

    async def quarantine(self, rejection: Rejection) -> int:
        r = rejection
        row = (r.received_at, r.path, r.status, r.reason, r.field, r.body,
               _json_encode(r.headers).decode())  # fmt: skip
        bound = self.quarantine_max_rows
        delete = self._q("DELETE FROM quarantine WHERE id <= ?")

        def insert(conn: Any) -> tuple[int, int]:
            id = self._insert_rejection(conn, row)
            if bound is None:
                return id, 0
            # Ids only grow: keeping the last `bound` ids keeps at most `bound` rows.
            return id, int(conn.execute(delete, (id - bound,)).rowcount)

        id, dropped = await self._write(insert, bounded=True)
        if dropped:
            self._quarantine_full(dropped)
        return id

    # delivery --------------------------------------------------------------------------------

    async def begin(self, owner: str, id: int, attempt: int) -> bool:
        sql = self._q(
            "UPDATE inbox SET attempts = ? WHERE id = ? AND state = 'claimed' AND owner = ?"
        )
        return await self._write(
            lambda conn: conn.execute(sql, (attempt, id, owner)).rowcount == 1, opens=False
        )

    async def begin_many(self, owner: str, attempts: Sequence[tuple[int, int]]) -> set[int]:
        sql = self._q(
            "UPDATE inbox SET attempts = ? WHERE id = ? AND state = 'claimed' AND owner = ?"
        )

        def begin(conn: Any) -> set[int]:
            execute = conn.execute
            return {id for id, attempt in attempts if execute(sql, (attempt, id, owner)).rowcount}

        return await self._write(begin, opens=False)

    async def fail(self, id: int, error: str, attempts: int, retry_at: float) -> None:
        sql = self._q("UPDATE inbox SET last_error = ?, attempts = ?, due_at = ? WHERE id = ?")
        await self._write(lambda conn: conn.execute(sql, (error, attempts, retry_at, id)))

    async def dead(self, id: int, error: str, attempts: int) -> None:
        sql = self._q(
            "UPDATE inbox SET state = 'dead', last_error = ?, attempts = ?, finished_at = ?,"
            " owner = NULL, lease_until = NULL WHERE id = ?"
        )
        await self._write(lambda conn: conn.execute(sql, (error, attempts, self.clock(), id)))

    async def renew(self, owner: str, lease: float) -> int:
        sql = self._q("UPDATE inbox SET lease_until = ? WHERE state = 'claimed' AND owner = ?")
        return await self._write(
            lambda conn: int(conn.execute(sql, (self.clock() + lease, owner)).rowcount)
        )

    async def wait_for_work(self, timeout: float) -> None:
        if self._work is None:
            await asyncio.sleep(timeout)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), timeout)

    # outbox ----------------------------------------------------------------------------------

    async def release_unpublished(self, sink: str, owner: str) -> int:
        sql = self._q(
            "UPDATE outbox SET owner = NULL, lease_until = NULL WHERE sink = ? AND owner = ?"
        )
        return await self._write(lambda conn: int(conn.execute(sql, (sink, owner)).rowcount))

    # operator --------------------------------------------------------------------------------

    async def get(self, id: int) -> Entry:
        sql = self._q(f"SELECT {COLUMNS} FROM inbox WHERE id = ?")  # noqa: S608 - constant columns
        row = await self._read(lambda conn: conn.execute(sql, (id,)).fetchone())
        if row is None:
            raise EntryNotFound(f"no inbox entry {id}")
        return entry(row)

    def _find_query(self, selection: Selection, *, limit: int, after: int) -> tuple[str, list[Any]]:
        """The statement of `find` and its parameters (tests read its plan)."""
        since = selection.since
        if since is not None:
            selection = dataclasses.replace(selection, since=None)
        clause, params = self._where(selection)
        # `_where` holds column names and placeholders only; the values are bound.
        start = "id > ?"
        bound: list[Any] = [after]
        if since is not None:  # `+`: the received_at index bounds the ids, rows come in id order
            start = f"id > {_SINCE_AFTER} AND +received_at >= ?"
            bound = [after, after, since, since]
        sql = self._q(f"SELECT {COLUMNS} FROM inbox WHERE {start} AND ") + clause  # noqa: S608
        return sql + self._q(" ORDER BY id LIMIT ?"), [*bound, *params, limit]

    async def find(self, selection: Selection, *, limit: int = 100, after: int = 0) -> list[Entry]:
        sql, params = self._find_query(selection, limit=limit, after=after)
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [entry(row) for row in rows]

    async def stats(self) -> InboxStats:
        def read(conn: Any) -> InboxStats:
            by_state: dict[str, int] = {}
            by_type: dict[str, dict[str, int]] = {}
            sql = "SELECT state, type, count(*), sum(duplicates) FROM inbox GROUP BY state, type"
            duplicates = 0
            for state, type_, count, dups in conn.execute(sql):
                by_state[state] = by_state.get(state, 0) + count
                by_type.setdefault(type_, {})[state] = count
                duplicates += int(dups)
            (oldest,) = conn.execute(
                "SELECT min(received_at) FROM inbox WHERE state IN ('pending', 'claimed')"
            ).fetchone()
            (quarantined,) = conn.execute("SELECT count(*) FROM quarantine").fetchone()
            sql = "SELECT sink, count(*) FROM outbox GROUP BY sink"
            unpublished = dict(conn.execute(sql).fetchall())
            return InboxStats(
                by_state, by_type, duplicates, quarantined, oldest, self.clock(), unpublished
            )

        return await self._read(read)

    def _tally_query(
        self, selection: Selection, *, after: int, limit: int | None
    ) -> tuple[str, list[Any]]:
        """The statement of `tally` and its parameters (tests read its plan)."""
        clause, params = self._where(selection)
        # `_where` holds column names and placeholders only; the values are bound. No bound on
        # the ids unless asked: the planner then reads the filters' indexes (a time range through
        # received_at's, not through every id past ``after``).
        timed = selection.since is not None or selection.until is not None
        if after > 0:
            clause = self._q(f"{self._UNINDEXED if timed else ''}id > ? AND ") + clause
            params = [after, *params]
        if limit is None:
            sql = f"SELECT type, state, count(*) FROM inbox WHERE {clause}"  # noqa: S608
            return sql + f" GROUP BY {self._UNINDEXED}type, state", params
        sql = f"SELECT type, state, count(*) FROM (SELECT type, state FROM inbox WHERE {clause}"  # noqa: S608
        return sql + self._q(" LIMIT ?) AS matched GROUP BY type, state"), [*params, limit]

    async def tally(
        self, selection: Selection, *, after: int = 0, limit: int | None = None
    ) -> Tally:
        sql, params = self._tally_query(selection, after=after, limit=limit)
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return Tally({(type_, state): int(n) for type_, state, n in rows})

    async def replay(self, selection: Selection) -> int:
        clause, params = self._where(selection.replayable())
        # `_where` holds column names and placeholders only; the values are bound.
        sql = self._q(
            "UPDATE inbox SET state = 'pending', due_at = ?, attempts = 0, finished_at = NULL"
            " WHERE "
        )
        sql += clause
        return await self._write(
            lambda conn: int(conn.execute(sql, (self.clock(), *params)).rowcount), wakes=True
        )

    def _purgeable_query(self) -> str:
        """The statement of `purgeable` (tests read its plan): the received_at index's range."""
        sql = f"SELECT type, state, count(*) FROM inbox WHERE {_PURGEABLE}"  # noqa: S608 - a constant
        return self._q(sql + f" GROUP BY {self._UNINDEXED}type, state")

    async def purgeable(self, before: float) -> Tally:
        sql = self._purgeable_query()
        rows = await self._read(lambda conn: conn.execute(sql, (before,)).fetchall())
        return Tally({(type_, state): int(n) for type_, state, n in rows})

    async def _in_batches(
        self, delete: Callable[[Any], int], batch: int, progress: Callable[[int], None] | None
    ) -> int:
        total = 0
        while True:  # one transaction per batch, so receiving never waits long
            deleted = await self._write(delete)
            total += deleted
            if progress is not None and deleted:
                progress(total)
            if deleted < batch:
                return total

    async def purge(
        self,
        before: float,
        *,
        batch: int = 10_000,
        progress: Callable[[int], None] | None = None,
        dead: bool = True,
    ) -> int:
        # Each batch starts at the receipt time the last one reached: the entries before it that
        # stay (dead, not delivered, unpublished) are not read again at every batch.
        sql = self._q(
            "DELETE FROM inbox WHERE id IN"  # noqa: S608 - a constant
            " (SELECT id FROM inbox WHERE received_at >= ? AND"
            f" {_PURGEABLE if dead else _DELIVERED} LIMIT ?)"
            " RETURNING type, received_at, id"
        )
        floor = [float("-inf")]
        record = self._q(
            "INSERT INTO purges (purged_at, entries, first_received, last_received, last_id)"
            " VALUES (?, ?, ?, ?, ?)"
        )

        def delete(conn: Any) -> int:
            rows = conn.execute(sql, (floor[0], before, batch)).fetchall()
            if rows:
                floor[0] = max(at for _, at, _ in rows)
            tracked = [(at, id) for type_, at, id in rows if self.projections.wants(type_)]
            if tracked:  # in the same transaction: no purge goes unrecorded
                times = [at for at, _ in tracked]
                new = (
                    self.clock(),
                    len(tracked),
                    min(times),
                    max(times),
                    max(i for _, i in tracked),
                )
                kept = conn.execute(_TAKE_PURGES).fetchall()
                conn.execute(record, _sum_purges([new, *kept]))
            return len(rows)

        return await self._in_batches(delete, batch, progress)

    async def purged(self) -> Purged | None:
        sql = (
            "SELECT sum(entries), min(first_received), max(last_received), min(purged_at),"
            " max(last_id) FROM purges"
        )
        row = await self._read(lambda conn: conn.execute(sql).fetchone())
        if row is None or row[0] is None:
            return None
        return Purged(int(row[0]), float(row[1]), float(row[2]), float(row[3]), int(row[4]))

    async def forget_purged(self) -> None:
        await self._write(lambda conn: conn.execute("DELETE FROM purges"))

    async def requarantine(self, id: int, status: int, reason: str, field: str) -> None:
        sql = self._q("UPDATE quarantine SET status = ?, reason = ?, field = ? WHERE id = ?")
        changed = await self._write(
            lambda conn: int(conn.execute(sql, (status, reason, field, id)).rowcount)
        )
        if not changed:
            raise EntryNotFound(f"no quarantined body {id}")

    async def count_quarantined(self, before: float | None = None) -> int:
        sql = "SELECT count(*) FROM quarantine"
        if before is None:
            row = await self._read(lambda conn: conn.execute(sql).fetchone())
        else:
            sql += self._q(" WHERE received_at < ?")
            row = await self._read(lambda conn: conn.execute(sql, (before,)).fetchone())
        return int(row[0])

    async def purge_quarantine(
        self, before: float, *, batch: int = 10_000, progress: Callable[[int], None] | None = None
    ) -> int:
        sql = self._q(
            "DELETE FROM quarantine WHERE id IN"
            " (SELECT id FROM quarantine WHERE received_at < ? LIMIT ?)"
        )
        return await self._in_batches(
            lambda conn: int(conn.execute(sql, (before, batch)).rowcount), batch, progress
        )

    async def quarantined(self, *, limit: int = 100, after: int = 0) -> list[Rejection]:
        sql = self._q(
            f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine"  # noqa: S608 - constant columns
            " WHERE id > ? ORDER BY id LIMIT ?"
        )
        rows = await self._read(lambda conn: conn.execute(sql, (after, limit)).fetchall())
        return [rejection(row) for row in rows]

    async def get_quarantined(self, id: int) -> Rejection:
        sql = self._q(f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine WHERE id = ?")  # noqa: S608 - constant columns
        row = await self._read(lambda conn: conn.execute(sql, (id,)).fetchone())
        if row is None:
            raise EntryNotFound(f"no quarantined body {id}")
        return rejection(row)
