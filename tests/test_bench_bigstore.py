"""The big-store benchmark's pieces: its filled store holds what ``append`` would have written
(so the load dedupes against it exactly as against a store that received it), and a small run
prints its table. No time is asserted."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from benchmarks import api_scale, bodies

from iotpush.inbox import Incoming
from iotpush.models import decode
from iotpush.server import open_inbox

ROOT = Path(__file__).resolve().parent.parent


def _incoming(body: bytes, path: str) -> Incoming:
    route = "command" if path == bodies.COMMAND_PATH else "notify"
    notification = decode(body, route)
    return Incoming.from_notification(
        notification, body=body, path=path, headers={}, received_at=time.time()
    )


def test_filled_store_dedupes_its_requests_and_not_the_next(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    count = 1000
    api_scale.fill_sqlite(path, count, 50, time.time() - 3600, 3600)
    conn = sqlite3.connect(path)
    stored = conn.execute("SELECT id, path, body FROM inbox ORDER BY id").fetchall()
    held = conn.execute("SELECT count(*) FROM inbox WHERE dedupe IS NOT NULL").fetchone()[0]
    conn.close()
    assert len(stored) == count
    assert 0 < held <= count  # state slots are held by their latest entry only

    mix = bodies.build_mix()

    async def scenario() -> tuple[list[bool], list[bool]]:
        async with open_inbox(f"sqlite:///{path}") as inbox:
            again = [
                (await inbox.append(_incoming(body, where))).duplicate
                for _, where, body in stored[-300:]  # the type of every slot of the mix
            ]
            after = []
            for n in range(count, count + 300):  # what the load sends next: all new
                template = mix[n % len(mix)]
                body = bodies.render(template, n, 50)
                after.append((await inbox.append(_incoming(body, template.path))).duplicate)
            return again, after

    again, after = asyncio.run(scenario())
    assert all(again)
    assert not any(after)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk")
def test_bigstore_small_run_prints_each_kind_and_its_ratio(tmp_path: Path) -> None:
    out = tmp_path / "big.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bigstore", "--entries", "2000", "--devices", "100",
         "--rounds", "1", "--duration", "1", "--out", str(out), "--before", str(ROOT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "big / empty: ok/s" in done.stdout
    assert "before / empty: ok/s" in done.stdout
    results = json.loads(out.read_text())
    assert results["meta"]["entries"] == 2000
    runs = {run["kind"]: run for run in results["runs"]}
    assert set(runs) == {"empty", "big", "before"}
    for run in runs.values():
        assert run["accepted"] > 0 and not run["problems"], run
