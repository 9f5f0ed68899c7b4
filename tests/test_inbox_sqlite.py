"""What only the SQLite inbox promises: a file that survives restarts, group commit, honest
unavailability under a foreign lock, the server's lock file, its pragmas, and store URLs."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from iotpush.exceptions import ConfigError, InboxUnavailable
from iotpush.inbox import Accepted, Entry, Incoming, Selection, open_inbox
from iotpush.inbox.memory import MemoryInbox
from iotpush.inbox.sqlite import SQLiteInbox
from tests._inbox import (
    LEASE,
    RECEIVE,
    FakeClock,
    attached_owner_claims,
    handoff_waits_in_one_transaction,
    incoming,
)
from tests.conftest import run


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "inbox.db"


def sql(path: Path, query: str) -> Any:
    """The first value ``query`` gives on a connection of our own (another process's view)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(query).fetchone()[0]


# durability ----------------------------------------------------------------------------------


def test_sqlite_entry_and_its_key_survive_close_and_reopen(db_path: Path, clock: FakeClock) -> None:
    item = incoming(clock, "a", body=b"\x00\xff raw", headers={"x-request-id": "r-1"})

    async def before_restart() -> Entry:
        async with SQLiteInbox(db_path, clock=clock) as inbox:
            accepted = await inbox.append(item)
            return await inbox.get(accepted.id)

    async def after_restart(id: int) -> tuple[Entry, Accepted, Accepted]:
        async with SQLiteInbox(db_path, clock=clock) as inbox:
            return (
                await inbox.get(id),
                await inbox.append(item),
                await inbox.append(incoming(clock, "b")),
            )

    kept = asyncio.run(before_restart())
    reopened, repeat, other = asyncio.run(after_restart(kept.id))
    assert reopened == kept
    assert repeat == Accepted(kept.id, duplicate=True)
    assert other.id > kept.id


def test_sqlite_delivery_state_survives_close_and_reopen(db_path: Path, clock: FakeClock) -> None:
    async def before_restart() -> list[int]:
        async with SQLiteInbox(db_path, clock=clock) as inbox:
            ids = [(await inbox.append(incoming(clock, k, device=k))).id for k in "abc"]
            await inbox.claim("w", 10, LEASE)
            await inbox.ack([ids[0]])
            await inbox.dead(ids[1], "boom", 4)
            await inbox.fail(ids[2], "later", 2, clock.now + 60)
            return ids

    async def after_restart(ids: list[int]) -> list[Entry]:
        async with SQLiteInbox(db_path, clock=clock) as inbox:
            return [await inbox.get(id) for id in ids]

    done, dead, failed = asyncio.run(after_restart(asyncio.run(before_restart())))
    assert (done.state, done.finished_at) == ("done", clock.now)
    assert (dead.state, dead.last_error, dead.attempts) == ("dead", "boom", 4)
    assert (failed.state, failed.owner, failed.due_at) == ("claimed", "w", clock.now + 60)


# group commit --------------------------------------------------------------------------------


def test_sqlite_concurrent_appends_share_commits_and_all_persist(
    db_path: Path, clock: FakeClock
) -> None:
    async def scenario() -> tuple[list[Accepted], int, int, list[Entry]]:
        async with SQLiteInbox(db_path, clock=clock) as inbox:
            accepted = await asyncio.gather(
                *(inbox.append(incoming(clock, f"k{i}", device=f"d{i % 7}")) for i in range(500))
            )
            commits, writes = inbox.commits, inbox.writes
        async with SQLiteInbox(db_path, clock=clock) as reopened:
            stored = await reopened.find(Selection(), limit=1000)
        return accepted, commits, writes, stored

    accepted, commits, writes, stored = asyncio.run(scenario())
    assert not any(a.duplicate for a in accepted)
    assert [e.id for e in stored] == sorted(a.id for a in accepted)
    assert len(stored) == 500
    assert writes == 500
    assert commits < 250  # batched: far fewer transactions than writes


# unavailability ------------------------------------------------------------------------------


def test_sqlite_append_while_another_process_holds_the_write_lock_raises_unavailable(
    db_path: Path, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with SQLiteInbox(db_path, clock=clock, busy_timeout=0.2) as inbox:
            before = await inbox.append(incoming(clock, "before"))
            blocker = sqlite3.connect(db_path, isolation_level=None)
            try:
                blocker.execute("BEGIN IMMEDIATE")
                with pytest.raises(InboxUnavailable):
                    await inbox.append(incoming(clock, "during"))
                assert (await inbox.get(before.id)).key == "before"  # WAL: reads go on
            finally:
                blocker.close()  # ends its transaction, releasing the lock
            retried = await inbox.append(incoming(clock, "during"))
            keys = [e.key for e in await inbox.find(Selection())]
        assert not retried.duplicate  # nothing of the failed append was kept
        assert keys == ["before", "during"]

    asyncio.run(scenario())


def test_sqlite_append_before_open_raises_unavailable(db_path: Path, clock: FakeClock) -> None:
    inbox = SQLiteInbox(db_path, clock=clock)
    with pytest.raises(InboxUnavailable):
        asyncio.run(inbox.append(incoming(clock)))


# exclusive -----------------------------------------------------------------------------------


def test_sqlite_exclusive_takes_a_lock_file_a_second_server_raises_config_error(
    db_path: Path, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with SQLiteInbox(db_path, clock=clock, exclusive=True):
            assert Path(f"{db_path}.lock").exists()
            with pytest.raises(ConfigError):
                async with SQLiteInbox(db_path, clock=clock, exclusive=True):
                    pass
            async with SQLiteInbox(db_path, clock=clock) as tool:  # operator tools still open
                assert (await tool.stats()).total == 0
        async with SQLiteInbox(db_path, clock=clock, exclusive=True) as next_server:
            assert (await next_server.stats()).total == 0  # the lock went with the first

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("exclusive", "state", "owner"),
    [(True, "pending", None), (False, "claimed", "dead-server")],
    ids=["exclusive-gives-back", "shared-keeps"],
)
def test_sqlite_open_claims_a_previous_server_left(
    db_path: Path, clock: FakeClock, exclusive: bool, state: str, owner: str | None
) -> None:
    async def scenario() -> None:
        async with SQLiteInbox(db_path, clock=clock) as old:
            id = (await old.append(incoming(clock))).id
            await old.claim("dead-server", 10, LEASE)
            assert await old.begin("dead-server", id, 1)
        async with SQLiteInbox(db_path, clock=clock, exclusive=exclusive) as new:
            entry = await new.get(id)
            claimed = await new.claim("new-server", 10, LEASE)  # the clock has not moved
        assert (entry.state, entry.owner, entry.attempts) == (state, owner, 1)
        assert [e.id for e in claimed] == ([id] if exclusive else [])

    asyncio.run(scenario())


@pytest.mark.parametrize("exclusive", [True, False], ids=["server", "operator"])
def test_sqlite_outbox_survives_reopen_and_a_server_takes_back_a_dead_servers_leases(
    db_path: Path, clock: FakeClock, exclusive: bool
) -> None:
    async def scenario() -> None:
        async with SQLiteInbox(db_path, clock=clock, outbox=["s"]) as old:
            id = (await old.append(incoming(clock))).id
            await old.unpublished("s", "dead-server", 10, LEASE)
        async with SQLiteInbox(db_path, clock=clock, exclusive=exclusive, outbox=["s"]) as new:
            taken = await new.unpublished("s", "new-server", 10, LEASE)  # the clock has not moved
            stats = await new.stats()
        assert [e.id for e in taken] == ([id] if exclusive else [])
        assert stats.unpublished == {"s": 1}

    asyncio.run(scenario())


# pragmas -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("synchronous", "level"),
    [("OFF", 0), ("NORMAL", 1), ("FULL", 2), ("EXTRA", 3), ("normal", 1)],
    ids=["off", "normal", "full", "extra", "lower-case"],
)
def test_sqlite_open_uses_wal_and_the_chosen_synchronous(
    db_path: Path, clock: FakeClock, synchronous: Any, level: int
) -> None:
    query = "PRAGMA synchronous"

    async def scenario() -> tuple[str, int, int]:
        async with SQLiteInbox(db_path, clock=clock, synchronous=synchronous) as inbox:
            await inbox.append(incoming(clock))
            journal = sql(db_path, "PRAGMA journal_mode")
            # synchronous is per connection: ask the writer's and a reader's own.
            writer = await inbox._write(lambda conn: conn.execute(query).fetchone()[0])
            reader = await inbox._read(lambda conn: conn.execute(query).fetchone()[0])
        return journal, writer, reader

    assert asyncio.run(scenario()) == ("wal", level, level)


@pytest.mark.parametrize(
    "synchronous", ["SOMETIMES", "", "FULL; DROP TABLE inbox"], ids=["word", "empty", "injection"]
)
def test_sqlite_invalid_synchronous_raises_config_error(db_path: Path, synchronous: Any) -> None:
    with pytest.raises(ConfigError, match="synchronous"):
        SQLiteInbox(db_path, synchronous=synchronous)


# store URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///rel.db", "rel.db"),
        ("sqlite:///data/rel.db", "data/rel.db"),
        ("sqlite:////abs/path.db", "/abs/path.db"),
        ("plain.db", "plain.db"),
        ("/abs/plain.db", "/abs/plain.db"),
    ],
    ids=["relative", "relative-folder", "absolute", "plain-relative", "plain-absolute"],
)
def test_open_inbox_sqlite_url_names_the_file(url: str, path: str) -> None:
    inbox = open_inbox(url, busy_timeout=1.5)
    assert isinstance(inbox, SQLiteInbox)
    assert (inbox.path, inbox.busy_timeout) == (Path(path), 1.5)


