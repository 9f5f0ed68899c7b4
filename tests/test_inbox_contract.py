"""The inbox contract: written once, run against every backend through ``inbox_factory``.

Time is a `FakeClock` injected as ``clock=``: leases and retries come due by moving it, never by
sleeping. Each test runs its scenario with ``asyncio.run`` (the suite needs no asyncio plugin).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from iotpush.exceptions import EntryNotFound
from iotpush.inbox import Entry, Inbox, Incoming, Rejection, Selection, State
from iotpush.inbox.memory import MemoryInbox
from iotpush.inbox.sqlite import SQLiteInbox
from iotpush.server import PROJECTIONS

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


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS, ids=BACKENDS)
def inbox_factory(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> InboxFactory:
    """``inbox_factory(**options)``: a new, unopened inbox of the backend under test."""
    files = itertools.count()

    def make(**options: Any) -> Inbox:
        options.setdefault("clock", clock)
        options.setdefault("projections", PROJECTIONS)
        if request.param == "memory":
            return MemoryInbox(**options)
        if request.param == "postgres":  # a fresh schema of the test server, migrated
            from iotpush.inbox.postgres import PostgresInbox

            return PostgresInbox(request.getfixturevalue("postgres_store"), **options)
        n = next(files)
        return SQLiteInbox(tmp_path / ("inbox.db" if n == 0 else f"inbox-{n}.db"), **options)

    return make


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


# append and get ------------------------------------------------------------------------------


def test_append_new_keys_returns_increasing_ids(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            accepted = [await inbox.append(incoming(clock, f"k{i}")) for i in range(4)]
        assert [a.duplicate for a in accepted] == [False] * 4
        ids = [a.id for a in accepted]
        assert all(a < b for a, b in itertools.pairwise(ids))

    asyncio.run(scenario())


@pytest.mark.parametrize("device", ["dev-1", None], ids=["device", "no-device"])
def test_get_after_append_returns_the_fields_given(
    inbox_factory: InboxFactory, clock: FakeClock, device: str | None
) -> None:
    item = incoming(
        clock,
        "deviceDataChanged:dev-1:temp:20240101T000000Z",
        type="deviceDataChanged",
        device=device,
        body=b'{"notifyType":"deviceDataChanged"}\x00\xff',
        headers={"content-type": "application/json", "x-request-id": "r-1"},
        path=f"{RECEIVE}/data",
        received_at=T0 - 2.5,
    )

    async def scenario() -> None:
        async with inbox_factory() as inbox:
            accepted = await inbox.append(item)
            entry = await inbox.get(accepted.id)
        assert entry == Entry(
            id=accepted.id,
            received_at=T0 - 2.5,
            type="deviceDataChanged",
            device=device,
            key=item.key,
            path=f"{RECEIVE}/data",
            body=b'{"notifyType":"deviceDataChanged"}\x00\xff',
            headers={"content-type": "application/json", "x-request-id": "r-1"},
            state="pending",
            attempts=0,
            due_at=T0 - 2.5,
        )

    asyncio.run(scenario())


def test_get_and_quarantine_records_are_copies_mutating_them_leaves_the_store(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            headers = {"a": "1"}
            (id,) = await append_all(inbox, incoming(clock, "a", headers=headers))
            headers["a"] = "changed by the caller"
            (await inbox.get(id)).headers["a"] = "changed by get's caller"
            (await inbox.find(Selection()))[0].headers["a"] = "changed by find's caller"
            (await inbox.claim("w", 10, LEASE))[0].headers["a"] = "changed by a handler"
            assert (await inbox.get(id)).headers == {"a": "1"}

            given = rejection()
            q = await inbox.quarantine(given)
            given.headers["x-forwarded-for"] = "changed by the caller"
            (await inbox.get_quarantined(q)).headers["content-type"] = "changed by the reader"
            assert (await inbox.get_quarantined(q)).headers == rejection().headers

    asyncio.run(scenario())


@pytest.mark.parametrize("method", ["get", "get_quarantined"], ids=["entry", "quarantined"])
def test_get_unknown_id_raises_entry_not_found(
    inbox_factory: InboxFactory, clock: FakeClock, method: str
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            await inbox.append(incoming(clock))
            await inbox.quarantine(rejection())
            with pytest.raises(EntryNotFound):
                await getattr(inbox, method)(999_999)

    asyncio.run(scenario())


# dedupe --------------------------------------------------------------------------------------


def test_append_same_key_within_window_counts_a_duplicate_of_the_kept_entry(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory(dedupe_window=60.0) as inbox:
            first = await inbox.append(incoming(clock, "a"))
            clock.advance(10)
            second = await inbox.append(incoming(clock, "a"))
            clock.advance(40)
            third = await inbox.append(incoming(clock, "a"))
            entry = await inbox.get(first.id)
            everything = await inbox.find(Selection())
        assert not first.duplicate
        assert (second.id, second.duplicate) == (first.id, True)
        assert (third.id, third.duplicate) == (first.id, True)
        assert (entry.duplicates, entry.last_duplicate_at) == (2, T0 + 50)
        assert ids_of(everything) == [first.id]

    asyncio.run(scenario())


def test_append_same_key_past_window_makes_a_new_entry(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory(dedupe_window=60.0) as inbox:
            first = await inbox.append(incoming(clock, "a"))
            clock.advance(61)
            second = await inbox.append(incoming(clock, "a"))
            clock.advance(1)
            third = await inbox.append(incoming(clock, "a"))
            kept = await inbox.find(Selection())
        assert not second.duplicate
        assert second.id > first.id
        assert (third.id, third.duplicate) == (second.id, True)  # the new entry holds the slot
        assert ids_of(kept) == [first.id, second.id]
        assert [e.duplicates for e in kept] == [0, 1]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("keys", "duplicates", "kept"),
    [
        (["A", "B", "A"], [False, False, False], 3),
        (["A", "A"], [False, True], 1),
        (["A", "B", "B"], [False, False, True], 2),
        (["A", "B", "A", "A"], [False, False, False, True], 3),
    ],
    ids=["a-b-a", "a-a", "a-b-b", "a-b-a-a"],
)
def test_append_state_slot_only_a_repeat_of_its_latest_key_is_a_duplicate(
    inbox_factory: InboxFactory,
    clock: FakeClock,
    keys: list[str],
    duplicates: list[bool],
    kept: int,
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            accepted = []
            for key in keys:
                clock.advance(1)
                accepted.append(await inbox.append(incoming(clock, key, slot="registry:dev-1")))
            stored = await inbox.find(Selection())
        assert [a.duplicate for a in accepted] == duplicates
        assert len(stored) == kept
        for before, after in itertools.pairwise(accepted):
            if after.duplicate:
                assert after.id == before.id  # counted on the slot's latest entry

    asyncio.run(scenario())


def test_append_same_key_after_delivery_is_a_duplicate_and_stays_done(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            (id,) = await append_all(inbox, incoming(clock, "a"))
            await inbox.claim("w", 10, LEASE)
            await inbox.ack([id])
            again = await inbox.append(incoming(clock, "a"))
            entry = await inbox.get(id)
            claimed = await inbox.claim("w", 10, LEASE)
        assert (again.id, again.duplicate) == (id, True)
        assert (entry.state, entry.duplicates) == ("done", 1)
        assert claimed == []

    asyncio.run(scenario())


# claim ---------------------------------------------------------------------------------------


def test_claim_due_entries_returns_them_in_id_order_up_to_limit(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            ids = await append_all(inbox, *(incoming(clock, k, device=f"dev-{k}") for k in "abcde"))
            clock.advance(5)
            first = await inbox.claim("w1", 3, LEASE)
            stored = await inbox.get(ids[0])
            leases = [await lease_left(inbox, clock, id) for id in ids[:3]]
            rest = await inbox.claim("w1", 10, LEASE)
            nothing = await inbox.claim("w1", 10, LEASE)
        assert ids_of(first) == ids[:3]
        assert leases == [LEASE] * 3
        for entry in [*first, stored]:  # claiming is no attempt: `begin` counts them
            assert (entry.state, entry.owner, entry.attempts) == ("claimed", "w1", 0)
        assert ids_of(rest) == ids[3:]
        assert nothing == []

    asyncio.run(scenario())


def test_claim_entry_received_later_than_now_is_not_due_yet(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            (id,) = await append_all(inbox, incoming(clock, "a", received_at=T0 + 10))
            early = await inbox.claim("w", 10, LEASE)
            clock.advance(10)
            due = await inbox.claim("w", 10, LEASE)
        assert early == []
        assert ids_of(due) == [id]

    asyncio.run(scenario())


@pytest.mark.parametrize("give_back", ["release", "lease-expiry"], ids=["release", "expiry"])
def test_claim_entry_failed_for_retry_waits_until_retry_at(
    inbox_factory: InboxFactory, clock: FakeClock, give_back: str
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            (id,) = await append_all(inbox, incoming(clock, "a"))
            await inbox.claim("w1", 10, LEASE)
            assert await inbox.begin("w1", id, 1)
            retry_at = clock.now + 100
            await inbox.fail(id, "boom", 1, retry_at)
            if give_back == "release":
                assert await inbox.release("w1") == 1
            else:
                await pass_time(inbox, clock, LEASE + 1)
            assert await inbox.claim("w2", 10, LEASE) == []
            clock.now = retry_at - 1
            assert await inbox.claim("w2", 10, LEASE) == []
            clock.now = retry_at
            (entry,) = await inbox.claim("w2", 10, LEASE)
        assert (entry.id, entry.owner, entry.attempts, entry.last_error) == (id, "w2", 1, "boom")

    asyncio.run(scenario())


# per-device order ----------------------------------------------------------------------------


def test_claim_device_held_by_another_owner_blocks_its_later_entries(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            a, b, c, e, f = await append_all(
                inbox,
                incoming(clock, "a", device="d1"),
                incoming(clock, "b", device="d1"),
                incoming(clock, "c", device="d2"),
                incoming(clock, "e", device=None),
                incoming(clock, "f", device=None),
            )
            assert ids_of(await inbox.claim("A", 1, LEASE)) == [a]
            assert ids_of(await inbox.claim("B", 10, LEASE)) == [c, e, f]
            assert await inbox.claim("B", 10, LEASE) == []
            await inbox.ack([a])
            assert ids_of(await inbox.claim("B", 10, LEASE)) == [b]

    asyncio.run(scenario())


def test_claim_device_held_by_the_same_owner_hands_out_its_later_entries(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            a, b = await append_all(
                inbox, incoming(clock, "a", device="d1"), incoming(clock, "b", device="d1")
            )
            assert ids_of(await inbox.claim("A", 1, LEASE)) == [a]
            assert ids_of(await inbox.claim("A", 10, LEASE)) == [b]

    asyncio.run(scenario())


def test_claim_device_waiting_for_a_retry_blocks_its_later_entries_for_everyone(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            a, b, c = await append_all(
                inbox,
                incoming(clock, "a", device="d1"),
                incoming(clock, "b", device="d1"),
                incoming(clock, "c", device="d2"),
            )
            assert ids_of(await inbox.claim("A", 1, LEASE)) == [a]
            await inbox.fail(a, "boom", 1, clock.now + LEASE / 2)
            await inbox.release("A")
            assert ids_of(await inbox.claim("A", 10, LEASE)) == [c]
            assert await inbox.claim("B", 10, LEASE) == []
            clock.advance(LEASE / 2)  # A's lease on c still runs
            assert ids_of(await inbox.claim("B", 10, LEASE)) == [a, b]

    asyncio.run(scenario())


def test_claim_entries_without_device_are_never_blocked(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            a, b, c = await append_all(inbox, *(incoming(clock, k, device=None) for k in "abc"))
            assert ids_of(await inbox.claim("A", 1, LEASE)) == [a]
            assert ids_of(await inbox.claim("B", 1, LEASE)) == [b]
            await inbox.fail(a, "boom", 1, clock.now + 60)
            await inbox.release("A")
            assert ids_of(await inbox.claim("C", 10, LEASE)) == [c]

    asyncio.run(scenario())


@pytest.mark.parametrize("finish", ["ack", "dead"], ids=["done", "dead"])
def test_claim_device_earlier_entry_finished_no_longer_blocks(
    inbox_factory: InboxFactory, clock: FakeClock, finish: str
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            a, b = await append_all(
                inbox, incoming(clock, "a", device="d1"), incoming(clock, "b", device="d1")
            )
            await inbox.claim("A", 1, LEASE)
            if finish == "ack":
                await inbox.ack([a])
            else:
                await inbox.dead(a, "Traceback ...", 1)
            assert ids_of(await inbox.claim("B", 10, LEASE)) == [b]

    asyncio.run(scenario())


# leases --------------------------------------------------------------------------------------


def test_claim_after_lease_expiry_hands_entries_to_another_owner(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            a, b = await append_all(
                inbox, incoming(clock, "a", device="d1"), incoming(clock, "b", device="d1")
            )
            assert ids_of(await inbox.claim("A", 1, LEASE)) == [a]
            assert await inbox.begin("A", a, 1)
            await pass_time(inbox, clock, LEASE - 1)
            assert await inbox.claim("B", 10, LEASE) == []
            await pass_time(inbox, clock, 2)
            taken = await inbox.claim("B", 10, LEASE)
            leases = [await lease_left(inbox, clock, id) for id in (a, b)]
            assert not await inbox.begin("A", a, 2), "A began an attempt of an entry B holds"
        assert ids_of(taken) == [a, b]
        assert [(e.owner, e.attempts) for e in taken] == [("B", 1), ("B", 0)]
        assert leases == [LEASE, LEASE]

    asyncio.run(scenario())


def test_renew_extends_the_owners_leases_and_returns_their_count(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            a, b, c = await append_all(
                inbox, *(incoming(clock, k, device=f"dev-{k}") for k in "abc")
            )
            assert ids_of(await inbox.claim("A", 2, LEASE)) == [a, b]
            assert ids_of(await inbox.claim("B", 1, LEASE)) == [c]
            await pass_time(inbox, clock, 20)
            assert await inbox.renew("A", LEASE) == 2
            assert await lease_left(inbox, clock, a) == LEASE
            assert await inbox.renew("nobody", LEASE) == 0
            await pass_time(inbox, clock, 20)  # past the first leases: only B's, not renewed
            assert await inbox.claim("B", 10, LEASE) == [], "B took over its own claim"
            assert ids_of(await inbox.claim("C", 10, LEASE)) == [c]
            assert (await inbox.get(a)).owner == "A"

    asyncio.run(scenario())


def test_release_gives_the_owners_claims_back_and_returns_their_count(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            a, b, c = await append_all(
                inbox, *(incoming(clock, k, device=f"dev-{k}") for k in "abc")
            )
            await inbox.claim("A", 2, LEASE)
            await inbox.claim("B", 1, LEASE)
            assert await inbox.begin("A", a, 1)
            assert not await inbox.begin("A", c, 1)
            assert await inbox.release("A") == 2
            released = await inbox.get(a)
            assert (released.state, released.owner, released.lease_until) == ("pending", None, None)
            assert (await inbox.get(c)).owner == "B"
            assert await inbox.release("A") == 0
            again = await inbox.claim("C", 10, LEASE)
        assert [(e.id, e.attempts) for e in again] == [(a, 1), (b, 0)]

    asyncio.run(scenario())


# ack, fail, dead -----------------------------------------------------------------------------


def test_ack_claimed_entry_marks_it_done_once(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            (id,) = await append_all(inbox, incoming(clock))
            await inbox.claim("w", 10, LEASE)
            clock.advance(5)
            await inbox.ack([id])
            done = await inbox.get(id)
            clock.advance(5)
            await inbox.ack([id])
            assert await inbox.get(id) == done
            assert await inbox.claim("w", 10, LEASE) == []
        assert (done.state, done.finished_at, done.owner, done.lease_until) == (
            "done",
            T0 + 5,
            None,
            None,
        )

    asyncio.run(scenario())


def test_ack_unclaimed_or_unknown_ids_is_harmless(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            (id,) = await append_all(inbox, incoming(clock))
            await inbox.ack([id, 999_999])
            await inbox.ack([])
            entry = await inbox.get(id)
            claimed = await inbox.claim("w", 10, LEASE)
        assert (entry.state, entry.finished_at) == ("pending", None)
        assert ids_of(claimed) == [id]

    asyncio.run(scenario())


def test_fail_records_error_attempts_and_due_at_and_keeps_the_claim(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            (id,) = await append_all(inbox, incoming(clock))
            await inbox.claim("w", 10, LEASE)
            await inbox.fail(id, "ValueError: bad reading", 3, T0 + 60)
            entry = await inbox.get(id)
            assert await lease_left(inbox, clock, id) == LEASE
        assert (entry.state, entry.owner) == ("claimed", "w")
        assert (entry.last_error, entry.attempts, entry.due_at) == (
            "ValueError: bad reading",
            3,
            T0 + 60,
        )
        assert entry.finished_at is None

    asyncio.run(scenario())


def test_dead_keeps_the_error_and_finishes_the_entry(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    error = 'Traceback (most recent call last):\n  File "h.py", line 3\nKeyError: "temp"\n'

    async def scenario() -> None:
        async with inbox_factory() as inbox:
            (id,) = await append_all(inbox, incoming(clock))
            await inbox.claim("w", 10, LEASE)
            clock.advance(5)
            await inbox.dead(id, error, 5)
            entry = await inbox.get(id)
            clock.advance(3600)
            assert await inbox.claim("w", 10, LEASE) == []
        assert (entry.state, entry.last_error, entry.attempts, entry.finished_at) == (
            "dead",
            error,
            5,
            T0 + 5,
        )
        assert (entry.owner, entry.lease_until) == (None, None)

    asyncio.run(scenario())


# find and replay over one population ---------------------------------------------------------

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


@pytest.mark.parametrize(("spec", "expected"), SELECTIONS, ids=SELECTION_IDS)
def test_find_selection_returns_matching_entries_in_id_order(
    inbox_factory: InboxFactory, clock: FakeClock, spec: dict[str, Any], expected: list[str]
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            ids = await populate(inbox, clock)
            found = await inbox.find(selection(spec, ids))
        assert ids_of(found) == [ids[name] for name in expected]

    asyncio.run(scenario())


@pytest.mark.parametrize(("spec", "matching"), SELECTIONS, ids=SELECTION_IDS)
def test_replay_selection_makes_its_replayable_entries_pending_and_leaves_the_rest(
    inbox_factory: InboxFactory, clock: FakeClock, spec: dict[str, Any], matching: list[str]
) -> None:
    # By filter, only dead entries unless the selection names states; by ids, done ones too.
    finished = ("done", "dead") if "ids" in spec or "states" in spec else ("dead",)
    replayed = [name for name in matching if POPULATION[name][3] in finished]

    async def scenario() -> None:
        async with inbox_factory() as inbox:
            ids = await populate(inbox, clock)
            before = {name: await inbox.get(id) for name, id in ids.items()}
            clock.advance(100)
            count = await inbox.replay(selection(spec, ids))
            after = {name: await inbox.get(id) for name, id in ids.items()}
        assert count == len(replayed)
        for name in ids:
            if name in replayed:
                entry = after[name]
                assert (entry.state, entry.due_at, entry.attempts, entry.finished_at) == (
                    "pending",
                    clock.now,
                    0,
                    None,
                )
            else:
                assert after[name] == before[name]

    asyncio.run(scenario())


def test_replay_dead_entry_is_claimed_again_from_its_first_attempt(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            (id,) = await append_all(inbox, incoming(clock))
            await inbox.claim("w", 10, LEASE)
            await inbox.dead(id, "boom", 5)
            clock.advance(100)
            assert await inbox.replay(Selection(states=["dead"])) == 1
            assert await inbox.replay(Selection(states=["dead"])) == 0
            (entry,) = await inbox.claim("w", 10, LEASE)
        assert (entry.id, entry.state, entry.attempts, entry.due_at) == (
            id,
            "claimed",
            0,
            clock.now,
        )

    asyncio.run(scenario())


def test_find_after_and_limit_page_through_a_selection(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            ids = await append_all(
                inbox, *(incoming(clock, f"k{i}", device=f"d{i % 2}") for i in range(7))
            )
            pages: list[list[int]] = []
            after = 0
            while page := ids_of(await inbox.find(Selection(device="d0"), limit=2, after=after)):
                pages.append(page)
                after = page[-1]
            first_two = ids_of(await inbox.find(Selection(), limit=2))
            past_last = await inbox.find(Selection(), after=ids[-1])
        assert pages == [[ids[0], ids[2]], [ids[4], ids[6]]]
        assert first_two == ids[:2]
        assert past_last == []

    asyncio.run(scenario())


# stats ---------------------------------------------------------------------------------------


def test_stats_counts_states_types_duplicates_quarantine_and_oldest_pending(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            done, dead = await append_all(
                inbox,
                incoming(clock, "done", type="t1", device="d1", received_at=T0),
                incoming(clock, "dead", type="t2", device="d2", received_at=T0 + 10),
            )
            clock.now = T0 + 30
            await inbox.claim("w", 10, LEASE)
            await inbox.ack([done])
            await inbox.dead(dead, "boom", 1)
            await append_all(
                inbox,
                incoming(clock, "claimed", type="t1", device="d3", received_at=T0 + 20),
                incoming(clock, "pending", type="t2", device="d4", received_at=T0 + 25),
            )
            await inbox.claim("w", 1, LEASE)
            await inbox.append(incoming(clock, "pending", type="t2", device="d4"))
            await inbox.append(incoming(clock, "pending", type="t2", device="d4"))
            await inbox.append(incoming(clock, "done", type="t1", device="d1"))
            await inbox.quarantine(rejection())
            clock.now = T0 + 100
            stats = await inbox.stats()

        def nonzero(counts: dict[str, int]) -> dict[str, int]:
            return {state: n for state, n in counts.items() if n}

        assert nonzero(stats.by_state) == {"done": 1, "dead": 1, "claimed": 1, "pending": 1}
        assert {t: nonzero(c) for t, c in stats.by_type.items()} == {
            "t1": {"done": 1, "claimed": 1},
            "t2": {"dead": 1, "pending": 1},
        }
        assert (stats.total, stats.duplicates, stats.quarantined) == (4, 3, 1)
        assert (stats.oldest_pending_at, stats.oldest_pending_age) == (T0 + 20, 80.0)

    asyncio.run(scenario())


def test_stats_empty_inbox_has_no_oldest_pending(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            stats = await inbox.stats()
        assert (stats.total, stats.duplicates, stats.quarantined) == (0, 0, 0)
        assert (stats.oldest_pending_at, stats.oldest_pending_age, stats.now) == (None, None, T0)

    asyncio.run(scenario())


# purge ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 10_000], ids=["batch-of-one", "default-batch"])
def test_purge_deletes_finished_entries_received_before_and_keeps_the_quarantine(
    inbox_factory: InboxFactory, clock: FakeClock, batch: int
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            old_done, old_dead, old_claimed, new_done = await append_all(
                inbox,
                incoming(clock, "old-done", device="d1", received_at=T0),
                incoming(clock, "old-dead", device="d2", received_at=T0 + 10),
                incoming(clock, "old-claimed", device="d3", received_at=T0 + 30),
                incoming(clock, "new-done", device="d4", received_at=T0 + 200),
            )
            clock.now = T0 + 210
            await inbox.claim("w", 10, LEASE)
            await inbox.ack([old_done, new_done])
            await inbox.dead(old_dead, "boom", 1)
            (old_pending,) = await append_all(
                inbox, incoming(clock, "old-pending", device="d5", received_at=T0 + 20)
            )
            old_q = await inbox.quarantine(rejection(received_at=T0 + 5))
            new_q = await inbox.quarantine(rejection(received_at=T0 + 205))
            progress: list[int] = []
            purged = await inbox.purge(T0 + 100, batch=batch, progress=progress.append)
            kept = await inbox.find(Selection())
            kept_q = await inbox.quarantined()
            with pytest.raises(EntryNotFound):
                await inbox.get(old_done)
            again = await inbox.purge(T0 + 100, batch=batch)
        assert purged == 2
        assert ids_of(kept) == [old_claimed, new_done, old_pending]
        assert [r.id for r in kept_q] == [old_q, new_q]
        assert progress
        assert all(a < b for a, b in itertools.pairwise(progress))
        assert progress[-1] == 2
        assert again == 0

    asyncio.run(scenario())


def test_purge_forgets_the_key_a_new_push_is_kept_again(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            (id,) = await append_all(inbox, incoming(clock, "a"))
            await inbox.claim("w", 10, LEASE)
            await inbox.ack([id])
            assert await inbox.purge(clock.now + 1) == 1
            again = await inbox.append(incoming(clock, "a"))
        assert not again.duplicate

    asyncio.run(scenario())


def test_append_and_quarantine_after_purging_everything_never_reuse_an_id(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            ids = await append_all(inbox, incoming(clock, "a"), incoming(clock, "b"))
            q = await inbox.quarantine(rejection(received_at=clock.now))
            await inbox.claim("w", 10, LEASE)
            await inbox.ack(ids)
            assert await inbox.purge(clock.now + 1) == 2
            assert await inbox.purge_quarantine(clock.now + 1) == 1
            (new,) = await append_all(inbox, incoming(clock, "c"))
            new_q = await inbox.quarantine(rejection(received_at=clock.now))
        assert new > ids[-1]
        assert new_q > q

    asyncio.run(scenario())


# quarantine ----------------------------------------------------------------------------------


def test_quarantine_round_trips_and_pages(inbox_factory: InboxFactory) -> None:
    first, second = rejection(T0, 400), rejection(T0 + 1, 413)

    async def scenario() -> None:
        async with inbox_factory() as inbox:
            q1 = await inbox.quarantine(first)
            q2 = await inbox.quarantine(second)
            kept = [dataclasses.replace(first, id=q1), dataclasses.replace(second, id=q2)]
            assert 0 < q1 < q2
            assert await inbox.quarantined() == kept
            assert await inbox.quarantined(limit=1) == kept[:1]
            assert await inbox.quarantined(after=q1) == kept[1:]
            assert await inbox.quarantined(after=q2) == []
            assert await inbox.get_quarantined(q2) == kept[1]

    asyncio.run(scenario())


# outbox --------------------------------------------------------------------------------------

SINK = "nats:TEST"


def test_unpublished_returns_new_entries_in_id_order_up_to_limit_leased_to_the_owner(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory(outbox=[SINK]) as inbox:
            ids = await append_all(inbox, *(incoming(clock, f"k{i}") for i in range(5)))
            first = await inbox.unpublished(SINK, "a", 3, LEASE)
            other = await inbox.unpublished(SINK, "b", 10, LEASE)
            again = await inbox.unpublished(SINK, "a", 10, LEASE)
        assert ids_of(first) == ids[:3]
        assert [e.key for e in first] == ["k0", "k1", "k2"]
        assert ids_of(other) == ids[3:]
        assert ids_of(again) == ids[:3]  # the owner's own leases come back: a retry

    asyncio.run(scenario())


def test_unpublished_without_outbox_option_records_nothing(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            await append_all(inbox, incoming(clock, "a"))
            taken = await inbox.unpublished(SINK, "a", 10, LEASE)
            stats = await inbox.stats()
        assert taken == []
        assert stats.unpublished == {}

    asyncio.run(scenario())


def test_unpublished_each_sink_has_its_own_outbox(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory(outbox=[SINK, "other"]) as inbox:
            ids = await append_all(inbox, incoming(clock, "a"), incoming(clock, "b"))
            await inbox.unpublished(SINK, "w", 10, LEASE)
            await inbox.published(SINK, ids)
            left = await inbox.unpublished("other", "w", 10, LEASE)
            gone = await inbox.unpublished(SINK, "w", 10, LEASE)
        assert ids_of(left) == ids
        assert gone == []

    asyncio.run(scenario())


def test_unpublished_after_lease_expiry_hands_entries_to_another_owner(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory(outbox=[SINK]) as inbox:
            ids = await append_all(inbox, incoming(clock, "a"), incoming(clock, "b"))
            await inbox.unpublished(SINK, "crashed", 10, LEASE)
            clock.advance(LEASE - 1)
            before = await inbox.unpublished(SINK, "b", 10, LEASE)
            clock.advance(2)
            after = await inbox.unpublished(SINK, "b", 10, LEASE)
        assert before == []
        assert ids_of(after) == ids

    asyncio.run(scenario())


def test_published_removes_entries_and_ignores_unknown_ids(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory(outbox=[SINK]) as inbox:
            ids = await append_all(inbox, *(incoming(clock, f"k{i}") for i in range(3)))
            await inbox.unpublished(SINK, "a", 10, LEASE)
            await inbox.published(SINK, [ids[0], ids[2], 999])
            clock.advance(LEASE + 1)  # every lease expired: only what was not published is left
            left = await inbox.unpublished(SINK, "b", 10, LEASE)
        assert ids_of(left) == [ids[1]]

    asyncio.run(scenario())


def test_release_unpublished_gives_the_owners_leases_back_and_returns_their_count(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory(outbox=[SINK]) as inbox:
            ids = await append_all(inbox, *(incoming(clock, f"k{i}") for i in range(3)))
            await inbox.unpublished(SINK, "a", 2, LEASE)
            await inbox.unpublished(SINK, "b", 1, LEASE)
            released = await inbox.release_unpublished(SINK, "a")
            taken = await inbox.unpublished(SINK, "c", 10, LEASE)
        assert released == 2
        assert ids_of(taken) == ids[:2]

    asyncio.run(scenario())


def test_append_duplicate_never_enters_the_outbox(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory(outbox=[SINK]) as inbox:
            online = incoming(clock, "ONLINE", slot="registry:d1")
            offline = incoming(clock, "OFFLINE", slot="registry:d1")
            ids = await append_all(inbox, online, online, offline, online, online)
            taken = await inbox.unpublished(SINK, "a", 10, LEASE)
            await inbox.published(SINK, ids_of(taken))
            await inbox.append(online)  # after publishing: still a duplicate, not published again
            again = await inbox.unpublished(SINK, "a", 10, LEASE)
        assert ids == [ids[0], ids[0], ids[2], ids[3], ids[3]]
        assert ids_of(taken) == [ids[0], ids[2], ids[3]]
        assert again == []

    asyncio.run(scenario())


def test_wait_for_unpublished_returns_once_an_entry_enters_the_outbox(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory(outbox=[SINK]) as inbox:
            await inbox.wait_for_unpublished(SINK, 0.01)  # consumes any earlier wake-up
            waiter = asyncio.create_task(inbox.wait_for_unpublished(SINK, 30))
            await asyncio.sleep(0.05)
            assert not waiter.done()
            await inbox.append(incoming(clock, "a"))
            await asyncio.wait_for(waiter, 5)
            taken = await inbox.unpublished(SINK, "a", 10, LEASE)
        assert [e.key for e in taken] == ["a"]

    asyncio.run(scenario())


def test_purge_never_deletes_an_unpublished_entry(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory(outbox=[SINK]) as inbox:
            published, unpublished = await append_all(
                inbox, incoming(clock, "a", device="d1"), incoming(clock, "b", device="d2")
            )
            await inbox.claim("w", 10, LEASE)
            await inbox.ack([published, unpublished])
            await inbox.published(SINK, [published])
            purged = await inbox.purge(clock.now + 1)
            kept = await inbox.find(Selection())
            await inbox.published(SINK, [unpublished])
            later = await inbox.purge(clock.now + 1)
        assert purged == 1
        assert ids_of(kept) == [unpublished]
        assert later == 1

    asyncio.run(scenario())


def test_stats_counts_unpublished_entries_by_sink(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory(outbox=[SINK, "other"]) as inbox:
            ids = await append_all(inbox, *(incoming(clock, f"k{i}") for i in range(3)))
            await inbox.published(SINK, ids[:2])
            await inbox.published("other", ids)
            stats = await inbox.stats()
        assert stats.unpublished == {SINK: 1}

    asyncio.run(scenario())


def test_quarantine_over_its_bound_keeps_the_newest_and_counts_the_dropped(
    inbox_factory: InboxFactory,
) -> None:
    async def scenario() -> None:
        async with inbox_factory(quarantine_max_rows=3) as inbox:
            ids = [await inbox.quarantine(rejection(T0 + i, 400)) for i in range(8)]
            kept = await inbox.quarantined(limit=100)
            stats = await inbox.stats()
            assert [r.id for r in kept] == ids[-3:]
            assert [r.received_at for r in kept] == [T0 + 5, T0 + 6, T0 + 7]
            assert stats.quarantined == 3
            assert inbox.quarantine_dropped == 5

    asyncio.run(scenario())
