"""What iotpush knows about commands, devices, shadows and upgrades, as Python calls.

The trackers (`iotpush.trackers`) keep their state in the inbox's store, updated in the same
transaction that persists each notification. `Tracking` reads it for handlers, scripts, the
query API and the CLI::

    tracking = Tracking(inbox)
    await tracking.expect(command_id, device_id, timeout=300)   # after creating a command
    record = await tracking.wait(command_id, timeout=60)         # its terminal state, or None
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from . import trackers
from ._when import format_ts
from .exceptions import EntryNotFound, NotificationError, RebuildRefused
from .inbox import Entry, Purged, Selection, Tally, TrackingInbox, decode_entry
from .trackers import CommandRecord, DeviceRecord, ShadowRecord, UpgradeRecord
from .trackers.messages import MessageRecord, get_message
from .trackers.tasks import TaskRecord, get_task

__all__ = ["MAX_VIEW_COMMANDS", "DeviceView", "RebuildPlan", "Tracking"]

log = logging.getLogger("iotpush.tracking")


MAX_VIEW_COMMANDS: Final = 1000


class DeviceView(msgspec.Struct, frozen=True, kw_only=True):
    """A device with everything known about it: registry, latest data, shadow, recent commands.

    Attributes:
        commands: The device's most recently updated commands, newest first (ties by command
            id), as many as `Tracking.device` was asked for (100 by default).
        commands_total: How many commands the device has. When it is more than ``commands``
            holds, page through them all with ``Tracking.commands(device=...)``
            (``GET /api/commands?device=``, ``iotpush commands ls --device``).
    """

    device: DeviceRecord
    shadow: list[ShadowRecord]
    commands: list[CommandRecord]
    commands_total: int


@dataclass(frozen=True, slots=True)
class RebuildPlan:
    """What `Tracking.rebuild` would do: the records it forgets, the notifications it applies."""

    records: dict[str, int]
    """Tracker records held now, by kind (devices, commands, shadows, upgrades)."""
    notifications: Tally
    """Kept entries of the types the trackers use, by type and state."""
    purged: Purged | None = None
    """Entries the trackers used that were purged: their state would be lost."""
    finished: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Finished records finished-retention deleted, by kind: how many, and the latest bound
    (`iotpush.trackers.finished_purges`)."""


def finished_by_rebuild(finished: dict[str, tuple[int, float]]) -> str | None:
    """A sentence saying what a rebuild does with records finished-retention deleted (None:
    it deleted none)."""
    if not finished:
        return None
    total = sum(n for n, _ in finished.values())
    kinds = ", ".join(f"{n} {kind}" for kind, (n, _) in sorted(finished.items()))
    before = max(at for _, at in finished.values())
    return (
        f"finished-retention deleted {total} finished records ({kinds}; the latest last heard of"
        f" before {format_ts(before)}): a rebuild brings back only what the kept notifications"
        " say of them, and the next purge round deletes those again"
    )


def lost_by_rebuild(purged: Purged) -> str:
    """A sentence saying what a rebuild would lose."""
    return (
        f"the trackers used {purged.entries} notifications that were purged (received"
        f" {format_ts(purged.first_received)} to {format_ts(purged.last_received)}, purged since"
        f" {format_ts(purged.first_purged)}): a rebuild from the kept ones would lose"
        " what they said"
    )


