"""The dispatcher over a memory inbox and a real SQLite file: handlers, retries, order, stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from iotpush import (
    DeviceDataChanged,
    Dispatcher,
    Entry,
    Inbox,
    NBCommandStatusChanged,
    Notification,
    PushMessageReceiver,
    Receiver,
    Selection,
    current_entry,
    legacy,
)
from iotpush.idempotency import key_and_slot
from iotpush.inbox import Incoming
from iotpush.inbox.memory import MemoryInbox
from iotpush.inbox.sqlite import SQLiteInbox
from iotpush.models import decode
from iotpush.tracking import Tracking
from tests.conftest import EXAMPLES, RECEIVE, run

NB_COMMAND = EXAMPLES["19-nbCommandStatusChanged"]
DEVICE_DELETED = EXAMPLES["07-deviceDeleted"]


def data_body(device: str, seq: int) -> bytes:
    """A ``deviceDataChanged`` push of ``device`` whose service data carries ``seq``."""
    return json.dumps(
        {
            "notifyType": "deviceDataChanged",
            "requestId": None,
            "deviceId": device,
            "gatewayId": device,
            "service": {
                "serviceId": "Meter",
                "serviceType": "Meter",
                "data": {"seq": seq},
                "eventTime": "20261121T101500Z",
            },
        }
    ).encode()


def nb_body(command_id: str, code: str, device: str = "dev-nb") -> bytes:
    """An NB-IoT command status push."""
    result = {"resultCode": code, "resultDetail": None}
    return json.dumps({"deviceId": device, "commandId": command_id, "result": result}).encode()


def incoming(body: bytes) -> Incoming:
    """What the app would append for ``body`` (NB-IoT command statuses on their own path)."""
    command = b'"notifyType"' not in body
    notification = decode(body, "command" if command else "notify")
    key, slot = key_and_slot(notification)
    return Incoming(
        body=body,
        type=notification.notify_type,
        device=notification.device,
        key=key,
        slot=slot,
        path=f"{RECEIVE}/cmd" if command else RECEIVE,
        headers={"content-type": "application/json"},
        received_at=time.time(),
        notification=notification,
    )


async def append(inbox: Inbox, *bodies: bytes) -> list[int]:
    """Append ``bodies`` in order; return their entry ids."""
    return [(await inbox.append(incoming(body))).id for body in bodies]


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    """Poll ``check`` until it is true; fail the test after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")


async def all_in(inbox: Inbox, ids: list[int], state: str) -> list[Entry]:
    """Wait until every entry of ``ids`` is in ``state``; return them."""

    async def check() -> bool:
        return all([(await inbox.get(id)).state == state for id in ids])

    await until(check, f"entries {ids} to be {state}")
    return [await inbox.get(id) for id in ids]


async def count_in(inbox: Inbox, state: str, count: int) -> None:
    """Wait until ``count`` entries are in ``state``."""

    async def check() -> bool:
        return (await inbox.stats()).by_state.get(state, 0) == count

    await until(check, f"{count} entries to be {state}")


@contextlib.asynccontextmanager
async def dispatching(
    inbox: Inbox, receiver: Receiver, **options: Any
) -> AsyncIterator[Dispatcher]:
    """A started dispatcher, stopped on the way out."""
    options.setdefault("poll_interval", 0.01)
    dispatcher = Dispatcher(inbox, receiver, **options)
    await dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.stop(grace=5)


@pytest.fixture(params=["memory", "sqlite"])
def new_inbox(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Inbox]:
    """Makes the inbox under test (open it inside the test's event loop)."""
    if request.param == "memory":
        return MemoryInbox
    return lambda: SQLiteInbox(tmp_path / "inbox.db")


def recorded(delays: list[float]) -> Callable[[float], Awaitable[None]]:
    """A backoff ``sleep`` that records each delay instead of waiting (but lets others run)."""

    async def sleep(delay: float) -> None:
        delays.append(delay)
        await asyncio.sleep(0)

    return sleep


# --- handlers ----------------------------------------------------------------------------------


