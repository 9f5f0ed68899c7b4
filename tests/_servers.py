"""Real ``iotpush serve`` processes for the crash tests, what they are sent, and what they record.

`serve` starts a server as a subprocess (so a test can kill it), `pushes` makes distinct
notifications, `post_all` posts them and sorts them by answer, and `ledger_lines` reads the
ledger `tests.ledger_receiver` writes. `rows` reads a SQLite store from outside the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from iotpush import Notification, decode, testing
from iotpush.idempotency import key_and_slot

ROOT = Path(__file__).resolve().parents[1]
JSON = {"content-type": "application/json;charset=UTF-8"}
LEDGER_RECEIVER = "tests.ledger_receiver:receiver"


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
    """A server process started by `serve`."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextlib.contextmanager
def serve(
    tmp_path: Path,
    port: int,
    receiver: str,
    *options: str,
    store: str,
    env: Mapping[str, str],
    name: str,
    log_level: str = "warning",
) -> Iterator[Server]:
    """``iotpush serve RECEIVER --store STORE OPTIONS`` as a subprocess, ready to answer, with
    ``env`` added to its environment and its output in ``NAME.log``; killed on the way out if
    still up."""
    log = tmp_path / f"{name}.log"
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        **env,
    }
    command = [
        sys.executable, "-m", "iotpush.cli", "serve", receiver, "--port", str(port),
        "--store", store, *options, "--log-level", log_level,
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT
        )
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
            # 403: up, with an allowlist that leaves this test's address out (on every path).
            if httpx.get(server.url + "/health", timeout=1).status_code in (200, 403):
                return
        time.sleep(0.05)
    pytest.fail(f"the server did not answer /health within {timeout} s:\n{server.output()}")


async def acknowledged(client: httpx.AsyncClient, url: str, item: Push) -> bool:
    """Post ``item`` to ``url``; whether the answer was a 200 (no answer is no 200)."""
    try:
        answer = await client.post(url, content=item.body, headers=JSON)
    except httpx.TransportError:
        return False
    return answer.status_code == 200


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
                if not await acknowledged(client, item.path, item):
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


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """The rows ``sql`` reads from the SQLite file ``db``."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        return conn.execute(sql).fetchall()


def serve_ledger(
    tmp_path: Path,
    port: int,
    *options: str,
    store: str,
    ledger: Path,
    delay: float = 0.0,
    name: str = "server",
    log_level: str = "warning",
) -> contextlib.AbstractContextManager[Server]:
    """`serve` with `tests.ledger_receiver` writing to ``ledger``, ``delay`` seconds a push."""
    env = {"LEDGER": str(ledger), "LEDGER_DELAY": str(delay)}
    return serve(
        tmp_path, port, LEDGER_RECEIVER, *options, store=store, env=env, name=name,
        log_level=log_level,
    )  # fmt: skip
