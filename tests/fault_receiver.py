"""A receiver for the fault tests: a plain (``def``) handler that records every call in a ledger.

``iotpush serve tests.fault_receiver:receiver`` with ``LEDGER`` naming the ledger file. Each call
appends ``start PID KEY DEVICE ATTEMPT NS`` as it begins and ``end PID KEY DEVICE ATTEMPT NS`` as
it returns (``NS``: the process's monotonic clock, so the calls of one process can be ordered).
Lines are written with one ``os.write`` on a file opened with ``O_APPEND``: killing the process
cannot lose a written line. `tests._faults.calls` reads them back.

How a device's handler misbehaves, by environment variable (each optional):

- ``POISON_DEVICE``: its handler ends the process (``os._exit``), half a second after it began.
- ``HANG_DEVICES`` (comma-separated): their handlers never return.
- ``OVERRUN_DEVICE`` and ``OVERRUN_SECONDS``: its handler takes that long.
- ``HANDLER_DELAY``: seconds every other call takes.
"""

from __future__ import annotations

import os
import threading
import time

from iotpush import Notification, Receiver, current_entry

_ledger = os.open(os.environ["LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
_poison = os.environ.get("POISON_DEVICE")
_hang = set(filter(None, os.environ.get("HANG_DEVICES", "").split(",")))
_overrun = os.environ.get("OVERRUN_DEVICE")
_overrun_seconds = float(os.environ.get("OVERRUN_SECONDS") or 0)
_delay = float(os.environ.get("HANDLER_DELAY") or 0)
_never = threading.Event()


def _write(kind: str, key: str, device: str | None, attempt: int) -> None:
    line = f"{kind} {os.getpid()} {key} {device} {attempt} {time.monotonic_ns()}\n"
    os.write(_ledger, line.encode())


receiver = Receiver()


@receiver.on()
def record(notification: Notification) -> None:
    entry = current_entry()
    _write("start", entry.key, entry.device, entry.attempts)
    if entry.device == _poison:
        time.sleep(0.5)  # the calls that began with it write their start lines
        os._exit(1)
    if entry.device in _hang:
        _never.wait()
    time.sleep(_overrun_seconds if entry.device == _overrun else _delay)
    _write("end", entry.key, entry.device, entry.attempts)
