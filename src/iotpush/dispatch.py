"""The dispatcher: delivers inbox entries to handlers, at least once, in order per device.

It claims due entries in batches and queues each on its device's *lane*. A lane delivers one
entry at a time, so one device's notifications reach handlers in arrival order, while different
devices run in parallel (at most ``concurrency`` deliveries at once). An entry is acknowledged
only after every handler for it returned; a handler that raises or times out makes the whole
entry retry after an exponential backoff with jitter, holding its lane, until ``max_attempts``,
when it goes to the dead-letter state with the traceback.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import random
import socket
import time
import traceback
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._context import Delivery, set_delivery
from .exceptions import HandlerTimeout, InboxError, NotificationError
from .inbox import Entry, Inbox
from .models import NBCommandStatusChanged, Notification, decode
from .receiver import Handler, Receiver

__all__ = ["Dispatcher"]

log = logging.getLogger("iotpush.dispatch")

_COMMAND_TYPE = NBCommandStatusChanged.notify_type


def decode_entry(entry: Entry) -> Notification:
    """The typed notification an entry holds."""
    return decode(entry.body, "command" if entry.type == _COMMAND_TYPE else "notify")


class Dispatcher:
    """Delivers inbox entries to a receiver's handlers.

    Args:
        inbox: Where entries come from.
        receiver: Whose handlers to call.
        concurrency: The most entries delivered at once (and threads for plain handlers).
        max_attempts: Attempts before an entry is dead-lettered.
        backoff: Seconds before the first retry; doubles each attempt, with jitter.
        max_backoff: The longest wait between attempts.
        handler_timeout: Seconds a handler may run before the attempt counts as failed. A plain
            (non-async) handler's thread cannot be stopped; it runs on but its result is ignored.
        lease: Seconds a claim lasts without renewal; another process takes over after that.
        batch: The most entries claimed at once.
        max_held: The most entries held in memory (claimed, not yet done).
        poll_interval: Seconds between claims when nothing signals new work (retries coming due,
            entries replayed by another process).
        clock: Unix time source; ``sleep`` and ``jitter`` are injectable too, for tests.
    """

    def __init__(
        self,
        inbox: Inbox,
        receiver: Receiver,
        *,
        concurrency: int = 32,
        max_attempts: int = 8,
        backoff: float = 1.0,
        max_backoff: float = 300.0,
        handler_timeout: float = 60.0,
        lease: float = 60.0,
        batch: int = 256,
        max_held: int = 2048,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.inbox = inbox
        self.receiver = receiver
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.handler_timeout = handler_timeout
        self.lease = lease
        self.batch = batch
        self.max_held = max_held
        self.poll_interval = poll_interval
        self.clock = clock
        self.sleep = sleep
        self.jitter = jitter
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.counters: Counter[str] = Counter()
        self._lanes: dict[object, deque[Entry]] = {}
        self._lane_tasks: set[asyncio.Task[None]] = set()
        self._held = 0
        self._room = asyncio.Event()
        self._idle = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._executor: ThreadPoolExecutor | None = None
        self._acks: list[int] = []
        self._ack_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._backing_off: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._untried: list[int] = []

    # lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start claiming and delivering in the background."""
        self._stopping = False
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="iotpush-handler")
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="iotpush-claim"),
            asyncio.create_task(self._renew_loop(), name="iotpush-renew"),
        ]

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, finish deliveries under way (``grace`` s at most), give back the rest."""
        self._stopping = True
        for task in (*self._tasks, *self._backing_off):  # a lane waiting to retry is not busy
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._lane_tasks:
            _, late = await asyncio.wait(self._lane_tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._flush_acks()
        try:
            released = await self.inbox.release(self.owner, untried=self._untried)
            self._untried = []
        except InboxError as exc:
            log.error(
                "could not give back claimed entries (they return when the lease ends): %s", exc
            )
        else:
            if released:
                log.info("gave back %d undelivered entries", released)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until nothing is held and the last claim found nothing due (for tests, tools)."""
        async with asyncio.timeout(timeout):
            while True:
                self._idle.clear()
                await self._idle.wait()
                if self._held == 0:
                    return

    # claiming ------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping:
            room = self.max_held - self._held
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                entries = await self.inbox.claim(self.owner, min(room, self.batch), self.lease)
            except InboxError as exc:
                log.error("cannot claim work from the inbox: %s", exc)
                await asyncio.sleep(self.poll_interval)
                continue
            except Exception:  # never let delivery stop silently while receiving goes on
                log.exception("claiming work from the inbox failed")
                await asyncio.sleep(self.poll_interval)
                continue
            for entry in entries:
                self._enqueue(entry)
            if len(entries) < min(room, self.batch):
                if self._held == 0:
                    self._idle.set()
                await self.inbox.wait_for_work(self.poll_interval)

    async def _renew_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.lease / 3)
            if self._held:
                try:
                    await self.inbox.renew(self.owner, self.lease)
                except InboxError as exc:
                    log.error("cannot renew claims: %s", exc)

    def _enqueue(self, entry: Entry) -> None:
        self._held += 1
        lane_key: object = entry.device if entry.device is not None else ("entry", entry.id)
        lane = self._lanes.get(lane_key)
        if lane is not None:
            lane.append(entry)
            return
        self._lanes[lane_key] = deque((entry,))
        task = asyncio.create_task(self._run_lane(lane_key))
        self._lane_tasks.add(task)
        task.add_done_callback(self._lane_tasks.discard)

    async def _run_lane(self, lane_key: object) -> None:
        lane = self._lanes[lane_key]
        delivering = False
        try:
            while lane and not self._stopping:
                delivering = True
                await self._deliver(lane[0])
                delivering = False
                lane.popleft()
                self._held -= 1
                self._room.set()
        finally:
            # Entries left here on stop are still claimed by us: `stop` gives them back, and
            # those never started get back the attempt their claim counted.
            self._untried.extend(e.id for e in list(lane)[1 if delivering else 0 :])
            self._held -= len(lane)
            del self._lanes[lane_key]

    # delivering ----------------------------------------------------------------------------

    async def _deliver(self, entry: Entry) -> None:
        attempt = entry.attempts
        if attempt > self.max_attempts:
            error = f"gave up: the process stopped during delivery {attempt - 1} times"
            await self._dead(entry, error, attempt - 1)
            return
        try:
            notification = decode_entry(entry)
        except NotificationError as exc:
            await self._dead(entry, f"cannot decode the stored body: {exc}", attempt)
            return
        handlers = self.receiver.handlers_for(entry.type)
        delivery = Delivery(entry, notification)
        first_attempt = attempt
        while True:
            entry.attempts = attempt  # what `current_entry()` tells the handlers
            try:
                async with self._slots:
                    if self._stopping:  # not under way yet: `stop` gives it back
                        if attempt == first_attempt:
                            self._untried.append(entry.id)
                        return
                    set_delivery(delivery)
                    for handler in handlers:
                        await self._call(handler, notification)
            except Exception as exc:  # noqa: BLE001 - any handler failure is retried
                error = "".join(traceback.format_exception(exc)).rstrip()
                self.counters["failed"] += 1
                if attempt >= self.max_attempts:
                    await self._dead(entry, error, attempt)
                    return
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                delay *= 0.5 + self.jitter() / 2
                log.warning(
                    "entry %d (%s) attempt %d failed, retrying in %.1f s: %r",
                    entry.id, entry.type, attempt, delay, exc,
                )  # fmt: skip
                try:
                    await self.inbox.fail(entry.id, error, attempt, self.clock() + delay)
                except InboxError as store_exc:
                    log.error("cannot record the failure of entry %d: %s", entry.id, store_exc)
                if self._stopping:
                    return
                lane_task = asyncio.current_task()
                assert lane_task is not None
                self._backing_off.add(lane_task)
                try:
                    await self.sleep(delay)
                finally:
                    self._backing_off.discard(lane_task)
                attempt += 1
                continue
            self.counters["delivered"] += 1
            self._ack(entry.id)
            return

    async def _call(self, handler: Handler, notification: Notification) -> None:
        args = handler.arguments(notification)
        running: asyncio.Future[Any]
        if handler.is_async:
            running = asyncio.ensure_future(handler.func(*args))
        else:
            context = contextvars.copy_context()
            loop = asyncio.get_running_loop()
            running = loop.run_in_executor(self._executor, context.run, handler.func, *args)
        try:
            await asyncio.wait_for(running, self.handler_timeout)
        except TimeoutError:
            if not running.cancelled():  # the handler's own TimeoutError: keep its traceback
                raise
            raise HandlerTimeout(
                f"handler {handler.name} did not return within {self.handler_timeout} s"
            ) from None

    async def _dead(self, entry: Entry, error: str, attempts: int) -> None:
        self.counters["dead"] += 1
        log.error("entry %d (%s) dead-lettered after %d attempt(s)", entry.id, entry.type, attempts)
        try:
            await self.inbox.dead(entry.id, error, attempts)
        except InboxError as exc:
            log.error("cannot dead-letter entry %d: %s", entry.id, exc)

    def _ack(self, id: int) -> None:
        self._acks.append(id)
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.create_task(self._flush_acks())

    async def _flush_acks(self) -> None:
        # Acks of entries delivered meanwhile ride along in the next write: one commit for many.
        while self._acks:
            ids, self._acks = self._acks, []
            try:
                await self.inbox.ack(ids)
            except InboxError as exc:  # they stay claimed and are delivered again later
                log.error("cannot acknowledge %d entries: %s", len(ids), exc)
