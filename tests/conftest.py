"""Shared fixtures: the spec's example bodies, and a real server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import uvicorn

import iotpush
from iotpush import Config, Inbox, Notification, Receiver, Server, create_app
from iotpush.events import Event, Events
from iotpush.inbox.memory import MemoryInbox
from iotpush.inbox.sqlite import SQLiteInbox
from tests._inbox import BACKENDS, FakeClock, InboxFactory

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "shared" / "spec" / "examples"
EXAMPLES: dict[str, bytes] = {p.stem: p.read_bytes() for p in sorted(EXAMPLES_DIR.glob("*.json"))}
RECEIVE = "/v1.0.0/messageReceiver"


def example_path(name: str) -> str:
    """The receive path a spec example is posted to (NB-IoT command status: ``/cmd``)."""
    return f"{RECEIVE}/cmd" if "nbCommandStatusChanged" in name else RECEIVE


def wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class Tally:
    """Every event emitted from now on, and counts of them: ``tally(Refused, status=403)``."""

    def __init__(self, events: Events) -> None:
        self.seen: list[Event] = []
        events.subscribe(self.seen.append)

    def __call__(self, kind: type, **match: object) -> int:
        """How many events of ``kind`` with these members were emitted."""
        return sum(
            1
            for event in list(self.seen)
            if type(event) is kind and all(getattr(event, k) == v for k, v in match.items())
        )


class Recorder(Receiver):
    """A receiver whose catch-all handler records every notification it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Notification] = []
        self.add(self.seen.append)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Notification]:
        wait_until(lambda: len(self.seen) >= count, timeout, f"{count} deliveries")
        return self.seen


