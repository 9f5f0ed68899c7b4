"""What each step of the receive path costs: CPU time per notification, in process, step by step.

    python -m benchmarks.ladder                 # 40,000 notifications per step
    python -m benchmarks.ladder -n 100000 --connections 64

The HTTP benchmark (`run.py`) measures the whole server; this one takes the server stack out and
adds iotpush's steps one at a time, each through its public API, on the bench mix (`bodies.py`):

1. ``sqlite insert``: the inbox's own slot lookup and INSERT through ``sqlite3``, 24 rows per
   transaction with ``synchronous=FULL`` (what a group commit of that size pays per row at least);
2. ``decode + key``: `iotpush.models.decode` and `iotpush.idempotency.key_and_slot`;
3. ``+ inbox append``: `SQLiteInbox.append` from concurrent tasks (group commit), no projections;
4. ``+ trackers``: the same, the inbox given the four trackers (`iotpush.server.PROJECTIONS`) as
   ``iotpush serve`` gives them, so they run in the append transaction;
5. ``+ app``: the ASGI `App` in front (routing, headers, body, answer), no dispatcher;
6. ``+ dispatcher``: `create_app` as ``iotpush serve`` builds it, delivering to a no-op handler.

Each figure is user + system CPU time of this process (all threads) divided by the notifications,
after a warm-up; the machine's noise moves them by a few percent. Add the server stack's cost per
request (the baseline's CPU per request in the HTTP bench) to compare with `run.py`'s rates.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import resource
import sqlite3
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop

from benchmarks import bodies
from iotpush import Receiver
from iotpush.app import App
from iotpush.idempotency import key_and_slot
from iotpush.inbox import Incoming
from iotpush.inbox._sqlite_sql import INSERT, SCHEMA, SLOT
from iotpush.inbox.sqlite import SQLiteInbox
from iotpush.models import decode
from iotpush.server import PROJECTIONS, Config, create_app

HEADERS = {"content-type": "application/json", "host": "127.0.0.1"}
Request = tuple[str, bytes]


def cpu() -> float:
    """User plus system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def requests(count: int, start: int = 0) -> list[Request]:
    """``count`` (path, body) pairs of the bench mix, numbered from ``start``."""
    mix = bodies.build_mix()
    return [
        (mix[n % len(mix)].path, bodies.render(mix[n % len(mix)], n))
        for n in range(start, start + count)
    ]


def route_of(path: str) -> Any:
    return "command" if path == bodies.COMMAND_PATH else "notify"


def incoming(path: str, body: bytes) -> Incoming:
    notification = decode(body, route_of(path))
    return Incoming.from_notification(
        notification, body=body, path=path, headers=HEADERS, received_at=0.0
    )


