"""What an entry costs on PostgreSQL: iotpush's CPU and its database backends' CPU, in process.

    python -m benchmarks.pgcost                                  # 20,000 notifications
    python -m benchmarks.pgcost --postgres postgresql://127.0.0.1:55791/test -n 40000
    python -m benchmarks.pgcost --before ../iotpush-base --pairs 3   # old vs new, alternated

`create_app` as ``iotpush serve`` builds it on a fresh schema of ``--postgres`` (migrated, dropped
after), the bench mix posted through the ASGI app by 64 concurrent senders (no HTTP stack) and
delivered to a no-op handler. After a warm-up, per notification handled:

- ``iotpush µs``: user + system CPU of this process (all threads);
- ``postgres µs``: user + system CPU of the server processes serving this schema's connections
  (their ``application_name`` names it), read from ``/proc`` (the server must run on this host);
- ``wakeups``: their voluntary context switches: each time a backend waited for the client (a
  round trip) or for the disk (a WAL flush);
- ``commits``: transactions committed by those connections (``pg_stat_database`` counts the
  whole database: only meaningful on a server nobody else uses);
- ``statements``: calls counted by ``pg_stat_statements`` when the server has it loaded (a
  private server: ``shared_preload_libraries``), with the top statements by calls per
  notification under ``--statements``.

With ``--before DIR`` (a checkout of other code with its own ``make install``), each pair runs
the other code first, then this one, in separate processes: ratios are new / old per pair.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = os.environ.get("IOTPUSH_BENCH_POSTGRES", "postgresql://127.0.0.1:5432/test")
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) and voluntary context switches of process ``pid`` so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone: its figures went with it
        return 0.0, 0
    switches = next(
        int(line.split()[1]) for line in status.splitlines() if line.startswith("voluntary_ctxt")
    )
    return (int(fields[11]) + int(fields[12])) / TICK, switches


def threads() -> dict[str, float]:
    """CPU seconds of this process's threads so far, by name (numbers dropped: pools summed)."""
    import threading

    names = {t.native_id: t.name.rstrip("0123456789_-") for t in threading.enumerate()}
    found: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            name = names.get(int(task.name), "other")
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return found


class Server:
    """Readings of the PostgreSQL server about one schema's connections."""

    def __init__(self, server: str, schema: str) -> None:
        import psycopg

        self.schema = schema
        self.conn = psycopg.connect(server, autocommit=True)
        self.statements = bool(
            self.conn.execute(
                "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"
            ).fetchone()[0]  # type: ignore[index]
        )
        self.seen: dict[int, tuple[float, int]] = {}

    def pids(self) -> list[int]:
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s",
            (f"iotpush % {self.schema}",),
        ).fetchall()
        return [pid for (pid,) in rows]

    def reading(self) -> dict[str, Any]:
        cpu, switches = 0.0, 0
        for pid in self.pids():
            self.seen.setdefault(pid, (0.0, 0))
        for pid in self.seen:
            c, s = proc_cpu(pid)
            if c or s:
                self.seen[pid] = (c, s)
            c, s = self.seen[pid]
            cpu += c
            switches += s
        (commits,) = self.conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()  # type: ignore[misc]
        return {"cpu": cpu, "switches": switches, "commits": commits}

    def reset_statements(self) -> None:
        if self.statements:
            self.conn.execute("SELECT pg_stat_statements_reset()")

    def top_statements(self) -> list[tuple[int, float, str]]:
        """Calls, milliseconds executing (planning included) and text of each statement."""
        if not self.statements:
            return []
        rows = self.conn.execute(
            "SELECT sum(calls), sum(total_exec_time + total_plan_time), min(query)"
            " FROM pg_stat_statements WHERE dbid ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND query NOT LIKE '%%pg_stat%%' GROUP BY md5(query)"
            " ORDER BY 2 DESC"
        ).fetchall()
        return [(int(calls), float(ms), " ".join(query.split())) for calls, ms, query in rows]


