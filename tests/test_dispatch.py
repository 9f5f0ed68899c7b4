"""The dispatcher: handlers in order, what they see, legacy callbacks, tracker state."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from iotpush import (
    DeviceDataChanged,
    Inbox,
    NBCommandStatusChanged,
    Notification,
    PushMessageReceiver,
    Receiver,
    current_entry,
    legacy,
)
from iotpush.events import (
    AttemptFinished,
    AttemptStarted,
    Dead,
    Delivered,
    Event,
    Events,
    Retried,
)
from iotpush.tracking import Tracking
from tests._dispatching import (
    DEVICE_DELETED,
    NB_COMMAND,
    all_in,
    append,
    data_body,
    dispatching,
    nb_body,
    recorded,
)
from tests.conftest import RECEIVE, run

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


# --- events and logs ---------------------------------------------------------------------------


def test_dispatcher_emits_each_attempt_and_logs_the_failing_handler_and_its_error(
    new_inbox: Callable[[], Inbox], caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Event] = []
    events = Events()
    events.subscribe(seen.append, AttemptStarted, AttemptFinished, Delivered, Retried, Dead)
    receiver = Receiver()

    @receiver.on()
    async def flaky(n: Notification) -> None:
        if current_entry().attempts == 1:
            raise ValueError("bad reading")

    @receiver.on("deviceDeleted")
    def broken(n: Notification) -> None:
        raise KeyError("temp")

    async def main() -> tuple[int, int]:
        async with new_inbox() as inbox:
            ok, bad = await append(inbox, data_body("dev-1", 1), DEVICE_DELETED)
            async with dispatching(
                inbox, receiver, max_attempts=2, sleep=recorded([]), events=events
            ):
                await all_in(inbox, [ok], "done")
                await all_in(inbox, [bad], "dead")
        return ok, bad

    with caplog.at_level(logging.WARNING, "iotpush.dispatch"):
        ok, bad = asyncio.run(main())
    name, other = flaky.__qualname__, broken.__qualname__
    mine = [(type(e).__name__, getattr(e, "attempt", getattr(e, "attempts", 0)),
             getattr(e, "handler", ""), getattr(e, "error", None))
            for e in seen if e.entry_id == ok]  # fmt: skip
    assert mine == [
        ("AttemptStarted", 1, name, None),
        ("AttemptFinished", 1, name, "ValueError: bad reading"),
        ("Retried", 1, name, "ValueError: bad reading"),
        ("AttemptStarted", 2, name, None),
        ("AttemptFinished", 2, name, None),
        ("Delivered", 2, "", None),
    ]
    delivered = next(e for e in seen if isinstance(e, Delivered))
    assert delivered.lag >= 0
    dead = [e for e in seen if isinstance(e, Dead)]
    assert [(e.entry_id, e.attempts, e.handler, e.error) for e in dead] == [
        (bad, 2, other, "KeyError: 'temp'")
    ]
    retry = next(r.getMessage() for r in caplog.records if f"entry {ok} " in r.getMessage())
    assert f"attempt 1 of 2 failed in handler {name}: ValueError: bad reading" in retry
    assert "next try in" in retry
    last = next(r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage())
    assert f"entry {bad} (deviceDeleted" in last
    assert f"after 2 attempt(s) in handler {other}: KeyError: 'temp'" in last
