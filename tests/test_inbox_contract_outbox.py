"""The inbox contract: the outbox and the quarantine bound.

Written once, run against every backend through ``inbox_factory`` (``tests/conftest.py``).

Time is a `FakeClock` injected as ``clock=``: leases and retries come due by moving it, never by
sleeping. Each test runs its scenario with ``asyncio.run`` (the suite needs no asyncio plugin).
"""

from __future__ import annotations

import asyncio

from iotpush.inbox import Selection
from tests._inbox import (
    LEASE,
    SINK,
    T0,
    FakeClock,
    InboxFactory,
    append_all,
    ids_of,
    incoming,
    rejection,
)

# outbox --------------------------------------------------------------------------------------


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
