"""The inbox contract: claims, per-device order, leases, ack, fail and dead.

Written once, run against every backend through ``inbox_factory`` (``tests/conftest.py``).

Time is a `FakeClock` injected as ``clock=``: leases and retries come due by moving it, never by
sleeping. Each test runs its scenario with ``asyncio.run`` (the suite needs no asyncio plugin).
"""

from __future__ import annotations

import asyncio

import pytest

from tests._inbox import (
    LEASE,
    T0,
    FakeClock,
    InboxFactory,
    append_all,
    ids_of,
    incoming,
    lease_left,
    pass_time,
)

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


def test_begins_at_once_each_answer_for_their_own_entry(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            a, b, c, d = await append_all(
                inbox, *(incoming(clock, k, device=f"dev-{k}") for k in "abcd")
            )
            await inbox.claim("A", 2, LEASE)
            await inbox.claim("B", 1, LEASE)
            begun = await asyncio.gather(
                inbox.begin("A", a, 1),
                inbox.begin("A", c, 1),  # B holds it
                inbox.begin("B", c, 3),
                inbox.begin("A", b, 2),
                inbox.begin("A", d, 1),  # nobody claimed it
            )
            stored = [await inbox.get(id) for id in (a, b, c, d)]
        assert begun == [True, False, True, True, False]
        assert [e.attempts for e in stored] == [1, 2, 3, 0]

    asyncio.run(scenario())


def test_begin_many_records_only_the_attempts_of_entries_the_owner_holds(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            a, b, c, d = await append_all(
                inbox, *(incoming(clock, k, device=f"dev-{k}") for k in "abcd")
            )
            await inbox.claim("A", 2, LEASE)
            await inbox.claim("B", 1, LEASE)
            begun = await inbox.begin_many("A", [(a, 1), (c, 1), (b, 2), (d, 1)])
            stored = [await inbox.get(id) for id in (a, b, c, d)]
        assert begun == {a, b}
        assert [e.attempts for e in stored] == [1, 2, 0, 0]

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
