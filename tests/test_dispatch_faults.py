"""Delivery under faults, through real server processes: a crash loop, a step of the clock."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from iotpush import testing
from tests._faults import FAULT_RECEIVER, calls
from tests._servers import free_port, post_all, push, pushes, rows, serve
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