@pytest.mark.parametrize("form", ["relative", "absolute"], ids=["relative", "absolute"])
def test_open_inbox_sqlite_url_creates_the_file_where_it_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock, form: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    url = "sqlite:///rel.db" if form == "relative" else f"sqlite:///{tmp_path}/elsewhere/abs.db"
    expected = tmp_path / ("rel.db" if form == "relative" else "elsewhere/abs.db")

    async def scenario() -> None:
        async with open_inbox(url, clock=clock) as inbox:
            await inbox.append(incoming(clock))

    asyncio.run(scenario())
    assert sql(expected, "SELECT count(*) FROM inbox") == 1


def test_open_inbox_memory_url_makes_a_memory_inbox_with_the_options(clock: FakeClock) -> None:
    inbox = open_inbox("memory://", dedupe_window=5.0, clock=clock)
    assert isinstance(inbox, MemoryInbox)
    assert (inbox.dedupe_window, inbox.clock) == (5.0, clock)


@pytest.mark.parametrize(
    "url", ["redis://localhost/0", "ftp://host/inbox.db"], ids=["redis", "ftp"]
)
def test_open_inbox_unsupported_scheme_raises_config_error(url: str) -> None:
    scheme = url.split("://", 1)[0]
    with pytest.raises(ConfigError, match=scheme):
        open_inbox(url)