async def measure(server: str, n: int, connections: int, warm: int) -> dict[str, Any]:
    """One run on a fresh schema: the figures per notification."""
    import psycopg

    from benchmarks.ladder import Client, concurrently, cpu, requests
    from iotpush import Receiver
    from iotpush.inbox import _migrations
    from iotpush.server import Config, create_app

    schema = f"iotpush_cost_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')  # type: ignore[arg-type]
    url = f"{server}{'&' if '?' in server else '?'}schema={schema}"
    try:
        _migrations.upgrade(url)
        handled = 0
        receiver = Receiver()

        @receiver.on()
        async def count(notification: object) -> None:
            nonlocal handled
            handled += 1

        async def until(target: int) -> None:
            while handled < target:
                await asyncio.sleep(0.002)

        app = create_app(Config(receiver=receiver, store=url, log_level="warning"))
        client = Client(app)
        await client.lifespan("startup")
        db = Server(server, schema)
        try:
            await concurrently(requests(warm, start=10 * n), connections, client.post)
            await until(warm)
            db.reset_statements()
            before, cpu0, wall0 = db.reading(), cpu(), time.perf_counter()
            threads0 = threads()
            await concurrently(requests(n), connections, client.post)
            await until(warm + n)
            wall, spent, after = time.perf_counter() - wall0, cpu() - cpu0, db.reading()
            by_thread = {k: v - threads0.get(k, 0.0) for k, v in threads().items()}
            statements = db.top_statements()
        finally:
            await client.lifespan("shutdown")
            db.conn.close()
        if client.statuses.get(200) != warm + n:
            raise RuntimeError(f"not every request was accepted: {client.statuses}")
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')  # type: ignore[arg-type]
    commits = after["commits"] - before["commits"]
    return figures(n, wall, spent, before, after, commits, statements, by_thread)


async def measure_appends(server: str, n: int, batch: int, warm: int) -> dict[str, Any]:
    """The receive path alone: `PostgresInbox.append` with the trackers (as ``iotpush serve``
    gives them), in batches of exactly ``batch`` concurrent appends (one transaction each), no
    dispatcher: the figures per entry."""
    import psycopg

    from benchmarks.ladder import cpu, incoming, requests
    from iotpush.inbox import _migrations
    from iotpush.inbox.postgres import PostgresInbox
    from iotpush.server import PROJECTIONS

    schema = f"iotpush_cost_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')  # type: ignore[arg-type]
    url = f"{server}{'&' if '?' in server else '?'}schema={schema}"
    try:
        _migrations.upgrade(url)
        inbox = PostgresInbox(url, projections=PROJECTIONS)
        await inbox.open()
        db = Server(server, schema)

        async def append_all(reqs: list[tuple[str, bytes]]) -> None:
            items = [incoming(path, body) for path, body in reqs]
            for k in range(0, len(items), batch):
                await asyncio.gather(*(inbox.append(item) for item in items[k : k + batch]))

        try:
            await append_all(requests(warm, start=10 * n))
            db.reset_statements()
            reqs = requests(n)
            before, cpu0, wall0, commits0 = db.reading(), cpu(), time.perf_counter(), inbox.commits
            threads0 = threads()
            await append_all(reqs)
            wall, spent, after = time.perf_counter() - wall0, cpu() - cpu0, db.reading()
            by_thread = {k: v - threads0.get(k, 0.0) for k, v in threads().items()}
            transactions = inbox.commits - commits0
            statements = db.top_statements()
        finally:
            await inbox.close()
            db.conn.close()
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')  # type: ignore[arg-type]
    return figures(n, wall, spent, before, after, transactions, statements, by_thread)


