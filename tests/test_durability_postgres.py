"""What a 200 promises when several server processes share one PostgreSQL database.

Two ``iotpush serve`` processes on one schema take the load together; one is killed with
SIGKILL mid-run and started again. Every push answered 200 must reach the ledger
(`tests.ledger_receiver`), and each device's pushes must reach it in the order they were kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import psycopg

from iotpush import testing
from tests.conftest import wait_until
from tests.test_durability import (
    JSON,
    ROOT,
    Push,
    Server,
    free_port,
    ledger_lines,
    push,
    wait_ready,
)

LEASE = "3s"  # a killed server's claims return after this


@contextlib.contextmanager
def serving(tmp_path: Path, port: int, *, store: str, ledger: Path, name: str) -> Iterator[Server]:
    """``iotpush serve`` on ``store`` as a subprocess, ready to answer; killed on the way out."""
    log = tmp_path / f"{name}.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "LEDGER": str(ledger),
        "LEDGER_DELAY": "0.02",  # a device's pushes pile up: both servers find work of it
    }
    command = [
        sys.executable, "-m", "iotpush.cli", "serve", "tests.ledger_receiver:receiver",
        "--port", str(port), "--store", store, "--lease", LEASE, "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(server)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def reports(count: int, devices: int) -> list[Push]:
    """``count`` distinct data reports of ``devices`` devices, round robin."""
    made = []
    for i in range(count):
        device = f"meter-{i % devices:03}"
        n = testing.build(
            "deviceDataChanged", device_id=device, gateway_id=device, service={"data": {"n": i}}
        )
        made.append(push(n))
    return made


async def post_by_device(
    urls: Sequence[str], items: Sequence[Push], *, workers: int = 8, kill_at: int = 0,
    kill: Server | None = None,
) -> tuple[list[Push], list[Push]]:  # fmt: skip
    """Post ``items`` to the servers in turn; a device's pushes one after another, in order.

    Returns the pushes answered 200 and the others. With ``kill``, that server gets SIGKILL as
    the ``kill_at``-th 200 arrives.
    """
    acked: list[Push] = []
    refused: list[Push] = []
    lanes: dict[int, list[Push]] = defaultdict(list)
    for item in items:
        device = item.body.split(b'"deviceId":"', 1)[1].split(b'"', 1)[0]
        lanes[hash(device) % workers].append(item)
    async with httpx.AsyncClient(timeout=10) as client:

        async def worker(lane: list[Push]) -> None:
            for n, item in enumerate(lane):
                url = urls[n % len(urls)]
                try:
                    answer = await client.post(url + item.path, content=item.body, headers=JSON)
                except httpx.TransportError:
                    refused.append(item)
                    continue
                if answer.status_code != 200:
                    refused.append(item)
                    continue
                acked.append(item)
                if kill is not None and len(acked) == kill_at:
                    kill.process.send_signal(signal.SIGKILL)

        await asyncio.gather(*(worker(lane) for lane in lanes.values()))
    return acked, refused


def test_two_servers_one_killed_mid_load_deliver_every_acknowledged_push_in_device_order(
    tmp_path: Path, postgres_store: str
) -> None:
    ledger = tmp_path / "ledger"
    ports = [free_port(), free_port()]
    items = reports(1600, devices=40)
    first_run, rest = items[:1100], items[1100:]

    with serving(tmp_path, ports[1], store=postgres_store, ledger=ledger, name="b") as b:
        with serving(tmp_path, ports[0], store=postgres_store, ledger=ledger, name="a") as a:
            acked, refused = asyncio.run(
                post_by_device([a.url, b.url], first_run, kill_at=500, kill=a)
            )
            assert a.process.wait(10) == -signal.SIGKILL
        assert len(acked) >= 500
        assert refused, "every push was acknowledged: the kill did not land mid-run"

        with serving(tmp_path, ports[0], store=postgres_store, ledger=ledger, name="a2") as a2:
            # The platform retries what got no answer; some of it was kept before the kill.
            again, refused_again = asyncio.run(post_by_device([a2.url, b.url], [*refused, *rest]))
            assert refused_again == []
            acked += again
            expected = {p.key for p in acked}
            wait_until(
                lambda: expected <= set(ledger_lines(ledger, "done")),
                timeout=60,
                what="every acknowledged push in the ledger",
            )
            output = b.output() + a2.output()

    server, schema = postgres_store.split("?schema=")
    with psycopg.connect(server) as conn:
        kept = conn.execute(f"SELECT key, device, id FROM {schema}.inbox").fetchall()
    keys = [key for key, _, _ in kept]
    assert len(keys) == len(set(keys)), "a retried push was kept twice"
    assert expected <= set(keys)
    assert len(acked) == len(items)
    # Per device, the ledger follows the order the pushes were kept in (a push delivered again
    # after the kill may repeat, but never after a later one of its device).
    where = {key: (device, id) for key, device, id in kept}
    last: dict[str, int] = {}
    for key in ledger_lines(ledger, "done"):
        device, id = where[key]
        assert id >= last.get(device, 0), f"{device}: entry {id} after {last[device]}\n{output}"
        last[device] = id
