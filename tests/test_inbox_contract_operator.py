"""The inbox contract: find, replay, stats, purge and quarantine.

Written once, run against every backend through ``inbox_factory`` (``tests/conftest.py``).

Time is a `FakeClock` injected as ``clock=``: leases and retries come due by moving it, never by
sleeping. Each test runs its scenario with ``asyncio.run`` (the suite needs no asyncio plugin).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from typing import Any

import pytest

from iotpush.exceptions import EntryNotFound
from iotpush.inbox import Selection
from tests._inbox import (
    LEASE,
    POPULATION,
    SELECTION_IDS,
    SELECTIONS,
    T0,
    FakeClock,
    InboxFactory,
    append_all,
    ids_of,
    incoming,
    populate,
    rejection,
    selection,
)

# find and replay over one population ---------------------------------------------------------


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


def test_find_since_entries_received_out_of_id_order_pages_through_each_once(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    # Kept in one order, received in another (a group commit, several processes): `since`
    # takes them by the time they were received, pages list them in id order.
    offsets = [5, 3, 10, 1, 7, 2]

    async def scenario() -> None:
        async with inbox_factory() as inbox:
            items = [incoming(clock, f"k{i}", received_at=T0 + at) for i, at in enumerate(offsets)]
            ids = await append_all(inbox, *items)
            since = Selection(since=T0 + 3)
            pages, after = [], 0
            while page := await inbox.find(since, limit=2, after=after):
                pages.append(ids_of(page))
                after = page[-1].id
            everything = ids_of(await inbox.find(since))
            later = await inbox.find(Selection(since=T0 + 11))
        expected = [id for id, at in zip(ids, offsets, strict=True) if at >= 3]
        assert everything == expected
        assert [id for page in pages for id in page] == expected
        assert later == []

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
