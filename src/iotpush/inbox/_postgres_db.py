"""PostgreSQL connections for the inbox: the URL, the driver, the tracker adapter, group commit.

psycopg is imported here only, when a ``postgresql://`` store is opened: ``import iotpush`` works
without the ``postgres`` extra. The connections are synchronous and used from worker threads,
because `Inbox.transact` and `Inbox.read` hand a connection to plain functions (the trackers)
that call ``execute`` and read the result at once.

Group commit (the queue is `iotpush.inbox._groupcommit.BatchWriter`): every write is queued; one
transaction, run in the writer's thread, takes all the writes queued since the last commit, so a
burst of concurrent requests costs one commit. The transaction runs in psycopg's pipeline mode
(`Pipelined`): a statement is sent without waiting for its answer, and the writer waits for the
database only where a result is read (an id, a row count, a tracker's lookup) and at COMMIT, so a
batch costs a few round trips instead of one per statement. A write whose statements run before
the others' (`Sent`: the appends' INSERTs) has them sent together, at the start of the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..events import Events
from ..exceptions import ConfigError, InboxError, InboxUnavailable
from . import log_takeover
from ._groupcommit import BatchWriter, Op, nothing
from ._postgres_sql import (
    CANDIDATES,
    CANDIDATES_LOCKED,
    CHANNEL,
    CLAIM_IDS,
    LOCK_DEVICES,
    LOCK_ROWS,
    RELEASE_EXPIRED,
    translate,
)

__all__ = [
    "HELD",
    "Db",
    "GroupCommit",
    "Held",
    "Listener",
    "Pipelined",
    "Sent",
    "Target",
    "claim_rows",
    "driver",
    "parse_url",
    "read_error",
]

log = logging.getLogger("iotpush.inbox")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# A transaction that lost a deadlock or a serialization check is run again, this many times.
_RETRIES = 3


def driver() -> ModuleType:
    """The psycopg module.

    Raises:
        ConfigError: psycopg is not installed (naming the extra to install).
    """
    try:
        import psycopg
    except ImportError:
        raise ConfigError(
            "PostgreSQL support needs the postgres extra: pip install 'iotpush[postgres]'"
        ) from None
    return psycopg


@dataclass(frozen=True, slots=True)
class Target:
    """Where a ``postgresql://`` store lives: the libpq URL and the schema its tables are in."""

    conninfo: str
    schema: str | None
    shown: str
    """The URL without its password, for messages."""

    def settings(
        self, lock_timeout: float | None = None, role: str = "", timeout: float | None = None
    ) -> dict[str, Any]:
        """Connection keywords: autocommit, the schema, how long to wait for a lock, and the
        ``application_name`` (``iotpush ROLE SCHEMA``: operators see who is who).

        With ``timeout``, every statement, the connection and a silent network are bounded by
        it: ``statement_timeout``, ``connect_timeout``, TCP keepalives and ``tcp_user_timeout``.
        """
        server = [] if self.schema is None else [f"-c search_path={self.schema}"]
        if lock_timeout is not None:
            server.append(f"-c lock_timeout={max(1, int(lock_timeout * 1000))}")
        name = " ".join(filter(None, ["iotpush", role, self.schema]))[:63]
        settings: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": 5,
            "application_name": name,
        }
        if timeout is not None:
            server.append(f"-c statement_timeout={max(1, int(timeout * 1000))}")
            seconds = max(1, int(timeout))
            settings.update(
                connect_timeout=max(2, seconds),  # libpq's least
                keepalives=1,
                keepalives_idle=seconds,
                keepalives_interval=1,
                keepalives_count=3,
                tcp_user_timeout=max(1, int(timeout * 1000)),
            )
        if server:
            settings["options"] = " ".join(server)
        return settings

    def connect(
        self, lock_timeout: float | None = None, role: str = "", timeout: float | None = None
    ) -> Any:
        """A new psycopg connection (autocommit) using ``schema`` (see `settings`).

        Raises:
            InboxUnavailable: The server does not answer or refuses the connection.
        """
        psycopg = driver()
        try:
            return psycopg.connect(self.conninfo, **self.settings(lock_timeout, role, timeout))
        except psycopg.Error as exc:
            raise InboxUnavailable(f"cannot connect to {self.shown}: {_first_line(exc)}") from exc


