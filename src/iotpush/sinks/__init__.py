"""Sinks: every kept notification streamed on to a message broker, with an outbox.

The outbox pattern: `Inbox.append` records each new entry as unpublished for every configured
sink in the transaction that keeps it (so nothing acknowledged with a 200 can be missed), and a
`Publisher` per sink takes unpublished entries in id order, publishes them, and removes them from
the outbox only once the broker acknowledged them. A crash between the broker's ack and that
removal publishes the entry again after restart: sinks give each message a stable id the broker
uses to drop the repeat (see `iotpush.sinks.nats`).

A broker that is down never blocks or fails receiving: entries wait in the outbox, the publisher
logs a warning and retries with a backoff, and catches up once the broker answers again.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..events import Events, Published, SinkFailed
from ..exceptions import ConfigError, InboxError, SinkError
from ..inbox import Entry, OutboxInbox, new_owner

__all__ = ["Outcome", "Publisher", "Sink", "open_sink"]

log = logging.getLogger("iotpush.sinks")


@dataclass(slots=True)
class Outcome:
    """What became of a batch handed to `Sink.publish`."""

    acknowledged: list[int] = field(default_factory=list)
    """Entries the broker stored (or already had): they leave the outbox."""
    refused: list[int] = field(default_factory=list)
    """Entries the broker can never take (too large, say): logged, and they leave the outbox."""
    duplicates: int = 0
    """Acknowledged entries the broker recognised as already stored (a republish)."""
    error: str | None = None
    """Why the other entries were not acknowledged; they stay in the outbox for a retry."""


class Sink(abc.ABC):
    """A destination for kept notifications.

    ``name`` names the sink's outbox in the inbox: it must stay the same across restarts for
    the backlog of one run to be published by the next, and must differ between two sinks.
    """

    name: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and prepare the destination; idempotent once it succeeded.

        Raises:
            SinkError: The destination cannot be reached now (the publisher retries).
        """

    @abc.abstractmethod
    async def publish(self, entries: Sequence[Entry]) -> Outcome:
        """Publish ``entries`` in order, wait for the broker's acknowledgements.

        Raises:
            SinkError: Nothing could be published now.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and disconnect."""

    @property
    def connected(self) -> bool | None:
        """Whether the destination is reachable now, as far as the sink knows (None: unknown)."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def open_sink(url: str) -> Sink:
    """Make the sink a URL names: ``nats://HOST:PORT`` (or ``tls://``) with query options.

    Raises:
        ConfigError: The scheme is not supported, an option is not valid, or the sink's extra
            (``iotpush[nats]``) is not installed.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("nats", "tls"):
        from .nats import NatsSink

        return NatsSink.from_url(url)
    raise ConfigError(f"unsupported sink {url!r}: use nats://HOST:PORT")


class Publisher:
    """Drains one sink's outbox: take unpublished entries, publish them, mark them published.

    Args:
        inbox: The inbox opened with ``outbox`` naming ``sink.name``.
        sink: Where entries go.
        batch: The most entries published (and awaited) at once.
        lease: Seconds the taken entries stay reserved for this publisher (another process
            sharing the store takes them over after that).
        backoff: Seconds to wait after the first failure; doubles up to ``max_backoff``.
        max_backoff: The longest wait between attempts while the sink fails.
        poll_interval: Seconds between looks at the outbox when nothing signals new entries
            (entries appended by another process).
        events: Where `Published` (each acknowledged batch) and `SinkFailed` go.
    """

    def __init__(
        self,
        inbox: OutboxInbox,
        sink: Sink,
        *,
        batch: int = 256,
        lease: float = 60.0,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        poll_interval: float = 5.0,
        events: Events | None = None,
    ) -> None:
        self.inbox = inbox
        self.sink = sink
        self.batch = batch
        self.lease = lease
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.poll_interval = poll_interval
        self.owner = new_owner()
        self.events = events or Events()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._failures = 0  # consecutive

    async def start(self) -> None:
        """Start publishing in the background."""
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name=f"iotpush-publish-{self.sink.name}")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking entries, wait for the acks under way (``grace`` s at most), give back
        the rest and disconnect."""
        self._stop.set()
        if self._task is not None:
            _, late = await asyncio.wait([self._task], timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self.inbox.release_unpublished(self.sink.name, self.owner)
        except InboxError as exc:
            log.error("%s: could not give back the outbox leases: %s", self.sink.name, exc)
        await self.sink.close()

    async def _run(self) -> None:
        opened = False
        while not self._stop.is_set():
            try:
                if not opened:
                    await self.sink.open()
                    opened = True
                if not await self._publish_some():
                    await self._idle(self.poll_interval, work=True)
                    continue
            except SinkError as exc:
                await self._failed(str(exc))
                continue
            except InboxError as exc:
                log.error("%s: cannot read the outbox: %s", self.sink.name, exc)
                await self._idle(self.poll_interval, work=False)
                continue
            except Exception as exc:  # publishing must never stop silently
                log.exception("%s: publishing failed", self.sink.name)
                await self._failed(f"{type(exc).__name__}: {exc}")
                continue

    async def _publish_some(self) -> bool:
        """Publish one batch; whether there was anything to publish."""
        entries = await self.inbox.unpublished(self.sink.name, self.owner, self.batch, self.lease)
        if not entries:
            return False
        outcome = await self.sink.publish(entries)
        done = outcome.acknowledged + outcome.refused
        if done:
            await self.inbox.published(self.sink.name, done)
        if outcome.acknowledged and self.events.wants(Published):
            self.events.emit(Published(self.sink.name, len(outcome.acknowledged)))
        if outcome.error is not None:
            raise SinkError(f"{len(entries) - len(done)} of {len(entries)}: {outcome.error}")
        if self._failures:
            log.warning("%s: publishing again after %d failures", self.sink.name, self._failures)
            self._failures = 0
        return True

    async def _failed(self, error: str) -> None:
        if self.events.wants(SinkFailed):
            self.events.emit(SinkFailed(self.sink.name, error))
        self._failures += 1
        delay = min(self.backoff * 2 ** (self._failures - 1), self.max_backoff)
        if self._failures == 1 or self._failures % 20 == 0:  # not a line per retry
            log.warning(
                "%s: cannot publish (%s); entries wait in the outbox, retried every %.0f s at most",
                self.sink.name,
                error,
                self.max_backoff,
            )
        await self._idle(delay, work=False)

    async def _idle(self, seconds: float, *, work: bool) -> None:
        """Wait ``seconds``, less if asked to stop or (with ``work``) if new entries arrive."""
        if work:
            wait = self.inbox.wait_for_unpublished(self.sink.name, seconds)
        else:
            wait = asyncio.sleep(seconds)
        waits = [asyncio.ensure_future(wait), asyncio.ensure_future(self._stop.wait())]
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