def test_dispatcher_each_entry_runs_specific_then_catch_all_handlers_in_order(
    new_inbox: Callable[[], Inbox],
) -> None:
    calls: dict[int, list[str]] = defaultdict(list)
    receiver = Receiver()

    @receiver.on(DeviceDataChanged)
    async def first(n: DeviceDataChanged) -> None:
        calls[current_entry().id].append("first")

    @receiver.on("deviceDataChanged")
    def second(n: DeviceDataChanged) -> None:  # plain: runs in a thread
        calls[current_entry().id].append("second")

    @receiver.on()
    def everything(n: Notification) -> None:
        calls[current_entry().id].append(f"any:{n.notify_type}")

    async def main() -> None:
        async with new_inbox() as inbox:
            data = await append(inbox, *(data_body(f"dev-{i}", i) for i in range(3)))
            others = await append(inbox, DEVICE_DELETED, NB_COMMAND)
            async with dispatching(inbox, receiver):
                entries = await all_in(inbox, data + others, "done")
        assert {id: calls[id] for id in data} == {
            id: ["first", "second", "any:deviceDataChanged"] for id in data
        }
        assert [calls[id] for id in others] == [
            ["any:deviceDeleted"],
            ["any:nbCommandStatusChanged"],
        ]
        assert [e.attempts for e in entries] == [1] * 5

    asyncio.run(main())


