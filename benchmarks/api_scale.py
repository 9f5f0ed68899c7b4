"""The query API on a big store: p50 and p99 of each list and detail endpoint.

    python -m benchmarks.api_scale                       # 1M entries, 100k devices, SQLite
    python -m benchmarks.api_scale --store postgres      # the same on PostgreSQL
    python -m benchmarks.api_scale --entries 100000 --devices 10000 --keep /tmp/api.db

The store is filled quickly and realistically: the bench mix's bodies (`bodies.py`), each device
token drawn from ``--devices`` devices, received over the last ``--hours`` hours, inserted in
transactions of 20,000 rows (each with its real idempotency key and dedupe slot) with the
trackers applied to each entry through the projections ``iotpush serve`` wires (so every tracker
table holds what that traffic makes); then one device service in ten gets desired properties
registered and not yet confirmed, so that the unsynced list has pages. Then each endpoint is
asked ``--requests`` times, one at a time, through the query API's ASGI app in this process (no
HTTP stack: the figure is the query and its JSON), with a random device, command, operation or
page each time. A filled SQLite file can be kept (``--keep``) and reused. `bigstore.py` fills
its big store the same way. Beside each endpoint's wall-clock p50 and p99, the median CPU time of
this process per request (its worker threads included): on a shared machine the wall-clock tail
follows the load, the CPU time much less. The PostgreSQL server's own CPU is not in it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bodies, services
from iotpush import trackers
from iotpush.api import QueryAPI
from iotpush.idempotency import key_and_slot, slot_order
from iotpush.inbox import Inbox, _migrations
from iotpush.inbox._sqlite_sql import ordered_digest
from iotpush.models import Notification, decode
from iotpush.projections import Projections
from iotpush.server import PROJECTIONS, open_inbox
from iotpush.trackers._common import key_cursor
from iotpush.tracking import Tracking

BATCH = 20_000
INSERT = (
    "INSERT INTO inbox (id, received_at, type, device, key, dedupe, path, body, headers, state,"
    " attempts, due_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '{}', 'done', 1, ?, ?)"
)
RELEASE = "UPDATE inbox SET dedupe = NULL WHERE dedupe = ?"

device_id = bodies.device_id


def _route(path: str) -> str:
    return "command" if path == bodies.COMMAND_PATH else "notify"


def entries(
    count: int, devices: int, start: float, span: float
) -> Iterator[tuple[tuple[Any, ...], Notification, bytes | None]]:
    """Inbox rows of ``count`` notifications of the bench mix (requests 0 to ``count - 1``)
    over ``devices`` devices, received from ``start`` over ``span`` seconds, in id order; each
    with its notification, and its slot's digest when that slot is a state shared with earlier
    entries (which then give it up), else None.

    Each row holds the entry's real idempotency key and slot digest, as ``append`` writes them.
    """
    mix = bodies.build_mix()
    rng = random.Random(18)
    for n in range(count):
        template = mix[n % len(mix)]
        device = device_id(rng.randrange(devices))
        parts = template.parts
        body = "".join(
            p if isinstance(p, str) else device if p == 2 else bodies.token_value(p, n)
            for p in parts
        ).encode()
        notification = decode(body, _route(template.path))  # type: ignore[arg-type]
        key, slot = key_and_slot(notification)
        dedupe = ordered_digest(slot, slot_order(notification) if slot == key else None)
        at = start + span * n / count
        row = (n + 1, at, template.type, device, key, dedupe, template.path, body, at, at)
        yield row, notification, None if slot == key else dedupe


def fill_sqlite(path: Path, count: int, devices: int, start: float, span: float) -> None:
    """Make the SQLite store at ``path`` (migrated) and fill it."""
    _migrations.upgrade(f"sqlite:///{path}")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -400000")
    _fill(conn, count, devices, start, span)
    expect_shadows(conn, start + span)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def copy_to_postgres(path: Path, url: str) -> None:
    """Migrate the PostgreSQL store at ``url`` and copy every table of the SQLite store at
    ``path`` into it (``COPY``: applying the trackers one statement at a time would take long)."""
    from iotpush.inbox._postgres_db import parse_url

    _migrations.upgrade(url)
    source = sqlite3.connect(path)
    tables = [
        name
        for (name,) in source.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if name not in ("sqlite_sequence", "iotpush_schema_version")
    ]
    with parse_url(url).connect() as conn:
        for table in tables:
            columns = [row[1] for row in source.execute(f"PRAGMA table_info({table})")]
            names = ", ".join(columns)
            with conn.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in source.execute(f"SELECT {names} FROM {table}"):
                    copy.write_row(row)
            print(f"copied {table}", file=sys.stderr)
        conn.execute("SELECT setval(pg_get_serial_sequence('inbox', 'id'), max(id)) FROM inbox")
        conn.execute("ANALYZE")
    source.close()


def _fill(db: sqlite3.Connection, count: int, devices: int, start: float, span: float) -> None:
    projections = Projections(PROJECTIONS)
    rows = entries(count, devices, start, span)
    began, done = time.perf_counter(), 0
    while batch := list(itertools.islice(rows, BATCH)):
        db.execute("BEGIN")
        # A state slot is held by its latest entry only: earlier holders give it up first.
        shared = {state for _, _, state in batch if state is not None}
        db.executemany(RELEASE, [(state,) for state in shared])
        last = {state: row[0] for row, _, state in batch if state is not None}
        db.executemany(
            INSERT,
            [
                row if state is None or last[state] == row[0] else (*row[:5], None, *row[6:])
                for row, _, state in batch
            ],
        )
        for (id, at, type_, *_), notification, _ in batch:
            if projections.wants(type_):
                projections.apply(db, id, at, notification)
        db.execute("COMMIT")
        done += len(batch)
        rate = done / (time.perf_counter() - began)
        print(f"\rfilled {done:,} of {count:,} ({rate:,.0f}/s)", end="", file=sys.stderr)
    print(file=sys.stderr)


def expect_shadows(db: sqlite3.Connection, now: float, every: int = 10) -> None:
    """Register desired properties for one device service in ``every``, unconfirmed."""
    keys = db.execute("SELECT device_id, service_id FROM shadows ORDER BY 1, 2").fetchall()
    db.execute("BEGIN")
    for device, service in keys[::every]:
        trackers.expect_shadow(db, device, service, {"reportInterval": 300}, now)
    db.execute("COMMIT")


def endpoints(sample: dict[str, list[str]], last_id: int) -> dict[str, Any]:
    """Each endpoint's name and a function giving one request's path and query."""
    pick = random.Random(7).choice
    return {
        "notifications": lambda: ("/api/notifications", ""),
        "notifications?after": lambda: ("/api/notifications", f"after={random.randrange(last_id)}"),
        "notifications?device": lambda: ("/api/notifications", f"device={pick(sample['devices'])}"),
        "notifications?type": lambda: ("/api/notifications", "type=deviceDataChanged"),
        "notifications?type(rare)": lambda: ("/api/notifications", "type=deviceDeleted"),
        "notifications?since=1h": lambda: ("/api/notifications", "since=1h"),
        "notifications?since=23h": lambda: ("/api/notifications", "since=23h"),
        "notifications?device&since": lambda: (
            "/api/notifications", f"device={pick(sample['devices'])}&since=6h"),
        "commands": lambda: ("/api/commands", ""),
        "commands?device": lambda: ("/api/commands", f"device={pick(sample['devices'])}"),
        "commands?state": lambda: ("/api/commands", "state=DELIVERED"),
        "commands?overdue": lambda: ("/api/commands", "overdue=true"),
        "commands/{id}": lambda: (f"/api/commands/{pick(sample['commands'])}", ""),
        "devices": lambda: ("/api/devices", ""),
        "devices?status": lambda: ("/api/devices", "status=ONLINE"),
        "devices?after": lambda: ("/api/devices", f"after={pick(sample['devices'])}"),
        "devices/{id}": lambda: (f"/api/devices/{pick(sample['devices'])}", ""),
        "upgrades": lambda: ("/api/upgrades", ""),
        "upgrades?device": lambda: ("/api/upgrades", f"device={pick(sample['devices'])}"),
        "upgrades/{id}": lambda: (f"/api/upgrades/{pick(sample['operations'])}", ""),
        "shadow/unsynced": lambda: ("/api/shadow/unsynced", ""),
        "shadow/unsynced?after": lambda: (
            "/api/shadow/unsynced", f"after={pick(sample['unsynced'])}"),
    }  # fmt: skip


async def ask(api: QueryAPI, path: str, query: str) -> int:
    """One GET through the API's ASGI app; its status."""
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
             "query_string": query.encode(), "headers": []}  # fmt: skip
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await api(scope, receive, send)
    return status


