"""A receiver for tests that run a real server process: each delivery leaves a line in a ledger.

``iotpush serve tests.ledger_receiver:receiver`` with ``LEDGER`` naming the ledger file. Every
delivery appends ``done KEY`` (the entry's idempotency key). With ``LEDGER_DELAY`` set to some
seconds, the handler first appends ``begin KEY`` and then takes that long, as a slow handler.

Lines are written with one ``os.write`` on a file opened with ``O_APPEND``: once the call
returns the line is in the kernel, so killing the process cannot lose it.
"""

from __future__ import annotations

import asyncio
import os

from iotpush import Notification, Receiver, current_entry

_ledger = os.open(os.environ["LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
_delay = float(os.environ.get("LEDGER_DELAY") or 0)


def _write(line: str) -> None:
    os.write(_ledger, f"{line}\n".encode())


receiver = Receiver()


@receiver.on()
async def record(notification: Notification) -> None:
    key = current_entry().key
    if _delay:
        _write(f"begin {key}")
        await asyncio.sleep(_delay)
    _write(f"done {key}")