def test_dispatcher_entry_done_only_after_every_handler_returned(
    new_inbox: Callable[[], Inbox],
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    returned: list[str] = []
    receiver = Receiver()

    @receiver.on()
    def quick(n: Notification) -> None:
        returned.append("quick")

    @receiver.on()
    async def slow(n: Notification) -> None:
        entered.set()
        await release.wait()
        returned.append("slow")

    async def main() -> None:
        async with new_inbox() as inbox:
            [id] = await append(inbox, DEVICE_DELETED)
            async with dispatching(inbox, receiver):
                await asyncio.wait_for(entered.wait(), 20)
                assert returned == ["quick"]
                assert (await inbox.get(id)).state == "claimed"
                release.set()
                [entry] = await all_in(inbox, [id], "done")
        assert returned == ["quick", "slow"]
        assert entry.finished_at is not None

    asyncio.run(main())


def test_dispatcher_current_entry_inside_handler_is_the_delivered_entry(
    new_inbox: Callable[[], Inbox],
) -> None:
    seen: list[tuple[int, str, str | None, str]] = []
    receiver = Receiver()

    @receiver.on()
    async def record(n: Notification) -> None:
        entry = current_entry()
        seen.append((entry.id, entry.type, entry.device, entry.path))

    async def main() -> None:
        async with new_inbox() as inbox:
            ids = await append(inbox, NB_COMMAND)
            async with dispatching(inbox, receiver):
                await all_in(inbox, ids, "done")
        device = json.loads(NB_COMMAND)["deviceId"]
        assert seen == [(ids[0], "nbCommandStatusChanged", device, f"{RECEIVE}/cmd")]

    asyncio.run(main())


# --- retries -----------------------------------------------------------------------------------


def test_dispatcher_failing_handler_backs_off_exponentially_then_dead_letters(
    new_inbox: Callable[[], Inbox],
) -> None:
    delays: list[float] = []
    calls: list[int] = []
    broken = True
    receiver = Receiver()

    @receiver.on()
    def flaky(n: Notification) -> None:
        calls.append(current_entry().attempts)
        if broken:
            raise RuntimeError("the meter database is unreachable")

    async def main() -> None:
        nonlocal broken
        options = {"max_attempts": 6, "backoff": 0.5, "max_backoff": 3.0}
        async with new_inbox() as inbox:
            [id] = await append(inbox, data_body("dev-1", 1))
            async with dispatching(
                inbox, receiver, sleep=recorded(delays), jitter=lambda: 1.0, **options
            ):
                [dead] = await all_in(inbox, [id], "dead")
                assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
                assert calls == [1, 2, 3, 4, 5, 6]  # what current_entry() says
                assert dead.attempts == 6
                assert dead.last_error is not None
                assert dead.last_error.startswith("Traceback")
                assert "RuntimeError: the meter database is unreachable" in dead.last_error
                assert "in flaky" in dead.last_error

                broken = False
                assert await inbox.replay(Selection(states=["dead"])) == 1
                [done] = await all_in(inbox, [id], "done")
            assert calls == [1, 2, 3, 4, 5, 6, 1]  # the replay delivered it once, afresh
            assert done.attempts == 1
            assert await inbox.find(Selection(states=["dead"])) == []

    asyncio.run(main())


def test_dispatcher_jitter_shortens_the_backoff_by_at_most_half(
    new_inbox: Callable[[], Inbox],
) -> None:
    delays: list[float] = []
    jitters = iter([0.0, 0.5])
    receiver = Receiver()

    @receiver.on()
    def fails(n: Notification) -> None:
        raise ValueError("bad reading")

    async def main() -> None:
        async with new_inbox() as inbox:
            ids = await append(inbox, DEVICE_DELETED)
            async with dispatching(
                inbox,
                receiver,
                max_attempts=3,
                backoff=2.0,
                sleep=recorded(delays),
                jitter=lambda: next(jitters),
            ):
                await all_in(inbox, ids, "dead")
        assert delays == [1.0, 3.0]  # 2 s x (0.5 + 0/2), then 4 s x (0.5 + 0.5/2)

    asyncio.run(main())


def test_dispatcher_retry_is_recorded_in_the_inbox_before_the_wait(
    new_inbox: Callable[[], Inbox],
) -> None:
    waiting, proceed = asyncio.Event(), asyncio.Event()
    clock_now = 1_800_000_000.0
    receiver = Receiver()

    async def held_sleep(delay: float) -> None:
        waiting.set()
        await proceed.wait()

    @receiver.on()
    def failing_until_told(n: Notification) -> None:
        if not proceed.is_set():
            raise ConnectionError("broker refused")

    async def main() -> None:
        async with new_inbox() as inbox:
            [id] = await append(inbox, DEVICE_DELETED)
            async with dispatching(
                inbox,
                receiver,
                backoff=4.0,
                jitter=lambda: 1.0,
                sleep=held_sleep,
                clock=lambda: clock_now,
            ):
                await asyncio.wait_for(waiting.wait(), 20)
                retrying = await inbox.get(id)
                assert retrying.state == "claimed"
                assert retrying.due_at == clock_now + 4.0
                assert retrying.last_error is not None
                assert "ConnectionError: broker refused" in retrying.last_error
                proceed.set()
                await all_in(inbox, [id], "done")

    asyncio.run(main())


@pytest.mark.parametrize("style", ["async", "sync"])
def test_dispatcher_hanging_handler_times_out_as_a_failed_attempt(
    new_inbox: Callable[[], Inbox], style: str
) -> None:
    unblock = threading.Event()
    receiver = Receiver()

    if style == "async":

        @receiver.on()
        async def hang(n: Notification) -> None:
            await asyncio.Event().wait()

    else:

        @receiver.on()
        def hang(n: Notification) -> None:
            unblock.wait(20)

    async def main() -> None:
        async with new_inbox() as inbox:
            ids = await append(inbox, DEVICE_DELETED)
            async with dispatching(
                inbox, receiver, handler_timeout=0.05, max_attempts=2, sleep=recorded([])
            ) as dispatcher:
                [dead] = await all_in(inbox, ids, "dead")
        assert dead.attempts == 2
        assert dead.last_error is not None
        assert "HandlerTimeout" in dead.last_error
        assert "did not return within 0.05 s" in dead.last_error
        assert "hang" in dead.last_error
        assert dispatcher.counters["failed"] == 2

    try:
        asyncio.run(main())
    finally:
        unblock.set()  # the abandoned threads end, so the interpreter can exit


def test_dispatcher_timeout_raised_by_a_handler_keeps_its_own_traceback(
    new_inbox: Callable[[], Inbox],
) -> None:
    receiver = Receiver()

    @receiver.on()
    async def call_upstream(n: Notification) -> None:
        raise TimeoutError("the upstream API did not answer")

    async def main() -> None:
        async with new_inbox() as inbox:
            ids = await append(inbox, DEVICE_DELETED)
            async with dispatching(inbox, receiver, max_attempts=1, handler_timeout=30):
                [dead] = await all_in(inbox, ids, "dead")
        assert dead.last_error is not None
        assert "TimeoutError: the upstream API did not answer" in dead.last_error
        assert "HandlerTimeout" not in dead.last_error

    asyncio.run(main())


def test_dispatcher_undecodable_stored_body_is_dead_without_calling_handlers() -> None:
    calls: list[Notification] = []
    receiver = Receiver()
    receiver.add(calls.append)

    async def main() -> None:
        async with MemoryInbox() as inbox:
            item = incoming(DEVICE_DELETED)
            # A body that passed the app once but no longer decodes (e.g. a model got stricter).
            broken = Incoming(
                b'{"notifyType": "deviceDeleted"}', item.type, item.device, item.key,
                item.slot, item.path, item.headers, item.received_at,
            )  # fmt: skip
            id = (await inbox.append(broken)).id
            async with dispatching(inbox, receiver):
                [dead] = await all_in(inbox, [id], "dead")
        assert calls == []
        assert dead.last_error is not None
        assert dead.last_error.startswith("cannot decode the stored body")

    asyncio.run(main())


def test_dispatcher_entry_claimed_too_often_is_dead_without_delivery() -> None:
    calls: list[Notification] = []
    receiver = Receiver()
    receiver.add(calls.append)

    async def main() -> None:
        async with MemoryInbox() as inbox:
            [id] = await append(inbox, DEVICE_DELETED)
            for _ in range(3):  # three processes died while delivering it
                await inbox.claim("gone", 10, 60)
                await inbox.release("gone")
            async with dispatching(inbox, receiver, max_attempts=3):
                [dead] = await all_in(inbox, [id], "dead")
        assert calls == []
        assert dead.attempts == 3
        assert dead.last_error == "gave up: the process stopped during delivery 3 times"

    asyncio.run(main())


# --- order ---------------------------------------------------------------------------------------


def test_dispatcher_keeps_per_device_order_while_devices_overlap(
    new_inbox: Callable[[], Inbox],
) -> None:
    devices, per_device = 20, 30
    rng = random.Random(7)
    remaining = {f"dev-{d:02}": 0 for d in range(devices)}
    arrivals: list[tuple[str, int]] = []
    while remaining:  # devices interleaved at random, each one's entries in sequence
        device = rng.choice(sorted(remaining))
        arrivals.append((device, remaining[device]))
        remaining[device] += 1
        if remaining[device] == per_device:
            del remaining[device]

    seen: dict[str, list[int]] = defaultdict(list)
    ids_seen: dict[str, list[int]] = defaultdict(list)
    active = peak = 0
    receiver = Receiver()

    @receiver.on(DeviceDataChanged)
    async def record(n: DeviceDataChanged) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            await asyncio.sleep(random.random() / 1000)
        finally:
            active -= 1
        seen[n.device_id].append(n.service.data["seq"])
        ids_seen[n.device_id].append(current_entry().id)

    async def main() -> None:
        async with new_inbox() as inbox:
            ids = await append(inbox, *(data_body(d, s) for d, s in arrivals))
            appended: dict[str, list[int]] = defaultdict(list)
            for (device, _), id in zip(arrivals, ids, strict=True):
                appended[device].append(id)
            # Small claims and a small hold make lanes span several claims.
            async with dispatching(inbox, receiver, concurrency=8, batch=50, max_held=120):
                await count_in(inbox, "done", devices * per_device)
        assert seen == {device: list(range(per_device)) for device in appended}
        assert ids_seen == appended
        assert peak > 1

    asyncio.run(main())


def test_dispatcher_failing_entry_holds_its_device_while_others_proceed(
    new_inbox: Callable[[], Inbox],
) -> None:
    calls: list[tuple[str, int, str]] = []
    failures_left = 2
    others_done = asyncio.Event()
    receiver = Receiver()

    async def sleep_until_others_done(delay: float) -> None:
        # A retry of the stuck device resumes only once the other device got everything:
        # if that device waited behind the stuck one, this would never return.
        await others_done.wait()

    @receiver.on(DeviceDataChanged)
    async def record(n: DeviceDataChanged) -> None:
        nonlocal failures_left
        seq = n.service.data["seq"]
        if n.device_id == "stuck" and seq == 0 and failures_left:
            failures_left -= 1
            calls.append((n.device_id, seq, "failed"))
            raise RuntimeError("the device's record is locked")
        calls.append((n.device_id, seq, "ok"))
        if sum(1 for c in calls if c[0] == "free") == 3:
            others_done.set()

    async def main() -> None:
        async with new_inbox() as inbox:
            bodies = [data_body(device, seq) for seq in range(3) for device in ("stuck", "free")]
            ids = await append(inbox, *bodies)
            async with dispatching(inbox, receiver, sleep=sleep_until_others_done):
                await all_in(inbox, ids, "done")
        stuck = [c for c in calls if c[0] == "stuck"]
        assert stuck == [
            ("stuck", 0, "failed"),
            ("stuck", 0, "failed"),
            ("stuck", 0, "ok"),
            ("stuck", 1, "ok"),
            ("stuck", 2, "ok"),
        ]
        first_stuck_ok = calls.index(("stuck", 0, "ok"))
        assert [c for c in calls[:first_stuck_ok] if c[0] == "free"] == [
            ("free", 0, "ok"),
            ("free", 1, "ok"),
            ("free", 2, "ok"),
        ]

    asyncio.run(main())


# --- legacy --------------------------------------------------------------------------------------


class LegacyReceiver(PushMessageReceiver):
    """Written for the vendor's SDK: callbacks read ``request`` or take the notification."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[Any, ...]] = []

    def handleDeviceDataChanged(self) -> None:  # noqa: N802 - the SDK's names
        self.seen.append(
            (
                "data",
                legacy.request.json["deviceId"],
                legacy.request.json["service"]["data"],
                legacy.request.headers["Content-Type"],
                legacy.request.path,
                current_entry().id,
                threading.current_thread().name,
            )
        )

    def handleNBCommandStateChanged(self, notification: NBCommandStatusChanged) -> None:  # noqa: N802
        path = legacy.request.path
        self.seen.append(("command", notification.command_id, path, current_entry().id))


def test_dispatcher_runs_legacy_callbacks_in_threads_with_the_request(
    new_inbox: Callable[[], Inbox],
) -> None:
    receiver = LegacyReceiver()

    async def main() -> None:
        async with new_inbox() as inbox:
            data_id, command_id = await append(inbox, data_body("dev-7", 41), NB_COMMAND)
            async with dispatching(inbox, receiver):
                await all_in(inbox, [data_id, command_id], "done")
        data = next(s for s in receiver.seen if s[0] == "data")
        command = next(s for s in receiver.seen if s[0] == "command")
        assert data[:6] == ("data", "dev-7", {"seq": 41}, "application/json", RECEIVE, data_id)
        assert data[6].startswith("iotpush-handler")  # a plain callback runs off the loop
        command_number = json.loads(NB_COMMAND)["commandId"]
        assert command == ("command", command_number, f"{RECEIVE}/cmd", command_id)
        assert len(receiver.seen) == 2

    asyncio.run(main())


# --- stop ----------------------------------------------------------------------------------------


def test_dispatcher_stop_finishes_delivery_under_way_and_gives_back_the_rest(
    new_inbox: Callable[[], Inbox],
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    delivered: list[tuple[str, int]] = []
    receiver = Receiver()

    @receiver.on(DeviceDataChanged)
    async def slow(n: DeviceDataChanged) -> None:
        entered.set()
        await release.wait()
        delivered.append((n.device_id, n.service.data["seq"]))

    async def main() -> None:
        async with new_inbox() as inbox:
            bodies = [data_body("busy", seq) for seq in range(4)]
            bodies += [data_body("other-1", 0), data_body("other-2", 0)]
            first, *rest = await append(inbox, *bodies)
            # One delivery at a time: the other devices' lanes wait for a free slot.
            dispatcher = Dispatcher(inbox, receiver, concurrency=1, poll_interval=0.01)
            await dispatcher.start()
            await asyncio.wait_for(entered.wait(), 20)
            stopping = asyncio.create_task(dispatcher.stop(grace=30))
            await asyncio.sleep(0.01)  # stop is under way while the handler still runs
            assert not stopping.done()
            release.set()
            await asyncio.wait_for(stopping, 20)
            assert delivered == [("busy", 0)]
            assert (await inbox.get(first)).state == "done"
            given_back = [await inbox.get(id) for id in rest]
            assert [(e.state, e.owner, e.lease_until) for e in given_back] == [
                ("pending", None, None)
            ] * len(rest)
            stats = await inbox.stats()
            assert stats.by_state == {"done": 1, "pending": len(rest)}

    asyncio.run(main())


def test_dispatcher_stop_does_not_wait_out_a_retry_backoff(
    new_inbox: Callable[[], Inbox],
) -> None:
    backing_off = asyncio.Event()
    receiver = Receiver()

    async def endless_sleep(delay: float) -> None:
        backing_off.set()
        await asyncio.Event().wait()

    @receiver.on()
    def fails(n: Notification) -> None:
        raise RuntimeError("downstream is down")

    async def main() -> None:
        async with new_inbox() as inbox:
            [id] = await append(inbox, DEVICE_DELETED)
            dispatcher = Dispatcher(inbox, receiver, sleep=endless_sleep, poll_interval=0.01)
            await dispatcher.start()
            await asyncio.wait_for(backing_off.wait(), 20)
            # A generous grace: nothing is being delivered, so nothing should use it.
            await asyncio.wait_for(dispatcher.stop(grace=3600), 20)
            entry = await inbox.get(id)
        assert (entry.state, entry.owner) == ("pending", None)
        assert entry.last_error is not None
        assert "downstream is down" in entry.last_error

    asyncio.run(main())


def test_dispatcher_given_back_entries_are_delivered_in_order_by_the_next_dispatcher(
    new_inbox: Callable[[], Inbox],
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    delivered: list[int] = []
    receiver = Receiver()

    @receiver.on(DeviceDataChanged)
    async def gated(n: DeviceDataChanged) -> None:
        entered.set()
        await release.wait()
        delivered.append(n.service.data["seq"])

    async def main() -> None:
        async with new_inbox() as inbox:
            ids = await append(inbox, *(data_body("dev-1", seq) for seq in range(5)))
            first = Dispatcher(inbox, receiver, poll_interval=0.01)
            await first.start()
            await asyncio.wait_for(entered.wait(), 20)
            stopping = asyncio.create_task(first.stop(grace=30))
            await asyncio.sleep(0.01)
            release.set()
            await asyncio.wait_for(stopping, 20)
            assert delivered == [0]
            async with dispatching(inbox, receiver):
                await all_in(inbox, ids, "done")
        assert delivered == list(range(5))

    asyncio.run(main())


# --- tracking ----------------------------------------------------------------------------------


def test_dispatcher_handlers_see_tracker_state_with_their_own_notification(
    new_inbox: Callable[[], Inbox],
) -> None:
    seen: list[Any] = []

    async def scenario() -> None:
        async with new_inbox() as inbox:
            tracking = Tracking(inbox)
            receiver = Receiver()

            @receiver.on("nbCommandStatusChanged")
            async def check(n: Any) -> None:
                record = await tracking.command(n.command_id)
                seen.append(current_entry().id in [e.entry_id for e in record.history])

            async with dispatching(inbox, receiver) as dispatcher:
                await append(inbox, nb_body("c-1", "SENT"), nb_body("c-1", "SUCCESSFUL"))
                await dispatcher.drain()

    run(scenario())
    assert seen == [True, True]  # each handler sees state that includes its own notification


def test_new_owner_names_host_and_process_and_differs_each_time() -> None:
    import os
    import socket

    from iotpush.inbox import new_owner

    first, second = new_owner(), new_owner()
    assert first.startswith(f"{socket.gethostname()}:{os.getpid()}:")
    assert first != second
