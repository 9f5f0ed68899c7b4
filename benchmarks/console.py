"""Console latency on a big store: p50 and p99 of the overview and of filtered lists.

Builds (once, then reuses) a SQLite store of ``--entries`` notifications spread over 30 days,
as the inbox keeps them (1000 devices, the usual mix of types, one dead letter in 1000), starts
``iotpush serve`` on it, and asks each page in turn ``--rounds`` times over one keep-alive
connection, so that every page sees the same load from the rest of the machine. Prints one line
per page and writes ``benchmarks/results/console.json``.

    python -m benchmarks.console --entries 1000000 --rounds 300
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from benchmarks.report import percentile
from benchmarks.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "console.json"
DEVICES = 1000
DAYS = 30
TYPES = (
    ["deviceDataChanged"] * 80 + ["nbCommandStatusChanged"] * 10 + ["deviceInfoChanged"] * 5
    + ["deviceEvent"] * 3 + ["commandRsp"] * 2
)  # fmt: skip
PAGES = {
    "overview (figures)": "/ui/live",
    "overview (page)": "/ui/",
    "list: device": "/ui/notifications?device=meter-0042",
    "list: dead": "/ui/notifications?state=dead",
    "list: device + dead": "/ui/notifications?device=meter-0042&state=dead",
    "list: rare device": "/ui/notifications?device=meter-new",
    "list: unfiltered, deep page": "/ui/notifications?after=900000",
    "list: type": "/ui/notifications?type=deviceInfoChanged",
}


def _rows(count: int, now: float) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(16)
    start = now - DAYS * 86400
    step = DAYS * 86400 / count
    body = b'{"notifyType":"deviceDataChanged","deviceId":"meter-0000","service":{"data":{}}}'
    for i in range(count):
        at = start + i * step
        kind = TYPES[i % len(TYPES)]
        device = "meter-new" if i >= count - 3 else f"meter-{rng.randrange(DEVICES):04}"
        state, error, finished = "done", None, at + 0.01
        if rng.random() < 0.001:
            state, error = "dead", "Traceback (most recent call last):\nRuntimeError: refused"
        yield (at, kind, device, f"{kind}:{device}:{i}", "/v1.0.0/messageReceiver", body, "{}",
               state, 1, at, finished, error)  # fmt: skip


def build(path: Path, count: int) -> None:
    """A SQLite store of ``count`` entries made by iotpush's own schema, then filled in bulk."""
    if path.exists():
        with sqlite3.connect(path) as db:
            (have,) = db.execute("SELECT count(*) FROM inbox").fetchone()
        if have == count:
            return
        path.unlink()
    subprocess.run(
        [sys.executable, "-m", "iotpush.cli", "db", "upgrade", "--store", f"sqlite:///{path}"],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO inbox (received_at, type, device, key, path, body, headers, state, attempts,"
        " due_at, finished_at, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        _rows(count, time.time()),
    )
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.close()


def measure(url: str, rounds: int) -> dict[str, list[float]]:
    """Seconds per answer of each page, the pages asked in turn, round after round."""
    times: dict[str, list[float]] = {name: [] for name in PAGES}
    with httpx.Client(base_url=url, timeout=30) as client:
        for path in PAGES.values():  # warm up: caches, connections
            assert client.get(path).status_code == 200, path
        for _ in range(rounds):
            for name, path in PAGES.items():
                started = time.perf_counter()
                answer = client.get(path)
                times[name].append(time.perf_counter() - started)
                assert answer.status_code == 200, (path, answer.status_code)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--store", type=Path, default=Path("/tmp/iotpush-console-bench.db"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    build(args.store, args.entries)
    print(f"store: {args.entries} entries in {args.store} ({time.perf_counter() - started:.0f} s)")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "iotpush.cli", "serve", "--store", f"sqlite:///{args.store}",
         "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.1)
        times = measure(url, args.rounds)
    finally:
        server.terminate()
        server.wait(30)
    print(f"{'page':<30} {'p50 ms':>8} {'p99 ms':>8}  ({args.rounds} each)")
    summary: dict[str, Any] = {}
    for name, values in times.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        assert p50 is not None and p99 is not None
        summary[name] = {"path": PAGES[name], "p50_ms": p50 * 1000, "p99_ms": p99 * 1000}
        print(f"{name:<30} {p50 * 1000:8.1f} {p99 * 1000:8.1f}")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(
        json.dumps({"entries": args.entries, "rounds": args.rounds, "pages": summary}, indent=1)
    )


if __name__ == "__main__":
    main()