@contextlib.contextmanager
def running(app: Any, **options: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yield its base URL.

    ``options`` go to ``uvicorn.Config`` (TLS settings, say: the URL is then ``https``).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options = {
        "lifespan": "on",
        "log_level": "warning",
        "loop": "asyncio",
        "http": "h11",
        **options,
    }
    config = uvicorn.Config(app, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 10, "the server to start")
        if not server.started:
            pytest.fail("the server did not start")
        scheme = "https" if options.get("ssl_certfile") else "http"
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A store URL of a fresh SQLite file."""
    return f"sqlite:///{tmp_path / 'iotpush.db'}"


@pytest.fixture
def serve(db: str) -> Callable[..., contextlib.AbstractContextManager[tuple[str, Server]]]:
    """``with serve(receiver, **config) as (url, server)``: a real server on a fresh SQLite file."""

    @contextlib.contextmanager
    def start(receiver: Receiver | None = None, **options: Any) -> Iterator[tuple[str, Server]]:
        options.setdefault("store", db)
        options.setdefault("backoff", 0.05)
        app = create_app(Config(receiver=receiver or Recorder(), **options))
        with running(app) as url:
            yield url, app

    return start


@pytest.fixture(params=["memory", "sqlite"])
def new_inbox(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Inbox]:
    """Makes the inbox under test (open it inside the test's event loop)."""
    from iotpush.server import PROJECTIONS

    if request.param == "memory":
        return lambda: MemoryInbox(projections=PROJECTIONS)
    return lambda: SQLiteInbox(tmp_path / "inbox.db", projections=PROJECTIONS)


def tracker_db(path: Path) -> sqlite3.Connection:
    """A SQLite file with the tracker tables, set up as the inbox runs it (WAL), not waiting for
    the disk (``synchronous=OFF``): tests of the trackers alone."""
    from iotpush.inbox._sqlite_sql import clustered
    from iotpush.trackers import SCHEMA

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")
    db.executescript(clustered(SCHEMA))
    return db


def run(coro: Any) -> Any:
    """Run a coroutine to completion (the suite needs no asyncio plugin)."""
    return asyncio.run(coro)


def quarantined(store: str) -> list[Any]:
    """The refusals the inbox at ``store`` keeps, the first 1000."""

    async def read() -> list[Any]:
        async with iotpush.open_inbox(store) as inbox:
            return await inbox.quarantined(limit=1000)

    result: list[Any] = run(read())
    return result


def service_missing(message: str) -> NoReturn:
    """Skip the test for a service that does not answer; fail it where services are required
    (``IOTPUSH_REQUIRE_SERVICES=1``, CI)."""
    if os.environ.get("IOTPUSH_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


# the inbox contract -------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS, ids=BACKENDS)
def inbox_factory(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> InboxFactory:
    """``inbox_factory(**options)``: a new, unopened inbox of the backend under test."""
    from iotpush.server import PROJECTIONS

    files = itertools.count()

    def make(**options: Any) -> Inbox:
        options.setdefault("clock", clock)
        options.setdefault("projections", PROJECTIONS)
        if request.param == "memory":
            return MemoryInbox(**options)
        if request.param == "postgres":  # a fresh schema of the test server, migrated
            from iotpush.inbox.postgres import PostgresInbox

            return PostgresInbox(request.getfixturevalue("postgres_store"), **options)
        n = next(files)
        return SQLiteInbox(tmp_path / ("inbox.db" if n == 0 else f"inbox-{n}.db"), **options)

    return make


# PostgreSQL ----------------------------------------------------------------------------------

POSTGRES_DEFAULT = "postgresql://127.0.0.1:5432/test"
_postgres_answer: dict[str, str | None] = {}


def postgres_server() -> str:
    """The PostgreSQL server tests use (``IOTPUSH_TEST_POSTGRES``); skip the test if it does not
    answer, or fail it when ``IOTPUSH_REQUIRE_SERVICES=1`` (CI)."""
    url = os.environ.get("IOTPUSH_TEST_POSTGRES") or POSTGRES_DEFAULT
    if url not in _postgres_answer:
        try:
            import psycopg

            with psycopg.connect(url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            _postgres_answer[url] = None
        except Exception as exc:  # not installed, not running, refused: all mean "not here"
            _postgres_answer[url] = str(exc).strip().splitlines()[0] if str(exc) else repr(exc)
    problem = _postgres_answer[url]
    if problem is not None:
        message = (
            f"PostgreSQL not reachable at {url} ({problem}); start it or set "
            "IOTPUSH_TEST_POSTGRES=postgresql://HOST:PORT/DB"
        )
        service_missing(message)
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A store URL of a fresh, empty schema of the test server (``?schema=``); dropped after."""
    with postgres_schema() as url:
        yield url


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A store URL of a fresh, empty schema of the test server (``?schema=``); dropped after."""
    import psycopg
    from psycopg import sql

    server = postgres_server()
    schema = f"iotpush_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield f"{server}{'&' if '?' in server else '?'}schema={schema}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            drop = sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema))
            conn.execute(drop)


@pytest.fixture
def postgres_store(postgres_url: str) -> str:
    """`postgres_url` with the iotpush schema in it (``iotpush db upgrade`` done)."""
    from iotpush.inbox import _migrations

    _migrations.upgrade(postgres_url)
    return postgres_url


@pytest.fixture(params=["sqlite", "postgres"])
def tracker_conn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A connection with the tracker tables, of each backend: a SQLite file (`tracker_db`), or
    a fresh PostgreSQL schema behind the adapter the PostgreSQL inbox hands the trackers."""
    if request.param == "sqlite":
        with contextlib.closing(tracker_db(tmp_path / "t.db")) as conn:
            yield conn
        return
    from iotpush.inbox._postgres_db import Db, parse_url

    conn = parse_url(request.getfixturevalue("postgres_store")).connect()
    try:
        yield Db(conn)
    finally:
        conn.close()


__all__ = [
    "EXAMPLES",
    "RECEIVE",
    "Recorder",
    "Tally",
    "example_path",
    "iotpush",
    "postgres_schema",
    "postgres_server",
    "quarantined",
    "run",
    "running",
    "service_missing",
    "tracker_db",
    "wait_until",
]