def parse_url(url: str) -> Target:
    """Split ``postgresql://...[?schema=NAME]`` into a libpq URL and the schema.

    Raises:
        ConfigError: The schema is not a plain SQL name.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((value for name, value in query if name == "schema"), None)
    if schema is not None and not _NAME.fullmatch(schema):
        raise ConfigError(f"schema must be a plain SQL name (letters, digits, _), not {schema!r}")
    rest = urlencode([(name, value) for name, value in query if name != "schema"])
    conninfo = urlunsplit(parts._replace(scheme="postgresql", query=rest))
    netloc = parts.netloc.rpartition("@")
    host = netloc[2]
    user = netloc[0].partition(":")[0]
    shown = urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host, query=""))
    if schema is not None:
        shown += f"?schema={schema}"
    return Target(conninfo, schema, shown)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class Db:
    """A psycopg connection with the `iotpush.projections.Database` interface (``?`` marks)."""

    __slots__ = ("conn",)

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        """Run one statement; return its cursor (``fetchone``, ``fetchall``, ``rowcount``)."""
        if not parameters and "?" not in sql:
            return self.conn.execute(sql)
        return self.conn.execute(translate(sql), parameters)

    def executemany(self, sql: str, seq_of_parameters: Sequence[Sequence[Any]], /) -> Any:
        """Run one statement once per parameter sequence."""
        cursor = self.conn.cursor()
        cursor.executemany(translate(sql), seq_of_parameters)
        return cursor


class _Cursor:
    """A cursor of a pipelined statement: reading its row count waits for its answer."""

    __slots__ = ("_cursor", "_pipeline")

    def __init__(self, cursor: Any, pipeline: Any) -> None:
        self._cursor = cursor
        self._pipeline = pipeline

    @property
    def rowcount(self) -> int:
        if self._cursor.pgresult is None:  # not answered yet: send what is queued, and wait
            self._pipeline.sync()
        return int(self._cursor.rowcount)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall())

    def __iter__(self) -> Any:
        return iter(self._cursor)


class Pipelined:
    """The writer's connection during a transaction in pipeline mode, as the writes use it.

    ``execute`` queues a statement and returns at once; reading its rows or its row count waits
    for the answers of everything queued before it. An error comes back where the first result
    after it is read (or at `sync`): code that must know its own statements' errors (a
    savepoint's) calls `sync` before it ends, and `recover` before rolling back.
    """

    __slots__ = ("conn", "pipeline")

    def __init__(self, conn: Any, pipeline: Any) -> None:
        self.conn = conn
        self.pipeline = pipeline

    def execute(self, sql: str, parameters: Any = None) -> _Cursor:
        """Queue one statement (``%s`` placeholders)."""
        return _Cursor(self.conn.execute(sql, parameters), self.pipeline)

    def cursor(self) -> Any:
        """A cursor of the connection (``executemany``)."""
        return self.conn.cursor()

    @property
    def closed(self) -> bool:
        """Whether the connection is closed."""
        return bool(self.conn.closed)

    def sync(self) -> None:
        """Send what is queued and wait for every answer; raise the first error among them."""
        self.pipeline.sync()

    def recover(self) -> None:
        """After an error: end the aborted stretch of the pipeline, so that the next statement
        (``ROLLBACK TO SAVEPOINT``) runs."""
        with contextlib.suppress(driver().Error):
            self.pipeline.sync()


class Sent:
    """A write whose first statement is sent with the other writes' at the start of a batch.

    The group commit calls `send` for every such write of a batch before it runs any write, so
    their statements travel together and their answers come back in one round trip; then it
    calls the write itself, which reads what `send` queued.
    """

    __slots__ = ()

    def send(self, conn: Pipelined) -> None:
        """Queue the first statement."""
        raise NotImplementedError

    def __call__(self, conn: Pipelined) -> Any:
        """Run the write (reading what `send` queued)."""
        raise NotImplementedError


@dataclass(slots=True)
class Held:
    """What this process's write transactions held that any transaction of the cluster may
    have to wait for: the lock of device '' (tracked entries without a device), and the lock
    PostgreSQL takes at the COMMIT of a transaction that NOTIFYs (one for the whole server).

    The time counts from the moment the statement was queued to the moment the COMMIT was
    answered: an upper bound.
    """

    seconds: float = 0.0
    """Time held, in all."""
    transactions: int = 0
    """Transactions that held it."""
    appends: int = 0
    """Appends committed, by every transaction (held or not)."""


HELD = Held()
"""This process's figures (the benchmark reads them)."""


