"""The inbox contract: retention purges what is older than it, and keeps what it must.

Written once, run against every backend through ``inbox_factory`` (``tests/conftest.py``), with
the `FakeClock` injected in the inbox and in `Retention`: time passes by moving it.
"""

from __future__ import annotations

import asyncio

import pytest

from iotpush import testing
from iotpush.events import Events, PurgeRound
from iotpush.exceptions import RebuildRefused
from iotpush.inbox import Inbox, Selection
from iotpush.retention import Retention
from iotpush.trackers import FINISHED, HISTORIES, apply_all, get_command
from iotpush.tracking import Tracking, finished_by_rebuild
from tests._inbox import LEASE, SINK, T0, FakeClock, InboxFactory, append_all, ids_of, incoming

KEEP = 100.0


def retention(inbox: Inbox, clock: FakeClock, events: Events | None = None) -> Retention:
    return Retention(inbox, HISTORIES, keep=KEEP, batch=2, clock=clock, events=events)


def test_retention_purges_delivered_entries_only_and_records_the_purge(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    rounds: list[PurgeRound] = []
    events = Events()
    events.subscribe(rounds.append, PurgeRound)

    async def scenario() -> None:
        async with inbox_factory(outbox=(SINK,)) as inbox:
            ids = await append_all(
                inbox,
                *(incoming(clock, f"old-done-{i}", device=f"a{i}", received_at=T0 + i)
                  for i in range(5)),
                incoming(clock, "old-dead", device="d2", received_at=T0 + 10),
                incoming(clock, "old-unpublished", device="d3", received_at=T0 + 20),
                incoming(clock, "new-done", device="d4", received_at=T0 + 200),
            )  # fmt: skip
            *old_done, old_dead, old_unpublished, new_done = ids
            clock.now = T0 + 210
            await inbox.claim("w", 10, LEASE)
            await inbox.ack([*old_done, old_unpublished, new_done])
            await inbox.dead(old_dead, "boom", 1)
            await inbox.published(SINK, [i for i in ids if i != old_unpublished])
            (old_pending,) = await append_all(
                inbox, incoming(clock, "old-pending", device="d5", received_at=T0 + 30)
            )
            first = await retention(inbox, clock, events).purge()
            kept = ids_of(await inbox.find(Selection()))
            purged = await inbox.purged()
            again = await retention(inbox, clock, events).purge()
        assert first.purged["entries"] == 5  # in batches of 2
        assert first.before == T0 + 210 - KEEP
        assert set(first.purged) == {"entries", *(history.table for history in HISTORIES)}
        assert kept == [old_dead, old_unpublished, new_done, old_pending]
        assert purged is not None and purged.entries == 5  # deviceDataChanged: tracked
        assert (purged.first_received, purged.last_received) == (T0, T0 + 4)
        assert again.purged["entries"] == 0
        assert rounds == [first, again]

    asyncio.run(scenario())


def nb(code: str, command: str = "c1") -> object:
    result = {"result_code": code, "result_detail": None}
    return testing.build("nbCommandStatusChanged", command_id=command, device_id="d1",
                         result=result)  # fmt: skip


def test_retention_purges_histories_and_keeps_the_current_state(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            pushes = [(1, T0, "SENT"), (2, T0 + 1, "DELIVERED"), (3, T0 + 2, "SUCCESSFUL"),
                      (4, T0 + 3, "SENT"), (5, T0 + 150, "FAILED")]  # fmt: skip
            for entry_id, at, code in pushes:
                notification = nb(code)
                await inbox.transact(
                    lambda db, i=entry_id, t=at, n=notification: apply_all(db, i, t, n)
                )
            clock.now = T0 + 200
            round = await retention(inbox, clock).purge()
            record = await inbox.read(lambda db: get_command(db, "c1"))
        assert round.purged["command_events"] == 3
        assert record is not None
        assert (record.state, record.state_entry_id) == ("SUCCESSFUL", 3)
        assert [e.entry_id for e in record.history] == [3, 5]

    asyncio.run(scenario())


def test_retention_purges_merge_into_one_record_and_rebuild_says_so(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            for n in range(3):  # three rounds, each purging one entry
                (id,) = await append_all(inbox, incoming(clock, f"k{n}", received_at=clock.now))
                await inbox.claim("w", 10, LEASE)
                await inbox.ack([id])
                clock.advance(KEEP + 1)
                assert (await retention(inbox, clock).purge()).purged["entries"] == 1
            purged = await inbox.purged()
            rows = None
            if type(inbox).__name__ != "MemoryInbox":
                sql = "SELECT count(*) FROM purges"
                rows = await inbox.read(lambda db: db.execute(sql).fetchone()[0])
            with pytest.raises(RebuildRefused, match="3 notifications that were purged"):
                await Tracking(inbox).rebuild()
        assert purged is not None and purged.entries == 3
        assert purged.first_received == T0
        assert rows in (None, 1)  # not one row per batch: the table stays small

    asyncio.run(scenario())


def test_retention_deletes_finished_records_after_their_own_bound_and_rebuild_says_so(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            pushes = [(1, T0, nb("SUCCESSFUL", "done")), (2, T0, nb("SENT", "open")),
                      (3, T0 + 250, nb("FAILED", "young"))]  # fmt: skip
            for entry_id, at, notification in pushes:
                await inbox.transact(
                    lambda db, i=entry_id, t=at, n=notification: apply_all(db, i, t, n)
                )
            clock.now = T0 + 400
            rounds = Retention(inbox, HISTORIES, keep=KEEP, finished=FINISHED,
                               finished_keep=3 * KEEP, batch=2, clock=clock)  # fmt: skip
            round = await rounds.purge()
            again = await rounds.purge()
            left = [await inbox.read(lambda db, c=c: get_command(db, c)) for c in
                    ("done", "open", "young")]  # fmt: skip
            plan = await Tracking(inbox).rebuild_plan()
        assert round.finished_before == T0 + 400 - 3 * KEEP
        assert round.purged["finished_commands"] == 1
        assert {k for k in round.purged if k.startswith("finished_")} == {
            f"finished_{records.kind}" for records in FINISHED
        }
        assert again.purged["finished_commands"] == 0
        assert [record is None for record in left] == [True, False, False]
        assert plan.finished == {"commands": (1, T0 + 100)}
        said = finished_by_rebuild(plan.finished)
        assert said is not None and said.startswith("finished-retention deleted 1 finished")

    asyncio.run(scenario())


def test_retention_without_finished_retention_keeps_finished_records(
    inbox_factory: InboxFactory, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with inbox_factory() as inbox:
            notification = nb("SUCCESSFUL", "done")
            await inbox.transact(lambda db: apply_all(db, 1, T0, notification))
            clock.now = T0 + 10 * KEEP
            round = await Retention(inbox, HISTORIES, keep=KEEP, finished=FINISHED,
                                    finished_keep=None, clock=clock).purge()  # fmt: skip
            record = await inbox.read(lambda db: get_command(db, "done"))
            plan = await Tracking(inbox).rebuild_plan()
        assert round.finished_before is None
        assert not any(k.startswith("finished_") for k in round.purged)
        assert record is not None
        assert plan.finished == {} and finished_by_rebuild(plan.finished) is None

    asyncio.run(scenario())
