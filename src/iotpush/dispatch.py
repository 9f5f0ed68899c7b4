"""The dispatcher: delivers inbox entries to handlers, at least once, in order per device.

It claims due entries in batches and queues each on its device's *lane*. A fixed pool of
``concurrency`` workers takes lanes from a ready queue; a lane is in that queue at most once and
only one worker holds it, so one device's notifications reach handlers in arrival order, while
different devices run in parallel. An entry is acknowledged only after every handler for it
returned; a handler that raises or times out makes the whole entry retry after an exponential
backoff with jitter, holding its lane, until ``max_attempts``, when it goes to the dead-letter
state with the traceback.

An attempt counts from the moment it is recorded in the inbox, just before its first handler
starts (`Inbox.begin`): a process killed at any moment never charges an entry that did not reach
a handler. A plain (``def``) handler's time limit counts from the moment its thread starts it;
a thread cannot be stopped, so one that overruns keeps its device's lane until it returns, while
a spare thread takes its place for other devices (up to ``concurrency`` spares).

What happens is emitted as `iotpush.events` (`AttemptStarted`, `AttemptFinished`, `Delivered`,
`Retried`, `Dead`).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import contextvars
import logging
import random
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeAlias

from ._context import Delivery, set_delivery
from .events import AttemptFinished, AttemptStarted, Dead, Delivered, Events, Retried
from .exceptions import HandlerTimeout, InboxError, NotificationError
from .inbox import DeliveryInbox, Entry, decode_entry, new_owner
from .logs import entry_context
from .models import Notification
from .receiver import Handler, Receiver

__all__ = ["Dispatcher"]

log = logging.getLogger("iotpush.dispatch")

# What an attempt leaves its lane: seconds until a retry (None: the entry is finished), and the
# thread of an overrun plain handler that must return before the lane goes on.
_Outcome: TypeAlias = "tuple[float | None, asyncio.Future[Any] | None]"


def _reason(exc: BaseException) -> str:
    """``Type: message``, as the logs and events give a failure."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Dispatcher:
    """Delivers inbox entries to a receiver's handlers.

    Args:
        inbox: Where entries come from.
        receiver: Whose handlers to call.
        concurrency: The most entries delivered at once (and threads for plain handlers).
        max_attempts: Attempts before an entry is dead-lettered.
        backoff: Seconds before the first retry; doubles each attempt, with jitter.
        max_backoff: The longest wait between attempts.
        handler_timeout: Seconds a handler may run before the attempt counts as failed (for a
            plain handler, from the moment its thread starts it). A plain handler's thread cannot
            be stopped: its device waits until it returns, and a spare thread serves the others.
        lease: Seconds a claim lasts without renewal; another process takes over after that.
        batch: The most entries claimed at once.
        max_held: The most entries held in memory (claimed, not yet done).
        poll_interval: Seconds between claims when nothing signals new work (retries coming due,
            entries replayed by another process).
        events: Where delivery events go (a fresh `Events` when not given).
        clock: Unix time source; ``sleep`` and ``jitter`` are injectable too, for tests.
    """

    def __init__(
        self,
        inbox: DeliveryInbox,
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
        events: Events | None = None,
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
        self.events = Events() if events is None else events
        self.clock = clock
        self.sleep = sleep
        self.jitter = jitter
        self.owner = new_owner()
        self.stuck = 0
        """Plain handler threads that overran their time limit and have not returned yet."""
        self._lanes: dict[object, deque[Entry]] = {}
        self._ready: asyncio.Queue[object] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._waiting: set[asyncio.Task[Any]] = set()  # idle workers, lanes held back
        self._held: set[int] = set()  # ids of the entries held (claimed, not yet done)
        self._begun: set[int] = set()  # held entries whose delivery has begun here
        self._room = asyncio.Event()
        self._idle = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._acks: list[int] = []
        self._ack_task: asyncio.Task[None] | None = None
        # Attempts to record, each with the future its worker awaits (see `_begin`).
        self._begins: list[tuple[int, int, asyncio.Future[bool]]] = []
        self._begin_writes: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._caught_up = False  # the last claim found less than it asked for

    # lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start claiming and delivering in the background."""
        self._stopping = False
        # As many spare threads as workers: plain handlers that hang do not stop the others
        # until that many are stuck at once.
        self._executor = ThreadPoolExecutor(
            2 * self.concurrency, thread_name_prefix="iotpush-handler"
        )
        self._tasks = [
            asyncio.create_task(self._supervised("claim", self._claim_loop), name="iotpush-claim"),
            asyncio.create_task(self._supervised("renew", self._renew_loop), name="iotpush-renew"),
        ]
        self._workers = [
            asyncio.create_task(self._supervised("worker", self._work), name=f"iotpush-worker-{i}")
            for i in range(self.concurrency)
        ]
        self.inbox.attach(
            self.owner,
            lease=self.lease,
            on_claimed=self._take,
            has_room=lambda: len(self._held) < self.max_held,
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
        if self._begins:  # gathered, its write not sent yet
            self._write_begins()
        if self._begin_writes:
            await asyncio.gather(*self._begin_writes, return_exceptions=True)
        await self._flush_acks()
        # What is still held goes back; an entry whose handlers never started was not charged.
        self._lanes.clear()
        self._held.clear()
        self._begun.clear()
        try:
            released = await self.inbox.release(self.owner)
        except InboxError as exc:
            log.error(
                "could not give back claimed entries (they return when the lease ends): %s", exc
            )
        else:
            if released:
                log.info("gave back %d undelivered entries", released)
        if self._executor is not None:
            if self.stuck:
                log.warning(
                    "%d plain handler thread(s) still running past their time limit: their"
                    " entries were given back and will be tried again",
                    self.stuck,
                )
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    @property
    def claiming(self) -> bool:
        """Whether the claim loop runs (started, not stopped, not crashed)."""
        return bool(self._tasks) and not self._tasks[0].done()

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until nothing is held and the last claim found nothing due (for tests, tools)."""
        async with asyncio.timeout(timeout):
            while True:
                self._idle.clear()
                await self._idle.wait()
                if not self._held:
                    return

    async def _supervised(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        # A loop that fails is logged with its traceback and started again: delivery must never
        # stop silently while receiving goes on.
        while not self._stopping:
            try:
                await loop()
            except Exception:
                log.exception("the dispatcher's %s loop failed; starting it again", name)
                await asyncio.sleep(self.poll_interval)

    # claiming ------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping:
            room = self.max_held - len(self._held)
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
            for entry in entries:
                self._enqueue(entry)
            self._caught_up = len(entries) < min(room, self.batch)
            if self._caught_up:
                if not self._held:
                    self._idle.set()
                await self.inbox.wait_for_work(self.poll_interval)

    async def _renew_loop(self) -> None:
        # Paced by the loop's monotonic clock: a step of the wall clock changes nothing here.
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while not self._stopping:
            await asyncio.sleep(self.lease / 3)
            if not self._held:
                renewed = loop.time()
                continue
            try:
                await self.inbox.renew(self.owner, self.lease)
            except InboxError as exc:
                late = loop.time() - renewed
                if late > self.lease:  # another process may take them over: `begin` will tell
                    log.error("cannot renew claims for %.0f s, past the lease: %s", late, exc)
                else:
                    log.error("cannot renew claims: %s", exc)
            else:
                renewed = loop.time()

    def _take(self, entries: list[Entry]) -> None:
        # Entries the inbox claimed for us as they were appended (see `Inbox.attach`).
        for entry in entries:
            self._enqueue(entry)

    def _enqueue(self, entry: Entry) -> None:
        if entry.id in self._held:  # held already: never two deliveries of one entry here
            log.warning(
                "entry %d was handed over again while held; ignored", entry.id, extra=_about(entry)
            )
            return
        self._held.add(entry.id)
        lane_key: object = entry.device if entry.device is not None else ("entry", entry.id)
        lane = self._lanes.get(lane_key)
        if lane is None:
            self._lanes[lane_key] = deque((entry,))
            self._ready.put_nowait(lane_key)
        elif lane[-1].id < entry.id:
            lane.append(entry)
        else:  # claimed and handed over in the same commit: keep the lane in id order
            at = bisect.bisect([queued.id for queued in lane], entry.id)
            if at == 0 and lane[0].id in self._begun:
                log.warning(
                    "entry %d arrived after a later entry of its device began", entry.id,
                    extra=_about(entry),
                )  # fmt: skip
                at = 1
            lane.insert(at, entry)

    # lanes ---------------------------------------------------------------------------------

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
            try:
                retry_in, running = await self._attempt(lane[0])
            except Exception:  # a bug of ours: the lane must not stop for good
                log.exception(
                    "delivering entry %d failed; trying it again", lane[0].id,
                    extra=_about(lane[0], attempt=lane[0].attempts),
                )  # fmt: skip
                retry_in, running = self.poll_interval, None
            if retry_in is None and running is None:
                self._next(lane_key)
                continue
            # The lane waits (for a thread, a backoff), holding its later entries back.
            hold = asyncio.create_task(self._hold(lane_key, retry_in, running))
            self._waiting.add(hold)
            hold.add_done_callback(self._waiting.discard)

    async def _hold(
        self, lane_key: object, retry_in: float | None, running: asyncio.Future[Any] | None
    ) -> None:
        if running is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(running)
            if self._stopping:
                return
            entry = self._lanes[lane_key][0]
            log.warning(
                "the handler thread of entry %d returned; device %s goes on", entry.id,
                entry.device, extra=_about(entry, attempt=entry.attempts),
            )  # fmt: skip
        if retry_in is None:
            self._next(lane_key)
            return
        await self.sleep(retry_in)
        if not self._stopping:
            self._ready.put_nowait(lane_key)

    def _next(self, lane_key: object) -> None:
        """The lane's first entry is finished: go on with the next, or drop the lane."""
        lane = self._lanes[lane_key]
        done = lane.popleft().id
        self._begun.discard(done)
        self._held.discard(done)
        self._room.set()
        if not self._held and self._caught_up:
            self._idle.set()
        if lane:
            self._ready.put_nowait(lane_key)
        else:
            del self._lanes[lane_key]

    # delivering ----------------------------------------------------------------------------

    async def _attempt(self, entry: Entry) -> _Outcome:
        """Deliver ``entry`` once; the seconds until a retry (or None), and an overrun thread."""
        if entry.attempts >= self.max_attempts:  # each allowed attempt began, none ended
            error = f"gave up: the process stopped during attempt {entry.attempts}"
            await self._dead(entry, error, entry.attempts, "", "the process stopped")
            return None, None
        try:
            notification = decode_entry(entry)
            entry.notification = None  # a retry decodes afresh, whatever a handler changed
        except NotificationError as exc:
            error = f"cannot decode the stored body: {exc}"
            await self._dead(entry, error, entry.attempts, "", error)
            return None, None
        attempt = entry.attempts + 1
        try:  # the attempt counts from here, whatever happens to this process next
            if not await self._begin(entry.id, attempt):
                log.warning(
                    "entry %d is no longer held by this process: left to its owner", entry.id,
                    extra=_about(entry, attempt=attempt),
                )  # fmt: skip
                return None, None
        except InboxError as exc:
            log.error(
                "cannot record an attempt of entry %d: %s", entry.id, exc,
                extra=_about(entry, attempt=attempt),
            )  # fmt: skip
            return self.poll_interval, None
        self._begun.add(entry.id)
        entry.attempts = attempt  # what `current_entry()` tells the handlers
        set_delivery(Delivery(entry, notification))
        for handler in self.receiver.handlers_for(entry.type):
            failure, running = await self._run(handler, notification, entry)
            if failure is not None:
                return await self._failed(entry, handler, failure), running
        self.events.emit(
            Delivered(entry.id, entry.type, entry.device, attempt, self.clock() - entry.received_at)
        )
        self._ack(entry.id)
        return None, None

    async def _failed(self, entry: Entry, handler: Handler, exc: BaseException) -> float | None:
        """Record a failed attempt: the seconds until a retry, or None once it is dead."""
        attempt = entry.attempts
        error = "".join(traceback.format_exception(exc)).rstrip()
        if attempt >= self.max_attempts:
            await self._dead(entry, error, attempt, handler.name, _reason(exc))
            return None
        delay: float = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        delay *= 0.5 + self.jitter() / 2
        log.warning(
            "entry %d (%s, device %s) attempt %d of %d failed in handler %s: %s;"
            " next try in %.1f s",
            entry.id, entry.type, entry.device, attempt, self.max_attempts, handler.name,
            _reason(exc), delay, extra=_about(entry, handler.name, attempt),
        )  # fmt: skip
        self.events.emit(
            Retried(entry.id, entry.type, entry.device, attempt, handler.name, _reason(exc), delay)
        )
        try:
            await self.inbox.fail(entry.id, error, attempt, self.clock() + delay)
        except InboxError as store_exc:
            log.error(
                "cannot record the failure of entry %d: %s", entry.id, store_exc,
                extra=_about(entry, handler.name, attempt),
            )  # fmt: skip
        return delay

    async def _run(
        self, handler: Handler, notification: Notification, entry: Entry
    ) -> tuple[BaseException | None, asyncio.Future[Any] | None]:
        """Call one handler: what it raised (or None), and its thread if it overran."""
        events = self.events
        if events.wants(AttemptStarted):
            events.emit(
                AttemptStarted(entry.id, entry.type, entry.device, entry.attempts, handler.name)
            )
        began = time.monotonic()
        error: BaseException | None = None
        running: asyncio.Future[Any] | None = None
        try:
            if handler.is_async:
                await self._call_async(handler, notification)
            else:
                running = await self._call_plain(handler, notification, entry)
        except Exception as exc:  # noqa: BLE001 - any handler failure is retried
            error = exc
        if running is not None:
            error = HandlerTimeout(
                f"handler {handler.name} did not return within {self.handler_timeout} s"
            )
        if events.wants(AttemptFinished):
            events.emit(
                AttemptFinished(
                    entry.id,
                    entry.type,
                    entry.device,
                    entry.attempts,
                    handler.name,
                    time.monotonic() - began,
                    None if error is None else _reason(error),
                )
            )
        return error, running

    async def _call_async(self, handler: Handler, notification: Notification) -> None:
        timeout = asyncio.timeout(self.handler_timeout)
        try:
            async with timeout:
                await handler.func(*handler.arguments(notification))
        except TimeoutError:
            if not timeout.expired():  # the handler's own TimeoutError: keep its traceback
                raise
            raise HandlerTimeout(
                f"handler {handler.name} did not return within {self.handler_timeout} s"
            ) from None

    async def _call_plain(
        self, handler: Handler, notification: Notification, entry: Entry
    ) -> asyncio.Future[Any] | None:
        """Run a plain handler in a thread; its thread when it overran the time limit."""
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        started = loop.create_future()
        context = contextvars.copy_context()
        args = handler.arguments(notification)

        def run() -> Any:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, started)
            return context.run(handler.func, *args)

        done = asyncio.wrap_future(self._executor.submit(run))
        # The time limit is the handler's own run time, not the wait for a free thread.
        await asyncio.wait((started, done), return_when=asyncio.FIRST_COMPLETED)
        try:
            await asyncio.wait_for(asyncio.shield(done), self.handler_timeout)
        except TimeoutError:
            if done.done():  # the handler's own TimeoutError, as it finished
                raise
        else:
            return None
        self.stuck += 1
        log.warning(
            "handler %s of entry %d (device %s) is still running after %s s: its thread cannot"
            " be stopped, so device %s waits until it returns (%d thread(s) stuck)",
            handler.name, entry.id, entry.device, self.handler_timeout, entry.device, self.stuck,
            extra=_about(entry, handler.name, entry.attempts),
        )  # fmt: skip
        if self.stuck >= self.concurrency:
            log.error(
                "%d plain handler threads are stuck: plain handlers wait for one to return",
                self.stuck,
            )
        done.add_done_callback(self._unstuck)
        return done

    def _unstuck(self, _: asyncio.Future[Any]) -> None:
        self.stuck -= 1

    async def _dead(
        self, entry: Entry, error: str, attempts: int, handler: str, reason: str
    ) -> None:
        log.error(
            "entry %d (%s, device %s) dead-lettered after %d attempt(s)%s: %s",
            entry.id, entry.type, entry.device, attempts,
            f" in handler {handler}" if handler else "", reason,
            extra=_about(entry, handler, attempts),
        )  # fmt: skip
        self.events.emit(Dead(entry.id, entry.type, entry.device, attempts, handler, reason))
        try:
            await self.inbox.dead(entry.id, error, attempts)
        except InboxError as exc:
            log.error(
                "cannot dead-letter entry %d: %s", entry.id, exc,
                extra=_about(entry, handler, attempts),
            )  # fmt: skip

    def _begin(self, id: int, attempt: int) -> asyncio.Future[bool]:
        """Record an attempt together with those of the other workers starting now: one write
        (and one wake-up of the group commit) for all the lanes a commit set going."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._begins:
            loop.call_soon(self._write_begins)  # the workers woken with this one queue theirs first
        self._begins.append((id, attempt, future))
        return future

    def _write_begins(self) -> None:
        # Each gathering is written at once, beside any still under way: begins that waited for
        # an earlier write to commit would start their handlers a whole group commit later.
        begins, self._begins = self._begins, []
        if not begins:  # sent already by `stop`
            return
        write = asyncio.create_task(self._record_begins(begins))
        self._begin_writes.add(write)
        write.add_done_callback(self._begin_writes.discard)

    async def _record_begins(self, begins: list[tuple[int, int, asyncio.Future[bool]]]) -> None:
        try:
            began = await self.inbox.begin_many(
                self.owner, [(id, attempt) for id, attempt, _ in begins]
            )
        except asyncio.CancelledError:
            for _, _, future in begins:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - each worker handles it as from `begin`
            for _, _, future in begins:
                if not future.done():
                    future.set_exception(exc)
            return
        for id, _, future in begins:
            if not future.done():  # its worker was cancelled
                future.set_result(id in began)

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


def _about(entry: Entry, handler: str = "", attempt: int | None = None) -> dict[str, object]:
    """The JSON log fields of a line about ``entry`` (see `iotpush.logs`)."""
    return entry_context(entry.id, entry.type, entry.device, handler, attempt)


def _resolve(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)
