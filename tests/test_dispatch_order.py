"""The dispatcher keeps each device's order, and stops without losing or reordering work."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Callable

from iotpush import (
    DeviceDataChanged,
    Dispatcher,
    Inbox,
    Notification,
    Receiver,
    current_entry,
)
from tests._dispatching import (
    DEVICE_DELETED,
    all_in,
    append,
    count_in,
    data_body,
    dispatching,
)

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
