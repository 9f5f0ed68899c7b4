"""What the inbox tests share: a clock tests move, notifications and refusals to keep, and one
population of entries that find, replay and the operator counts are tried on.

The contract suite (``tests/test_inbox_contract_*.py``) runs every test against each backend
through the ``inbox_factory`` fixture of ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from iotpush.inbox import Entry, Inbox, Incoming, Rejection, Selection, State

__all__ = [
    "BACKENDS",
    "LEASE",
    "POPULATION",
    "RECEIVE",
    "SELECTIONS",
    "SELECTION_IDS",
    "SINK",
    "T0",
    "FakeClock",
    "InboxFactory",
    "append_all",
    "attached_owner_claims",
    "handoff_waits_in_one_transaction",
    "ids_of",
    "incoming",
    "lease_left",
    "pass_time",
    "populate",
    "rejection",
    "selection",
]

T0 = 1_700_000_000.0
LEASE = 30.0
RECEIVE = "/v1.0.0/messageReceiver"
BACKENDS = ["memory", "sqlite", "postgres"]

InboxFactory = Callable[..., Inbox]


class FakeClock:
    """A clock that moves only when a test moves it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def incoming(
    clock: FakeClock,
    key: str = "k",
    *,
    slot: str | None = None,
    type: str = "deviceDataChanged",
    device: str | None = "dev-1",
    received_at: float | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    path: str = RECEIVE,
    order: float | None = None,
) -> Incoming:
    """A notification as the app hands it to the inbox; the slot is the key unless given."""
    return Incoming(
        body=f'{{"key":"{key}"}}'.encode() if body is None else body,
        type=type,
        device=device,
        key=key,
        slot=key if slot is None else slot,
        path=path,
        headers={"content-type": "application/json"} if headers is None else headers,
        received_at=clock.now if received_at is None else received_at,
        order=order,
    )


def rejection(received_at: float = T0, status: int = 400) -> Rejection:
    return Rejection(
        received_at=received_at,
        path=RECEIVE,
        status=status,
        reason="expected str, got null",
        field="$.result.resultCode",
        body=b'{"result": {"resultCode": null}}\xff',
        headers={"content-type": "application/json", "x-forwarded-for": "10.0.0.7"},
    )


async def append_all(inbox: Inbox, *items: Incoming) -> list[int]:
    return [(await inbox.append(item)).id for item in items]


def ids_of(entries: list[Entry]) -> list[int]:
    return [e.id for e in entries]


def _on_postgres(inbox: Inbox) -> bool:
    return type(inbox).__name__ == "PostgresInbox"


async def pass_time(inbox: Inbox, clock: FakeClock, seconds: float) -> None:
    """Let ``seconds`` pass: on the injected clock, and for leases on PostgreSQL, which run on
    the database's clock, by moving every lease's end back."""
    clock.advance(seconds)
    if _on_postgres(inbox):
        sql = "UPDATE inbox SET lease_until = lease_until - ? WHERE lease_until IS NOT NULL"
        await inbox.transact(lambda db: db.execute(sql, (seconds,)))


async def lease_left(inbox: Inbox, clock: FakeClock, id: int) -> float:
    """Whole seconds the lease of entry ``id`` still runs, on the clock leases use."""
    entry = await inbox.get(id)
    assert entry.lease_until is not None
    now = clock.now
    if _on_postgres(inbox):
        sql = "SELECT extract(epoch from now())"
        now = float(await inbox.read(lambda db: db.execute(sql).fetchone()[0]))
    return round(entry.lease_until - now)


SINK = "nats:TEST"
"""The sink the outbox tests fill."""


# one population for find, replay and tally ----------------------------------------------------

# name: (type, device, seconds after T0 it was received, state it ends in)
POPULATION: dict[str, tuple[str, str | None, float, State]] = {
    "e1": ("t1", "d1", 0, "done"),
    "e2": ("t1", "d2", 10, "dead"),
    "e3": ("t2", "d1", 20, "done"),
    "e4": ("t2", "d2", 30, "dead"),
    "e5": ("t1", "d1", 40, "claimed"),
    "e6": ("t2", None, 50, "pending"),
}


async def populate(inbox: Inbox, clock: FakeClock) -> dict[str, int]:
    """Entries in every state (see `POPULATION`); returns their ids by name."""

    def item(name: str) -> Incoming:
        type_, device, offset, _ = POPULATION[name]
        return incoming(clock, name, type=type_, device=device, received_at=T0 + offset)

    first = ["e1", "e2", "e3", "e4"]
    ids = dict(zip(first, await append_all(inbox, *map(item, first)), strict=True))
    clock.now = T0 + 60
    await inbox.claim("w", 10, LEASE)
    await inbox.ack([ids["e1"], ids["e3"]])
    await inbox.dead(ids["e2"], "boom", 1)
    await inbox.dead(ids["e4"], "boom", 1)
    ids["e5"], ids["e6"] = await append_all(inbox, item("e5"), item("e6"))
    await inbox.claim("w", 1, LEASE)
    states = {e.id: e.state for e in await inbox.find(Selection())}
    assert {name: states[id] for name, id in ids.items()} == {
        name: spec[3] for name, spec in POPULATION.items()
    }
    return ids


