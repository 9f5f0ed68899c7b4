"""Group commit: many writers, one transaction per batch.

Every write is queued; one transaction takes all the writes queued since the last commit, so a
burst of concurrent requests costs one ``fsync``, not one each. A coroutine resumes only once
the transaction holding its write has committed. `BatchWriter` is that queue, shared by both SQL
backends; each runs the transaction its own way (`GroupCommit` here for SQLite,
`iotpush.inbox._postgres_db.GroupCommit` for PostgreSQL).

SQLite's statements run on the event loop's own thread: each is a few microseconds of C, and
running them elsewhere would make the two threads fight for the GIL at every statement (a thread
waiting for the GIL can wait the whole switch interval, 5 ms). Only what may block goes to a
thread: the ``COMMIT`` (the ``fsync``, which releases the GIL) and waiting for a lock held by
another process. While one batch commits, the next one gathers.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..events import Committed, Events
from ..exceptions import InboxUnavailable

__all__ = ["BatchWriter", "GroupCommit", "Op", "nothing"]

log = logging.getLogger("iotpush.inbox")

T = TypeVar("T")


def nothing(*args: Any) -> None:
    """The default callback: does nothing."""


class Op:
    """One queued write: the function, the future its caller awaits, whether it wakes work."""

    __slots__ = ("fn", "future", "wakes")

    def __init__(self, fn: Callable[[Any], Any], future: asyncio.Future[Any], wakes: bool) -> None:
        self.fn = fn
        self.future = future
        self.wakes = wakes


class BatchWriter(abc.ABC):
    """The queue of group commit: gathers writes, hands them over in batches, settles them.

    Args:
        store: How errors name the store.
        max_batch: The most writes one transaction holds.
        max_pending: The most bounded writes queued for the next transaction (None: no bound):
            beyond, `write` refuses them at once rather than queue without end while the store
            is slow or locked.
        on_begin: Called as each transaction begins.
        before_commit: Called with the connection after the batch's writes, before COMMIT.
        after_commit: Called on the event loop once the batch committed and its callers'
            futures are resolved, with whether one of them asked to wake the work waiters.
        events: Where `Committed` goes, once per batch.
    """

    def __init__(
        self,
        *,
        store: str,
        max_batch: int,
        max_pending: int | None = None,
        on_begin: Callable[[], None] = nothing,
        before_commit: Callable[[Any], None] = nothing,
        after_commit: Callable[[bool], None] = nothing,
        events: Events | None = None,
    ) -> None:
        self.store = store
        self.events = events or Events()
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.on_begin = on_begin
        self.before_commit = before_commit
        self.after_commit = after_commit
        self.commits = 0
        """Transactions committed (with ``writes``, shows group commit at work)."""
        self.writes = 0
        """Writes those transactions held."""
        self.refused = 0
        """Bounded writes refused because `max_pending` were queued already."""
        self._pending: list[Op] = []
        self._flusher: asyncio.Task[None] | None = None

    async def write(
        self, fn: Callable[[Any], T], *, wakes: bool = False, bounded: bool = False
    ) -> T:
        """Run ``fn(conn)`` in the next transaction; return its result once committed.

        ``bounded`` writes (the receive path's) are refused while `max_pending` are queued; the
        others (deliveries, operators) are bounded by their callers.

        Raises:
            InboxUnavailable: The transaction failed, or the queue is full; nothing was kept.
        """
        if bounded and self.max_pending is not None and len(self._pending) >= self.max_pending:
            self.refused += 1
            raise InboxUnavailable(
                f"cannot write {self.store}: {self.max_pending} writes wait already"
            )
        loop = asyncio.get_running_loop()
        op = Op(fn, loop.create_future(), wakes)
        self._pending.append(op)
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        result: T = await op.future
        return result

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: len(batch)]
                observed = self.events.wants(Committed)
                started = time.perf_counter() if observed else 0.0
                committed = self.commits
                await self._commit(batch)
                if observed and self.commits > committed:
                    seconds = time.perf_counter() - started
                    self.events.emit(Committed(len(batch), seconds))
        finally:
            self._flusher = None

    async def _drain(self) -> None:
        """Wait until what is queued is committed (or failed)."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)

    @abc.abstractmethod
    async def _commit(self, batch: list[Op]) -> None:
        """Run ``batch`` in one transaction, then `_settle` it, or `_fail` it with the error."""

    def _apply(
        self,
        conn: Any,
        batch: list[Op],
        fatal: type[Exception],
    ) -> list[Any]:
        """Run the writes of ``batch`` on ``conn`` (in its transaction), then `before_commit`.

        A write's own exception is its result, handed to its caller once the others commit; a
        ``fatal`` one (the driver's errors: the transaction is broken) fails the whole batch.
        """
        results: list[Any] = []
        for op in batch:
            try:
                results.append(op.fn(conn))
            except fatal:
                raise
            except Exception as exc:  # noqa: BLE001 - handed to the waiting coroutine
                results.append(exc)
        self.before_commit(conn)
        return results

    def _fail(self, batch: list[Op], error: BaseException) -> None:
        for op in batch:
            if not op.future.done():
                op.future.set_exception(error)

    def _settle(self, batch: list[Op], results: list[Any]) -> None:
        self.commits += 1
        self.writes += len(batch)
        wake = False
        for op, value in zip(batch, results, strict=True):
            if op.future.done():  # its caller was cancelled
                continue
            if isinstance(value, Exception):
                op.future.set_exception(value)
            else:
                op.future.set_result(value)
                wake = wake or op.wakes
        self.after_commit(wake)


class GroupCommit(BatchWriter):
    """Runs write functions in shared transactions on one SQLite connection.

    Args:
        conn: The writer connection (autocommit mode, ``busy_timeout`` 0).
        reconnect: Opens a fresh writer connection after an error.
        busy_timeout: Seconds to wait for a lock another process holds.
        max_batch: The most writes one transaction holds.
        max_pending: The most bounded writes queued for the next transaction (None: no bound).
        name: What the errors call the store.
        on_begin: Called as each transaction begins.
        before_commit: Called with the connection after the batch's writes, before COMMIT.
        after_commit: Called once the batch committed and its callers' futures are resolved,
            with whether one of them asked to wake the work waiters.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        reconnect: Callable[[], sqlite3.Connection],
        busy_timeout: float,
        max_batch: int,
        max_pending: int | None = None,
        name: str,
        on_begin: Callable[[], None] = nothing,
        before_commit: Callable[[sqlite3.Connection], None] = nothing,
        after_commit: Callable[[bool], None] = nothing,
        events: Events | None = None,
    ) -> None:
        super().__init__(
            store=f"the inbox {name}",
            max_batch=max_batch,
            max_pending=max_pending,
            on_begin=on_begin,
            before_commit=before_commit,
            after_commit=after_commit,
            events=events,
        )
        self.conn = conn
        self.reconnect = reconnect
        self.busy_timeout = busy_timeout
        self.name = name
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="iotpush-sqlite-commit")

    async def close(self) -> None:
        """Commit what is queued, then close the connection."""
        await self._drain()
        self.conn.close()
        self._committer.shutdown(wait=True)

    async def _commit(self, batch: list[Op]) -> None:
        conn = self.conn
        loop = asyncio.get_running_loop()
        self.on_begin()
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                    raise
                await loop.run_in_executor(self._committer, self._begin_waiting, conn)
            results = self._apply(conn, batch, sqlite3.Error)
            await loop.run_in_executor(self._committer, conn.execute, "COMMIT")
        except sqlite3.Error as exc:
            self._recover(conn)
            self._fail(batch, InboxUnavailable(f"cannot write {self.store}: {exc}"))
            return
        self._settle(batch, results)

    def _begin_waiting(self, conn: sqlite3.Connection) -> None:
        # Another process (an operator command) holds the lock: wait for it, up to the bound.
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        finally:
            conn.execute("PRAGMA busy_timeout = 0")

    def _recover(self, conn: sqlite3.Connection) -> None:
        # A connection that met an I/O error or a read-only file may stay broken: start afresh.
        with contextlib.suppress(sqlite3.Error):
            conn.rollback()
        with contextlib.suppress(sqlite3.Error):
            conn.close()
        try:
            self.conn = self.reconnect()
        except sqlite3.Error:
            log.exception("cannot reopen the inbox %s", self.name)
            self.conn = conn  # a closed handle: writes fail until the next try