class GroupCommit(BatchWriter):
    """Runs write functions in shared transactions on one connection, in one thread.

    Args:
        target: The database.
        max_batch: The most writes one transaction holds.
        lock_timeout: Seconds a write waits for a lock another process holds.
        max_pending: The most bounded writes queued for the next transaction (None: no bound):
            beyond, they are refused at once (the receive path answers 503).
        on_begin: Called (in the writer thread) as each transaction begins.
        before_send: Called with the connection and every write of the batch, before the
            `Sent` ones are sent (the inbox takes its locks, and gathers writes it runs as one
            statement).
        before_commit: Called with the connection after the batch's writes, before COMMIT.
        wake: A statement run before COMMIT when a write of the batch asked to wake the work
            waiters (other processes' too: a NOTIFY).
        after_commit: Called on the event loop once the batch committed and its callers'
            futures are resolved, with whether one of them asked to wake the work waiters.
        timeout: Seconds a transaction may take (None: no bound). Past it, the connection is
            cut (a frozen server cannot answer a cancel request either), the batch's callers
            get `InboxUnavailable`, and the next batch connects afresh.
    """

    def __init__(
        self,
        target: Target,
        *,
        max_batch: int,
        lock_timeout: float,
        timeout: float | None = None,
        max_pending: int | None = None,
        on_begin: Callable[[], None] = nothing,
        before_send: Callable[[Pipelined, list[Callable[[Any], Any]]], None] = nothing,
        before_commit: Callable[[Any], None] = nothing,
        after_commit: Callable[[bool], None] = nothing,
        wake: str | None = None,
        events: Events | None = None,
    ) -> None:
        super().__init__(
            store=target.shown,
            max_batch=max_batch,
            max_pending=max_pending,
            on_begin=on_begin,
            before_commit=before_commit,
            after_commit=after_commit,
            events=events,
        )
        self.target = target
        self.before_send = before_send
        self.wake = wake
        self.lock_timeout = lock_timeout
        self.timeout = timeout
        self._shared_at: float | None = None  # when the transaction took a cluster-wide lock
        self.conn: Any = None
        self._cut = False  # the connection was cut: connect afresh before the next batch
        self._late = False  # the last transaction passed the bound (logged once)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="iotpush-postgres-writer")

    async def start(self) -> None:
        """Connect now, so that a server that cannot reach its database says so at start."""
        loop = asyncio.get_running_loop()
        self.conn = await loop.run_in_executor(self._thread, self._connect)

    async def close(self) -> None:
        """Commit what is queued, then close the connection."""
        await self._drain()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._disconnect)
        self._thread.shutdown(wait=True)

    async def _commit(self, batch: list[Op]) -> None:
        loop = asyncio.get_running_loop()
        running = loop.run_in_executor(self._thread, self._run, batch)
        try:
            try:
                results = await asyncio.wait_for(asyncio.shield(running), self.timeout)
            except TimeoutError:
                self._cut_connection()
                results = await running  # it fails at once on the cut connection
        except Exception as exc:  # noqa: BLE001 - every waiting caller is told
            error = (
                exc
                if isinstance(exc, InboxUnavailable)
                else InboxUnavailable(f"cannot write {self.target.shown}: {exc!r}")
            )
            if self._cut:
                error = InboxUnavailable(
                    f"cannot write {self.target.shown}: no answer within {self.timeout} s"
                )
                if not self._late:
                    log.error("%s; answering 503 until it answers again", error)
                self._late = True
            self._fail(batch, error)
            return
        if self._late:
            log.warning("%s answers again", self.target.shown)
            self._late = False
        self._settle(batch, results)

    def _cut_connection(self) -> None:
        """Shut the writer's socket down: its thread, blocked on a server that does not answer,
        gets an error at once instead of waiting for it."""
        conn = self.conn
        self._cut = True
        if conn is None or conn.closed:
            return  # still connecting: `connect_timeout` bounds that
        with contextlib.suppress(OSError):
            sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
            with sock:
                sock.shutdown(socket.SHUT_RDWR)

    def _run(self, batch: list[Op]) -> list[Any]:
        # In the writer thread. A lost deadlock is run again; any other database error fails
        # the whole batch, and the connection is replaced before the next one.
        psycopg = driver()
        for attempt in range(1, _RETRIES + 1):
            try:
                if self._cut:
                    self._disconnect()
                    self._cut = False
                if self.conn is None or self.conn.closed:
                    self.conn = self._connect()
                return self._transaction(self.conn, batch)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                if attempt == _RETRIES:
                    raise InboxUnavailable(f"cannot write {self.target.shown}: {exc}") from exc
                log.info("a write transaction lost a deadlock; running it again")
            except psycopg.Error as exc:
                self._disconnect()
                message = f"cannot write {self.target.shown}: {_first_line(exc)}"
                raise InboxUnavailable(message) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def hold_shared(self) -> None:
        """Note that the transaction under way takes something the whole cluster waits for
        (counted in `HELD`)."""
        if self._shared_at is None:
            self._shared_at = time.perf_counter()

    def _transaction(self, conn: Any, batch: list[Op]) -> list[Any]:
        psycopg = driver()
        self.on_begin()
        self._shared_at = None
        try:
            with conn.pipeline() as pipeline:
                pipelined = Pipelined(conn, pipeline)
                pipelined.execute("BEGIN")
                fns = [op.fn for op in batch]
                self.before_send(pipelined, fns)
                sent = [fn for fn in fns if isinstance(fn, Sent)]
                for fn in sent:
                    fn.send(pipelined)
                results = self._apply(pipelined, batch, psycopg.Error)
                if self.wake is not None and any(op.wakes for op in batch):
                    self.hold_shared()
                    pipelined.execute(self.wake)
                pipelined.execute("COMMIT")
            # Leaving the pipeline waited for every answer: the COMMIT is done.
            HELD.appends += len(sent)
            if self._shared_at is not None:
                HELD.seconds += time.perf_counter() - self._shared_at
                HELD.transactions += 1
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                if not conn.closed:
                    conn.execute("ROLLBACK")
            raise
        return results

    def _connect(self) -> Any:
        return self.target.connect(self.lock_timeout, "writer", self.timeout)

    def _disconnect(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


class Listener:
    """Calls ``wake`` on the event loop each time a transaction of any process notifies the
    store's channel (`iotpush.inbox._postgres_sql.NOTIFY`: entries were left for `claim`).

    It listens in a thread of its own, on a connection of its own. When that connection fails it
    connects again every second, and wakes once connected (something may have been notified
    meanwhile): the dispatcher's polling covers the time in between.
    """

    def __init__(
        self,
        target: Target,
        wake: Callable[[], None],
        loop: asyncio.AbstractEventLoop,
        timeout: float | None = None,
    ) -> None:
        self.target = target
        self.wake = wake
        self.loop = loop
        self.timeout = timeout
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._listen, name="iotpush-postgres-listener", daemon=True
        )

    def start(self) -> None:
        """Start listening, in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop listening (blocks up to two seconds: call it in a thread). A thread stuck on a
        database that does not answer is left to end by itself (it is a daemon)."""
        self._stopping.set()
        self._thread.join(2.0)

    def _listen(self) -> None:
        psycopg = driver()
        while not self._stopping.is_set():
            conn = None
            try:
                conn = self.target.connect(role="listener", timeout=self.timeout)
                (channel,) = conn.execute(CHANNEL).fetchone()
                conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))
                self._wake()
                while not self._stopping.is_set():
                    for _ in conn.notifies(timeout=0.5):
                        self._wake()
            except (psycopg.Error, InboxUnavailable):
                self._stopping.wait(1.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            self.loop.call_soon_threadsafe(self.wake)


def read_error(target: Target, exc: BaseException) -> InboxError:
    """The error a failed read raises: unavailable when the connection failed."""
    psycopg = driver()
    message = f"reading {target.shown}: {_first_line(exc)}"
    if isinstance(exc, psycopg.OperationalError):
        return InboxUnavailable(message)
    return InboxError(message)


def claim_rows(conn: Any, owner: str, limit: int, now: float, lease: float) -> list[Any]:
    """Claim up to ``limit`` entries due at ``now`` for ``owner``, for ``lease`` seconds of the
    database's clock, in one transaction; log the claims of others it took over.

    Returns the claimed rows (`COLUMNS`) in id order. See `iotpush.inbox.postgres` for why the
    order of each device's entries holds across processes.
    """
    params: dict[str, Any] = {"owner": owner, "now": now, "limit": limit}
    # Pipelined: BEGIN, the release of expired claims and the first look travel together.
    with conn.pipeline(), conn.transaction():
        expired = conn.execute(RELEASE_EXPIRED, (owner,))
        seen = conn.execute(CANDIDATES, params).fetchall()
        taken = Counter(row[0] for row in expired)
        if not seen:
            log_takeover(dict(taken))
            return []
        devices = sorted({device for _, device in seen if device is not None})
        held = [row[0] for row in conn.execute(LOCK_DEVICES, (devices,))] if devices else []
        # A statement begun after the locks were taken: it sees every claim of those devices
        # committed by another process before.
        rows = conn.execute(CANDIDATES_LOCKED, {**params, "devices": held}).fetchall()
        ids = [id for id, _ in rows]
        locked = {row[0] for row in conn.execute(LOCK_ROWS, (ids, now))}
        chosen: list[int] = []
        stopped: set[str] = set()
        for id, device in rows:
            # A row another transaction holds is skipped, and so are the later entries of its
            # device: they must not overtake it.
            if device is not None and device in stopped:
                continue
            if id in locked:
                chosen.append(id)
            elif device is not None:
                stopped.add(device)
        if not chosen:
            log_takeover(dict(taken))
            return []
        claimed: list[Any] = conn.execute(CLAIM_IDS, (owner, lease, chosen)).fetchall()
    log_takeover(dict(taken))
    return sorted(claimed, key=lambda row: row[0])
