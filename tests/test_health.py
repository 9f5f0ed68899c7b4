"""`/health/live` and `/health/ready`: named checks that tell the truth, through a real server."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from iotpush import Config, create_app, open_inbox
from iotpush.events import Events, Published, SinkFailed
from iotpush.health import Health
from iotpush.inbox import Incoming
from iotpush.overview import OverviewReader
from iotpush.sinks import Publisher, open_sink

from .conftest import run, running
from .test_sink_nats import Stream, nats_url, stream

__all__ = ["nats_url", "stream"]  # fixtures, used by name


def test_health_live_answers_with_its_check() -> None:
    with running(create_app(Config(store="memory://"))) as url:
        answer = httpx.get(f"{url}/health/live")
    assert answer.status_code == 200
    assert answer.json() == {
        "status": "ok",
        "checks": {"event_loop": {"ok": True, "reason": "the process and its event loop answer"}},
    }


def test_health_ready_names_every_check(db: str) -> None:
    with running(create_app(Config(store=db))) as url:
        answer = httpx.get(f"{url}/health/ready")
        old = httpx.get(f"{url}/health")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"store", "dispatcher"}
    assert body["checks"]["store"]["ok"] is True
    assert body["checks"]["store"]["reason"].startswith("a write transaction committed in")
    assert body["checks"]["dispatcher"] == {"ok": True, "reason": "the claim loop runs"}
    assert (old.status_code, old.json()) == (200, {"status": "ok"})  # kept for existing probes


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_health_ready_store_check_writes_its_row(
    backend: str, db: str, request: pytest.FixtureRequest
) -> None:
    """A real write (one row of ``ready_checks``, updated in place), not an empty commit."""
    store = db if backend == "sqlite" else request.getfixturevalue("postgres_store")
    app = create_app(Config(store=store))
    with running(app) as url:
        before = time.time()
        assert httpx.get(f"{url}/health/ready").status_code == 200
        assert httpx.get(f"{url}/health/ready").status_code == 200

    async def checked() -> list[Any]:
        async with open_inbox(store) as inbox:
            sql = "SELECT name, checked_at FROM ready_checks"
            return await inbox.read(lambda db: db.execute(sql, ()).fetchall())

    rows = run(checked())
    assert len(rows) == 1 and rows[0][0] == "store" and rows[0][1] >= before, rows


def test_health_ready_store_locked_by_another_writer_fails(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    app = create_app(Config(store=f"sqlite:///{path}", busy_timeout=0.2))
    with running(app) as url:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # holds the write lock
        try:
            locked = httpx.get(f"{url}/health/ready", timeout=30)
        finally:
            other.execute("ROLLBACK")
            other.close()
        again = httpx.get(f"{url}/health/ready", timeout=30)
    assert locked.status_code == 503
    check = locked.json()["checks"]["store"]
    assert check["ok"] is False
    assert check["reason"].startswith(("the store refused a write", "no write transaction"))
    assert locked.json()["status"] == "fail"
    assert again.status_code == 200


def test_health_ready_dispatcher_stopped_fails() -> None:
    app = create_app(Config(store="memory://"))
    with running(app) as url:
        run_in_server = app.state["dispatcher"]
        assert httpx.get(f"{url}/health/ready").status_code == 200
        for task in run_in_server._tasks:  # the claim loop dies (as a crash would end it)
            task.get_loop().call_soon_threadsafe(task.cancel)
        time.sleep(0.2)
        answer = httpx.get(f"{url}/health/ready")
    assert answer.status_code == 503
    assert answer.json()["checks"]["dispatcher"] == {
        "ok": False,
        "reason": "the claim loop is not running",
    }


def ready(tmp_path: Path, *, backlog: int, max_backlog: int, events: list[Any]) -> Any:
    """The readiness report of a store with ``backlog`` unpublished entries for a sink that
    never connected (NATS on a port nothing listens on)."""

    async def main() -> Any:
        sink = open_sink("nats://127.0.0.1:9?stream=HEALTH")
        store = f"sqlite:///{tmp_path / 'h.db'}"
        async with open_inbox(store, outbox=[sink.name]) as inbox:
            for i in range(backlog):
                await inbox.append(
                    Incoming(b"{}", "deviceAdded", "d", f"k{i}", f"s{i}", "/", {}, time.time())
                )
            bus = Events()
            health = Health(
                OverviewReader(inbox), bus, publishers=[Publisher(inbox, sink)],
                max_backlog=max_backlog,
            )  # fmt: skip
            for event in events:
                bus.emit(event)
            return await health.ready(), sink.name

    return run(main())


def test_health_ready_sink_not_connected_fails(tmp_path: Path) -> None:
    report, name = ready(tmp_path, backlog=0, max_backlog=10, events=[])
    assert not report.ok
    assert report.checks[f"sink:{name}"].reason == "not connected"
    assert report.checks["store"].ok


def test_health_sink_backlog_and_last_failure_reported(tmp_path: Path, stream: Stream) -> None:
    async def main() -> list[tuple[bool, str]]:
        sink = open_sink(f"{stream.url}?stream={stream.name}&prefix={stream.prefix}")
        async with open_inbox(f"sqlite:///{tmp_path / 'h.db'}", outbox=[sink.name]) as inbox:
            for i in range(3):
                await inbox.append(
                    Incoming(b"{}", "deviceAdded", "d", f"k{i}", f"s{i}", "/", {}, time.time())
                )
            bus = Events()
            publisher = Publisher(inbox, sink)  # not started: the backlog stays
            health = Health(OverviewReader(inbox, ttl=0), bus, publishers=[publisher])
            health.max_backlog = 2
            await sink.open()  # connected, and the stream made
            seen = []
            try:
                for event in (None, SinkFailed(sink.name, "timeout"), Published(sink.name, 1)):
                    if event is not None:
                        bus.emit(event)
                    check = (await health.ready()).checks[f"sink:{sink.name}"]
                    seen.append((check.ok, check.reason))
                health.max_backlog = 3
                check = (await health.ready()).checks[f"sink:{sink.name}"]
                seen.append((check.ok, check.reason))
            finally:
                await sink.close()
            return seen

    assert run(main()) == [
        (False, "3 entries wait in the outbox (at most 2)"),
        (False, "the last publish failed: timeout"),
        (False, "3 entries wait in the outbox (at most 2)"),
        (True, "connected; 3 entries wait in the outbox"),
    ]
