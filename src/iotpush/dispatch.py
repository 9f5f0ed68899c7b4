"""The dispatcher: delivers inbox entries to handlers, at least once, in order per device.

It claims due entries in batches and queues each on its device's *lane*. A fixed pool of
``concurrency`` workers takes lanes from a ready queue; a lane is in that queue at most once and
only one worker holds it, so one device's notifications reach handlers in arrival order, while
different devices run in parallel. An entry is acknowledged
only after every handler for it returned; a handler that raises or times out makes the whole
entry retry after an exponential backoff with jitter, holding its lane, until ``max_attempts``,
when it goes to the dead-letter state with the traceback.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
import traceback
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._context import Delivery, set_delivery
from .exceptions import HandlerTimeout, InboxError, NotificationError
from .inbox import Entry, Inbox, decode_entry, new_owner
from .models import Notification
from .receiver import Handler, Receiver

__all__ = ["Dispatcher"]

log = logging.getLogger("iotpush.dispatch")


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
        self.owner = new_owner()
        self.counters: Counter[str] = Counter()
        self._lanes: dict[object, deque[Entry]] = {}
        self._ready: asyncio.Queue[object] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._waiting: set[asyncio.Task[Any]] = set()  # idle workers, and lanes in backoff
        self._tried: set[int] = set()  # held entries whose delivery has begun here
        self._held = 0
        self._room = asyncio.Event()
        self._idle = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._acks: list[int] = []
        self._ack_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._caught_up = False  # the last claim found less than it asked for

    # lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start claiming and delivering in the background."""
        self._stopping = False
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="iotpush-handler")
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="iotpush-claim"),
            asyncio.create_task(self._renew_loop(), name="iotpush-renew"),
        ]
        self._workers = [
            asyncio.create_task(self._work(), name=f"iotpush-worker-{i}")
            for i in range(self.concurrency)
        ]
        self.inbox.attach(
            self.owner,
            lease=self.lease,
            on_claimed=self._take,
            has_room=lambda: self._held < self.max_held,
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, finish deliveries under way (``grace`` s at most), give back the rest."""
        self._stopping = True
        self.inbox.attach(None)
        for task in (*self._tasks, *self._waiting):  # idle workers, lanes waiting to retry
            task.cancel()
        await asyncio.gather(*self._tasks, *self._waiting, return_exceptions=True)
        if self._workers:
            _, late = await asyncio.wait(self._workers, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._flush_acks()
        # What is still held goes back; entries never started get back their claim's attempt.
        untried = [e.id for lane in self._lanes.values() for e in lane if e.id not in self._tried]
        self._lanes.clear()
        self._tried.clear()
        self._held = 0
        try:
            released = await self.inbox.release(self.owner, untried=untried)
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
            self._caught_up = len(entries) < min(room, self.batch)
            if self._caught_up:
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

    def _take(self, entries: list[Entry]) -> None:
        # Entries the inbox claimed for us as they were appended (see `Inbox.attach`).
        for entry in entries:
            self._enqueue(entry)

    def _enqueue(self, entry: Entry) -> None:
        self._held += 1
        lane_key: object = entry.device if entry.device is not None else ("entry", entry.id)
        lane = self._lanes.get(lane_key)
        if lane is None:
            self._lanes[lane_key] = deque((entry,))
            self._ready.put_nowait(lane_key)
        elif lane[-1].id < entry.id:
            lane.append(entry)
        else:  # claimed and handed over in the same commit: keep the lane in id order
            at = next(i for i, queued in enumerate(lane) if queued.id > entry.id)
            if at == 0 and lane[0].id in self._tried:
                log.warning("entry %d arrived after a later entry of its device began", entry.id)
                at = 1
            lane.insert(at, entry)

    async def _work(self) -> None:
        while not self._stopping:
            worker = asyncio.current_task()
            assert worker is not None
            self._waiting.add(worker)
            try:
                lane_key = await self._ready.get()
            finally:
                self._waiting.discard(worker)
            lane = self._lanes[lane_key]
            retry_in = await self._attempt(lane[0])
            if retry_in is not None:  # the lane waits, holding its later entries back
                backoff = asyncio.create_task(self._backoff(lane_key, retry_in))
                self._waiting.add(backoff)
                backoff.add_done_callback(self._waiting.discard)
                continue
            self._tried.discard(lane.popleft().id)
            self._held -= 1
            self._room.set()
            if self._held == 0 and self._caught_up:
                self._idle.set()
            if lane:
                self._ready.put_nowait(lane_key)
            else:
                del self._lanes[lane_key]

    async def _backoff(self, lane_key: object, delay: float) -> None:
        await self.sleep(delay)
        if not self._stopping:
            self._ready.put_nowait(lane_key)

    # delivering ----------------------------------------------------------------------------

    async def _attempt(self, entry: Entry) -> float | None:
        """Deliver ``entry`` once; the seconds until a retry, or ``None`` once it is finished."""
        attempt = entry.attempts
        if entry.id not in self._tried and attempt > self.max_attempts:
            error = f"gave up: the process stopped during delivery {attempt - 1} times"
            await self._dead(entry, error, attempt - 1)
            return None
        try:
            notification = decode_entry(entry)
            entry.notification = None  # a retry decodes afresh, whatever a handler changed
        except NotificationError as exc:
            await self._dead(entry, f"cannot decode the stored body: {exc}", attempt)
            return None
        self._tried.add(entry.id)
        set_delivery(Delivery(entry, notification))
        try:
            for handler in self.receiver.handlers_for(entry.type):
                await self._call(handler, notification)
        except Exception as exc:  # noqa: BLE001 - any handler failure is retried
            error = "".join(traceback.format_exception(exc)).rstrip()
            self.counters["failed"] += 1
            if attempt >= self.max_attempts:
                await self._dead(entry, error, attempt)
                return None
            delay: float = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
            delay *= 0.5 + self.jitter() / 2
            log.warning(
                "entry %d (%s) attempt %d failed, retrying in %.1f s: %r",
                entry.id, entry.type, attempt, delay, exc,
            )  # fmt: skip
            try:
                await self.inbox.fail(entry.id, error, attempt, self.clock() + delay)
            except InboxError as store_exc:
                log.error("cannot record the failure of entry %d: %s", entry.id, store_exc)
            entry.attempts = attempt + 1  # what `current_entry()` tells the handlers next time
            return delay
        self.counters["delivered"] += 1
        self._ack(entry.id)
        return None

    async def _call(self, handler: Handler, notification: Notification) -> None:
        args = handler.arguments(notification)
        if handler.is_async:
            running: Awaitable[Any] = handler.func(*args)
        else:
            context = contextvars.copy_context()
            loop = asyncio.get_running_loop()
            running = loop.run_in_executor(self._executor, context.run, handler.func, *args)
        timeout = asyncio.timeout(self.handler_timeout)
        try:
            async with timeout:
                await running
        except TimeoutError:
            if not timeout.expired():  # the handler's own TimeoutError: keep its traceback
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