async def _sample(inbox: Inbox) -> dict[str, list[str]]:
    queries = {
        "devices": "SELECT device_id FROM devices ORDER BY random() LIMIT 1000",
        "commands": "SELECT command_id FROM commands ORDER BY random() LIMIT 1000",
        "operations": "SELECT DISTINCT operation_id FROM upgrades LIMIT 1000",
        "unsynced": "SELECT device_id, service_id FROM shadow_expectations"
        " ORDER BY random() LIMIT 1000",
    }
    found = {
        name: await inbox.read(lambda db, q=q: db.execute(q, ()).fetchall())
        for name, q in queries.items()
    }
    sample = {name: [row[0] for row in rows] for name, rows in found.items()}
    sample["unsynced"] = [key_cursor(row) for row in found["unsynced"]] or ["00,00"]
    return sample


async def measure(url: str, requests: int, now: float) -> dict[str, tuple[float, float]]:
    """p50 and p99 in milliseconds of each endpoint, asked ``requests`` times."""
    async with open_inbox(url) as inbox:
        api = QueryAPI(Tracking(inbox, clock=lambda: now))
        sample = await _sample(inbox)
        (last,) = await inbox.read(
            lambda db: db.execute("SELECT max(id) FROM inbox", ()).fetchone()
        )
        figures: dict[str, tuple[float, float]] = {}
        for name, make in endpoints(sample, int(last)).items():
            times: list[float] = []
            cpu: list[float] = []
            for i in range(requests + 5):  # the first five warm the caches up
                path, query = make()
                began, began_cpu = time.perf_counter(), time.process_time()
                status = await ask(api, path, query)
                if i >= 5:
                    times.append((time.perf_counter() - began) * 1000)
                    cpu.append((time.process_time() - began_cpu) * 1000)
                if status != 200:
                    raise SystemExit(f"{name}: {path}?{query} answered {status}")
            cuts = statistics.quantiles(times, n=100)
            figures[name] = (statistics.median(times), cuts[98])
            print(
                f"{name:30} p50 {figures[name][0]:8.2f} ms   p99 {figures[name][1]:8.2f} ms"
                f"   cpu p50 {statistics.median(cpu):6.2f} ms"
            )
        return figures


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--entries", type=int, default=1_000_000, help="[%(default)s]")
    p.add_argument("--devices", type=int, default=100_000, help="[%(default)s]")
    p.add_argument("--hours", type=float, default=24.0, help="the entries' span [%(default)s]")
    p.add_argument("--requests", type=int, default=200, help="per endpoint [%(default)s]")
    p.add_argument(
        "--postgres",
        default=os.environ.get("IOTPUSH_BENCH_POSTGRES", "postgresql://127.0.0.1:5432/test"),
        help="PostgreSQL server, a schema of its own is made and dropped [%(default)s]",
    )
    p.add_argument("--keep", type=Path, help="SQLite: fill this file, or reuse it if it exists")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Fill a store, then measure each endpoint."""
    args = parse_args(argv)
    now = time.time()
    start, span = now - args.hours * 3600, args.hours * 3600
    print(f"{args.store}: {args.entries:,} entries, {args.devices:,} devices", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "api.db"
        if args.keep is not None and path.exists():
            (first,) = (
                sqlite3.connect(path).execute("SELECT min(received_at) FROM inbox").fetchone()
            )
            now = first + span
        else:
            fill_sqlite(path, args.entries, args.devices, start, span)
        if args.store == "sqlite":
            asyncio.run(measure(f"sqlite:///{path}", args.requests, now))
            return 0
        store = services.Store.create(args.postgres, Path(tmp))
        try:
            copy_to_postgres(path, store.url)
            asyncio.run(measure(store.url, args.requests, now))
        finally:
            store.drop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
