"""A fixed-rate load generator for the soak mode (wrk has no rate limit; wrk2 is not packaged).

Requests are scheduled at exactly ``rate`` per second whatever the server does (open loop), and
handed to the first free of ``connections`` keep-alive connections. Latency is measured from
the *scheduled* time, so a stalled server shows up as latency instead of a quietly lower rate.
Bodies are the same mix as wrk's (``benchmarks.bodies``), request ``n`` from ``--start``::

    python -m benchmarks.pacer --url http://127.0.0.1:8080 --rate 5000 --duration 300

Prints one JSON line at the end. Standard library only; uses uvloop when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bodies

REQUEST_TIMEOUT = 15.0  # the platform's deadline for a 200
SAMPLE = 50_000


@dataclass
class Tally:
    """Counts and a uniform sample of latencies (seconds)."""

    ok: int = 0
    status_errors: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    service: list[float] = field(default_factory=list)
    seen: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(3))

    def record(self, status: int, latency: float, service: float) -> None:
        """One response: its status, time since it was scheduled, time since it was sent."""
        if 200 <= status < 300:
            self.ok += 1
        else:
            self.status_errors += 1
        self.seen += 1
        if len(self.latencies) < SAMPLE:
            self.latencies.append(latency)
            self.service.append(service)
        else:
            slot = self.rng.randrange(self.seen)
            if slot < SAMPLE:
                self.latencies[slot], self.service[slot] = latency, service


def _ms(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)

    def at(q: float) -> float | None:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else None

    return {"p50": at(0.50), "p99": at(0.99), "max": ordered[-1] * 1000 if ordered else None}


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> tuple[int, bool]:
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, keep = 0, True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            keep = False
    if length:
        await reader.readexactly(length)
    return status, keep


async def pace(
    url: str,
    rate: float,
    duration: float,
    connections: int,
    start: int = 0,
    *,
    lifecycles: bool = False,
) -> dict[str, Any]:
    """Send ``rate`` requests per second for ``duration`` seconds; the figures as a dict
    (``lifecycles``: the mix whose commands, upgrades and devices finish, `bodies`)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    mix = bodies.build_mix(lifecycles=lifecycles)
    queue: asyncio.Queue[tuple[float, int] | None] = asyncio.Queue()
    tally = Tally()
    clock = time.monotonic  # uvloop's loop.time() only has millisecond resolution

    async def worker() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while (item := await queue.get()) is not None:
            scheduled, n = item
            template = mix[n % len(mix)]
            body = bodies.render(template, n)
            data = (
                f"POST {template.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            sent = clock()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    if writer is None:
                        reader, writer = await asyncio.open_connection(host, port)
                    assert reader is not None
                    status, keep = await _request(reader, writer, data)
            except (OSError, TimeoutError, EOFError, ValueError, asyncio.LimitOverrunError):
                tally.errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            done = clock()
            tally.record(status, done - scheduled, done - sent)
            if not keep and writer is not None:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    total = int(rate * duration)
    issued, deepest = 0, 0
    began = clock()
    while issued < total:
        due = min(total, int((clock() - began) * rate) + 1)
        while issued < due:
            queue.put_nowait((began + issued / rate, start + issued))
            issued += 1
        deepest = max(deepest, queue.qsize())
        await asyncio.sleep(0.001)
    for _ in workers:
        queue.put_nowait(None)
    _, late = await asyncio.wait(workers, timeout=REQUEST_TIMEOUT + 5)
    for task in late:
        task.cancel()
    elapsed = clock() - began
    completed = tally.ok + tally.status_errors
    return {
        "rate_target": rate,
        "sent": issued,
        "completed": completed,
        "ok": tally.ok,
        "status_errors": tally.status_errors,
        "errors": tally.errors + tally.status_errors,
        "unfinished": issued - completed - tally.errors,
        "duration": elapsed,
        "rate_achieved": completed / elapsed if elapsed else 0.0,
        "latency_ms": _ms(tally.latencies),
        "service_ms": _ms(tally.service),
        "deepest_queue": deepest,
    }


def main() -> None:
    """Parse options, run, print the JSON line."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--rate", type=float, required=True, help="requests per second")
    p.add_argument("--duration", type=float, required=True, help="seconds")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--start", type=int, default=0, help="counter of the first request")
    p.add_argument("--lifecycles", action="store_true", help="the lifecycle mix (see bodies)")
    args = p.parse_args()
    coro = pace(
        args.url, args.rate, args.duration, args.connections, args.start,
        lifecycles=args.lifecycles,
    )  # fmt: skip
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