def figures(
    n: int,
    wall: float,
    spent: float,
    before: dict[str, float],
    after: dict[str, float],
    commits: float,
    statements: list[tuple[int, float, str]],
    by_thread: dict[str, float],
) -> dict[str, Any]:
    """One measurement's figures per entry, from what was read before and after ``n`` of them:
    ``spent`` seconds of iotpush's CPU in ``wall`` seconds, `Server.reading` before and after,
    ``commits`` transactions, the top statements and the CPU seconds of each thread."""
    per = 1e6 / n
    return {
        "n": n,
        "rate": n / wall,
        "iotpush_us": spent * per,
        "postgres_us": (after["cpu"] - before["cpu"]) * per,
        "wakeups": (after["switches"] - before["switches"]) / n,
        "commits": commits / n,
        "statements": sum(calls for calls, _, _ in statements) / n if statements else None,
        "top": [(calls / n, ms * 1e3 / n, query[:150]) for calls, ms, query in statements[:25]],
        "load": os.getloadavg()[0],
        "threads": {k: v * per for k, v in sorted(by_thread.items(), key=lambda kv: -kv[1])},
    }


def show(label: str, r: dict[str, Any]) -> str:
    stmts = "-" if r["statements"] is None else f"{r['statements']:.2f}"
    writer = r["threads"].get("iotpush-postgres-writer", 0.0)
    return (
        f"{label:8} {r['rate']:8,.0f}/s  iotpush {r['iotpush_us']:6.0f} µs (writer"
        f" {writer:4.0f})  postgres"
        f" {r['postgres_us']:6.0f} µs  wakeups {r['wakeups']:5.2f}  commits {r['commits']:5.3f}"
        f"  statements {stmts}  load {r['load']:.1f}"
    )


def run_child(python: str, code_root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in a new process of ``python`` (whose ``iotpush`` is that code's)."""
    cmd = [python, str(Path(__file__).resolve()), "--json", "--postgres", args.postgres]
    cmd += ["-n", str(args.n), "--connections", str(args.connections), "--warm", str(args.warm)]
    cmd += ["--appends", str(args.appends)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=code_root, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{code_root}: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--postgres", default=DEFAULT, help="the server [%(default)s]")
    p.add_argument("-n", type=int, default=20_000, help="notifications measured [%(default)s]")
    p.add_argument("--warm", type=int, default=2_000, help="notifications before [%(default)s]")
    p.add_argument("--connections", type=int, default=64, help="senders [%(default)s]")
    p.add_argument(
        "--appends",
        type=int,
        metavar="BATCH",
        default=0,
        help="instead: the inbox's appends alone, in transactions of BATCH (no dispatcher)",
    )
    p.add_argument("--statements", action="store_true", help="list the top statements")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.add_argument("--before", type=Path, help="a checkout of other code, run alternated")
    p.add_argument("--pairs", type=int, default=3, help="alternated pairs with --before")
    args = p.parse_args(argv)
    if args.before is None:
        import uvloop

        if args.appends:
            result = uvloop.run(measure_appends(args.postgres, args.n, args.appends, args.warm))
        else:
            result = uvloop.run(measure(args.postgres, args.n, args.connections, args.warm))
        if args.json:
            print(json.dumps(result))
            return
        print(show("this", result))
        print(
            "  threads (µs per notification): "
            + ", ".join(f"{k} {v:.0f}" for k, v in result["threads"].items() if v >= 1)
        )
        if args.statements:
            print("  calls and µs executing per notification, by statement:")
            for calls, us, query in result["top"]:
                print(f"  {calls:6.3f} {us:7.1f}  {query}")
        return
    old_python = str(args.before.resolve() / ".venv" / "bin" / "python")
    keys = ("rate", "iotpush_us", "postgres_us", "wakeups", "commits")
    for pair in range(1, args.pairs + 1):
        old = run_child(old_python, args.before.resolve(), args)
        new = run_child(sys.executable, ROOT, args)
        print(f"pair {pair}")
        print(show("  before", old))
        print(show("  after", new))
        ratios = "  ".join(f"{k} {new[k] / old[k]:.3f}" for k in keys if old[k])
        print(f"  after/before: {ratios}")


if __name__ == "__main__":
    main()
