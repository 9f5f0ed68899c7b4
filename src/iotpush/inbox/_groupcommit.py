"""Group commit on one SQLite connection: many writers, one transaction per batch.

Every write is queued; one transaction takes all the writes queued since the last commit, so a
burst of concurrent requests costs one ``fsync``, not one each. A coroutine resumes only once
the transaction holding its write has committed.

The statements run on the event loop's own thread: each is a few microseconds of C, and running
them elsewhere would make the two threads fight for the GIL at every statement (a thread waiting
for the GIL can wait the whole switch interval, 5 ms). Only what may block goes to a thread: the
``COMMIT`` (the ``fsync``, which releases the GIL) and waiting for a lock held by another process.
While one batch commits, the next one gathers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..exceptions import InboxUnavailable

__all__ = ["GroupCommit"]

log = logging.getLogger("iotpush.inbox")

T = TypeVar("T")


def _nothing(*args: Any) -> None:
    pass


class _Op:
    __slots__ = ("fn", "future", "wakes")

    def __init__(
        self, fn: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any], wakes: bool
    ) -> None:
        self.fn = fn
        self.future = future
        self.wakes = wakes


class GroupCommit:
    """Runs write functions in shared transactions on one connection.

    Args:
        conn: The writer connection (autocommit mode, ``busy_timeout`` 0).
        reconnect: Opens a fresh writer connection after an error.
        busy_timeout: Seconds to wait for a lock another process holds.
        max_batch: The most writes one transaction holds.
        max_pending: The most bounded writes queued for the next transaction (None: no bound):
            beyond, `write` refuses them at once rather than queue without end while the store
            is slow or locked.
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
        on_begin: Callable[[], None] = _nothing,
        before_commit: Callable[[sqlite3.Connection], None] = _nothing,
        after_commit: Callable[[bool], None] = _nothing,
    ) -> None:
        self.conn = conn
        self.reconnect = reconnect
        self.busy_timeout = busy_timeout
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.name = name
        self.on_begin = on_begin
        self.before_commit = before_commit
        self.after_commit = after_commit
        self.commits = 0
        """Transactions committed (with ``writes``, shows group commit at work)."""
        self.writes = 0
        """Writes those transactions held."""
        self.refused = 0
        """Bounded writes refused because `max_pending` were queued already."""
        self._pending: list[_Op] = []
        self._flusher: asyncio.Task[None] | None = None
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="iotpush-sqlite-commit")

    async def write(
        self, fn: Callable[[sqlite3.Connection], T], *, wakes: bool = False, bounded: bool = False
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
                f"cannot write the inbox {self.name}: {self.max_pending} writes wait already"
            )
        loop = asyncio.get_running_loop()
        op = _Op(fn, loop.create_future(), wakes)
        self._pending.append(op)
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        result: T = await op.future
        return result

    async def close(self) -> None:
        """Commit what is queued, then close the connection."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        self.conn.close()
        self._committer.shutdown(wait=True)

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: len(batch)]
                await self._commit(batch)
        finally:
            self._flusher = None

    async def _commit(self, batch: list[_Op]) -> None:
        conn = self.conn
        loop = asyncio.get_running_loop()
        results: list[Any] = []
        self.on_begin()
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                    raise
                await loop.run_in_executor(self._committer, self._begin_waiting, conn)
            for op in batch:
                try:
                    results.append(op.fn(conn))
                except sqlite3.Error:
                    raise
                except Exception as exc:  # noqa: BLE001 - handed to the waiting coroutine
                    results.append(exc)
            self.before_commit(conn)
            await loop.run_in_executor(self._committer, conn.execute, "COMMIT")
        except sqlite3.Error as exc:
            self._recover(conn)
            error = InboxUnavailable(f"cannot write the inbox {self.name}: {exc}")
            for op in batch:
                if not op.future.done():
                    op.future.set_exception(error)
            return
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
