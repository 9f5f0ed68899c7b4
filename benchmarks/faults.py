"""The fault campaign: SIGKILL loops with pushes flowing, on SQLite and on PostgreSQL.

A server process (``iotpush serve benchmarks.faults:receiver``) receives distinct pushes at a
steady rate from a client on loopback while it is killed with SIGKILL every few seconds and
started again; then the pushes stop, one last server delivers what is left, and the campaign
counts, for each store:

- acknowledged: pushes answered 200; refused: answered otherwise (503 while the store was busy
  or down); the rest got no answer (the server was down or starting);
- stored: acknowledged pushes the inbox keeps;
- delivered: acknowledged pushes whose handler returned at least once;
- delivered twice: pushes whose handler returned more than once (at least once allows it: a
  handler running at a kill runs again);
- lost: acknowledged pushes not stored, or stored and never delivered (must be 0);
- dead: entries dead-lettered (must be 0: no handler fails here).

The handler appends ``done KEY`` to a ledger with one ``os.write`` (``O_APPEND``): a kill
cannot lose a written line. PostgreSQL runs use a fresh schema of the server named by
``--postgres`` (dropped after). Run it with ``python benchmarks/faults.py``; it takes about
``kills x interval`` seconds per store, plus start-ups.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from iotpush import Notification, Receiver, current_entry, decode, testing
from iotpush.idempotency import key_and_slot

ROOT = Path(__file__).resolve().parents[1]
JSON = {"content-type": "application/json;charset=UTF-8"}

receiver = Receiver()
_ledger: int | None = None


@receiver.on()
async def record(notification: Notification) -> None:
    """The campaign's handler: a little work, then one ledger line."""
    global _ledger
    if _ledger is None:
        _ledger = os.open(os.environ["LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    await asyncio.sleep(0.002)
    os.write(_ledger, f"done {current_entry().key}\n".encode())


@dataclass
class Figures:
    """What one campaign counted."""

    store: str
    kills: int
    sent: int
    acknowledged: int
    refused: int
    stored: int
    delivered: int
    delivered_twice: int
    lost: int
    dead: int
    seconds: float


def _push(i: int, devices: int) -> tuple[str, bytes, str]:
    device = f"meter-{i % devices:04}"
    notification = testing.build(
        "deviceDataChanged", device_id=device, gateway_id=device, service={"data": {"n": i}}
    )
    body = testing.encode(notification)
    key, _ = key_and_slot(decode(body, "notify"))
    return testing.path_for(notification), body, key


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(store: str, port: int, ledger: Path, log: Path) -> subprocess.Popen[bytes]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "LEDGER": str(ledger), "PYTHONPATH": path}
    command = [
        sys.executable, "-m", "iotpush.cli", "serve", "benchmarks.faults:receiver",
        "--port", str(port), "--store", store, "--log-level", "warning", "--lease", "5",
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit(f"the server did not start; see {log}")


async def _pushing(
    port: int,
    rate: float,
    devices: int,
    stop: asyncio.Event,
    acked: set[str],
    sent: list[int],
    refused: list[int],
) -> None:
    """Post distinct pushes at ``rate`` a second until ``stop``; a refused push is not resent."""
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        pending: set[asyncio.Task[None]] = set()

        async def one(path: str, body: bytes, key: str) -> None:
            with contextlib.suppress(httpx.TransportError):
                answer = await client.post(f"http://127.0.0.1:{port}{path}", content=body,
                                           headers=JSON)  # fmt: skip
                if answer.status_code == 200:
                    acked.add(key)
                else:
                    refused.append(answer.status_code)

        started, i = time.monotonic(), 0
        while not stop.is_set():
            due = started + i / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            task = asyncio.create_task(one(*_push(i, devices)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
        sent.append(i)
        await asyncio.gather(*pending)


def _rows(store: str) -> list[tuple[str, str]]:
    """(key, state) of every entry of ``store``."""
    sql = "SELECT key, state FROM inbox"
    if store.startswith("sqlite:"):
        with contextlib.closing(sqlite3.connect(store.removeprefix("sqlite:///"))) as conn:
            return [tuple(row) for row in conn.execute(sql)]  # type: ignore[misc]
    import psycopg

    from iotpush.inbox._postgres_db import parse_url

    target = parse_url(store)
    with psycopg.connect(target.conninfo, options=f"-c search_path={target.schema}") as conn:
        return [tuple(row) for row in conn.execute(sql)]  # type: ignore[misc]


def campaign(store: str, *, kills: int, interval: float, rate: float, devices: int) -> Figures:
    """Kill a server ``kills`` times, every ``interval`` s, while pushes flow; count."""
    work = Path(tempfile.mkdtemp(prefix="iotpush-faults-"))
    ledger, log = work / "ledger", work / "server.log"
    port = _free_port()
    acked: set[str] = set()
    sent: list[int] = []
    refused: list[int] = []
    began = time.monotonic()

    async def run() -> None:
        stop = asyncio.Event()
        pusher = asyncio.create_task(_pushing(port, rate, devices, stop, acked, sent, refused))
        for _ in range(kills):
            process = await asyncio.to_thread(_start, store, port, ledger, log)
            await asyncio.sleep(interval)
            process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.wait)
        stop.set()
        await pusher

    asyncio.run(run())
    process = _start(store, port, ledger, log)  # the last one delivers what is left
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not any(state in ("pending", "claimed") for _, state in _rows(store)):
                break
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    rows = _rows(store)
    stored = {key for key, _ in rows}
    done = collections.Counter(
        line.split()[1] for line in ledger.read_text().splitlines() if line.startswith("done ")
    )
    return Figures(
        store=store.split(":", 1)[0],
        kills=kills,
        sent=sent[0],
        acknowledged=len(acked),
        refused=len(refused),
        stored=len(acked & stored),
        delivered=len(acked & set(done)),
        delivered_twice=sum(count > 1 for count in done.values()),
        lost=len(acked - stored) + len(acked - set(done)),
        dead=sum(state == "dead" for _, state in rows),
        seconds=round(time.monotonic() - began, 1),
    )


@contextlib.contextmanager
def _postgres_schema(server: str) -> collections.abc.Iterator[str]:
    import psycopg

    from iotpush.inbox import _migrations

    schema = f"iotpush_faults_{uuid.uuid4().hex[:8]}"
    url = f"{server}{'&' if '?' in server else '?'}schema={schema}"
    _migrations.upgrade(url)
    try:
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--stores", default="sqlite,postgres", help="sqlite, postgres or both")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs per store")
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between kills")
    parser.add_argument("--rate", type=float, default=300.0, help="pushes a second")
    parser.add_argument("--devices", type=int, default=50, help="devices the pushes come from")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("IOTPUSH_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test"),
        help="the PostgreSQL server (a schema of its own is made and dropped)",
    )
    args = parser.parse_args()
    options = {"kills": args.kills, "interval": args.interval, "rate": args.rate,
               "devices": args.devices}  # fmt: skip
    results = []
    for name in args.stores.split(","):
        if name == "sqlite":
            db = Path(tempfile.mkdtemp(prefix="iotpush-faults-db-")) / "inbox.db"
            results.append(campaign(f"sqlite:///{db}", **options))
        else:
            with _postgres_schema(args.postgres) as url:
                results.append(campaign(url, **options))
        print(json.dumps(results[-1].__dict__), flush=True)
    if any(r.lost or r.dead or r.stored != r.acknowledged for r in results):
        raise SystemExit("the campaign found acknowledged pushes lost")


if __name__ == "__main__":
    main()
