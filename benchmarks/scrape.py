"""The CPU one ``/metrics`` scrape costs, in process, on stores of growing size.

A scrape reads the store's figures (`iotpush.overview`) and renders the registry. This builds
(once, then reuses) SQLite stores of each ``--entries`` size the way ``benchmarks.console``
does (one dead letter in 1000, the rest done, a few pending), then renders ``--scrapes``
scrapes with the one-second cache defeated and reports the CPU seconds per scrape (this
process's user + system time: what the server would spend; far less sensitive to the load of
the machine than wall time, which is shown too). A flat line across sizes is the goal.

    python -m benchmarks.scrape --entries 10000,100000,1000000 --scrapes 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.console import build
from iotpush.events import Events
from iotpush.metrics import Metrics
from iotpush.overview import OverviewReader
from iotpush.server import open_inbox

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "scrape.json"


async def scrapes(path: Path, count: int) -> dict[str, float]:
    """Render ``count`` scrapes of the store at ``path``: CPU and wall milliseconds per scrape."""
    async with open_inbox(f"sqlite:///{path}") as inbox:
        overview = OverviewReader(inbox, ttl=0.0)  # every scrape reads the store
        metrics = Metrics(Events(), overview, process=False)
        await metrics.render()  # warm: statements prepared, pages cached
        cpu: list[float] = []
        wall: list[float] = []
        for _ in range(count):
            started, started_cpu = time.perf_counter(), time.process_time()
            await metrics.render()
            cpu.append(time.process_time() - started_cpu)
            wall.append(time.perf_counter() - started)
    return {
        "cpu_ms_median": statistics.median(cpu) * 1000,
        "cpu_ms_mean": statistics.fmean(cpu) * 1000,
        "wall_ms_median": statistics.median(wall) * 1000,
    }


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="benchmarks.scrape", description=__doc__)
    parser.add_argument("--entries", default="10000,100000,1000000", help="sizes [%(default)s]")
    parser.add_argument("--scrapes", type=int, default=200, help="scrapes per size [%(default)s]")
    parser.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()) / "iotpush-scrape",
        help="where the stores are built and kept for the next run [%(default)s]",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results [%(default)s]")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for size in (int(n) for n in args.entries.split(",")):
        path = args.dir / f"store-{size}.db"
        build(path, size)
        figures = asyncio.run(scrapes(path, args.scrapes))
        results[size] = figures
        print(
            f"{size:>10,} entries: {figures['cpu_ms_median']:7.2f} ms CPU per scrape (median;"
            f" mean {figures['cpu_ms_mean']:.2f}), wall {figures['wall_ms_median']:.2f} ms,"
            f" load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"scrapes": args.scrapes, "sizes": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
