"""What operator commands count before they act: `Inbox.tally`, `Selection.replayable`,
`Inbox.purgeable`, and the quarantine's own count and purge; on every backend."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iotpush.inbox import Purged, Selection, Tally
from iotpush.trackers import TRACKED_TYPES
from tests._inbox import (  # shared with the contract suite, whose fixtures are in conftest
    LEASE,
    POPULATION,
    SELECTION_IDS,
    SELECTIONS,
    SINK,
    T0,
    FakeClock,
    InboxFactory,
    append_all,
    incoming,
    populate,
    rejection,
    selection,
)


@pytest.mark.parametrize(("spec", "matching"), SELECTIONS, ids=SELECTION_IDS)
def test_tally_selection_counts_the_matching_entries_by_type_and_state(
    inbox_factory: InboxFactory,
    clock: FakeClock,
    spec: dict[str, Any],
    matching: list[str],
) -> None:
    expected: dict[tuple[str, str], int] = {}
    for name in matching:
        type_, _, _, state = POPULATION[name]
        expected[type_, state] = expected.get((type_, state), 0) + 1

    async def scenario() -> Tally:
        async with inbox_factory() as inbox:
            return await inbox.tally(selection(spec, await populate(inbox, clock)))

    assert asyncio.run(scenario()).counts == expected


@pytest.mark.parametrize(("spec", "matching"), SELECTIONS, ids=SELECTION_IDS)
@pytest.mark.parametrize("limit", [2, 100])
def test_tally_with_a_limit_counts_that_many_matching_entries_at_most(
    inbox_factory: InboxFactory,
    clock: FakeClock,
    spec: dict[str, Any],
    matching: list[str],
    limit: int,
) -> None:
    async def scenario() -> tuple[Tally, Tally]:
        async with inbox_factory() as inbox:
            sel = selection(spec, await populate(inbox, clock))
            return await inbox.tally(sel, limit=limit), await inbox.tally(sel)

    bounded, whole = asyncio.run(scenario())
    assert bounded.total == min(limit, len(matching))
    for key, count in bounded.counts.items():  # some of the matching entries, none other
        assert 0 < count <= whole.counts[key]


@pytest.mark.parametrize(("spec", "matching"), SELECTIONS, ids=SELECTION_IDS)
def test_tally_of_replayable_counts_what_replay_then_takes(
    inbox_factory: InboxFactory,
    clock: FakeClock,
    spec: dict[str, Any],
    matching: list[str],
) -> None:
    async def scenario() -> tuple[Tally, int]:
        async with inbox_factory() as inbox:
            sel = selection(spec, await populate(inbox, clock))
            counted = await inbox.tally(sel.replayable())
            return counted, await inbox.replay(sel)

    counted, replayed = asyncio.run(scenario())
    assert counted.total == replayed
    assert set(counted.by_state()) <= {"done", "dead"}


@pytest.mark.parametrize(
    ("selection_", "states"),
    [
        (Selection(), ("dead",)),
        (Selection(type="t"), ("dead",)),
        (Selection(ids=[1]), ("done", "dead")),
        (Selection(states=["done", "pending"]), ("done",)),
        (Selection(states=["claimed"]), ()),
    ],
    ids=["nothing-given", "by-filter", "by-ids", "states-given", "no-finished-state"],
)
def test_selection_replayable_by_filter_takes_dead_entries_only(
    selection_: Selection, states: tuple[str, ...]
) -> None:
    assert tuple(selection_.replayable().states or ()) == states


def test_tally_sums_by_state_and_by_type() -> None:
    tally = Tally({("a", "dead"): 2, ("b", "done"): 1, ("b", "dead"): 3})
    assert tally.total == 6
    assert tally.by_state() == {"done": 1, "dead": 5}
    assert tally.by_type() == {"b": 4, "a": 2}


def test_purgeable_counts_what_purge_deletes_not_unpublished_or_open_ones(
    inbox_factory: InboxFactory,
    clock: FakeClock,
) -> None:
    async def scenario() -> tuple[Tally, int, Tally]:
        async with inbox_factory(outbox=[SINK]) as inbox:
            done, dead, unpublished, _ = await append_all(
                inbox,
                incoming(clock, "a", device="d1", type="t1"),
                incoming(clock, "b", device="d2", type="t2"),
                incoming(clock, "c", device="d3", type="t1"),
                incoming(clock, "d", device="d4", type="t1"),
            )
            await inbox.claim("w", 3, LEASE)
            await inbox.ack([done, unpublished])
            await inbox.dead(dead, "boom", 1)
            await inbox.published(SINK, [done, dead])
            counted = await inbox.purgeable(clock.now + 1)
            purged = await inbox.purge(clock.now + 1)
            return counted, purged, await inbox.purgeable(clock.now + 1)

    counted, purged, after = asyncio.run(scenario())
    assert counted.counts == {("t1", "done"): 1, ("t2", "dead"): 1}
    assert purged == counted.total
    assert after.total == 0


def test_purge_quarantine_deletes_refused_bodies_received_before_and_no_entry(
    inbox_factory: InboxFactory,
    clock: FakeClock,
) -> None:
    async def scenario() -> tuple[int, int, int, list[int], int, int]:
        async with inbox_factory() as inbox:
            (entry,) = await append_all(inbox, incoming(clock, "a"))
            await inbox.claim("w", 1, LEASE)
            await inbox.ack([entry])
            await inbox.quarantine(rejection(received_at=T0 - 10))
            kept = await inbox.quarantine(rejection(received_at=T0 + 10))
            counted = await inbox.count_quarantined(T0)
            everything = await inbox.count_quarantined()
            purged = await inbox.purge_quarantine(T0)
            left = [r.id for r in await inbox.quarantined()]
            return counted, everything, purged, left, kept, len(await inbox.find(Selection()))

    counted, everything, purged, left, kept, entries = asyncio.run(scenario())
    assert (counted, everything, purged) == (1, 2, 1)
    assert left == [kept]
    assert entries == 1


def test_purge_records_the_tracked_entries_it_deleted_until_forgotten(
    inbox_factory: InboxFactory,
    clock: FakeClock,
) -> None:
    tracked, untracked = "deviceAdded", "deviceModelAdded"
    assert tracked in TRACKED_TYPES and untracked not in TRACKED_TYPES

    async def scenario() -> tuple[Purged | None, Purged | None, Purged | None]:
        async with inbox_factory() as inbox:
            ids = await append_all(
                inbox,
                incoming(clock, "a", device="d1", type=tracked, received_at=T0),
                incoming(clock, "b", device="d2", type=untracked, received_at=T0 + 1),
                incoming(clock, "c", device="d3", type=tracked, received_at=T0 + 2),
                incoming(clock, "d", device="d4", type=tracked, received_at=T0 + 90),
            )
            clock.now = T0 + 100
            await inbox.claim("w", 10, LEASE)
            await inbox.ack(ids)
            before = await inbox.purged()
            await inbox.purge(T0 + 50, batch=1)
            recorded = await inbox.purged()
            await inbox.forget_purged()
            return before, recorded, await inbox.purged()

    before, recorded, after = asyncio.run(scenario())
    assert before is None and after is None
    assert recorded == Purged(2, T0, T0 + 2, T0 + 100, 3)
