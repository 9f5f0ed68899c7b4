"""Shared fixtures: the spec's example bodies, and a real server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

import iotpush
from iotpush import App, Config, Notification, Receiver, create_app

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
def serve(db: str) -> Callable[..., contextlib.AbstractContextManager[tuple[str, App]]]:
    """``with serve(receiver, **config) as (url, app)``: a real server on a fresh SQLite file."""

    @contextlib.contextmanager
    def start(receiver: Receiver | None = None, **options: Any) -> Iterator[tuple[str, App]]:
        options.setdefault("store", db)
        options.setdefault("backoff", 0.05)
        app = create_app(Config(receiver=receiver or Recorder(), **options))
        with running(app) as url:
            yield url, app

    return start


def tracker_db(path: Path) -> sqlite3.Connection:
    """A SQLite file with the tracker tables, set up as the inbox runs it (WAL), not waiting for
    the disk (``synchronous=OFF``): tests of the trackers alone."""
    from iotpush.trackers import SCHEMA

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")
    db.executescript(SCHEMA)
    return db


def run(coro: Any) -> Any:
    """Run a coroutine to completion (the suite needs no asyncio plugin)."""
    return asyncio.run(coro)


__all__ = [
    "EXAMPLES",
    "RECEIVE",
    "Recorder",
    "example_path",
    "iotpush",
    "run",
    "running",
    "tracker_db",
    "wait_until",
]
