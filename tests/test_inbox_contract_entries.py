"""The inbox contract: append, get and dedupe.

Written once, run against every backend through ``inbox_factory`` (``tests/conftest.py``).

Time is a `FakeClock` injected as ``clock=``: leases and retries come due by moving it, never by
sleeping. Each test runs its scenario with ``asyncio.run`` (the suite needs no asyncio plugin).
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from iotpush.exceptions import EntryNotFound
from iotpush.inbox import Entry, Selection
from tests._inbox import (
    LEASE,
    RECEIVE,
    T0,
    FakeClock,
    InboxFactory,
    append_all,
    ids_of,
    incoming,
    rejection,
)

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


# An event slot whose key names a time (`Incoming.order`): SQLite orders its digest by it.
ORDERS = pytest.mark.parametrize("order", [None, T0 - 5.0], ids=["plain", "ordered"])


@ORDERS
def test_append_same_key_within_window_counts_a_duplicate_of_the_kept_entry(
    inbox_factory: InboxFactory, clock: FakeClock, order: float | None
) -> None:
    async def scenario() -> None:
        async with inbox_factory(dedupe_window=60.0) as inbox:
            first = await inbox.append(incoming(clock, "a", order=order))
            clock.advance(10)
            second = await inbox.append(incoming(clock, "a", order=order))
            clock.advance(40)
            third = await inbox.append(incoming(clock, "a", order=order))
            entry = await inbox.get(first.id)
            everything = await inbox.find(Selection())
        assert not first.duplicate
        assert (second.id, second.duplicate) == (first.id, True)
        assert (third.id, third.duplicate) == (first.id, True)
        assert (entry.duplicates, entry.last_duplicate_at) == (2, T0 + 50)
        assert ids_of(everything) == [first.id]

    asyncio.run(scenario())


@ORDERS
def test_append_same_key_past_window_makes_a_new_entry(
    inbox_factory: InboxFactory, clock: FakeClock, order: float | None
) -> None:
    async def scenario() -> None:
        async with inbox_factory(dedupe_window=60.0) as inbox:
            first = await inbox.append(incoming(clock, "a", order=order))
            clock.advance(61)
            second = await inbox.append(incoming(clock, "a", order=order))
            clock.advance(1)
            third = await inbox.append(incoming(clock, "a", order=order))
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


def test_appends_at_once_keep_append_order_and_dedupe_as_one_by_one(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory(dedupe_window=60.0) as inbox:
            old = await inbox.append(incoming(clock, "a", device="d1"))
            held = await inbox.append(incoming(clock, "A", slot="registry:d1", device="d1"))
            clock.advance(61)
            accepted = await asyncio.gather(  # one transaction where the store has them
                inbox.append(incoming(clock, "x", device="d1")),
                inbox.append(incoming(clock, "a", device="d1")),  # past the window: new
                inbox.append(incoming(clock, "B", slot="registry:d1", device="d1")),  # other key
                inbox.append(incoming(clock, "a", device="d1")),  # the new one's duplicate
                inbox.append(incoming(clock, "y", device="d1")),
                inbox.append(incoming(clock, "B", slot="registry:d1", device="d1")),
            )
            stored = await inbox.find(Selection())
        x, a, b, a_again, y, b_again = accepted
        assert [e.duplicate for e in accepted] == [False, False, False, True, False, True]
        assert old.id < held.id < x.id < a.id < b.id < y.id
        assert (a_again.id, b_again.id) == (a.id, b.id)
        assert ids_of(stored) == [old.id, held.id, x.id, a.id, b.id, y.id]
        assert [e.duplicates for e in stored] == [0, 0, 0, 1, 1, 0]

    asyncio.run(scenario())


def test_appends_at_once_after_one_left_for_claim_leave_its_device_in_order(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            room = iter([False, True, True])
            handed: list[Entry] = []
            inbox.attach("me", lease=LEASE, on_claimed=handed.extend, has_room=lambda: next(room))
            first, second, other = await asyncio.gather(
                inbox.append(incoming(clock, "p", device="d1")),  # no room: left for `claim`
                inbox.append(incoming(clock, "q", device="d1")),  # room, but behind `p`
                inbox.append(incoming(clock, "r", device="d2")),
            )
            states = [(await inbox.get(a.id)).state for a in (first, second, other)]
        assert states[:2] == ["pending", "pending"]
        # A backend may leave hot handoff out (`Inbox.attach`): then every entry waits.
        assert states[2] == ("claimed" if handed else "pending")
        assert ids_of(handed) in ([other.id], [])

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
