"""The dispatcher's retries: backoff, time limits, dead letters."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

import pytest

from iotpush import (
    Inbox,
    Notification,
    Receiver,
    Selection,
    current_entry,
)
from iotpush.events import AttemptFinished, Events
from iotpush.inbox.memory import MemoryInbox
from tests._dispatching import (
    DEVICE_DELETED,
    all_in,
    append,
    data_body,
    dispatching,
    incoming,
    recorded,
)


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
    receiver = Receiver()

    if style == "async":

        @receiver.on()
        async def hang(n: Notification) -> None:
            await asyncio.Event().wait()

    else:

        @receiver.on()
        def hang(n: Notification) -> None:
            time.sleep(0.3)  # overruns, then returns: its device waits for it

    events = Events()
    finished: list[AttemptFinished] = []
    events.subscribe(finished.append, AttemptFinished)

    async def main() -> None:
        async with new_inbox() as inbox:
            ids = await append(inbox, DEVICE_DELETED)
            async with dispatching(
                inbox, receiver, handler_timeout=0.05, max_attempts=2, sleep=recorded([]),
                events=events,
            ):  # fmt: skip
                [dead] = await all_in(inbox, ids, "dead")
        assert dead.attempts == 2
        assert dead.last_error is not None
        assert "HandlerTimeout" in dead.last_error
        assert "did not return within 0.05 s" in dead.last_error
        assert "hang" in dead.last_error
        assert [(f.attempt, f.error) for f in finished] == [
            (n, f"HandlerTimeout: handler {hang.__qualname__} did not return within 0.05 s")
            for n in (1, 2)
        ]

    asyncio.run(main())


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
            broken = dataclasses.replace(
                item, body=b'{"notifyType": "deviceDeleted"}', notification=None
            )
            id = (await inbox.append(broken)).id
            async with dispatching(inbox, receiver):
                [dead] = await all_in(inbox, [id], "dead")
        assert calls == []
        assert dead.last_error is not None
        assert dead.last_error.startswith("cannot decode the stored body")

    asyncio.run(main())


def test_dispatcher_entry_whose_every_attempt_began_is_dead_without_delivery(
    new_inbox: Callable[[], Inbox],
) -> None:
    calls: list[Notification] = []
    receiver = Receiver()
    receiver.add(calls.append)

    async def main() -> None:
        async with new_inbox() as inbox:
            [id] = await append(inbox, DEVICE_DELETED)
            for attempt in (1, 2, 3):  # three processes died while a handler ran it
                await inbox.claim("gone", 10, 60)
                assert await inbox.begin("gone", id, attempt)
                await inbox.release("gone")
            async with dispatching(inbox, receiver, max_attempts=3):
                [dead] = await all_in(inbox, [id], "dead")
        assert calls == []
        assert dead.attempts == 3
        assert dead.last_error == "gave up: the process stopped during attempt 3"

    asyncio.run(main())


def test_dispatcher_entry_claimed_and_given_back_often_is_not_charged(
    new_inbox: Callable[[], Inbox],
) -> None:
    attempts: list[int] = []
    receiver = Receiver()
    receiver.add(lambda n: attempts.append(current_entry().attempts))

    async def main() -> None:
        async with new_inbox() as inbox:
            [id] = await append(inbox, DEVICE_DELETED)
            for _ in range(5):  # processes that stopped before any handler started it
                await inbox.claim("gone", 10, 60)
                await inbox.release("gone")
            async with dispatching(inbox, receiver, max_attempts=3):
                [done] = await all_in(inbox, [id], "done")
        assert (attempts, done.attempts) == ([1], 1)

    asyncio.run(main())
