"""`Tracking` on SQLite and PostgreSQL: expect and wait, the watchdog, rebuild."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iotpush import EntryNotFound, Notification, RebuildRefused, decode, open_inbox, testing
from iotpush.inbox import Inbox, Incoming
from iotpush.trackers import TRACKED_TYPES, CommandRecord
from iotpush.tracking import Tracking
from tests.conftest import run

T = TypeVar("T")


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def incoming(n: Notification, received_at: float) -> Incoming:
    """What the app hands the inbox for a push: the body as sent, decoded as the app decodes it."""
    body = testing.encode(n)
    decoded = decode(body, "command" if n.notify_type == "nbCommandStatusChanged" else "notify")
    path = testing.path_for(n)
    return Incoming.from_notification(
        decoded, body=body, path=path, headers={}, received_at=received_at
    )


async def receive(inbox: Inbox, n: Notification, received_at: float) -> None:
    """Persist a push as the app does (the inbox tracks it in the same transaction)."""
    await inbox.append(incoming(n, received_at))


def nb(command_id: str, device_id: str, code: str) -> Notification:
    result = {"result_code": code}
    return testing.build(
        "nbCommandStatusChanged", command_id=command_id, device_id=device_id, result=result
    )


@contextlib.asynccontextmanager
async def opened(store: str, clock: Callable[[], float]) -> AsyncIterator[Tracking]:
    options = {"synchronous": "OFF"} if store.startswith("sqlite:") else {}  # SQLite's only
    async with open_inbox(store, **options) as inbox:
        yield Tracking(inbox, clock=clock, poll_interval=0.01)


def with_tracking(store: str, fn: Callable[[Tracking], Awaitable[T]], clock: Any = None) -> T:
    async def main() -> T:
        async with opened(store, clock or Clock()) as tracking:
            return await fn(tracking)

    result: T = run(main())
    return result


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store of each test: a SQLite file, and a fresh PostgreSQL schema."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_store"))
    return f"sqlite:///{tmp_path / 'iotpush.db'}"


def execute_aside(store: str, sql: str) -> None:
    """Run ``sql`` on a connection of its own, as another program would."""
    if store.startswith("postgresql:"):
        from iotpush.inbox._postgres_db import parse_url

        with parse_url(store).connect() as conn:
            conn.execute(sql)
        return
    with contextlib.closing(sqlite3.connect(store.removeprefix("sqlite:///"))) as conn:
        conn.execute(sql)


# --- expect and wait --------------------------------------------------------------------------


def test_expect_new_command_is_pending_until_its_deadline(db: str) -> None:
    clock = Clock(1000.0)
    record = with_tracking(db, lambda t: t.expect("c-1", "d-1", timeout=300), clock)
    assert (record.state, record.terminal, record.device_id) == ("PENDING", False, "d-1")
    assert (record.expected_at, record.deadline) == (1000.0, 1300.0)
    assert not record.overdue(1300.0) and record.overdue(1300.5)


def test_wait_returns_the_terminal_record_when_successful_arrives(db: str) -> None:
    async def scenario(tracking: Tracking) -> tuple[bool, CommandRecord | None]:
        await tracking.expect("c-1", "d-1", timeout=60)
        waiter = asyncio.create_task(tracking.wait("c-1", timeout=30))
        await receive(tracking.inbox, nb("c-1", "d-1", "SENT"), 1001.0)
        await asyncio.sleep(0.05)
        waiting = not waiter.done()  # SENT is not final: still waiting
        await receive(tracking.inbox, nb("c-1", "d-1", "SUCCESSFUL"), 1002.0)
        return waiting, await waiter

    waiting, record = with_tracking(db, scenario)
    assert waiting
    assert record is not None
    assert (record.state, record.terminal) == ("SUCCESSFUL", True)
    assert [e.code for e in record.history] == ["SENT", "SUCCESSFUL"]


def test_wait_returns_none_when_the_timeout_passes_first(db: str) -> None:
    async def scenario(tracking: Tracking) -> list[CommandRecord | None]:
        await tracking.expect("c-1", "d-1", timeout=60)
        await receive(tracking.inbox, nb("c-1", "d-1", "DELIVERED"), 1001.0)
        return [await tracking.wait("c-1", timeout=0.05), await tracking.wait("nope", 0.05)]

    assert with_tracking(db, scenario) == [None, None]


def test_wait_returns_at_once_for_a_command_already_final(db: str) -> None:
    async def scenario(tracking: Tracking) -> CommandRecord | None:
        await receive(tracking.inbox, nb("c-1", "d-1", "FAILED"), 1001.0)
        return await tracking.wait("c-1", timeout=0)

    record = with_tracking(db, scenario)
    assert record is not None and record.state == "FAILED"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: t.command("nope"), "no command nope"),
        (lambda t: t.device("nope"), "no device nope"),
        (lambda t: t.upgrade("nope"), "no upgrade operation nope"),
    ],
    ids=["command", "device", "upgrade"],
)
def test_lookup_unknown_id_raises_entry_not_found(
    db: str, call: Callable[[Tracking], Awaitable[Any]], message: str
) -> None:
    with pytest.raises(EntryNotFound, match=message):
        with_tracking(db, call)


def test_expect_shadow_is_unsynced_until_a_matching_delivered_arrives(db: str) -> None:
    def shadow(value: int) -> Notification:
        return testing.build(
            "deviceDesiredPropertiesModifyStatusChanged", device_id="d-1", service_id="Device",
            status="DELIVERED", properties={"interval": value},
        )  # fmt: skip

    async def scenario(tracking: Tracking) -> list[list[tuple[str, bool]]]:
        await tracking.expect_shadow("d-1", "Device", {"interval": 2})
        seen = []
        for value in (1, 2):  # another write's DELIVERED first, then ours
            seen.append([(s.service_id, s.pending) for s in await tracking.unsynced()])
            await receive(tracking.inbox, shadow(value), 1001.0 + value)
        return [*seen, [(s.service_id, s.pending) for s in await tracking.unsynced()]]

    assert with_tracking(db, scenario) == [[("Device", True)], [("Device", True)], []]


# --- the watchdog -----------------------------------------------------------------------------


class Stop(Exception):
    """Raised by the injected sleep to end `Tracking.watch` after some rounds."""


def stop_after(rounds: int, clock: Clock, step: float) -> tuple[list[float], Any]:
    """An injected ``sleep``: moves ``clock`` by ``step`` and stops the watch after ``rounds``."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == rounds:
            raise Stop
        clock.now += step

    return slept, sleep