class Tracking:
    """Queries over the tracker state kept in ``inbox``'s store.

    Args:
        inbox: The store (opened by the caller).
        clock: Unix time source (injected by tests: deadlines and overdue use it).
        poll_interval: Seconds between looks at the store while `wait` waits.
    """

    def __init__(
        self,
        inbox: TrackingInbox,
        *,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 0.2,
    ) -> None:
        self.inbox = inbox
        self.clock = clock
        self.poll_interval = poll_interval

    # commands -----------------------------------------------------------------------------

    async def command(self, command_id: str) -> CommandRecord:
        """One command with its history.

        Raises:
            EntryNotFound: No notification or expectation named it.
        """
        record = await self.inbox.read(lambda db: trackers.get_command(db, command_id))
        if record is None:
            raise EntryNotFound(f"no command {command_id}")
        return record

    async def commands(
        self,
        *,
        device: str | None = None,
        state: str | None = None,
        overdue: bool = False,
        limit: int = 100,
        after: str | None = None,
    ) -> list[CommandRecord]:
        """Commands by command id (page with ``after``), filtered by device, state, overdue."""
        when = self.clock() if overdue else None
        return await self.inbox.read(
            lambda db: trackers.find_commands(db, device, state, when, limit, after)
        )

    async def expect(self, command_id: str, device_id: str, *, timeout: float) -> CommandRecord:
        """Register a command the application just created: PENDING until the platform reports,
        overdue if no terminal state arrives within ``timeout`` seconds."""
        now = self.clock()
        await self.inbox.transact(
            lambda db: trackers.expect(db, command_id, device_id, now + timeout, now)
        )
        return await self.command(command_id)

    async def wait(self, command_id: str, timeout: float) -> CommandRecord | None:
        """Wait until the command reaches a terminal state; ``None`` if ``timeout`` passes first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            record = await self.inbox.read(lambda db: trackers.get_command(db, command_id))
            if record is not None and record.terminal:
                return record
            left = deadline - loop.time()
            if left <= 0:
                return None
            await asyncio.sleep(min(self.poll_interval, left))

    async def overdue(self) -> list[CommandRecord]:
        """Expected commands past their deadline without a terminal state."""
        now = self.clock()
        return await self.inbox.read(lambda db: trackers.overdue(db, now))

    async def watch(
        self,
        on_overdue: Callable[[CommandRecord], Awaitable[None] | None] | None = None,
        *,
        interval: float = 5.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        """The watchdog: report each command once when it becomes overdue (logs a warning and
        calls ``on_overdue``), checking every ``interval`` seconds, until cancelled."""
        reported: set[str] = set()
        while True:
            try:
                late = await self.overdue()
            except Exception:  # the store may be busy: try again next round
                log.exception("checking for overdue commands failed")
                late = []
            for record in late:
                if record.command_id in reported:
                    continue
                reported.add(record.command_id)
                log.warning(
                    "command %s to %s is overdue: %s since %s, deadline passed",
                    record.command_id, record.device_id, record.state, format_ts(record.updated_at),
                )  # fmt: skip
                if on_overdue is not None:
                    result = on_overdue(record)
                    if result is not None:
                        await result
            reported &= {r.command_id for r in late}  # one that recovers may be reported again
            await sleep(interval)

    # devices, shadows, upgrades -----------------------------------------------------------

    async def device(self, device_id: str, *, commands: int = 100) -> DeviceView:
        """A device's registry record, latest data, shadow sync and most recent commands.

        Args:
            device_id: The device.
            commands: How many of its commands to include, the most recently updated first:
                0 to 1000. ``DeviceView.commands_total`` says how many it has in all;
                ``Tracking.commands(device=...)`` pages through every one.

        Raises:
            EntryNotFound: No notification named the device.
            ValueError: ``commands`` is out of range.
        """
        if not 0 <= commands <= MAX_VIEW_COMMANDS:
            raise ValueError(f"commands must be between 0 and {MAX_VIEW_COMMANDS}, got {commands}")

        def read(db: Any) -> DeviceView | None:
            record = trackers.get_device(db, device_id)
            if record is None:
                return None
            recent = trackers.recent_commands(db, device_id, commands) if commands else []
            return DeviceView(
                device=record,
                shadow=trackers.get_shadow(db, device_id),
                commands=recent,
                commands_total=trackers.count_commands(db, device_id),
            )

        view = await self.inbox.read(read)
        if view is None:
            raise EntryNotFound(f"no device {device_id}")
        return view

    async def devices(
        self,
        *,
        status: str | None = None,
        include_deleted: bool = False,
        limit: int = 100,
        after: str | None = None,
    ) -> list[DeviceRecord]:
        """Devices by id (page with ``after``), optionally by status, deleted ones on request."""
        return await self.inbox.read(
            lambda db: trackers.find_devices(db, status, include_deleted, limit, after)
        )

    async def expect_shadow(
        self, device_id: str, service_id: str, properties: dict[str, Any]
    ) -> list[ShadowRecord]:
        """Record desired properties the application just set, so they count as unconfirmed
        until a DELIVERED status carrying them arrives."""
        now = self.clock()
        await self.inbox.transact(
            lambda db: trackers.expect_shadow(db, device_id, service_id, properties, now)
        )
        return await self.inbox.read(lambda db: trackers.get_shadow(db, device_id))

    async def unsynced(self, *, limit: int = 100, after: str | None = None) -> list[ShadowRecord]:
        """Device services whose last desired-property sync FAILED or is unconfirmed, by device
        id then service id (page with ``after``, the last record's `ShadowRecord.cursor`).

        Raises:
            ValueError: ``limit`` is out of range or ``after`` is not a cursor.
        """
        return await self.inbox.read(lambda db: trackers.unsynced(db, limit, after))

    async def upgrade(self, operation_id: str) -> list[UpgradeRecord]:
        """Each device's progress in one upgrade operation.

        Raises:
            EntryNotFound: No notification named the operation.
        """
        records = await self.inbox.read(lambda db: trackers.get_upgrade(db, operation_id))
        if not records:
            raise EntryNotFound(f"no upgrade operation {operation_id}")
        return records

    async def message(self, message_id: str) -> MessageRecord:
        """One message sent down to a device (v5), with its status and history.

        Raises:
            EntryNotFound: No notification named the message.
        """
        record = await self.inbox.read(lambda db: get_message(db, message_id))
        if record is None:
            raise EntryNotFound(f"no message {message_id}")
        return record

    async def task(self, task_id: str) -> TaskRecord:
        """One v5 batch task (firmware or software upgrade...), with its progress and history.

        Raises:
            EntryNotFound: No notification named the task.
        """
        record = await self.inbox.read(lambda db: get_task(db, task_id))
        if record is None:
            raise EntryNotFound(f"no batch task {task_id}")
        return record

    async def upgrades(
        self, *, device: str | None = None, limit: int = 100, after: str | None = None
    ) -> list[UpgradeRecord]:
        """Upgrade records, most recently updated first (page with ``after``, the last record's
        `UpgradeRecord.cursor`).

        A record updated while you page moves to the front and is not seen again by the pages
        that follow; every other record appears once (see `trackers.find_upgrades`).

        Raises:
            ValueError: ``limit`` is out of range or ``after`` is not a cursor.
        """
        return await self.inbox.read(lambda db: trackers.find_upgrades(db, device, limit, after))

    # notifications ------------------------------------------------------------------------

    async def notifications(
        self,
        *,
        type: str | None = None,
        device: str | None = None,
        since: float | None = None,
        limit: int = 100,
        after: int = 0,
    ) -> list[Entry]:
        """Received notifications in arrival order (page with ``after``, the last entry id)."""
        selection = Selection(type=type, device=device, since=since)
        return await self.inbox.find(selection, limit=limit, after=after)

    async def rebuild_plan(self) -> RebuildPlan:
        """Count what `rebuild` forgets and what it applies again (shown before it runs)."""
        records = await self.inbox.read(trackers.count_records)
        kept = await self.inbox.tally(Selection())
        wants = self.inbox.projections.wants
        tracked = {k: n for k, n in kept.counts.items() if wants(k[0])}
        finished = await self.inbox.read(trackers.finished_purges)
        return RebuildPlan(records, Tally(tracked), await self.inbox.purged(), finished)

    async def rebuild(
        self,
        *,
        batch: int = 1000,
        progress: Callable[[int], None] | None = None,
        discard_purged: bool = False,
    ) -> int:
        """Forget the tracker state and apply every kept entry again, in arrival order.

        Returns how many entries were applied. Expectations stay (they are the application's).
        An entry whose body no longer decodes (a model changed since) is logged and skipped.

        Args:
            batch: Entries applied per transaction.
            progress: Called with the running count of entries applied.
            discard_purged: Rebuild even though entries the trackers used were purged, losing
                what they said (the purge records are then forgotten: the new state is all
                derived from kept entries).

        Raises:
            RebuildRefused: Entries the trackers used were purged, and not ``discard_purged``.
        """
        purged = await self.inbox.purged()
        if purged is not None and not discard_purged:
            raise RebuildRefused(lost_by_rebuild(purged), purged)
        projections = self.inbox.projections
        await self.inbox.transact(projections.reset)
        applied, after = 0, 0
        while True:
            entries = await self.inbox.find(Selection(), limit=batch, after=after)
            if not entries:
                if purged is not None:  # what they said is gone from the state too now
                    await self.inbox.forget_purged()
                return applied
            tracked = [e for e in entries if projections.wants(e.type)]

            def apply(db: Any, tracked: list[Entry] = tracked) -> int:
                done = 0
                for entry in tracked:
                    try:
                        notification = decode_entry(entry)
                    except NotificationError as exc:  # as live: the entry is kept, not tracked
                        log.warning("rebuild skips entry %d (%s): %s", entry.id, entry.type, exc)
                        continue
                    projections.apply(db, entry.id, entry.received_at, notification)
                    done += 1
                return done

            applied += await self.inbox.transact(apply)
            after = entries[-1].id
            if progress is not None:
                progress(applied)
