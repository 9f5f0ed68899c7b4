"""Retention: what is older than ``--retention`` goes every ``--purge-interval``, bit by bit.

Each round deletes the delivered inbox entries received before now minus the retention (the
same `Inbox.purge` as ``iotpush inbox purge``, dead ones left to the operator, entries a sink
has not published kept; the purge is recorded, so ``trackers rebuild`` knows what it can no
longer derive) and the trackers' histories older than that, except the events each current
state came from (`iotpush.trackers.HISTORIES` says which). Everything goes in transactions of
`batch` rows that share the store's writer with the receive path, which gets its turn between
them; then a SQLite file made with incremental vacuum gives the freed pages back, as many per
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
from .trackers import History

__all__ = ["DEFAULT_PURGE_INTERVAL", "DEFAULT_RETENTION", "Retention"]

log = logging.getLogger("iotpush.retention")

DEFAULT_RETENTION = 7 * 86400.0
"""Seconds delivered entries and tracker histories are kept by default (7 days)."""
DEFAULT_PURGE_INTERVAL = 300.0
"""Seconds between purge rounds by default (5 minutes)."""


class Retention:
    """Purges what is older than ``keep`` seconds from ``inbox``, every ``interval`` seconds.

    Args:
        inbox: The store (its writer is shared: each batch is one short transaction).
        histories: The tracker histories to purge (`iotpush.trackers.HISTORIES`).
        keep: Seconds kept.
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
        interval: float = DEFAULT_PURGE_INTERVAL,
        batch: int = 100,
        clock: Callable[[], float] = time.time,
        events: Events | None = None,
    ) -> None:
        self.inbox = inbox
        self.histories = tuple(histories)
        self.keep = keep
        self.interval = interval
        self.batch = batch
        self.clock = clock
        self.events = events or Events()
        # Where each history's next round starts (entry ids below were looked at already). From
        # 0 in a new process, so that rows kept then and no longer needed go at last.
        self._after = {history.table: 0 for history in self.histories}
        self._task: asyncio.Task[None] | None = None

    async def purge(self) -> PurgeRound:
        """Run one round now; return what it deleted (also emitted and logged)."""
        started = time.perf_counter()
        before = self.clock() - self.keep
        purged = {"entries": await self.inbox.purge(before, batch=self.batch, dead=False)}
        for history in self.histories:
            purged[history.table] = await self._prune(history, before)
        freed = 0
        while step := await self.inbox.give_back(self.batch):  # a SQLite file shrinks
            freed += step
        round = PurgeRound(purged, time.perf_counter() - started, before, freed)
        if any(purged.values()):
            what = ", ".join(f"{count} {name}" for name, count in purged.items() if count)
            log.info(
                "retention purged %s received before %s%s", what, format_ts(before),
                f"; the store gave back {freed} pages" if freed else "",
            )  # fmt: skip
        self.events.emit(round)
        return round

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
