"""Retention: what is older than ``--retention`` goes every ``--purge-interval``, bit by bit.

Each round deletes the delivered inbox entries received before now minus the retention (the
same `Inbox.purge` as ``iotpush inbox purge``, dead ones left to the operator, entries a sink
has not published kept; the purge is recorded, so ``trackers rebuild`` knows what it can no
longer derive) and the trackers' histories older than that, except the events each current
state came from (`iotpush.trackers.HISTORIES` says which). With ``--finished-retention``, it
also deletes each record in a final state that nothing was heard about for that long (a
terminal command, an upgrade with a result, a v5 message or task with a final status, a deleted
device with its services and latest data), with all its rows (`iotpush.trackers.FINISHED`);
records still open stay. Everything goes in transactions of
`batch` rows that share the store's writer with the receive path, which gets its turn between
them; then a SQLite file made with incremental vacuum gives back the free pages no insert took
since the last round (those it just freed wait for the next interval's inserts), as many per
transaction. The quarantine keeps its own bound (``--quarantine-max-rows``). A round emits
`iotpush.events.PurgeRound` and logs what it deleted.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence

from ._when import format_ts
from .events import Events, PurgeRound
from .inbox import Inbox
from .trackers import Finished, History

__all__ = [
    "DEFAULT_FINISHED_RETENTION", "DEFAULT_PURGE_INTERVAL", "DEFAULT_RETENTION", "Retention",
]  # fmt: skip

log = logging.getLogger("iotpush.retention")

DEFAULT_RETENTION = 7 * 86400.0
"""Seconds delivered entries and tracker histories are kept by default (7 days)."""
DEFAULT_FINISHED_RETENTION = 30 * 86400.0
"""Seconds finished records are kept after they were last heard of, by default (30 days)."""
DEFAULT_PURGE_INTERVAL = 300.0
"""Seconds between purge rounds by default (5 minutes)."""


class Retention:
    """Purges what is older than ``keep`` seconds from ``inbox``, every ``interval`` seconds.

    Args:
        inbox: The store (its writer is shared: each batch is one short transaction).
        histories: The tracker histories to purge (`iotpush.trackers.HISTORIES`).
        keep: Seconds kept.
        finished: The trackers' finished records (`iotpush.trackers.FINISHED`).
        finished_keep: Seconds a finished record is kept after it was last heard of (None:
            forever); not less than ``keep``.
        interval: Seconds between rounds (`run`).
        batch: The most rows one transaction deletes.
        clock: Unix time.
        events: Where `PurgeRound` goes.
    """

    def __init__(
        self,
        inbox: Inbox,
        histories: Sequence[History],
        *,
        keep: float,
        finished: Sequence[Finished] = (),
        finished_keep: float | None = None,
        interval: float = DEFAULT_PURGE_INTERVAL,
        batch: int = 100,
        clock: Callable[[], float] = time.time,
        events: Events | None = None,
    ) -> None:
        self.inbox = inbox
        self.histories = tuple(histories)
        self.keep = keep
        self.finished = tuple(finished) if finished_keep is not None else ()
        self.finished_keep = finished_keep
        self.interval = interval
        self.batch = batch
        self.clock = clock
        self.events = events or Events()
        # Where each history's next round starts (entry ids below were looked at already). From
        # 0 in a new process, so that rows kept then and no longer needed go at last.
        self._after = {history.table: 0 for history in self.histories}
        self._task: asyncio.Task[None] | None = None

    async def purge(self) -> PurgeRound | None:
        """Run one round now; return what it deleted (also emitted and logged), or None when
        another process sharing the store is running one (`Inbox.purge_turn`): this round is
        skipped, which the log says at debug level."""
        async with self.inbox.purge_turn() as mine:
            if not mine:
                log.debug("retention: another process is purging the store; round skipped")
                return None
            return await self._round()

    async def _round(self) -> PurgeRound:
        started = time.perf_counter()
        # Free pages that no insert took since the last round are surplus: they go back to the
        # filesystem. Those this round frees stay for the next interval's inserts: in a steady
        # state nothing is moved (incremental vacuum moves pages, a lot of write-ahead log on the
        # writer the receive path shares), and the file shrinks when less comes in than goes.
        surplus = await self.inbox.free_pages()
        before = self.clock() - self.keep
        purged = {"entries": await self.inbox.purge(before, batch=self.batch, dead=False)}
        for history in self.histories:
            purged[history.table] = await self._prune(history, before)
        finished_before = None
        if self.finished_keep is not None:
            finished_before = self.clock() - self.finished_keep
            for records in self.finished:
                purged[f"finished_{records.kind}"] = await self._drop(records, finished_before)
        freed = 0
        while freed < surplus and (
            step := await self.inbox.give_back(min(surplus - freed, self.batch))
        ):
            freed += step
        seconds = time.perf_counter() - started
        round = PurgeRound(purged, seconds, before, freed, finished_before)
        if any(purged.values()):
            log.info("retention purged %s%s", self._said(purged, before, finished_before),
                     f"; the store gave back {freed} pages" if freed else "")  # fmt: skip
        self.events.emit(round)
        return round

    @staticmethod
    def _said(purged: dict[str, int], before: float, finished_before: float | None) -> str:
        old = [f"{n} {name}" for name, n in purged.items() if n and not name.startswith("fin")]
        done = [f"{n} {name[9:]}" for name, n in purged.items() if n and name.startswith("fin")]
        parts = [f"{', '.join(old)} received before {format_ts(before)}"] if old else []
        if done and finished_before is not None:
            parts.append(
                f"finished records ({', '.join(done)}) last heard of before"
                f" {format_ts(finished_before)}"
            )
        return "; ".join(parts)

    async def _drop(self, records: Finished, before: float) -> int:
        total, done = 0, False
        while not done:
            drop = functools.partial(records.prune, before=before, limit=self.batch)
            deleted, done = await self.inbox.transact(drop)
            total += deleted
        return total

    async def _prune(self, history: History, before: float) -> int:
        total, done = 0, False
        while not done:
            prune = functools.partial(
                history.prune, after=self._after[history.table], before=before, limit=self.batch
            )
            deleted, self._after[history.table], done = await self.inbox.transact(prune)
            total += deleted
        return total

    async def run(self) -> None:
        """Purge every `interval` until cancelled; a round that fails is logged, not fatal."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.purge()
            except Exception:
                log.exception("retention: the purge round failed; the next one tries again")

    async def start(self) -> None:
        """Start `run` in the background."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        """Stop `run` (a round under way stops between two transactions)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
