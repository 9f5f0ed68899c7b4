"""The shared inbox: PostgreSQL, for several ``iotpush serve`` processes on one database.

Each process writes with group commit (one transaction per batch of concurrent writes, see
`_postgres_db`) and reads and claims on a small connection pool. Work is claimed with
``FOR UPDATE SKIP LOCKED``; per-device order holds across processes because a claim takes a
transaction-scoped advisory lock on each device it looks at (skipping devices another claim
holds) and only then reads what is claimable, so it sees every claim committed before it; and a
row it cannot lock (another transaction holds it) also holds back the later entries of its
device. A claim never waits for a lock. The claims of a process that died return when their
lease ends. Tracker writes of concurrent transactions take turns (one advisory lock, taken just
before COMMIT), so processes updating the same devices and commands cannot deadlock.

Hot handoff (`Inbox.attach`) is not used: entries wait for `claim`, with the same guarantees.
`wait_for_work` wakes on this process's own writes; work from other processes (their released
claims, an operator's replay) is found by the dispatcher's polling.

The schema is created and upgraded by ``iotpush db upgrade`` (`iotpush.inbox._migrations`),
never on open: opening a database whose schema is missing or behind raises `ConfigError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from .. import trackers
from ..exceptions import EntryNotFound, InboxError, InboxUnavailable
from ..models import Notification
from . import Accepted, Entry, Inbox, InboxStats, Incoming, Rejection, Selection
from ._postgres_db import Db, GroupCommit, Target, claim_rows, driver, parse_url, read_error
from ._postgres_sql import COLUMNS, INSERT, OUTBOX_ADD, OUTBOX_TAKE, TRACKER_LOCK, where
from ._sqlite_sql import digest, entry

if TYPE_CHECKING:
    import sqlite3

__all__ = ["PostgresInbox"]

_json_encode = msgspec.json.encode
_headers_decoder = msgspec.json.Decoder(dict[str, str])

log = logging.getLogger("iotpush.inbox")

T = TypeVar("T")


class PostgresInbox(Inbox):
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
        **options: `Inbox` options (``dedupe_window``, ``clock``). SQLite's options
            (``synchronous``, ``exclusive``) are accepted and mean nothing here.
    """

    def __init__(
        self,
        url: str,
        *,
        busy_timeout: float = 5.0,
        max_batch: int = 1024,
        pool_size: int = 4,
        max_pending: int | None = None,
        synchronous: str | None = None,
        exclusive: bool = False,
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
        self._outbox_filled = False  # the transaction added outbox rows
        self._writer: GroupCommit | None = None
        self._pool: Any = None
        self._tracked: list[tuple[int, float, Notification]] = []  # new in the transaction
        self._pending_added = False  # that transaction appended an entry for `claim`
        self._work: asyncio.Event | None = None

    @property
    def commits(self) -> int:
        """Transactions committed (with `writes`, shows group commit at work)."""
        return 0 if self._writer is None else self._writer.commits

    @property
    def writes(self) -> int:
        """Writes those transactions held."""
        return 0 if self._writer is None else self._writer.writes

    # connections ---------------------------------------------------------------------------

    async def open(self) -> None:
        if self._writer is not None:
            return
        from . import _migrations

        self._work = asyncio.Event()
        writer = GroupCommit(
            self.target,
            max_batch=self.max_batch,
            lock_timeout=self.busy_timeout,
            max_pending=self.max_pending,
            on_begin=self._begin,
            before_commit=self._before_commit,
            after_commit=self._after_commit,
        )
        await writer.start()
        try:
            await asyncio.to_thread(_migrations.require_current_postgres, writer.conn, self.url)
            self._pool = await asyncio.to_thread(self._open_pool)
        except BaseException:
            await writer.close()
            raise
        self._writer = writer

    def _open_pool(self) -> Any:
        from psycopg_pool import ConnectionPool, PoolTimeout

        kwargs = self.target.settings(role="reader")
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
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
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

    # group commit --------------------------------------------------------------------------

    async def _write(
        self, fn: Callable[[Any], T], *, wakes: bool = False, bounded: bool = False
    ) -> T:
        if self._writer is None:
            raise InboxUnavailable(f"the inbox {self.target.shown} is not open")
        return await self._writer.write(fn, wakes=wakes, bounded=bounded)

    def _begin(self) -> None:
        self._tracked = []
        self._pending_added = False
        self._outbox_filled = False

    def _before_commit(self, conn: Any) -> None:
        if self._tracked:
            self._track(conn)

    def _after_commit(self, wake: bool) -> None:
        if (wake or self._pending_added) and self._work is not None:
            self._work.set()
        if self._outbox_filled:
            self._outbox_added()

    # receive path --------------------------------------------------------------------------

    async def append(self, item: Incoming) -> Accepted:
        dedupe = digest(item.slot)
        headers = _json_encode(item.headers).decode()
        cutoff = item.received_at - self.dedupe_window
        row = (
            item.received_at, item.type, item.device, item.key, dedupe, item.path, item.body,
            headers, item.received_at, cutoff,
        )  # fmt: skip

        def insert(conn: Any) -> Accepted:
            found = conn.execute(INSERT, row).fetchone()
            if found is None:  # the slot's entry has another key, or is outside the window
                conn.execute("UPDATE inbox SET dedupe = NULL WHERE dedupe = %s", (dedupe,))
                found = conn.execute(INSERT, row).fetchone()
            duplicate = found[1] > 0
            if self.outbox and not duplicate:  # published only after it is kept
                conn.execute(OUTBOX_ADD, (found[0], list(self.outbox)))
                self._outbox_filled = True
            notification = item.notification
            if (
                not duplicate
                and notification is not None
                and notification.notify_type in trackers.TRACKED_TYPES
            ):
                self._tracked.append((found[0], item.received_at, notification))
            self._pending_added = self._pending_added or not duplicate
            return Accepted(found[0], duplicate=duplicate)

        return await self._write(insert, bounded=True)

    def _track(self, conn: Any) -> None:
        # As SQLite's: in the transaction that keeps the entries; a tracker that fails costs
        # only its own changes (savepoints), is logged, and `Tracking.rebuild` can redo it.
        tracked, self._tracked = self._tracked, []
        psycopg = driver()
        db = Db(conn)
        conn.execute(TRACKER_LOCK)
        conn.execute("SAVEPOINT track")
        try:
            for id, received_at, notification in tracked:
                trackers.apply_all(db, id, received_at, notification)
        except Exception as exc:
            if isinstance(exc, psycopg.OperationalError):
                raise  # the connection is gone: the batch fails
            conn.execute("ROLLBACK TO SAVEPOINT track")
            for id, received_at, notification in tracked:  # again, one by one
                conn.execute("SAVEPOINT one")
                try:
                    trackers.apply_all(db, id, received_at, notification)
                except Exception as one:
                    if isinstance(one, psycopg.OperationalError):
                        raise
                    conn.execute("ROLLBACK TO SAVEPOINT one")
                    log.exception("tracking entry %d failed; the entry is kept all the same", id)
                conn.execute("RELEASE SAVEPOINT one")
        conn.execute("RELEASE SAVEPOINT track")

    async def transact(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        psycopg = driver()

        def guarded(conn: Any) -> T:
            # Its own savepoint: a function that fails halfway leaves nothing behind, while the
            # other writes of the same transaction still commit.
            conn.execute("SAVEPOINT transact")
            try:
                result = fn(Db(conn))  # type: ignore[arg-type]
            except psycopg.OperationalError:
                raise  # the connection is gone: the batch fails
            except psycopg.Error as exc:
                conn.execute("ROLLBACK TO SAVEPOINT transact")
                conn.execute("RELEASE SAVEPOINT transact")
                raise InboxError(f"writing {self.target.shown}: {exc}") from exc
            except BaseException:
                conn.execute("ROLLBACK TO SAVEPOINT transact")
                conn.execute("RELEASE SAVEPOINT transact")
                raise
            conn.execute("RELEASE SAVEPOINT transact")
            return result

        return await self._write(guarded)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._read(lambda conn: fn(Db(conn)))  # type: ignore[arg-type]

    async def quarantine(self, rejection: Rejection) -> int:
        r = rejection
        row = (r.received_at, r.path, r.status, r.reason, r.field, r.body,
               _json_encode(r.headers).decode())  # fmt: skip
        bound = self.quarantine_max_rows

        def insert(conn: Any) -> tuple[int, int]:
            sql = (
                "INSERT INTO quarantine (received_at, path, status, reason, field, body, headers)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id"
            )
            id = int(conn.execute(sql, row).fetchone()[0])
            if bound is None:
                return id, 0
            # Ids only grow: keeping the last `bound` ids keeps at most `bound` rows.
            sql = "DELETE FROM quarantine WHERE id <= %s"
            return id, int(conn.execute(sql, (id - bound,)).rowcount)

        id, dropped = await self._write(insert, bounded=True)
        if dropped:
            self._quarantine_full(dropped)
        return id

    # delivery ------------------------------------------------------------------------------

    async def claim(self, owner: str, limit: int, lease: float) -> list[Entry]:
        if self._work is not None:
            self._work.clear()
        now = self.clock()
        rows = await self._read(lambda conn: claim_rows(conn, owner, limit, now, now + lease))
        return [entry(row) for row in rows]

    async def ack(self, ids: Sequence[int]) -> None:
        sql = (
            "UPDATE inbox SET state = 'done', finished_at = %s, owner = NULL, lease_until = NULL"
            " WHERE id = ANY(%s) AND state = 'claimed'"
        )
        await self._write(lambda conn: conn.execute(sql, (self.clock(), list(ids))))

    async def fail(self, id: int, error: str, attempts: int, retry_at: float) -> None:
        sql = "UPDATE inbox SET last_error = %s, attempts = %s, due_at = %s WHERE id = %s"
        await self._write(lambda conn: conn.execute(sql, (error, attempts, retry_at, id)))

    async def dead(self, id: int, error: str, attempts: int) -> None:
        sql = (
            "UPDATE inbox SET state = 'dead', last_error = %s, attempts = %s, finished_at = %s,"
            " owner = NULL, lease_until = NULL WHERE id = %s"
        )
        await self._write(lambda conn: conn.execute(sql, (error, attempts, self.clock(), id)))

    async def renew(self, owner: str, lease: float) -> int:
        sql = "UPDATE inbox SET lease_until = %s WHERE state = 'claimed' AND owner = %s"
        return await self._write(
            lambda conn: int(conn.execute(sql, (self.clock() + lease, owner)).rowcount)
        )

    async def release(self, owner: str, *, untried: Sequence[int] = ()) -> int:
        def release(conn: Any) -> int:
            if untried:
                conn.execute(
                    "UPDATE inbox SET attempts = GREATEST(attempts - 1, 0)"
                    " WHERE id = ANY(%s) AND state = 'claimed' AND owner = %s",
                    (list(untried), owner),
                )
            return int(
                conn.execute(
                    "UPDATE inbox SET state = 'pending', owner = NULL, lease_until = NULL"
                    " WHERE state = 'claimed' AND owner = %s",
                    (owner,),
                ).rowcount
            )

        return await self._write(release, wakes=True)

    async def wait_for_work(self, timeout: float) -> None:
        if self._work is None:
            await asyncio.sleep(timeout)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), timeout)

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

    async def release_unpublished(self, sink: str, owner: str) -> int:
        sql = "UPDATE outbox SET owner = NULL, lease_until = NULL WHERE sink = %s AND owner = %s"
        return await self._write(lambda conn: int(conn.execute(sql, (sink, owner)).rowcount))

    # operator ------------------------------------------------------------------------------

    async def get(self, id: int) -> Entry:
        sql = f"SELECT {COLUMNS} FROM inbox WHERE id = %s"  # noqa: S608 - constant columns
        row = await self._read(lambda conn: conn.execute(sql, (id,)).fetchone())
        if row is None:
            raise EntryNotFound(f"no inbox entry {id}")
        return entry(row)

    async def find(self, selection: Selection, *, limit: int = 100, after: int = 0) -> list[Entry]:
        clause, params = where(selection)
        sql = f"SELECT {COLUMNS} FROM inbox WHERE id > %s AND {clause} ORDER BY id LIMIT %s"  # noqa: S608 - columns are ours, values bound
        rows = await self._read(lambda conn: conn.execute(sql, (after, *params, limit)).fetchall())
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

    async def replay(self, selection: Selection) -> int:
        clause, params = where(selection)
        # `where` holds column names and placeholders only; the values are bound.
        sql = "UPDATE inbox SET state = 'pending', due_at = %s, attempts = 0, finished_at = NULL"
        sql += f" WHERE state IN ('done', 'dead') AND {clause}"
        return await self._write(
            lambda conn: int(conn.execute(sql, (self.clock(), *params)).rowcount), wakes=True
        )

    async def purge(
        self, before: float, *, batch: int = 10_000, progress: Callable[[int], None] | None = None
    ) -> int:
        total = 0
        finished_entries = (  # and published by every sink
            "AND state IN ('done', 'dead')"
            " AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.id = inbox.id)"
        )
        for table, finished in (("inbox", finished_entries), ("quarantine", "")):
            sql = (
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table}"  # noqa: S608 - fixed names
                f" WHERE received_at < %s {finished} LIMIT %s)"
            )

            def delete(conn: Any, sql: str = sql) -> int:
                return int(conn.execute(sql, (before, batch)).rowcount)

            while True:  # one transaction per batch, so receiving never waits long
                deleted = await self._write(delete)
                total += deleted
                if progress is not None and deleted:
                    progress(total)
                if deleted < batch:
                    break
        return total

    async def quarantined(self, *, limit: int = 100, after: int = 0) -> list[Rejection]:
        sql = (
            "SELECT received_at, path, status, reason, field, body, headers, id FROM quarantine"
            " WHERE id > %s ORDER BY id LIMIT %s"
        )
        rows = await self._read(lambda conn: conn.execute(sql, (after, limit)).fetchall())
        return [self._rejection(row) for row in rows]

    async def get_quarantined(self, id: int) -> Rejection:
        sql = (
            "SELECT received_at, path, status, reason, field, body, headers, id FROM quarantine"
            " WHERE id = %s"
        )
        row = await self._read(lambda conn: conn.execute(sql, (id,)).fetchone())
        if row is None:
            raise EntryNotFound(f"no quarantined body {id}")
        return self._rejection(row)

    @staticmethod
    def _rejection(row: tuple[Any, ...]) -> Rejection:
        return Rejection(*row[:6], _headers_decoder.decode(row[6]), row[7])  # type: ignore[call-arg]
