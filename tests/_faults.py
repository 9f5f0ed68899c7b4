"""What the fault tests share: the calls `tests.fault_receiver` recorded, and store reads."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["FAULT_RECEIVER", "Call", "calls", "overlaps"]

FAULT_RECEIVER = "tests.fault_receiver:receiver"


@dataclass(frozen=True)
class Call:
    """One handler call as the ledger has it; ``end`` is None when it never returned."""

    pid: int
    key: str
    device: str
    attempt: int
    start: int
    end: int | None


def calls(ledger: str | os.PathLike[str]) -> list[Call]:
    """Every call the ledger of `tests.fault_receiver` records, by process and start."""
    started: dict[tuple[str, str, str], tuple[str, int]] = {}
    made: list[Call] = []
    if not os.path.exists(ledger):
        return made
    with open(ledger) as lines:
        for line in lines:
            kind, pid, key, device, attempt, ns = line.split()
            if kind == "start":
                started[pid, key, attempt] = (device, int(ns))
            else:
                device, start = started.pop((pid, key, attempt))
                made.append(Call(int(pid), key, device, int(attempt), start, int(ns)))
    made.extend(
        Call(int(pid), key, device, int(attempt), start, None)
        for (pid, key, attempt), (device, start) in started.items()
    )
    return sorted(made, key=lambda call: (call.pid, call.start))


def overlaps(made: list[Call]) -> list[tuple[Call, Call]]:
    """Pairs of calls of one device in one process where the second began before the first
    returned (a call that never returned lasts for ever)."""
    found = []
    last: dict[tuple[int, str], Call] = {}
    for call in made:  # by process, then start
        before = last.get((call.pid, call.device))
        if before is not None and (before.end is None or call.start < before.end):
            found.append((before, call))
        lasts_longer = before is not None and before.end is not None
        if before is None or (lasts_longer and (call.end is None or call.end > before.end)):
            last[call.pid, call.device] = call
    return found
