"""The receiver iotpush serves in the benchmark: one catch-all handler that only keeps score.

``iotpush serve benchmarks.noop_receiver:receiver`` delivers every notification to `tally`,
which counts it and samples its ack-to-handler delay (from the moment the request was received,
just before the inbox commit and the 200, to the handler call). A daemon thread writes the
score as JSON to ``$IOTPUSH_BENCH_STATS`` every 0.25 s, for ``benchmarks/run.py`` to read::

    {"count": 1234, "first_at": 1767225600.1, "last_at": 1767225612.9, "delays": [0.0012, ...],
     "timeline": [[1767225600.25, 310], [1767225600.5, 2710], ...], "held": [0.0, 0, 1240]}

``delays`` is a uniform sample (reservoir) of at most `RESERVOIR` delays in seconds; ``timeline``
holds (time, count) every 0.25 s, so the runner can tell how many were handled by a given
moment (the end of the load) although the file is only rewritten every 0.25 s. ``held`` (a
PostgreSQL inbox only): seconds its writes held a lock the whole cluster waits for, the
transactions that did, and the appends committed. The handler
is ``async`` so it runs on the event loop; with ``IOTPUSH_BENCH_SYNC_HANDLER=1`` it is a plain
function instead, which the dispatcher runs in its thread pool, as most user code would be.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import sys
import threading
import time
from typing import Any

import iotpush

RESERVOIR = 4096
WRITE_INTERVAL = 0.25
TIMELINE = 4096  # points kept; beyond that every other one is dropped


class Tally:
    """Count of handled notifications, first and last handling time, and a delay sample."""

    def __init__(self, size: int = RESERVOIR) -> None:
        self.size = size
        self.count = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.delays: list[float] = []
        self.timeline: list[tuple[float, int]] = []
        self._random = random.Random(7).randrange

    def add(self, delay: float, now: float) -> None:
        """Record one notification handled at ``now``, ``delay`` seconds after it was received."""
        self.count += 1
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        if len(self.delays) < self.size:
            self.delays.append(delay)
        else:  # Algorithm R: each delay seen so far is in the sample with equal chance
            slot = self._random(self.count)
            if slot < self.size:
                self.delays[slot] = delay

    def mark(self, now: float) -> None:
        """Add (``now``, count) to the timeline, thinning it when it grows too long."""
        self.timeline.append((now, self.count))
        if len(self.timeline) > TIMELINE:
            self.timeline = self.timeline[::2]

    def snapshot(self) -> dict[str, Any]:
        """The score as a JSON-ready dict; on PostgreSQL, with what the process's writes held
        for the whole cluster (`iotpush.inbox._postgres_db.HELD`)."""
        score: dict[str, Any] = {
            "count": self.count,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "delays": list(self.delays),
            "timeline": list(self.timeline),
        }
        postgres = sys.modules.get("iotpush.inbox._postgres_db")
        if postgres is not None:
            held = postgres.HELD
            score["held"] = [held.seconds, held.transactions, held.appends]
        return score


tally = Tally()
receiver = iotpush.Receiver()

if os.environ.get("IOTPUSH_BENCH_SYNC_HANDLER") == "1":

    @receiver.on()
    def handle(notification: iotpush.Notification) -> None:
        """Count the notification (in the dispatcher's thread pool)."""
        now = time.time()
        tally.add(now - iotpush.current_entry().received_at, now)

else:

    @receiver.on()
    async def handle_async(notification: iotpush.Notification) -> None:
        """Count the notification (on the event loop)."""
        now = time.time()
        tally.add(now - iotpush.current_entry().received_at, now)


def write_stats(path: str) -> None:
    """Write the score to ``path`` atomically (readers never see half a file)."""
    temporary = f"{path}.tmp"
    with open(temporary, "w") as file:
        json.dump(tally.snapshot(), file)
    os.replace(temporary, path)


def _writer(path: str) -> None:
    written = -1
    while True:
        tally.mark(time.time())
        if tally.count != written:
            written = tally.count
            write_stats(path)
        time.sleep(WRITE_INTERVAL)


_stats_path = os.environ.get("IOTPUSH_BENCH_STATS")
if _stats_path:
    write_stats(_stats_path)
    threading.Thread(target=_writer, args=(_stats_path,), name="bench-stats", daemon=True).start()
    atexit.register(write_stats, _stats_path)