def test_sqlite_attached_owner_gets_new_entries_claimed_after_commit(
    db_path: Path, clock: FakeClock
) -> None:
    async def scenario() -> Entry:
        async with SQLiteInbox(db_path, clock=clock) as inbox:
            return await attached_owner_claims(inbox, clock)

    assert run(scenario()).lease_until == clock.now + 30


def test_sqlite_handoff_waits_for_entries_opened_in_the_same_transaction(
    db_path: Path, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with SQLiteInbox(db_path, clock=clock) as inbox:
            handed = await handoff_waits_in_one_transaction(inbox, clock)
            await inbox.claim("them", 10, LEASE)
            theirs = [e.id for e in await inbox.find(Selection()) if e.owner == "them"]
            await inbox.ack(theirs)  # d1's three entries: no entry is open now but mine
            assert len(theirs) == 3
            # In one transaction: an append handed over, a write that gives entries back, then
            # an append of a device whose entry it gave back.
            first, released, after = await asyncio.gather(
                inbox.append(incoming(clock, "g", device="d4")),
                inbox.release("me"),
                inbox.append(incoming(clock, "h", device="d2")),
            )
            assert released == 3  # d2's, d3's and d4's
            assert handed[2:] == [first.id]
            assert (await inbox.get(after.id)).state == "pending"

    run(scenario())


def test_sqlite_attached_owner_does_not_take_a_device_another_owner_holds(
    db_path: Path, clock: FakeClock
) -> None:
    handed: list[list[Entry]] = []

    async def scenario() -> None:
        async with SQLiteInbox(db_path, clock=clock) as inbox:
            await inbox.append(incoming(clock, "a", device="d1"))
            assert len(await inbox.claim("other", 10, 30)) == 1
            inbox.attach("me", on_claimed=handed.append)
            later = await inbox.append(incoming(clock, "b", device="d1"))
            elsewhere = await inbox.append(incoming(clock, "c", device="d2"))
            assert (await inbox.get(later.id)).state == "pending"
            assert [e.id for batch in handed for e in batch] == [elsewhere.id]

    run(scenario())


def test_sqlite_transact_failing_function_leaves_nothing_and_others_commit(
    db_path: Path, clock: FakeClock
) -> None:
    def half_then_fail(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO command_expectations VALUES ('c-bad', 'd', 1.0, 1.0)")
        raise RuntimeError("halfway")

    def fine(db: sqlite3.Connection) -> str:
        db.execute("INSERT INTO command_expectations VALUES ('c-ok', 'd', 1.0, 1.0)")
        return "ok"

    async def scenario() -> list[Any]:
        async with SQLiteInbox(db_path, clock=clock) as inbox:
            results = await asyncio.gather(
                inbox.transact(half_then_fail), inbox.transact(fine), return_exceptions=True
            )
            rows = await inbox.read(
                lambda db: db.execute("SELECT command_id FROM command_expectations").fetchall()
            )
            return [results, rows]

    (failed, ok), rows = run(scenario())
    assert isinstance(failed, RuntimeError) and ok == "ok"
    assert rows == [("c-ok",)]


class Flaky:
    """A projection that fails on the device ``broken``, after the trackers ran for it."""

    name = "flaky"
    handles = frozenset({"deviceDataChanged"})

    def apply(self, db: Any, entry_id: int, received_at: float, notification: Any) -> None:
        if notification.device_id == "broken":
            raise RuntimeError("tracker bug")

    def reset(self, db: Any) -> None:
        pass


def test_sqlite_projection_failure_keeps_the_entry_and_the_other_entries_state(
    db_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    from iotpush import testing, trackers

    projections = (*trackers.PROJECTIONS, Flaky())

    def item(device: str) -> Incoming:
        n = testing.build("deviceDataChanged", device_id=device, seed=len(device))
        return Incoming.from_notification(
            n, body=n.raw, path=RECEIVE, headers={}, received_at=clock.now
        )

    async def scenario() -> list[Any]:
        async with SQLiteInbox(db_path, clock=clock, projections=projections) as inbox:
            results = await asyncio.gather(
                *(inbox.append(item(d)) for d in ("ok1", "broken", "ok2"))
            )
            assert all(not r.duplicate for r in results)
            assert len(await inbox.find(Selection())) == 3
            return await inbox.read(
                lambda db: [trackers.get_device(db, d) for d in ("ok1", "broken", "ok2")]
            )

    ok1, broken, ok2 = run(scenario())
    assert ok1 is not None and ok2 is not None
    assert broken is None  # its tracker changes alone were rolled back
    assert "tracking entry 2 failed" in caplog.text


def test_sqlite_only_entries_left_pending_wake_the_claimer(db_path: Path, clock: FakeClock) -> None:
    async def scenario() -> list[bool]:
        async with SQLiteInbox(db_path, clock=clock) as inbox:
            woken = []
            room = [True]
            inbox.attach("me", on_claimed=lambda entries: None, has_room=lambda: room[0])
            await inbox.claim("me", 1, 30)  # clears the signal
            await inbox.append(incoming(clock, "a", device="d1"))  # handed over
            woken.append(inbox._work is not None and inbox._work.is_set())
            room[0] = False
            await inbox.append(incoming(clock, "b", device="d2"))  # left pending
            woken.append(inbox._work is not None and inbox._work.is_set())
            return woken

    assert run(scenario()) == [False, True]


def test_sqlite_ids_after_state_slot_changes_and_duplicates_are_consecutive(
    db_path: Path, clock: FakeClock
) -> None:
    # deviceAdded then deviceInfoChanged share a slot; a duplicate is counted on its entry.
    keys = ["added", "info", "info", "data", "info-2"]
    slots = ["registry:d", "registry:d", "registry:d", "data", "registry:d"]

    async def scenario() -> list[Accepted]:
        async with SQLiteInbox(db_path, clock=clock) as inbox:
            return [
                await inbox.append(incoming(clock, k, slot=s))
                for k, s in zip(keys, slots, strict=True)
            ]

    accepted = asyncio.run(scenario())
    assert [(a.id, a.duplicate) for a in accepted] == [
        (1, False), (2, False), (2, True), (3, False), (4, False)
    ]  # fmt: skip
    assert sql(db_path, "SELECT duplicates FROM inbox WHERE id = 2") == 1


def test_sqlite_close_waits_for_a_read_under_way(tmp_path: Path) -> None:
    async def main() -> None:
        inbox = SQLiteInbox(tmp_path / "i.db")
        await inbox.open()
        started, release = threading.Event(), threading.Event()

        def slow(conn: sqlite3.Connection) -> Any:
            started.set()
            release.wait(10)
            return conn.execute("SELECT 1").fetchone()

        read = asyncio.create_task(inbox._read(slow))
        await asyncio.to_thread(started.wait, 10)
        read.cancel()  # as a watchdog stopped at shutdown: its thread goes on
        closing = asyncio.create_task(inbox.close())
        await asyncio.sleep(0.2)
        waited = not closing.done()
        release.set()
        await closing
        assert waited  # the connection was not closed under the read
        assert read.cancelled()

    run(main())
