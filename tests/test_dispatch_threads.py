"""Plain (``def``) handlers that hang or overrun their time limit, through a real server process."""

from __future__ import annotations

import asyncio
from pathlib import Path

from iotpush import testing
from tests._faults import FAULT_RECEIVER, calls, overlaps
from tests._servers import Push, free_port, post_all, push, rows, serve
from tests.conftest import wait_until


def reports(device: str, count: int) -> list[Push]:
    """``count`` distinct reports of ``device``."""
    return [
        push(
            testing.build(
                "deviceDataChanged", device_id=device, gateway_id=device, service={"data": {"n": i}}
            )
        )
        for i in range(count)
    ]


def test_dispatcher_hung_and_overrunning_plain_handlers_hold_only_their_own_devices(
    tmp_path: Path,
) -> None:
    concurrency = 4
    hung = [f"hung-{i}" for i in range(concurrency)]  # as many as there are workers
    env = {
        "LEDGER": str(tmp_path / "ledger"),
        "HANG_DEVICES": ",".join(hung),
        "OVERRUN_DEVICE": "slow",
        "OVERRUN_SECONDS": "1.5",  # far past the limit, even on a loaded machine
    }
    stuck = [p for device in hung for p in reports(device, 2)]
    slow = reports("slow", 2)
    others = [p for i in range(8) for p in reports(f"meter-{i}", 5)]
    db = tmp_path / "inbox.db"
    options = ("--concurrency", str(concurrency), "--handler-timeout", "0.3",
               "--max-attempts", "2", "--backoff", "0.05")  # fmt: skip
    with serve(
        tmp_path, free_port(), FAULT_RECEIVER, *options, store=f"sqlite:///{db}", env=env,
        name="server", log_level="info",
    ) as server:  # fmt: skip
        ok, _ = asyncio.run(post_all(server.url, [*stuck, *slow]))
        wait_until(lambda: len(calls(env["LEDGER"])) >= len(hung), 30, "the hung handlers")
        ok, _ = asyncio.run(post_all(server.url, others))
        assert len(ok) == len(others)
        delivered = {p.key for p in others}

        def ended() -> set[str]:
            return {call.key for call in calls(env["LEDGER"]) if call.end is not None}

        wait_until(lambda: delivered <= ended(), 60, "the other devices' deliveries")
        finished = "SELECT count(*) FROM inbox WHERE device = 'slow' AND state IN ('done', 'dead')"
        wait_until(lambda: rows(db, finished)[0][0] == len(slow), 60, "the overrunning device")
        wait_until(
            lambda: (
                sum(c.device == "slow" and c.end is not None for c in calls(env["LEDGER"]))
                == 2 * len(slow)
            ),
            30,
            "the last overrunning call to return",
        )
        output = server.output()
    made = calls(env["LEDGER"])
    assert overlaps(made) == [], "two attempts of one device ran at once"
    hung_calls = sorted((call.device, call.end) for call in made if call.device in hung)
    assert hung_calls == [(device, None) for device in hung]  # their next entries wait
    slow_calls = [call for call in made if call.device == "slow"]
    assert [call.attempt for call in slow_calls] == [1, 2] * len(slow)
    assert all(call.end is not None for call in slow_calls)
    assert "its thread cannot be stopped" in output