def selection(spec: dict[str, Any], ids: dict[str, int]) -> Selection:
    """A `Selection` from a table row: entry names for ids, offsets from T0 for times."""
    spec = dict(spec)
    if "ids" in spec:
        spec["ids"] = [ids[name] for name in spec["ids"]]
    for bound in ("since", "until"):
        if bound in spec:
            spec[bound] = T0 + spec[bound]
    return Selection(**spec)


SELECTIONS = [
    ({}, ["e1", "e2", "e3", "e4", "e5", "e6"]),
    ({"ids": ["e2", "e5"]}, ["e2", "e5"]),
    ({"ids": []}, []),
    ({"states": ["pending", "claimed"]}, ["e5", "e6"]),
    ({"states": ["dead"]}, ["e2", "e4"]),
    ({"type": "t2"}, ["e3", "e4", "e6"]),
    ({"device": "d1"}, ["e1", "e3", "e5"]),
    ({"since": 20}, ["e3", "e4", "e5", "e6"]),
    ({"until": 20}, ["e1", "e2"]),
    ({"since": 10, "until": 40}, ["e2", "e3", "e4"]),
    ({"type": "t1", "device": "d1"}, ["e1", "e5"]),
    ({"type": "t3"}, []),
]
SELECTION_IDS = [
    "everything",
    "ids",
    "no-ids",
    "open-states",
    "dead",
    "type",
    "device",
    "since",
    "until",
    "since-until",
    "type-and-device",
    "no-match",
]


async def attached_owner_claims(inbox: Inbox, clock: FakeClock) -> Entry:
    """Hot handoff (`Inbox.attach`) on an open, empty ``inbox``: new entries are claimed for the
    attached owner ``me`` (lease 30 s) and handed over once committed, unless it has no room,
    or their device has an earlier entry waiting; duplicates and a detached inbox hand nothing.
    Returns the first entry handed over, as stored (the caller checks its lease)."""
    handed: list[list[Entry]] = []
    room = [True]
    inbox.attach("me", lease=30, on_claimed=handed.append, has_room=lambda: room[0])
    first = await inbox.append(incoming(clock, "a", device="d1"))
    assert [[e.id for e in batch] for batch in handed] == [[first.id]]
    entry = await inbox.get(first.id)
    assert (entry.state, entry.owner, entry.attempts) == ("claimed", "me", 0)
    assert handed[0][0].lease_until == entry.lease_until
    duplicate = await inbox.append(incoming(clock, "a", device="d1"))
    assert duplicate.duplicate and len(handed) == 1
    room[0] = False
    full = await inbox.append(incoming(clock, "b", device="d2"))
    assert (await inbox.get(full.id)).state == "pending"
    room[0] = True
    # d2 has an earlier entry waiting: a later one must wait behind it, not jump ahead.
    behind = await inbox.append(incoming(clock, "c", device="d2"))
    assert (await inbox.get(behind.id)).state == "pending"
    assert len(handed) == 1
    claimed = await inbox.claim("me", 10, 30)
    assert [e.id for e in claimed] == [full.id, behind.id]
    inbox.attach(None)
    detached = await inbox.append(incoming(clock, "d", device="d3"))
    assert (await inbox.get(detached.id)).state == "pending"
    assert len(handed) == 1
    return entry


async def handoff_waits_in_one_transaction(inbox: Inbox, clock: FakeClock) -> list[int]:
    """Hot handoff when appends share a transaction (gathered, so group commit runs them
    together): a device's new entry is never handed over while an earlier one of it is pending
    (left so earlier in the same transaction) or claimed by another owner; other devices are
    still handed over. Returns the ids handed over, attached as ``me`` with room."""
    handed: list[int] = []
    room = iter([True, False, True])
    inbox.attach(
        "me", on_claimed=lambda es: handed.extend(e.id for e in es), has_room=lambda: next(room)
    )
    other, full, behind = await asyncio.gather(
        inbox.append(incoming(clock, "c", device="d2")),  # handed over
        inbox.append(incoming(clock, "a", device="d1")),  # no room: left pending
        inbox.append(incoming(clock, "b", device="d1")),  # behind it
    )
    assert handed == [other.id]
    assert [(await inbox.get(a.id)).state for a in (full, behind)] == ["pending", "pending"]
    assert ids_of(await inbox.claim("them", 1, LEASE)) == [full.id]
    assert ids_of(await inbox.claim("me", 10, LEASE)) == []  # d1 waits behind "them"
    inbox.attach("me", on_claimed=lambda es: handed.extend(e.id for e in es))
    late, free = await asyncio.gather(
        inbox.append(incoming(clock, "e", device="d1")),  # "them" holds d1
        inbox.append(incoming(clock, "f", device="d3")),
    )
    assert handed == [other.id, free.id]
    assert (await inbox.get(late.id)).state == "pending"
    return handed
