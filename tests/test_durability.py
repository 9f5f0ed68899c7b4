"""What a 200 promises, checked against real server processes and a real SQLite file.

The crash test kills the server mid-load and restarts it on the same file; the receiver
(`tests.ledger_receiver`) writes one ledger line per delivery, in a way a kill cannot undo.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from iotpush import Config, Notification, create_app, decode, testing
from iotpush.idempotency import key_and_slot
from tests.conftest import EXAMPLES, RECEIVE, Recorder, running, wait_until

ROOT = Path(__file__).resolve().parents[1]
JSON = {"content-type": "application/json;charset=UTF-8"}


@dataclass(frozen=True)
class Push:
    """One notification as the platform posts it, and the key the inbox files it under."""

    path: str
    body: bytes
    key: str


def push(notification: Notification) -> Push:
    path = testing.path_for(notification)
    body = testing.encode(notification)
    key, _ = key_and_slot(decode(body, "command" if path.endswith("/cmd") else "notify"))
    return Push(path, body, key)


def pushes(count: int, devices: int) -> list[Push]:
    """``count`` distinct pushes: reports of ``devices`` devices, every 5th a command status."""
    made = []
    for i in range(count):
        if i % 5 == 4:
            n = testing.build("nbCommandStatusChanged", command_id=f"{i:032x}")
        else:
            device = f"meter-{i % devices:03}"
            n = testing.build(
                "deviceDataChanged", device_id=device, gateway_id=device, service={"data": {"n": i}}
            )
        made.append(push(n))
    assert len({p.key for p in made}) == count
    return made


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A server process serving `tests.ledger_receiver` on a SQLite file."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextlib.contextmanager
def serving(
    tmp_path: Path,
    port: int,
    *,
    db: Path,
    ledger: Path,
    delay: float = 0.0,
    name: str = "server",
    log_level: str = "warning",
) -> Iterator[Server]:
    """``iotpush serve`` as a subprocess, ready to answer; killed on the way out if still up."""
    log = tmp_path / f"{name}.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "LEDGER": str(ledger),
        "LEDGER_DELAY": str(delay),
    }
    command = [
        sys.executable, "-m", "iotpush.cli", "serve", "tests.ledger_receiver:receiver",
        "--port", str(port), "--store", f"sqlite:///{db}", "--log-level", log_level,
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(server)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def wait_ready(server: Server, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"the server exited with {server.process.returncode}:\n{server.output()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(server.url + "/health", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    pytest.fail(f"the server did not answer /health within {timeout} s:\n{server.output()}")


async def post_all(
    url: str,
    items: Sequence[Push],
    *,
    connections: int = 8,
    on_ack: Callable[[int], None] | None = None,
) -> tuple[list[Push], list[Push]]:
    """Post ``items`` over several connections; return those answered 200 and the others."""
    acked: list[Push] = []
    refused: list[Push] = []
    queue = iter(items)
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:

        async def worker() -> None:
            for item in queue:
                try:
                    answer = await client.post(item.path, content=item.body, headers=JSON)
                except httpx.TransportError:  # no answer: not acknowledged
                    refused.append(item)
                    continue
                if answer.status_code != 200:
                    refused.append(item)
                    continue
                acked.append(item)
                if on_ack is not None:
                    on_ack(len(acked))

        await asyncio.gather(*(worker() for _ in range(connections)))
    return acked, refused


def ledger_lines(ledger: Path, kind: str) -> list[str]:
    """The keys of the ledger's ``kind`` lines (``done`` or ``begin``)."""
    if not ledger.exists():
        return []
    prefix = f"{kind} "
    lines = ledger.read_text().splitlines()
    return [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.slow
def test_server_killed_mid_load_keeps_and_delivers_every_acknowledged_push(
    tmp_path: Path,
) -> None:
    db, ledger, port = tmp_path / "inbox.db", tmp_path / "ledger", free_port()
    items = pushes(2400, devices=60)
    first_run, rest = items[:1600], items[1600:]

    with serving(tmp_path, port, db=db, ledger=ledger, name="first") as server:

        def kill_at_1000(acked: int) -> None:
            if acked == 1000:
                server.process.send_signal(signal.SIGKILL)

        acked, refused = asyncio.run(post_all(server.url, first_run, on_ack=kill_at_1000))
        assert server.process.wait(10) == -signal.SIGKILL
    assert len(acked) >= 1000
    assert refused, "every push was acknowledged: the kill did not land mid-run"

    with serving(tmp_path, port, db=db, ledger=ledger, name="second") as server:
        # The platform retries what got no answer; some of it was kept before the kill.
        acked_again, refused_again = asyncio.run(post_all(server.url, [*refused, *rest]))
        assert refused_again == []
        acked += acked_again
        expected = {p.key for p in acked}
        wait_until(
            lambda: expected <= set(ledger_lines(ledger, "done")),
            timeout=60,
            what="every acknowledged push in the ledger",
        )

    kept = rows(db, "SELECT key, body FROM inbox")
    keys = [key for key, _ in kept]
    assert len(keys) == len(set(keys)), "a retried push was kept twice"
    assert {p.body for p in acked} <= {bytes(body) for _, body in kept}  # type: ignore[arg-type]
    assert expected <= set(ledger_lines(ledger, "done"))
    assert len(acked) == len(items)


def test_server_answers_503_while_the_inbox_is_locked_and_the_retry_is_delivered_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "inbox.db"
    recorder = Recorder()
    app = create_app(Config(receiver=recorder, store=f"sqlite:///{db}", busy_timeout=0.2))
    body = EXAMPLES["04-deviceDataChanged"]
    with running(app) as url:
        with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as lock:
            lock.execute("BEGIN IMMEDIATE")  # another writer holds the file
            refused = httpx.post(url + RECEIVE, content=body, headers=JSON, timeout=10)
            lock.execute("ROLLBACK")
        assert rows(db, "SELECT count(*) FROM inbox") == [(0,)]
        retried = httpx.post(url + RECEIVE, content=body, headers=JSON, timeout=10)
        assert retried.status_code == 200
        recorder.wait_for(1)
        wait_until(
            lambda: rows(db, "SELECT state FROM inbox") == [("done",)],
            what="the entry to be done",
        )
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert refused.json() == {
        "error": "the inbox cannot persist the notification now; retry",
        "path": "$",
    }
    assert app.counters["503"] == 1
    assert len(recorder.seen) == 1
    assert recorder.seen[0].raw == body


@pytest.mark.slow
def test_server_sigterm_finishes_slow_handlers_exits_0_and_restart_delivers_the_rest(
    tmp_path: Path,
) -> None:
    db, ledger, port = tmp_path / "inbox.db", tmp_path / "ledger", free_port()
    items = pushes(150, devices=12)
    expected = {p.key for p in items}

    first = serving(tmp_path, port, db=db, ledger=ledger, delay=0.5, name="first", log_level="info")
    with first as server:
        acked, refused = asyncio.run(post_all(server.url, items))
        assert refused == []
        wait_until(
            lambda: len(ledger_lines(ledger, "begin")) > 0, timeout=20, what="a slow delivery"
        )
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(30)
        log = server.output()
    # uvicorn (>= 0.29) shuts down gracefully, then raises the signal again for the parent to see.
    assert code in (0, -signal.SIGTERM), log
    assert "Application shutdown complete." in log
    assert "gave back" in log  # the dispatcher returned what it had not started

    begun, finished = ledger_lines(ledger, "begin"), ledger_lines(ledger, "done")
    assert set(begun) == set(finished), "a delivery under way was cut off"
    assert len(finished) < len(items), "everything was delivered before the stop"
    states = dict(rows(db, "SELECT state, count(*) FROM inbox GROUP BY state"))  # type: ignore[arg-type]
    assert "claimed" not in states, "entries were left claimed by the stopped server"
    assert sum(states.values()) == len(items)

    with serving(tmp_path, port, db=db, ledger=ledger, name="second"):
        wait_until(
            lambda: (
                rows(db, "SELECT state, count(*) FROM inbox GROUP BY state")
                == [("done", len(items))]
            ),
            timeout=60,
            what="every entry to be done after the restart",
        )
    assert set(ledger_lines(ledger, "done")) == expected
    assert {p.key for p in acked} == expected