def sqlite_insert(workdir: Path, reqs: list[Request], batch: int = 24) -> float:
    """CPU seconds to insert ``reqs`` as inbox rows, ``batch`` per transaction."""
    conn = sqlite3.connect(workdir / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.executescript(SCHEMA)
    rows = [
        (float(n), "deviceDataChanged", f"dev-{n % bodies.DEVICES}", f"key-{n}",
         hashlib.blake2b(body, digest_size=16).digest(), path, body, "{}", float(n), "claimed",
         "bench", 1e12, 1)
        for n, (path, body) in enumerate(reqs)
    ]  # fmt: skip
    start = cpu()
    for i in range(0, len(rows), batch):
        conn.execute("BEGIN IMMEDIATE")
        for row in rows[i : i + batch]:
            conn.execute(SLOT, (row[4],)).fetchone()  # as the inbox: the slot, then the row
            conn.execute(INSERT, row).fetchone()
        conn.execute("COMMIT")
    spent = cpu() - start
    conn.close()
    return spent


def decode_and_key(reqs: list[Request]) -> float:
    """CPU seconds to decode and key ``reqs``."""
    start = cpu()
    for path, body in reqs:
        key_and_slot(decode(body, route_of(path)))
    return cpu() - start


async def concurrently(
    reqs: list[Request], connections: int, one: Callable[[str, bytes], Awaitable[None]]
) -> None:
    """Run ``one(path, body)`` for every request from ``connections`` tasks."""

    async def connection(first: int) -> None:
        for path, body in reqs[first::connections]:
            await one(path, body)

    await asyncio.gather(*(connection(k) for k in range(connections)))


async def inbox_append(workdir: Path, warm: list[Request], reqs: list[Request], *, tracked: bool,
                       connections: int) -> float:  # fmt: skip
    """CPU seconds to append ``reqs`` from concurrent tasks (after appending ``warm``)."""
    inbox = SQLiteInbox(
        workdir / f"append-{tracked}.db", projections=PROJECTIONS if tracked else ()
    )
    await inbox.open()

    async def one(path: str, body: bytes) -> None:
        await inbox.append(incoming(path, body))

    try:
        await concurrently(warm, connections, one)
        start = cpu()
        await concurrently(reqs, connections, one)
        return cpu() - start
    finally:
        await inbox.close()


class Client:
    """Calls an ASGI app as a server would, counting the answers' statuses."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.statuses: dict[int, int] = {}

    async def post(self, path: str, body: bytes) -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                self.statuses[status] = self.statuses.get(status, 0) + 1

        headers = [(b"content-type", b"application/json"), (b"host", b"127.0.0.1"),
                   (b"content-length", str(len(body)).encode())]  # fmt: skip
        scope = {"type": "http", "method": "POST", "path": path, "headers": headers,
                 "client": ("127.0.0.1", 40000)}  # fmt: skip
        await self.app(scope, receive, send)

    async def lifespan(self, event: str) -> None:
        sent: list[dict[str, Any]] = []
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await queue.put({"type": f"lifespan.{event}"})

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        if event == "startup":
            self._lifespan_queue = queue
            self._lifespan = asyncio.create_task(self.app({"type": "lifespan"}, queue.get, send))
            while not sent:
                await asyncio.sleep(0.01)
            if sent[0]["type"] != "lifespan.startup.complete":
                raise RuntimeError(f"the app did not start: {sent[0]}")
        else:
            await self._lifespan_queue.put({"type": "lifespan.shutdown"})
            await self._lifespan


async def through_app(workdir: Path, warm: list[Request], reqs: list[Request], *,
                      dispatcher: bool, connections: int) -> float:  # fmt: skip
    """CPU seconds to post ``reqs`` through the app (and deliver them, with ``dispatcher``)."""
    handled = 0
    receiver = Receiver()

    @receiver.on()
    async def count(notification: object) -> None:
        nonlocal handled
        handled += 1

    if dispatcher:
        store = f"sqlite:///{workdir / 'app-dispatch.db'}"
        app = create_app(Config(receiver=receiver, store=store, log_level="warning"))
    else:
        inbox = SQLiteInbox(workdir / "app.db", exclusive=True, projections=PROJECTIONS)
        app = App(inbox)
    client = Client(app)
    await client.lifespan("startup")
    try:
        await concurrently(warm, connections, client.post)
        while dispatcher and handled < len(warm):
            await asyncio.sleep(0.001)
        start = cpu()
        await concurrently(reqs, connections, client.post)
        while dispatcher and handled < len(warm) + len(reqs):
            await asyncio.sleep(0.001)
        spent = cpu() - start
    finally:
        await client.lifespan("shutdown")
    if client.statuses.get(200) != len(warm) + len(reqs):
        raise RuntimeError(f"not every request was accepted: {client.statuses}")
    return spent


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=40_000, help="notifications per step")
    p.add_argument("--connections", type=int, default=64, help="concurrent senders")
    args = p.parse_args(argv)
    n, connections = args.n, args.connections
    warm, reqs = requests(n // 10, start=10 * n), requests(n)
    steps: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="iotpush-ladder-") as tmp:
        workdir = Path(tmp)
        steps.append(("sqlite insert (24 per commit)", sqlite_insert(workdir, reqs)))
        steps.append(("decode + key", decode_and_key(reqs)))
        run = uvloop.run
        steps.append(("+ inbox append", run(inbox_append(workdir, warm, reqs, tracked=False,
                                                         connections=connections))))  # fmt: skip
        steps.append(("+ trackers", run(inbox_append(workdir, warm, reqs, tracked=True,
                                                     connections=connections))))  # fmt: skip
        steps.append(("+ app (ASGI, no dispatcher)", run(through_app(
            workdir, warm, reqs, dispatcher=False, connections=connections))))  # fmt: skip
        steps.append(("+ dispatcher (as iotpush serve)", run(through_app(
            workdir, warm, reqs, dispatcher=True, connections=connections))))  # fmt: skip
    print(f"CPU per notification, {n:,} notifications per step, {connections} concurrent senders")
    print(f"{'step':34} {'µs':>7}")
    for name, seconds in steps:
        print(f"{name:34} {seconds / n * 1e6:7.1f}")


if __name__ == "__main__":
    main()
