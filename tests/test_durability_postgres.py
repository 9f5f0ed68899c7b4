"""What a 200 promises when several server processes share one PostgreSQL database.

Two ``iotpush serve`` processes on one schema take the load together; one is killed with
SIGKILL mid-run and started again. Every push answered 200 must reach the ledger
(`tests.ledger_receiver`), and each device's pushes must reach it in the order they were kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import httpx
import psycopg

from iotpush import testing
from tests._servers import (
    Push,
    Server,
    acknowledged,
    free_port,
    ledger_lines,
    push,
    serve_ledger,
)
from tests.conftest import wait_until

LEASE = "3s"  # a killed server's claims return after this


def serving(
    tmp_path: Path, port: int, *, store: str, ledger: Path, name: str
) -> contextlib.AbstractContextManager[Server]:
    """`serve_ledger` on ``store`` with a short lease."""
    return serve_ledger(
        tmp_path, port, "--lease", LEASE, store=store, ledger=ledger,
        delay=0.02,  # a device's pushes pile up: both servers find work of it
        name=name,
    )  # fmt: skip


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
                if not await acknowledged(client, url + item.path, item):
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
