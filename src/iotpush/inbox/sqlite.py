"""The embedded inbox: one SQLite file in WAL mode, written with group commit.

Writes share transactions (see `_groupcommit`); reads run in worker threads on their own
connections, which WAL lets proceed during writes. One server uses a file at a time (a lock
file says so); operator commands may open it alongside.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from .. import trackers
from ..exceptions import ConfigError, EntryNotFound, InboxError, InboxUnavailable
from ..models import Notification
from . import Accepted, Entry, Inbox, InboxStats, Incoming, Rejection, Selection, _migrations
from ._groupcommit import GroupCommit
from ._sqlite_sql import (
    BLOCKED,
    CLAIM,
    COLUMNS,
    INSERT,
    OUTBOX_ADD,
    OUTBOX_TAKE,
    SCHEMA,
    SCHEMA_VERSION,
    digest,
    entry,
    where,
)

__all__ = ["SQLiteInbox"]

_json_encode = msgspec.json.encode
_headers_decoder = msgspec.json.Decoder(dict[str, str])

log = logging.getLogger("iotpush.inbox")

T = TypeVar("T")
Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


@dataclass(frozen=True, slots=True)
class _Hot:
    owner: str
    lease: float
    on_claimed: Callable[[list[Entry]], None]
    has_room: Callable[[], bool]


class SQLiteInbox(Inbox):
    """`Inbox` in one SQLite file.

    Args:
        path: The database file; created with its folder if missing.
        synchronous: SQLite's ``synchronous`` setting. ``FULL`` (default) survives power loss;
            ``NORMAL`` survives a process crash but may lose the last commits on power loss.
        busy_timeout: Seconds a write waits for a lock held by another process before the
            inbox reports itself unavailable (answer 503).
        exclusive: Take a lock file so that no other server uses the same file, and give back
            any claims a previous server process left (only a server should set this).
        max_batch: The most operations one transaction commits.
        max_pending: The most receive-path writes (`append`, `quarantine`) queued for the next
            transaction; beyond, they raise `InboxUnavailable` at once (None: no bound).
        **options: `Inbox` options (``dedupe_window``, ``clock``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 5.0,
        exclusive: bool = False,
        max_batch: int = 1024,
        max_pending: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigError(
                f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}"
            )
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self.busy_timeout = busy_timeout
        self.exclusive = exclusive
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._writer: GroupCommit | None = None
        self._hot: _Hot | None = None
        self._handed: list[Entry] = []  # claimed by `_hot` in the transaction under way
        self._pending_added = False  # that transaction appended an entry for `claim`
        self._tracked: list[tuple[int, float, Notification]] = []  # new in that transaction
        self._lock_file: int | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
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

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout
        )
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        # Savepoint journals and sort space in memory, not in a temp file per transaction.
        conn.execute("PRAGMA temp_store = MEMORY")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            try:
                return fn(self._reader())
            except sqlite3.Error as exc:
                raise InboxError(f"reading {self.path}: {exc}") from exc

        return await asyncio.to_thread(run)

    async def open(self) -> None:
        if self._writer is not None:
            return
        self._work = asyncio.Event()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.exclusive:
            self._take_lock()
        try:
            conn = self._connect()
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(SCHEMA)
            conn.executescript(trackers.SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            _migrations.record_sqlite(conn)  # the version, as `iotpush db status` reads it
            if self.exclusive:  # no other server can hold claims: the last one died or stopped
                conn.execute(
                    "UPDATE inbox SET state = 'pending', owner = NULL, lease_until = NULL"
                    " WHERE state = 'claimed'"
                )
                conn.execute("UPDATE outbox SET owner = NULL, lease_until = NULL")
            conn.execute("PRAGMA busy_timeout = 0")  # the writer waits for locks in a thread
        except sqlite3.Error as exc:
            self._drop_lock()
            raise InboxUnavailable(f"cannot open the inbox {self.path}: {exc}") from exc
        self._writer = GroupCommit(
            conn,
            reconnect=self._connect_writer,
            busy_timeout=self.busy_timeout,
            max_batch=self.max_batch,
            max_pending=self.max_pending,
            name=str(self.path),
            on_begin=self._begin,
            before_commit=self._before_commit,
            after_commit=self._after_commit,
        )

    def _connect_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.execute("PRAGMA busy_timeout = 0")  # the writer waits for locks in a thread
        return conn

    def _take_lock(self) -> None:
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"another iotpush server is using {self.path}") from None
        self._lock_file = fd

    def _drop_lock(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._local = threading.local()
        self._drop_lock()

    # group commit --------------------------------------------------------------------------

    async def _write(
        self, fn: Callable[[sqlite3.Connection], T], *, wakes: bool = False, bounded: bool = False
    ) -> T:
        if self._writer is None:
            raise InboxUnavailable(f"the inbox {self.path} is not open")
        return await self._writer.write(fn, wakes=wakes, bounded=bounded)

    def _begin(self) -> None:
        self._handed = []
        self._tracked = []
        self._pending_added = False

    def _before_commit(self, conn: sqlite3.Connection) -> None:
        if self._tracked:
            self._track(conn)

    def _after_commit(self, wake: bool) -> None:
        if (wake or self._pending_added) and self._work is not None:
            self._work.set()
        # Handed over after the futures were resolved, so a claim committed in the same batch is
        # queued by its owner before these entries can start (their lanes keep id order anyway).
        handed, self._handed = self._handed, []
        if handed and self._hot is not None:
            self._hot.on_claimed(handed)

    # receive path --------------------------------------------------------------------------

    async def append(self, item: Incoming) -> Accepted:
        dedupe = digest(item.slot)
        headers = _json_encode(item.headers).decode()
        cutoff = item.received_at - self.dedupe_window
        pending = (
            item.received_at, item.type, item.device, item.key, dedupe, item.path, item.body,
            headers, item.received_at, "pending", None, None, 0, cutoff,
        )  # fmt: skip

        def insert(conn: sqlite3.Connection) -> Accepted:
            hot = self._hot
            row: tuple[Any, ...] = pending
            if (
                hot is not None
                and hot.has_room()
                and (
                    item.device is None
                    or not conn.execute(BLOCKED, (item.device, hot.owner)).fetchone()
                )
            ):
                row = (*pending[:9], "claimed", hot.owner, self.clock() + hot.lease, 1, cutoff)
            found = conn.execute(INSERT, row).fetchone()
            if found is None:  # the slot's entry has another key, or is outside the window
                conn.execute("UPDATE inbox SET dedupe = NULL WHERE dedupe = ?", (dedupe,))
                found = conn.execute(INSERT, row).fetchone()
            duplicate = found[1] > 0
            if self.outbox and not duplicate:  # published only after it is kept
                conn.executemany(OUTBOX_ADD, [(sink, found[0]) for sink in self.outbox])
                self._outbox_added()  # its publisher's next take queues behind this commit
            notification = item.notification
            if (
                not duplicate
                and notification is not None
                and notification.notify_type in trackers.TRACKED_TYPES
            ):
                self._tracked.append((found[0], item.received_at, notification))
            if row is pending:
                # Only an entry left pending is work for `claim`; one handed over is not.
                self._pending_added = self._pending_added or not duplicate
            elif not duplicate:
                claimed = Entry(found[0], item.received_at, item.type, item.device, item.key,
                                item.path, item.body, item.headers, "claimed", 1,
                                item.received_at, row[10], row[11],
                                notification=item.notification)  # fmt: skip
                self._handed.append(claimed)
            return Accepted(found[0], duplicate=duplicate)

        return await self._write(insert, bounded=True)

    def _track(self, conn: sqlite3.Connection) -> None:
        # In the transaction that keeps the entries, so tracker state is as durable as the 200.
        # A tracker that fails must not cost a notification: its changes alone roll back, it is
        # logged, and `Tracking.rebuild` can apply the entry again.
        tracked, self._tracked = self._tracked, []
        conn.execute("SAVEPOINT track")
        try:
            for id, received_at, notification in tracked:
                trackers.apply_all(conn, id, received_at, notification)
        except Exception:  # noqa: BLE001 - the slow path below finds and logs the culprit
            conn.execute("ROLLBACK TO track")
            for id, received_at, notification in tracked:  # again, one by one
                conn.execute("SAVEPOINT one")
                try:
                    trackers.apply_all(conn, id, received_at, notification)
                except Exception:
                    conn.execute("ROLLBACK TO one")
                    log.exception("tracking entry %d failed; the entry is kept all the same", id)
                conn.execute("RELEASE one")
        conn.execute("RELEASE track")

    async def transact(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def guarded(conn: sqlite3.Connection) -> T:
            # Its own savepoint: a function that fails halfway leaves nothing behind, while the
            # other writes of the same transaction still commit.
            conn.execute("SAVEPOINT transact")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK TO transact")
                conn.execute("RELEASE transact")
                raise
            conn.execute("RELEASE transact")
            return result

        return await self._write(guarded)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._read(fn)

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
            self._hot = _Hot(owner, lease, on_claimed, has_room)

    async def quarantine(self, rejection: Rejection) -> int:
        r = rejection
        row = (
            r.received_at,
            r.path,
            r.status,
            r.reason,
            r.field,
            r.body,
            _json_encode(r.headers).decode(),
        )

        bound = self.quarantine_max_rows

        def insert(conn: sqlite3.Connection) -> tuple[int, int]:
            sql = "INSERT INTO quarantine (received_at, path, status, reason, field, body, headers)"
            id = conn.execute(sql + " VALUES (?, ?, ?, ?, ?, ?, ?)", row).lastrowid or 0
            if bound is None:
                return id, 0
            # Ids only grow: keeping the last `bound` ids keeps at most `bound` rows.
            sql = "DELETE FROM quarantine WHERE id <= ?"
            return id, conn.execute(sql, (id - bound,)).rowcount

        id, dropped = await self._write(insert, bounded=True)
        if dropped:
            self._quarantine_full(dropped)
        return id

    # delivery ------------------------------------------------------------------------------

    async def claim(self, owner: str, limit: int, lease: float) -> list[Entry]:
        def claim(conn: sqlite3.Connection) -> list[Entry]:
            now = self.clock()
            conn.execute(
                "UPDATE inbox SET state = 'pending', owner = NULL, lease_until = NULL"
                " WHERE state = 'claimed' AND lease_until < ?",
                (now,),
            )
            params = {"owner": owner, "lease": now + lease, "now": now, "limit": limit}
            rows = conn.execute(CLAIM, params).fetchall()
            return sorted(map(entry, rows), key=lambda e: e.id)

        if self._work is not None:
            self._work.clear()
        return await self._write(claim)

    async def ack(self, ids: Sequence[int]) -> None:
        def ack(conn: sqlite3.Connection) -> None:
            now = self.clock()
            conn.executemany(
                "UPDATE inbox SET state = 'done', finished_at = ?, owner = NULL, lease_until = NULL"
                " WHERE id = ? AND state = 'claimed'",
                [(now, id) for id in ids],
            )

        await self._write(ack)

    async def fail(self, id: int, error: str, attempts: int, retry_at: float) -> None:
        sql = "UPDATE inbox SET last_error = ?, attempts = ?, due_at = ? WHERE id = ?"
        await self._write(lambda conn: conn.execute(sql, (error, attempts, retry_at, id)))

    async def dead(self, id: int, error: str, attempts: int) -> None:
        sql = (
            "UPDATE inbox SET state = 'dead', last_error = ?, attempts = ?, finished_at = ?,"
            " owner = NULL, lease_until = NULL WHERE id = ?"
        )
        await self._write(lambda conn: conn.execute(sql, (error, attempts, self.clock(), id)))

    async def renew(self, owner: str, lease: float) -> int:
        sql = "UPDATE inbox SET lease_until = ? WHERE state = 'claimed' AND owner = ?"
        return await self._write(
            lambda conn: conn.execute(sql, (self.clock() + lease, owner)).rowcount
        )

    async def release(self, owner: str, *, untried: Sequence[int] = ()) -> int:
        def release(conn: sqlite3.Connection) -> int:
            conn.executemany(
                "UPDATE inbox SET attempts = max(attempts - 1, 0)"
                " WHERE id = ? AND state = 'claimed' AND owner = ?",
                [(id, owner) for id in untried],
            )
            return conn.execute(
                "UPDATE inbox SET state = 'pending', owner = NULL, lease_until = NULL"
                " WHERE state = 'claimed' AND owner = ?",
                (owner,),
            ).rowcount

        return await self._write(release, wakes=True)

    async def wait_for_work(self, timeout: float) -> None:
        if self._work is None:
            await asyncio.sleep(timeout)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), timeout)

    # outbox --------------------------------------------------------------------------------

    async def unpublished(self, sink: str, owner: str, limit: int, lease: float) -> list[Entry]:
        def take(conn: sqlite3.Connection) -> list[Entry]:
            now = self.clock()
            params = {"sink": sink, "owner": owner, "lease": now + lease, "now": now}
            ids = [id for (id,) in conn.execute(OUTBOX_TAKE, {**params, "limit": limit})]
            sql = f"SELECT {COLUMNS} FROM inbox WHERE id IN ({','.join('?' * len(ids))})"  # noqa: S608 - placeholders only
            return [entry(row) for row in conn.execute(sql + " ORDER BY id", ids)]

        return await self._write(take)

    async def published(self, sink: str, ids: Sequence[int]) -> None:
        sql = "DELETE FROM outbox WHERE sink = ? AND id = ?"
        await self._write(lambda conn: conn.executemany(sql, [(sink, id) for id in ids]))

    async def release_unpublished(self, sink: str, owner: str) -> int:
        sql = "UPDATE outbox SET owner = NULL, lease_until = NULL WHERE sink = ? AND owner = ?"
        return await self._write(lambda conn: conn.execute(sql, (sink, owner)).rowcount)

    # operator ------------------------------------------------------------------------------

    async def get(self, id: int) -> Entry:
        sql = f"SELECT {COLUMNS} FROM inbox WHERE id = ?"  # noqa: S608 - constant columns
        row = await self._read(lambda conn: conn.execute(sql, (id,)).fetchone())
        if row is None:
            raise EntryNotFound(f"no inbox entry {id}")
        return entry(row)

    async def find(self, selection: Selection, *, limit: int = 100, after: int = 0) -> list[Entry]:
        clause, params = where(selection)
        sql = f"SELECT {COLUMNS} FROM inbox WHERE id > ? AND {clause} ORDER BY id LIMIT ?"  # noqa: S608 - columns are ours, values bound
        rows = await self._read(lambda conn: conn.execute(sql, (after, *params, limit)).fetchall())
        return [entry(row) for row in rows]

    async def stats(self) -> InboxStats:
        def read(conn: sqlite3.Connection) -> InboxStats:
            by_state: dict[str, int] = {}
            by_type: dict[str, dict[str, int]] = {}
            sql = "SELECT state, type, count(*), sum(duplicates) FROM inbox GROUP BY state, type"
            duplicates = 0
            for state, type_, count, dups in conn.execute(sql):
                by_state[state] = by_state.get(state, 0) + count
                by_type.setdefault(type_, {})[state] = count
                duplicates += dups
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
        sql = "UPDATE inbox SET state = 'pending', due_at = ?, attempts = 0, finished_at = NULL"
        sql += f" WHERE state IN ('done', 'dead') AND {clause}"
        return await self._write(
            lambda conn: conn.execute(sql, (self.clock(), *params)).rowcount, wakes=True
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
                f" WHERE received_at < ? {finished} LIMIT ?)"
            )

            def delete(conn: sqlite3.Connection, sql: str = sql) -> int:
                return conn.execute(sql, (before, batch)).rowcount

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
            " WHERE id > ? ORDER BY id LIMIT ?"
        )
        rows = await self._read(lambda conn: conn.execute(sql, (after, limit)).fetchall())
        return [self._rejection(row) for row in rows]

    async def get_quarantined(self, id: int) -> Rejection:
        sql = (
            "SELECT received_at, path, status, reason, field, body, headers, id FROM quarantine"
            " WHERE id = ?"
        )
        row = await self._read(lambda conn: conn.execute(sql, (id,)).fetchone())
        if row is None:
            raise EntryNotFound(f"no quarantined body {id}")
        return self._rejection(row)

    @staticmethod
    def _rejection(row: tuple[Any, ...]) -> Rejection:
        return Rejection(*row[:6], _headers_decoder.decode(row[6]), row[7])  # type: ignore[call-arg]