def test_watch_reports_each_overdue_command_once_and_calls_on_overdue(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(1000.0)
    slept, sleep = stop_after(4, clock, 15.0)  # checks at 1000, 1015, 1030, 1045
    reported: list[tuple[float, str]] = []

    async def scenario(tracking: Tracking) -> None:
        await tracking.expect("c-1", "d-1", timeout=10)  # overdue from 1015
        await tracking.expect("c-2", "d-1", timeout=20)  # overdue from 1030
        await tracking.expect("c-3", "d-1", timeout=10)  # answered in time: never
        await receive(tracking.inbox, nb("c-3", "d-1", "SUCCESSFUL"), 1001.0)
        with pytest.raises(Stop):
            await tracking.watch(
                lambda r: reported.append((clock.now, r.command_id)), interval=7, sleep=sleep
            )

    with caplog.at_level(logging.WARNING, logger="iotpush.tracking"):
        with_tracking(db, scenario, clock)
    assert reported == [(1015.0, "c-1"), (1030.0, "c-2")]
    assert slept == [7, 7, 7, 7]
    warnings = [r.getMessage() for r in caplog.records if r.name == "iotpush.tracking"]
    assert [w.split()[1] for w in warnings] == ["c-1", "c-2"]
    assert "overdue" in warnings[0]


def test_watch_awaits_an_async_on_overdue(db: str) -> None:
    clock = Clock(1000.0)
    _, sleep = stop_after(3, clock, 60.0)
    reported: list[str] = []

    async def on_overdue(record: CommandRecord) -> None:
        await asyncio.sleep(0)
        reported.append(record.command_id)

    async def scenario(tracking: Tracking) -> None:
        await tracking.expect("c-1", "d-1", timeout=10)
        with pytest.raises(Stop):
            await tracking.watch(on_overdue, interval=1, sleep=sleep)

    with_tracking(db, scenario, clock)
    assert reported == ["c-1"]


def test_watch_keeps_checking_when_the_store_fails(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(1000.0)
    slept, sleep = stop_after(3, clock, 1.0)

    async def scenario(tracking: Tracking) -> None:
        await tracking.expect("c-1", "d-1", timeout=10)
        execute_aside(db, "DROP TABLE command_events")
        with pytest.raises(Stop):
            await tracking.watch(interval=1, sleep=sleep)

    with caplog.at_level(logging.ERROR, logger="iotpush.tracking"):
        with_tracking(db, scenario, clock)
    assert len(slept) == 3
    failures = [r for r in caplog.records if "checking for overdue commands failed" in r.message]
    assert len(failures) == 3


# --- devices and upgrades ---------------------------------------------------------------------


def test_device_holds_its_most_recent_commands_and_counts_them_all(db: str) -> None:
    async def scenario(tracking: Tracking) -> list[Any]:
        await receive(tracking.inbox, testing.build("deviceAdded", device_id="d-1"), 1000.0)
        for command, at in [("c-1", 1001.0), ("c-3", 1003.0), ("c-2", 1003.0), ("c-4", 1002.0)]:
            await receive(tracking.inbox, nb(command, "d-1", "SENT"), at)
        await receive(tracking.inbox, nb("c-9", "d-2", "SENT"), 1009.0)
        views = [await tracking.device("d-1", commands=n) for n in (100, 2, 0)]
        return [([c.command_id for c in v.commands], v.commands_total) for v in views]

    assert with_tracking(db, scenario) == [
        (["c-2", "c-3", "c-4", "c-1"], 4), (["c-2", "c-3"], 4), ([], 4),
    ]  # fmt: skip


@pytest.mark.parametrize("commands", [-1, 1001], ids=["negative", "too-many"])
def test_device_commands_out_of_range_raises(db: str, commands: int) -> None:
    with pytest.raises(ValueError, match="commands must be between 0 and 1000"):
        with_tracking(db, lambda t: t.device("d-1", commands=commands))


def test_upgrades_page_with_the_last_cursor_through_ties_each_record_once(db: str) -> None:
    def state(device: str, operation: str) -> Notification:
        return testing.build(
            "swUpgradeStateChangeNotify", operation_id=operation, sub_operation_id="s",
            device_id=device, sw_upgrade_state="downloading",
        )  # fmt: skip

    async def scenario(tracking: Tracking) -> tuple[list[Any], list[Any], list[int]]:
        for i in range(7):  # three share one update time, four another
            await receive(tracking.inbox, state(f"d-{i % 2}", f"op-{i}"), 1001.0 + i % 2)
        pages: list[list[Any]] = []
        after: str | None = None
        while (page := await tracking.upgrades(limit=3, after=after)) and len(pages) < 7:
            pages.append(page)
            after = page[-1].cursor
        every = await tracking.upgrades(limit=1000)
        return [r for page in pages for r in page], every, [len(page) for page in pages]

    paged, every, sizes = with_tracking(db, scenario)
    assert sizes == [3, 3, 1]
    assert paged == every
    assert [(r.updated_at, r.operation_id) for r in every] == [
        (1002.0, "op-1"), (1002.0, "op-3"), (1002.0, "op-5"),
        (1001.0, "op-0"), (1001.0, "op-2"), (1001.0, "op-4"), (1001.0, "op-6"),
    ]  # fmt: skip


def test_upgrades_after_not_a_cursor_raises(db: str) -> None:
    with pytest.raises(ValueError, match="not a cursor of the upgrades list"):
        with_tracking(db, lambda t: t.upgrades(after="op-1"))


# --- rebuild ----------------------------------------------------------------------------------

DEVICES = ["d-1", "d-2"]
COMMANDS = ["c-1", "c-2", "c-9"]
OPERATIONS = ["op-1", "op-2"]

devices, operations = st.sampled_from(DEVICES), st.sampled_from(OPERATIONS)
commands = st.sampled_from(COMMANDS[:2])  # c-9 is only ever expected
pushes = st.one_of(
    st.builds(nb, commands, devices,
              st.sampled_from(["SENT", "DELIVERED", "SUCCESS", "FAILED", "TIMEOUT", "odd"])),
    st.builds(lambda c, s: testing.build("messageConfirm", header={"request_id": c, "status": s}),
              commands, st.sampled_from(["sent", "delivered", "executed"])),
    st.builds(lambda c, d: testing.build("commandRsp", header={"request_id": c, "device_id": d}),
              commands, devices),
    st.builds(lambda d, s: testing.build("deviceAdded", device_id=d, device_info={"status": s}),
              devices, st.sampled_from(["ONLINE", "OFFLINE"])),
    st.builds(lambda d, s: testing.build("deviceInfoChanged", device_id=d,
                                         device_info={"status": s, "sw_version": "1.0"}),
              devices, st.sampled_from(["ONLINE", "ABNORMAL"])),
    st.builds(lambda d: testing.build("deviceDeleted", device_id=d), devices),
    st.builds(lambda d, v, t: testing.build(
                  "deviceDataChanged", device_id=d,
                  service={"service_id": "Meter", "data": {"v": v},
                           "event_time": f"20261121T1000{t:02d}Z"}),
              devices, st.integers(0, 9), st.integers(0, 5)),
    st.builds(lambda d, s, v: testing.build(
                  "deviceDesiredPropertiesModifyStatusChanged", device_id=d, service_id="Device",
                  status=s, properties={"v": v}),
              devices, st.sampled_from(["DELIVERED", "FAILED"]), st.integers(0, 2)),
    st.builds(lambda op, d, step: testing.build(
                  "fwUpgradeStateChangeNotify", operation_id=op, sub_operation_id="s",
                  device_id=d, step=step),
              operations, devices, st.sampled_from("0123")),
    st.builds(lambda op, d, r: testing.build(
                  "swUpgradeResultNotify", operation_id=op, sub_operation_id="s", device_id=d,
                  sw_upgrade_result=r),
              operations, devices, st.sampled_from(["SUCCESS", "FAIL"])),
    st.builds(lambda: testing.build("ruleEvent")),
)  # fmt: skip


async def snapshot(t: Tracking) -> tuple[Any, ...]:
    """The answer of every query `Tracking` has, over every id the stream uses."""

    async def found(call: Awaitable[T]) -> T | None:
        try:
            return await call
        except EntryNotFound:
            return None

    return (
        [await found(t.command(c)) for c in COMMANDS],
        await t.commands(limit=1000),
        await t.commands(overdue=True, device="d-1"),
        await t.overdue(),
        [await found(t.device(d)) for d in DEVICES],
        await t.devices(include_deleted=True, limit=1000),
        await t.devices(status="ONLINE"),
        await t.unsynced(),
        [await found(t.upgrade(op)) for op in OPERATIONS],
        await t.upgrades(limit=1000),
    )


@settings(max_examples=30, deadline=None)
@given(stream=st.lists(pushes, min_size=1, max_size=20))
def test_rebuild_gives_the_answers_the_live_trackers_gave(
    tmp_path_factory: pytest.TempPathFactory, stream: list[Notification]
) -> None:
    store = f"sqlite:///{tmp_path_factory.mktemp('rebuild') / 'iotpush.db'}"
    clock = Clock(900.0)

    async def scenario(tracking: Tracking) -> tuple[Any, Any, int, list[int], int]:
        await tracking.expect("c-1", "d-1", timeout=100)
        await tracking.expect("c-9", "d-2", timeout=2000)
        await tracking.expect_shadow("d-1", "Device", {"v": 1})
        for index, push in enumerate(stream):
            await receive(tracking.inbox, push, 1000.0 + index)
        clock.now = 1500.0
        live = await snapshot(tracking)
        progress: list[int] = []
        applied = await tracking.rebuild(batch=3, progress=progress.append)
        kept = await tracking.notifications(limit=1000)
        tracked = sum(entry.type in TRACKED_TYPES for entry in kept)
        return live, await snapshot(tracking), applied, progress, tracked

    live, rebuilt, applied, progress, tracked = with_tracking(store, scenario, clock)
    assert rebuilt == live
    assert applied == tracked
    assert progress == sorted(progress) and progress[-1] == applied


def test_rebuild_restores_lost_tracker_rows_and_keeps_expectations(db: str) -> None:
    async def scenario(tracking: Tracking) -> tuple[Any, ...]:
        await tracking.expect("c-1", "d-1", timeout=60)
        await receive(tracking.inbox, testing.build("deviceAdded", device_id="d-1"), 1.0)
        await receive(tracking.inbox, nb("c-2", "d-1", "DELIVERED"), 2.0)
        before = await tracking.device("d-1")
        await tracking.inbox.transact(lambda conn: conn.execute("DELETE FROM devices"))
        lost = await tracking.devices(include_deleted=True)
        applied = await tracking.rebuild()
        return before, lost, applied, await tracking.device("d-1")

    before, lost, applied, after = with_tracking(db, scenario)
    assert lost == []
    assert applied == 2
    assert after == before
    assert [(c.command_id, c.state) for c in after.commands] == [
        ("c-1", "PENDING"), ("c-2", "DELIVERED"),
    ]  # fmt: skip


def test_rebuild_skips_an_entry_that_no_longer_decodes_and_logs_it(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A body kept from before a model change, which the models now refuse.
    stale = Incoming(
        body=b'{"notifyType":"deviceAdded"}', type="deviceAdded", device="d-0", key="k", slot="s",
        path="/", headers={}, received_at=1.0,
    )  # fmt: skip

    async def scenario(tracking: Tracking) -> tuple[int, list[str]]:
        await tracking.inbox.append(stale)
        await receive(tracking.inbox, testing.build("deviceAdded", device_id="d-1"), 2.0)
        applied = await tracking.rebuild()
        return applied, [d.device_id for d in await tracking.devices()]

    with caplog.at_level(logging.WARNING, logger="iotpush.tracking"):
        assert with_tracking(db, scenario) == (1, ["d-1"])
    assert any("rebuild skips entry 1 (deviceAdded)" in r.getMessage() for r in caplog.records)


def test_rebuild_after_a_purge_of_tracked_entries_refuses_naming_them(db: str) -> None:
    async def scenario(tracking: Tracking) -> tuple[Any, ...]:
        for index, device in enumerate(["d-1", "d-2", "d-3"]):
            await receive(tracking.inbox, testing.build("deviceAdded", device_id=device), index)
        await tracking.inbox.ack([e.id for e in await tracking.inbox.claim("w", 10, 60)])
        await receive(tracking.inbox, testing.build("deviceAdded", device_id="d-4"), 100.0)
        await tracking.inbox.purge(50.0)  # d-1 to d-3: their registry state is only tracked now
        before = [d.device_id for d in await tracking.devices()]
        with pytest.raises(RebuildRefused) as refused:
            await tracking.rebuild()
        kept = [d.device_id for d in await tracking.devices()]
        plan = await tracking.rebuild_plan()
        applied = await tracking.rebuild(discard_purged=True)
        after = [d.device_id for d in await tracking.devices()]
        return before, str(refused.value), kept, plan, applied, after, await tracking.rebuild()

    before, message, kept, plan, applied, after, again = with_tracking(db, scenario)
    assert before == kept == ["d-1", "d-2", "d-3", "d-4"]
    assert message.startswith("the trackers used 3 notifications that were purged (received")
    assert "1970-01-01T00:00:00.000Z to 1970-01-01T00:00:02.000Z" in message
    assert plan.purged is not None and plan.purged.entries == 3
    assert (applied, after) == (1, ["d-4"])  # discarded: the state is the kept entries' again
    assert again == 1  # the purge records went with the state they described
