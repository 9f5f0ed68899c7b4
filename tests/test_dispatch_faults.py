"""Delivery under faults, through real server processes: a crash loop, a step of the clock."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

from iotpush import testing
from tests._faults import FAULT_RECEIVER, calls
from tests._servers import ROOT, free_port, post_all, push, pushes, rows, serve
from tests.conftest import wait_until


def settled(db: Path) -> bool:
    """Whether no entry of the SQLite store ``db`` waits for delivery."""
    sql = "SELECT count(*) FROM inbox WHERE state IN ('pending', 'claimed')"
    return bool(db.exists() and rows(db, sql)[0][0] == 0)


def test_dispatcher_crash_loop_charges_only_entries_whose_handler_began(tmp_path: Path) -> None:
    db, ledger = tmp_path / "inbox.db", tmp_path / "ledger"
    poison = push(
        testing.build(
            "deviceDataChanged", device_id="poison", gateway_id="poison", service={"data": {}}
        )
    )
    others = pushes(100, devices=10)
    items = [*others[:50], poison, *others[50:]]
    # Handlers slow enough that entries are held, not yet begun, at each crash.
    env = {"LEDGER": str(ledger), "POISON_DEVICE": "poison", "HANDLER_DELAY": "0.1"}
    options = ("--max-attempts", "3", "--backoff", "0.05", "--concurrency", "4")
    acked: set[str] = set()
    crashes = 0
    for round in range(8):  # a restart loop: each start after the poison handler ended one
        with serve(
            tmp_path, free_port(), FAULT_RECEIVER, *options, store=f"sqlite:///{db}", env=env,
            name=f"round-{round}",
        ) as server:  # fmt: skip
            ok, _ = asyncio.run(post_all(server.url, [p for p in items if p.key not in acked]))
            acked.update(p.key for p in ok)
            wait_until(
                lambda: server.process.poll() is not None or settled(db), 60, "a crash or the end"
            )
            if server.process.poll() is not None:
                crashes += 1
                continue
            if len(acked) == len(items):
                break
    began = Counter(call.key for call in calls(ledger))
    ended = {call.key for call in calls(ledger) if call.end is not None}
    dead = rows(db, "SELECT key, attempts, last_error FROM inbox WHERE state = 'dead'")
    assert len(acked) == len(items)
    assert crashes == 3  # one per allowed attempt of the poison entry
    charged = [(key, attempts, began[key]) for key, attempts, _ in dead if began[key] < attempts]
    assert charged == [], "dead entries charged with attempts no handler began"
    assert (poison.key, 3, "gave up: the process stopped during attempt 3") in dead
    dead_keys = {key for key, _, _ in dead}
    assert acked - ended - dead_keys == set(), "acknowledged entries neither delivered nor dead"


CLOCK = """
import os, time

_offset_file = os.environ["IOTPUSH_TEST_CLOCK"]
_real = time.time


def _time() -> float:  # the wall clock, stepped by the seconds the file holds
    try:
        with open(_offset_file) as f:
            return _real() + float(f.read() or 0)
    except (OSError, ValueError):
        return _real()


time.time = _time
"""


def test_dispatcher_clock_step_past_the_lease_delivers_held_entries_once(tmp_path: Path) -> None:
    # The server's wall clock is injected (a sitecustomize module, loaded before iotpush):
    # it jumps forward past the lease while a slow device's entries are held.
    site, offset, ledger = tmp_path / "site", tmp_path / "offset", tmp_path / "ledger"
    site.mkdir()
    (site / "sitecustomize.py").write_text(CLOCK)
    offset.write_text("0")
    env = {
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
        "IOTPUSH_TEST_CLOCK": str(offset),
        "LEDGER": str(ledger),
        "HANDLER_DELAY": "0.3",
    }
    held = pushes(10, devices=1)
    later = pushes(12, devices=1)[10:]
    db = tmp_path / "inbox.db"
    with serve(
        tmp_path, free_port(), FAULT_RECEIVER, "--lease", "10", store=f"sqlite:///{db}", env=env,
        name="server", log_level="info",
    ) as server:  # fmt: skip
        ok, _ = asyncio.run(post_all(server.url, held, connections=1))
        assert len(ok) == len(held)
        wait_until(lambda: len(calls(ledger)) >= 2, 30, "the first deliveries")
        offset.write_text("3600")  # an hour forward: every lease looks long ended
        wait_until(lambda: settled(db), 60, "the held entries to be delivered")
        ok, _ = asyncio.run(post_all(server.url, later, connections=1))
        assert len(ok) == len(later)
        wait_until(lambda: settled(db), 30, "pushes after the step to be delivered")
        output = server.output()
    made = calls(ledger)
    assert sorted(Counter(call.key for call in made).values()) == [1] * 12, "a second delivery"
    assert {call.key for call in made if call.end is not None} == {p.key for p in held + later}
    assert "Traceback" not in output
    assert "took over" not in output  # this process's own claims are never taken over
