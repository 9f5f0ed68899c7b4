"""The embedded inbox: one SQLite file in WAL mode, written with group commit.

Writes share transactions (see `_groupcommit`); reads run in worker threads on their own
connections, which WAL lets proceed during writes. One server uses a file at a time (a lock
file says so); operator commands may open it alongside, read-only when they only look (see
`_sqlite_open` for what creates a store and how a read-only open works on a read-only or full
disk). A server that cannot open its file because the disk is full or failing starts anyway:
it answers 503 and opens the file as soon as it can.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from ..exceptions import ConfigError, InboxError
from . import Accepted, Entry, Incoming, Selection, _migrations, _sqlite_open, log_takeover
from ._groupcommit import GroupCommit
from ._sqlbase import COLUMNS, SQLInbox, entry, slot_digest
from ._sqlite_sql import (
    BLOCKED,
    CLAIM,
    DUPLICATE,
    EXPIRE,
    INSERT,
    OPEN_ELSEWHERE,
    OUTBOX_ADD,
    OUTBOX_TAKE,
    PLAIN_BEFORE,
    SLOT,
    ordered_digest,
    where,
)
from ._store import Mode

__all__ = ["SQLiteInbox"]

_json_encode = msgspec.json.encode

log = logging.getLogger("iotpush.inbox")

T = TypeVar("T")
Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


class SQLiteInbox(SQLInbox):
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
        mode: ``create`` the file (and its folder) if missing; ``write`` or ``read`` only an
            existing one (`iotpush.inbox.Mode`); ``read`` writes nothing at all.
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
        mode: Mode = "create",
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if mode not in ("create", "write", "read"):
            raise ConfigError(f"mode must be create, write or read, not {mode!r}")
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
        self.mode = mode
        self._uri: str | None = None  # how connections open the file read-only (mode "read")
        self._retry: asyncio.Task[None] | None = None  # reopening a store that failed to open
        self._why = "it is not open"  # why writes fail while `_writer` is None
        self._lock_file: int | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._reads_done = threading.Condition(self._readers_lock)
        self._reading = 0  # reads running in threads now: `close` waits for them
        self._gives_back = False  # the file's auto_vacuum is incremental
        # The hot owner for which the transaction under way found no entry open but its own,
        # with only writes that open none since (`_may_open`): its appends skip `BLOCKED`.
        self._none_open_for: str | None = None
        # The newest entry of the store received before it ordered slot digests: until the
        # dedupe window has passed it, a slot is looked up by its plain digest too.
        self._plain_before: float | None = None

    @property
    def _name(self) -> str:
        return str(self.path)

    # connections ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path if self._uri is None else self._uri,
            isolation_level=None,
            check_same_thread=False,
            timeout=self.busy_timeout,
            uri=self._uri is not None,
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
            with self._reads_done:
                self._reading += 1
            try:
                return fn(self._reader())
            except sqlite3.Error as exc:
                raise InboxError(f"reading {self.path}: {exc}") from exc
            finally:
                with self._reads_done:
                    self._reading -= 1
                    self._reads_done.notify_all()

        return await asyncio.to_thread(run)

    async def open(self) -> None:
        if self._writer is not None or self._retry is not None or self._uri is not None:
            return
        self._work = asyncio.Event()
        if self.mode == "read":
            self._uri = _sqlite_open.read_uri(self.path)
            self._why = "it is open read-only"
            return
        _sqlite_open.prepare(self.path, self.mode)
        if self.exclusive:
            self._lock_file = _sqlite_open.take_lock(self.path)
            log.info("the inbox is %s", os.path.abspath(self.path))
        try:
            self._writer = self._start()
        except sqlite3.Error as exc:
            if not (self.exclusive and _sqlite_open.transient(exc)):
                self._drop_lock()
                raise _sqlite_open.describe(self.path, exc) from None
            # A full or failing disk may recover: serve, answer 503, and keep trying.
            self._why = f"it cannot be opened: {exc}"
            log.error("cannot open the inbox %s (%s): answering 503 until it opens", self.path, exc)
            self._retry = asyncio.get_running_loop().create_task(self._reopen())
        except BaseException:
            self._drop_lock()
            raise

    def _start(self) -> GroupCommit:
        conn = self._connect()
        try:
            _sqlite_open.start(conn)
            for step in _migrations.migrate_sqlite(conn, os.path.abspath(self.path)):
                log.info("the inbox %s: applied migration %d", self.path, step.version)
            self._gives_back = _sqlite_open.gives_back(conn)
            (self._plain_before,) = conn.execute(PLAIN_BEFORE).fetchone()
            if self.exclusive and not self._gives_back:
                log.warning(
                    "the inbox %s was made without incremental vacuum: what is purged is reused"
                    " but the file does not shrink; `iotpush db vacuum` (server stopped) converts"
                    " it",
                    self.path,
                )
            if self.exclusive:  # no other server can hold claims: the last one died or stopped
                left = conn.execute(
                    "UPDATE inbox SET state = 'pending', owner = NULL, lease_until = NULL"
                    " WHERE state = 'claimed' RETURNING owner"
                ).fetchall()
                for owner, count in Counter(owner for (owner,) in left).items():
                    log.warning(
                        "gave back %d entries claimed by %s, a server that stopped", count, owner
                    )
                conn.execute("UPDATE outbox SET owner = NULL, lease_until = NULL")
            conn.execute("PRAGMA busy_timeout = 0")  # the writer waits for locks in a thread
        except BaseException:
            conn.close()
            raise
        return GroupCommit(
            conn,
            reconnect=self._connect_writer,
            busy_timeout=self.busy_timeout,
            max_batch=self.max_batch,
            max_pending=self.max_pending,
            name=str(self.path),
            on_begin=self._begin,
            before_commit=self._before_commit,
            after_commit=self._after_commit,
            events=self.events,
        )

    async def _reopen(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self._writer = self._start()
            except sqlite3.Error as exc:
                self._why = f"it cannot be opened: {exc}"
                continue
            except Exception:
                log.exception("cannot open the inbox %s", self.path)
                continue
            self._retry = None
            log.warning("the inbox %s is open: accepting notifications again", self.path)
            if self._work is not None:
                self._work.set()
            return

    def _unwritable(self) -> str:
        return f"cannot write the inbox {self.path}: {self._why}"

    def _connect_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.execute("PRAGMA busy_timeout = 0")  # the writer waits for locks in a thread
        return conn

    def _drop_lock(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            await asyncio.gather(self._retry, return_exceptions=True)
            self._retry = None
        self._uri = None
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        await asyncio.to_thread(self._close_readers)
        self._local = threading.local()
        self._drop_lock()

    def _close_readers(self) -> None:
        # A read's task may be cancelled (a watchdog stopped at shutdown) while its thread still
        # runs: closing its connection under it would crash the process, so wait for it.
        with self._reads_done:
            self._reads_done.wait_for(lambda: self._reading == 0)
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    # group commit --------------------------------------------------------------------------

    def _begin(self) -> None:
        self._none_open_for = None
        self._handed = []
        self._tracked = []
        self._pending_added = False

    def _may_open(self, fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
        def write(conn: sqlite3.Connection) -> T:
            self._none_open_for = None
            return fn(conn)

        return write

    def _blocked(self, conn: sqlite3.Connection, device: str, owner: str) -> bool:
        """Whether an open entry of ``device`` (pending, or another owner's) holds a new one
        back from ``owner``. Asked of the whole inbox once per transaction: while no entry is
        open but ``owner``'s (the usual state of a server that keeps up), no device is."""
        if self._none_open_for != owner:
            if conn.execute(OPEN_ELSEWHERE, {"owner": owner}).fetchone()[0]:
                return conn.execute(BLOCKED, (device, owner)).fetchone() is not None
            self._none_open_for = owner
        return False

    def _after_commit(self, wake: bool) -> None:
        if (wake or self._pending_added) and self._work is not None:
            self._work.set()
        self._hand_over()

    # receive path --------------------------------------------------------------------------

    async def append(self, item: Incoming) -> Accepted:
        dedupe = ordered_digest(item.slot, item.order)
        headers = _json_encode(item.headers).decode()
        cutoff = item.received_at - self.dedupe_window
        before = self._plain_before
        plain = (
            slot_digest(item.slot)
            if item.order is not None and before is not None and before >= cutoff
            else None
        )
        pending = (
            item.received_at, item.type, item.device, item.key, dedupe, item.path, item.body,
            headers, item.received_at, "pending", None, None, 0, cutoff, plain,
        )  # fmt: skip

        def insert(conn: sqlite3.Connection) -> Accepted:
            hot = self._hot
            row: tuple[Any, ...] = pending
            if (
                hot is not None
                and hot.has_room()
                and (item.device is None or not self._blocked(conn, item.device, hot.owner))
            ):
                row = (*pending[:9], "claimed", hot.owner, self.clock() + hot.lease, 0,
                       *pending[13:])  # fmt: skip
            id, duplicate = self._keep(conn, INSERT, row, item, dedupe)
            if row is pending:
                # Only an entry left pending is work for `claim`; one handed over is not.
                self._pending_added = self._pending_added or not duplicate
                self._none_open_for = None
            elif not duplicate:
                claimed = Entry(id, item.received_at, item.type, item.device, item.key,
                                item.path, item.body, item.headers, "claimed", 0,
                                item.received_at, row[10], row[11],
                                notification=item.notification)  # fmt: skip
                self._handed.append(claimed)
            return Accepted(id, duplicate=duplicate)

        return await self._write(insert, bounded=True, opens=False)

    def _insert(
        self, conn: Any, insert: str, row: tuple[Any, ...], dedupe: bytes
    ) -> tuple[int, bool]:
        *values, cutoff, plain = row
        held = conn.execute(SLOT, (dedupe,)).fetchone()
        if held is None and plain is not None:
            # An entry kept before the store ordered its digests holds the slot by its plain
            # digest: a duplicate if it is the same key inside the window; else it keeps that
            # digest (no new entry will take it) and the new entry takes the ordered one.
            held = conn.execute(SLOT, (plain,)).fetchone()
            if held is not None and not (held[1] == values[3] and held[2] >= cutoff):
                held = None
        if held is not None:
            id, key, received_at = held
            if key == values[3] and received_at >= cutoff:
                conn.execute(DUPLICATE, (values[0], id))
                return id, True
            conn.execute("UPDATE inbox SET dedupe = NULL WHERE id = ?", (id,))
        return conn.execute(insert, values).fetchone()[0], False

    def _fill_outbox(self, conn: sqlite3.Connection, id: int) -> None:
        conn.executemany(OUTBOX_ADD, [(sink, id) for sink in self.outbox])
        self._outbox_added()  # its publisher's next take queues behind this commit

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

    async def free_pages(self) -> int:
        if not self._gives_back:
            return 0
        row = await self._read(lambda conn: conn.execute("PRAGMA freelist_count").fetchone())
        return int(row[0])

    async def give_back(self, pages: int = 256) -> int:
        if not self._gives_back:
            return 0

        def step(conn: sqlite3.Connection) -> int:
            (free,) = conn.execute("PRAGMA freelist_count").fetchone()
            count = min(int(free), pages)
            for _ in range(count):  # `execute` steps a pragma once: one page each
                conn.execute("PRAGMA incremental_vacuum(1)")
            return count

        return await self._write(step)

    def _insert_rejection(self, conn: sqlite3.Connection, row: tuple[Any, ...]) -> int:
        sql = "INSERT INTO quarantine (received_at, path, status, reason, field, body, headers)"
        return conn.execute(sql + " VALUES (?, ?, ?, ?, ?, ?, ?)", row).lastrowid or 0

    # delivery ------------------------------------------------------------------------------

    async def claim(self, owner: str, limit: int, lease: float) -> list[Entry]:
        def claim(conn: sqlite3.Connection) -> list[Entry]:
            now = self.clock()
            taken = Counter(row[0] for row in conn.execute(EXPIRE, {"now": now, "owner": owner}))
            log_takeover(dict(taken))
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

        await self._write(ack, opens=False)

    async def release(self, owner: str) -> int:
        def release(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE inbox SET state = 'pending', owner = NULL, lease_until = NULL"
                " WHERE state = 'claimed' AND owner = ?",
                (owner,),
            ).rowcount

        return await self._write(release, wakes=True)

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

    # operator ------------------------------------------------------------------------------

    def _where(self, selection: Selection) -> tuple[str, list[Any]]:
        return where(selection)
