"""The shared inbox: PostgreSQL, for several ``iotpush serve`` processes on one database.

Each process writes with group commit (one transaction per batch of concurrent writes, see
`_postgres_db`) and reads and claims on a small connection pool. Work is claimed with
``FOR UPDATE SKIP LOCKED``; per-device order holds across processes because a claim takes a
transaction-scoped advisory lock on each device it looks at (skipping devices another claim
holds) and only then reads what is claimable, so it sees every claim committed before it; and a
row it cannot lock (another transaction holds it) also holds back the later entries of its
device. A claim never waits for a lock. The claims of a process that died return when their
lease ends.

A write transaction takes the advisory lock of each device it appends to (the claims' key), in
one fixed order (two cannot deadlock), before its first INSERT, until it commits: transactions
of any process about one device take turns, and those about other devices never wait (see
`DEVICE_LOCKS`). So a device's entries are committed in id order; its tracker writes never
interleave (a projection's state for a notification is its device's, a command its device's);
and hot handoff (`Inbox.attach`) works across processes: a new entry is committed already
claimed by this process's dispatcher unless an earlier entry of its device waits or another
owner holds one, a rule that then sees every process's committed entries and claims (one this
process's claim committed counts as its own before the claim returns: what is handed over
meanwhile waits for it, `SQLInbox._claiming`, or it could overtake the claimed). Nothing is
locked for the whole database per entry, except for tracked entries without a device, which
share one lock.

An entry left for `claim` (its device was held elsewhere, or no dispatcher is attached) or given
back wakes the claimers of every process: the transaction NOTIFYs the store's channel, which
each inbox LISTENs to (`Listener`). The dispatcher's polling stays as the fallback.

The schema is created and upgraded by ``iotpush db upgrade`` (`iotpush.inbox._migrations`),
never on open: opening a database whose schema is missing or behind raises `ConfigError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from ..exceptions import InboxError, InboxUnavailable
from ..projections import Database
from . import Accepted, Entry, Incoming, Selection
from ._postgres_db import (
    Db,
    GroupCommit,
    Listener,
    Pipelined,
    Sent,
    Target,
    claim_rows,
    driver,
    parse_url,
    read_error,
)
from ._postgres_sql import (
    ACK,
    BEGIN,
    CLEAR_SLOTS,
    COLUMNS,
    DB_NOW,
    DEVICE_LOCKS,
    INSERT,
    INSERT_MANY,
    NOTIFY,
    OUTBOX_ADD,
    OUTBOX_TAKE,
    PURGE_LOCK,
    PURGE_UNLOCK,
    translate,
    where,
)
from ._sqlbase import SQLInbox, entry, slot_digest
from ._store import Mode

if TYPE_CHECKING:
    import sqlite3

__all__ = ["PostgresInbox"]

_json_encode = msgspec.json.encode

log = logging.getLogger("iotpush.inbox")

T = TypeVar("T")


class PostgresInbox(SQLInbox):
    """`Inbox` in a PostgreSQL database, shared by any number of server processes.

    Args:
        url: ``postgresql://[user[:password]@]host[:port]/database[?schema=NAME]``
            (``postgres://`` too); ``schema`` puts the tables in that schema.
        busy_timeout: Seconds a write waits for a row lock another process holds before the
            inbox reports itself unavailable (answer 503).
        max_batch: The most operations one transaction commits.
        pool_size: Connections for reads and claims.
        max_pending: The most receive-path writes (`append`, `quarantine`) queued for the next
            transaction; beyond, they fail at once with `InboxUnavailable` (None: no bound).
        db_timeout: Seconds a write transaction, a statement or a silent connection may take
            before the write fails with `InboxUnavailable` (answer 503); None: no bound.
        mode: ``read`` opens no writer connection, and every write raises
            `InboxUnavailable`; ``create`` and ``write`` are alike (``iotpush db upgrade``
            makes the schema, never opening an inbox).
        **options: `Inbox` options (``dedupe_window``, ``clock``).
    """

    def __init__(
        self,
        url: str,
        *,
        busy_timeout: float = 5.0,
        max_batch: int = 1024,
        pool_size: int = 4,
        max_pending: int | None = None,
        db_timeout: float | None = None,
        mode: Mode = "create",
        **options: Any,
    ) -> None:
        super().__init__(**options)
        driver()  # a missing extra is a configuration error, reported before anything starts
        self.url = url
        self.target: Target = parse_url(url)
        self.busy_timeout = busy_timeout
        self.max_batch = max_batch
        self.pool_size = pool_size
        self.max_pending = max_pending
        self.db_timeout = db_timeout
        self.mode = mode
        self._outbox_filled = False  # the transaction added outbox rows
        self._notify = False  # the transaction left entries for another process's claim
        self._pool: Any = None
        self._group: GroupCommit | None = None  # `_writer`, as this backend made it
        self._listener: Listener | None = None

    @property
    def _name(self) -> str:
        return self.target.shown

    def _unwritable(self) -> str:
        if self.mode == "read":
            return f"the inbox {self.target.shown} is open read-only"
        return super()._unwritable()

    _UNINDEXED = ""  # its planner counts a partial index's few rows without being told

    def _q(self, sql: str) -> str:
        return translate(sql)

    def _tracker_db(self, conn: Pipelined) -> Database:
        return Db(conn)  # the devices are locked already (`_before_send`)

    def _before_send(self, conn: Pipelined, writes: list[Callable[[Any], Any]]) -> None:
        # The devices of the batch's appends, before their INSERTs: see DEVICE_LOCKS.
        devices = sorted(
            {fn.device for fn in writes if isinstance(fn, _Append) and fn.device is not None}
        )
        if devices:
            if devices[0] == "" and self._group is not None:
                self._group.hold_shared()
            conn.execute(DEVICE_LOCKS, (devices,))
        appends = [fn for fn in writes if isinstance(fn, _Append)]
        if appends:
            _Appends.split(appends, self.dedupe_window)
        begins = [fn for fn in writes if isinstance(fn, _Begin)]
        if begins:
            _Begins(begins)

    def _lost(self, exc: BaseException) -> bool:
        errors = driver().errors
        # A statement queued after a failed one is not run: that failure is the one to handle.
        return isinstance(exc, errors.OperationalError) and not isinstance(
            exc, errors.PipelineAborted
        )

    def _sync(self, conn: Pipelined) -> None:
        conn.sync()

    def _recover(self, conn: Pipelined) -> None:
        conn.recover()

    # connections ---------------------------------------------------------------------------

    async def open(self) -> None:
        if self._writer is not None or self._pool is not None:
            return
        from . import _migrations

        self._work = asyncio.Event()
        if self.mode == "read":
            self._pool = await asyncio.to_thread(self._open_pool)
            try:
                await self._read(lambda conn: _migrations.require_current_postgres(conn, self.url))
            except BaseException:
                await self.close()
                raise
            return
        writer = GroupCommit(
            self.target,
            max_batch=self.max_batch,
            lock_timeout=self.busy_timeout,
            timeout=self.db_timeout,
            max_pending=self.max_pending,
            on_begin=self._begin,
            before_send=self._before_send,
            before_commit=self._before_commit,
            after_commit=self._after_commit,
            wake=NOTIFY,
            events=self.events,
        )
        await writer.start()
        try:
            await asyncio.to_thread(_migrations.require_current_postgres, writer.conn, self.url)
            self._pool = await asyncio.to_thread(self._open_pool)
        except BaseException:
            await writer.close()
            raise
        self._writer = self._group = writer
        self._listener = Listener(
            self.target, self._work.set, asyncio.get_running_loop(), self.db_timeout
        )
        self._listener.start()

    def _open_pool(self) -> Any:
        from psycopg_pool import ConnectionPool, PoolTimeout

        kwargs = self.target.settings(role="reader", timeout=self.db_timeout)
        pool = ConnectionPool(
            self.target.conninfo,
            kwargs=kwargs,
            min_size=1,
            max_size=self.pool_size,
            open=False,
            check=ConnectionPool.check_connection,
            timeout=self.busy_timeout,
            name="iotpush",
        )
        try:
            pool.open(wait=True, timeout=self.busy_timeout)
        except PoolTimeout as exc:
            pool.close()
            raise InboxUnavailable(f"cannot connect to {self.target.shown}") from exc
        return pool

    async def close(self) -> None:
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
            self._listener = None
        if self._writer is not None:
            await self._writer.close()
            self._writer = self._group = None
        if self._pool is not None:
            await asyncio.to_thread(self._pool.close)
            self._pool = None

    async def _read(self, fn: Callable[[Any], T]) -> T:
        pool = self._pool
        if pool is None:
            raise InboxUnavailable(f"the inbox {self.target.shown} is not open")

        def run() -> T:
            from psycopg_pool import PoolTimeout

            psycopg = driver()
            try:
                with pool.connection() as conn:
                    return fn(conn)
            except PoolTimeout as exc:
                raise InboxUnavailable(f"cannot connect to {self.target.shown}") from exc
            except psycopg.Error as exc:
                raise read_error(self.target, exc) from exc

        return await asyncio.to_thread(run)

    @contextlib.asynccontextmanager
    async def purge_turn(self) -> AsyncIterator[bool]:
        # A session lock on a connection of its own, closed at the end: whatever happens to the
        # round (or to the process), the lock goes with the connection.
        target = self.target
        conn = await asyncio.to_thread(target.connect, None, "retention", self.db_timeout)
        try:
            row = await asyncio.to_thread(lambda: conn.execute(PURGE_LOCK).fetchone())
            locked = bool(row[0])
            yield locked
            if locked:
                await asyncio.to_thread(conn.execute, PURGE_UNLOCK)
        finally:
            await asyncio.to_thread(conn.close)

    # group commit --------------------------------------------------------------------------

    def _begin(self) -> None:
        self._tracked = []
        self._handed = []
        self._pending_added = False
        self._notify = False
        self._outbox_filled = False

    def _before_commit(self, conn: Pipelined) -> None:
        super()._before_commit(conn)
        if self._notify:
            if self._group is not None:
                self._group.hold_shared()
            conn.execute(NOTIFY)

    def _after_commit(self, wake: bool) -> None:
        if (wake or self._pending_added) and self._work is not None:
            self._work.set()
        self._hand_over()
        if self._outbox_filled:
            self._outbox_added()

    # receive path --------------------------------------------------------------------------

    async def append(self, item: Incoming) -> Accepted:
        hot = self._hot
        owner = hot.owner if hot is not None and hot.has_room() else None
        row = {
            "at": item.received_at, "type": item.type, "device": item.device, "key": item.key,
            "dedupe": slot_digest(item.slot), "path": item.path, "body": item.body,
            "headers": _json_encode(item.headers).decode(), "owner": owner,
            "lease": None if hot is None else hot.lease,
            "cutoff": item.received_at - self.dedupe_window,
        }  # fmt: skip
        return await self._write(_Append(self, item, row, hot is None), bounded=True)

    def _fill_outbox(self, conn: Any, id: int) -> None:
        conn.execute(OUTBOX_ADD, (id, list(self.outbox)))
        self._outbox_filled = True  # publishers are woken once it is committed

    async def transact(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        psycopg = driver()

        def guarded(conn: Pipelined) -> T:
            # Its own savepoint: a function that fails halfway leaves nothing behind, while the
            # other writes of the same transaction still commit.
            conn.execute("SAVEPOINT transact")
            try:
                result = fn(Db(conn))  # type: ignore[arg-type]
                conn.sync()  # its statements' errors are its own
            except psycopg.Error as exc:
                if self._lost(exc):
                    raise  # the connection is gone: the batch fails
                conn.recover()
                conn.execute("ROLLBACK TO SAVEPOINT transact")
                conn.execute("RELEASE SAVEPOINT transact")
                raise InboxError(f"writing {self.target.shown}: {exc}") from exc
            except BaseException:
                conn.recover()
                conn.execute("ROLLBACK TO SAVEPOINT transact")
                conn.execute("RELEASE SAVEPOINT transact")
                raise
            conn.execute("RELEASE SAVEPOINT transact")
            return result

        return await self._write(guarded)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._read(lambda conn: fn(Db(conn)))  # type: ignore[arg-type]

    def _insert_rejection(self, conn: Any, row: tuple[Any, ...]) -> int:
        sql = (
            "INSERT INTO quarantine (received_at, path, status, reason, field, body, headers)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id"
        )
        return int(conn.execute(sql, row).fetchone()[0])

    # delivery ------------------------------------------------------------------------------

    async def claim(self, owner: str, limit: int, lease: float) -> list[Entry]:
        if self._work is not None:
            self._work.clear()
        now = self.clock()
        with self._claiming():
            rows = await self._read(lambda conn: claim_rows(conn, owner, limit, now, lease))
            return [entry(row) for row in rows]

    async def begin(self, owner: str, id: int, attempt: int) -> bool:
        # The begins of one batch are one statement (`_Begins`), whose answer is read once
        # committed: reading it in the transaction would wait for the database there.
        begins = await self._write(_Begin(owner, id, attempt))
        return begins.began(owner, id)

    async def begin_many(self, owner: str, attempts: Sequence[tuple[int, int]]) -> set[int]:
        if not attempts:
            return set()

        def begin(conn: Pipelined) -> _Begins:
            # One statement (`BEGIN`: each row by primary key), answered once committed.
            begins = _Begins([_Begin(owner, id, attempt) for id, attempt in attempts])
            begins.send(conn)
            return begins

        begins = await self._write(begin)
        return {id for id, _ in attempts if begins.began(owner, id)}

    async def ack(self, ids: Sequence[int]) -> None:
        await self._write(lambda conn: conn.execute(ACK, (self.clock(), list(ids))))

    async def renew(self, owner: str, lease: float) -> int:
        sql = f"UPDATE inbox SET lease_until = {DB_NOW} + %s WHERE state = 'claimed' AND owner = %s"  # noqa: S608 - a constant
        return await self._write(lambda conn: int(conn.execute(sql, (lease, owner)).rowcount))

    async def release(self, owner: str) -> int:
        def release(conn: Any) -> int:
            return int(
                conn.execute(
                    "UPDATE inbox SET state = 'pending', owner = NULL, lease_until = NULL"
                    " WHERE state = 'claimed' AND owner = %s",
                    (owner,),
                ).rowcount
            )

        return await self._write(release, wakes=True)

    # outbox --------------------------------------------------------------------------------

    async def unpublished(self, sink: str, owner: str, limit: int, lease: float) -> list[Entry]:
        def take(conn: Any) -> list[Entry]:
            now = self.clock()
            params = {"sink": sink, "owner": owner, "lease": now + lease, "now": now}
            ids = [id for (id,) in conn.execute(OUTBOX_TAKE, {**params, "limit": limit})]
            sql = f"SELECT {COLUMNS} FROM inbox WHERE id = ANY(%s) ORDER BY id"  # noqa: S608 - constant columns
            return [entry(row) for row in conn.execute(sql, (ids,))]

        return await self._write(take)

    async def published(self, sink: str, ids: Sequence[int]) -> None:
        sql = "DELETE FROM outbox WHERE sink = %s AND id = ANY(%s)"
        await self._write(lambda conn: conn.execute(sql, (sink, list(ids))))

    # operator ------------------------------------------------------------------------------

    def _where(self, selection: Selection) -> tuple[str, list[Any]]:
        return where(selection)


class _Append(Sent):
    """One `PostgresInbox.append` in a batch: its row is sent with the batch's others, in one
    INSERT (`_Appends`)."""

    __slots__ = ("alone", "appends", "device", "inbox", "item", "row")

    def __init__(
        self, inbox: PostgresInbox, item: Incoming, row: dict[str, Any], alone: bool
    ) -> None:
        self.inbox = inbox
        self.item = item
        self.row = row
        self.alone = alone  # no dispatcher attached here: a pending entry is another's work
        self.appends: _Appends | None = None  # set as the batch is sent
        # The lock it takes (DEVICE_LOCKS): its device's; a tracked entry without one, ''.
        self.device = item.device
        if item.device is None and item.notification is not None:
            self.device = "" if inbox.projections.wants(item.notification.notify_type) else None

    def send(self, conn: Pipelined) -> None:
        if self.appends is None:
            _Appends([self], self.inbox.dedupe_window)
        assert self.appends is not None
        self.appends.send(conn)

    def __call__(self, conn: Pipelined) -> Accepted:
        inbox, item = self.inbox, self.item
        found = None if self.appends is None else self.appends.row(self.row["dedupe"])
        self.appends = None  # a batch run again sends it again
        if found is None:  # another process took the slot meanwhile: as one row, after the fact
            found = inbox._inserted(conn, conn.execute(INSERT, self.row), INSERT, self.row,
                                    self.row["dedupe"])  # fmt: skip
        id, duplicates, owner, lease_until = found[:4]
        if duplicates:
            return Accepted(id, duplicate=True)
        inbox._kept(conn, id, item)
        if owner is None:  # left for `claim`: here, and by the device's owner elsewhere
            inbox._pending_added = True
            inbox._notify = inbox._notify or self.alone or self.row["owner"] is not None
        else:
            claimed = Entry(id, item.received_at, item.type, item.device, item.key, item.path,
                            item.body, item.headers, "claimed", 0, item.received_at, owner,
                            lease_until, notification=item.notification)  # fmt: skip
            inbox._handed.append(claimed)
        return Accepted(id, duplicate=False)


class _Begin:
    """One `PostgresInbox.begin` in a batch: run with the batch's others as one statement."""

    __slots__ = ("attempt", "begins", "id", "owner")

    def __init__(self, owner: str, id: int, attempt: int) -> None:
        self.owner = owner
        self.id = id
        self.attempt = attempt
        self.begins: _Begins | None = None  # set as the batch is sent

    def __call__(self, conn: Pipelined) -> _Begins:
        begins = self.begins if self.begins is not None else _Begins([self])
        begins.send(conn)
        return begins


class _Begins:
    """The begins of one batch: one UPDATE, sent where the first of them runs, and the ids it
    began (read once the batch committed)."""

    __slots__ = ("_begun", "begins", "cursors")

    def __init__(self, begins: list[_Begin]) -> None:
        self.begins = begins
        self.cursors: list[Any] = []
        self._begun: dict[int, set[str]] | None = None
        for begin in begins:
            begin.begins = self

    def send(self, conn: Pipelined) -> None:
        if self.cursors:
            return
        # An id begun twice in one batch (never by one dispatcher) goes in a second statement.
        rounds: list[dict[int, _Begin]] = []
        for begin in self.begins:
            free = next((r for r in rounds if begin.id not in r), None)
            if free is None:
                rounds.append(free := {})
            free[begin.id] = begin
        for round_ in rounds:
            params = {
                "ids": list(round_),
                "attempts": [b.attempt for b in round_.values()],
                "owners": [b.owner for b in round_.values()],
            }
            self.cursors.append(conn.execute(BEGIN, params))

    def began(self, owner: str, id: int) -> bool:
        """Whether ``owner``'s attempt of ``id`` was recorded (it still held the entry)."""
        if self._begun is None:
            self._begun = {}
            for cursor in self.cursors:
                for found, by in cursor.fetchall():
                    self._begun.setdefault(found, set()).add(by)
        return owner in self._begun.get(id, ())


class _Appends:
    """Appends of one batch in one INSERT (`INSERT_MANY`), after the statement that frees their
    stale slots; sent where the first of them is, and each one's row found by its digest.

    A batch whose appends repeat a slot (a push sent again while the first is being written)
    is cut before each repetition, into statements run in order: the later one sees the earlier.
    """

    __slots__ = ("_rows", "cursor", "params")

    def __init__(self, appends: list[_Append], window: float) -> None:
        columns = ("at", "type", "device", "key", "dedupe", "path", "body", "headers", "owner",
                   "lease")  # fmt: skip
        self.params: dict[str, Any] = {name: [a.row[name] for a in appends] for name in columns}
        self.params["window"] = window
        # A row cannot see the rows before it in the statement: after a row of its device left
        # for `claim`, one row of the same device is left too (one by one, it would see it).
        waiting: set[str] = set()
        owners = self.params["owner"]
        for k, a in enumerate(appends):
            device = a.row["device"]
            if device is not None:
                if device in waiting:
                    owners[k] = None
                elif owners[k] is None:
                    waiting.add(device)
        self.cursor: Any = None
        self._rows: dict[bytes, Any] | None = None
        for a in appends:
            a.appends = self

    @classmethod
    def split(cls, appends: list[_Append], window: float) -> None:
        """Give each of a batch's appends its statement."""
        start = 0
        seen: set[bytes] = set()
        for k, a in enumerate(appends):
            if a.row["dedupe"] in seen:
                cls(appends[start:k], window)
                start, seen = k, set()
            seen.add(a.row["dedupe"])
        if start < len(appends):
            cls(appends[start:], window)

    def send(self, conn: Pipelined) -> None:
        if self.cursor is None:
            conn.execute(CLEAR_SLOTS, self.params)
            self.cursor = conn.execute(INSERT_MANY, self.params)

    def row(self, dedupe: bytes) -> Any:
        """The row answered for the append of slot digest ``dedupe`` (None: none was)."""
        if self._rows is None:
            self._rows = {row[4]: row for row in self.cursor.fetchall()}
        return self._rows.get(dedupe)
