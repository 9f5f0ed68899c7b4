"""Warnings in the log before the platform gives up on the callback URL.

The platform counts a push as failed when it gets no 200 within 15 s, and after 10 failures in a
row it blacklists the callback URL (and the current platform discards what it could not push).
`Alerts` subscribes to the app's events and logs:

- an ERROR when ``failures_in_a_row`` answers in a row were failures (5xx, or past 15 s), and
  again at each further multiple; an INFO when a 200 ends the run;
- a WARNING when no push was committed for ``no_push_for`` seconds (optional), and an INFO when
  pushes come again;
- a WARNING when entries are dead-lettered: the first at once, then at most one line per
  ``dead_interval`` counting those since.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from ._when import format_ts
from .events import Answered, Dead, Events, Received
from .metrics import platform_failure

__all__ = ["BLACKLIST_AFTER", "Alerts"]

log = logging.getLogger("iotpush.alerts")

BLACKLIST_AFTER: Final = 10
"""Failures in a row after which the platform blacklists the callback URL."""


class Alerts:
    """Log lines an operator must not miss, from the app's events.

    Args:
        events: The app's event surface; `Alerts` subscribes to it at once.
        failures_in_a_row: Failed answers in a row that make an ERROR line (0: never).
        no_push_for: Seconds without a committed push that make a WARNING (None: never).
        dead_interval: The least seconds between two dead-letter warnings.
        check_interval: How often the background task looks for silence.
        clock: Unix time.
    """

    def __init__(
        self,
        events: Events,
        *,
        failures_in_a_row: int = 3,
        no_push_for: float | None = None,
        dead_interval: float = 60.0,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.failures_in_a_row = failures_in_a_row
        self.no_push_for = no_push_for
        self.dead_interval = dead_interval
        self.check_interval = check_interval
        self.clock = clock
        self.failures = 0
        """Answers in a row the platform counts as failures."""
        self._last_push = clock()
        self._silent = False  # the no-push warning was logged and no push came since
        self._dead_held: list[Dead] = []  # dead letters not yet in a warning
        self._dead_warned_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._flush: asyncio.TimerHandle | None = None  # logs the dead letters held back
        if failures_in_a_row:
            events.subscribe(self._on_answered, Answered)
        if no_push_for is not None:
            events.subscribe(self._on_received, Received)
        events.subscribe(self._on_dead, Dead)

    async def start(self) -> None:
        """Start looking for silence in the background (with ``no_push_for`` only)."""
        self._last_push = self.clock()
        if self.no_push_for is not None:
            self._task = asyncio.create_task(self._watch(), name="iotpush-alerts")

    async def stop(self) -> None:
        """Stop the background task, logging the dead letters still held back."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._warn_dead()

    def check(self) -> None:
        """Log what is due now: the silence warning, dead letters held back past the interval."""
        now = self.clock()
        silence = now - self._last_push
        if self.no_push_for is not None and not self._silent and silence >= self.no_push_for:
            self._silent = True
            log.warning(
                "no push arrived for %.0f s (since %s): is the platform still pushing to this URL?"
                " (check the subscription and the callback URL on the platform)",
                silence,
                format_ts(self._last_push),
            )
        if self._dead_held and (
            self._dead_warned_at is None or now - self._dead_warned_at >= self.dead_interval
        ):
            self._warn_dead()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            self.check()

    def _on_answered(self, event: object) -> None:
        assert isinstance(event, Answered)
        failed = platform_failure(event)
        if failed:
            self.failures += 1
            if self.failures % self.failures_in_a_row == 0:
                log.error(
                    "%d answers in a row were failures for the platform (the last: %s after"
                    " %.1f s); it blacklists the callback URL after %d failures in a row and"
                    " then drops what it cannot push",
                    self.failures,
                    event.status,
                    event.seconds,
                    BLACKLIST_AFTER,
                )
        elif failed is not None and self.failures:
            if self.failures >= self.failures_in_a_row:
                log.info("answering 200 again after %d failures in a row", self.failures)
            self.failures = 0

    def _on_received(self, event: object) -> None:
        assert isinstance(event, Received)
        if self._silent:
            self._silent = False
            log.info("pushes arrive again, after %.0f s without any", event.at - self._last_push)
        self._last_push = event.at

    def _on_dead(self, event: object) -> None:
        assert isinstance(event, Dead)
        self._dead_held.append(event)
        now = self.clock()
        if self._dead_warned_at is None or now - self._dead_warned_at >= self.dead_interval:
            self._warn_dead()
        elif self._flush is None:  # the first held back: log them when the interval is over
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a test): `check` or `stop` logs them
                return
            wait = self.dead_interval - (now - self._dead_warned_at)
            self._flush = loop.call_later(wait, self._flush_dead)

    def _flush_dead(self) -> None:
        self._flush = None
        self._warn_dead()

    def _warn_dead(self) -> None:
        held, self._dead_held = self._dead_held, []
        if not held:
            return
        self._dead_warned_at = self.clock()
        last = held[-1]
        extra = {
            "entry_id": last.entry_id, "type": last.type, "device": last.device_id,
            "handler": last.handler, "attempt": last.attempts,
        }  # fmt: skip
        first_line = last.error.strip().splitlines()[-1] if last.error.strip() else "?"
        log.warning(
            "%d %s dead-lettered (the last: entry %d, %s, handler %s after %d attempt(s): %s);"
            " see `iotpush inbox ls --state dead`, then `iotpush inbox replay` once fixed",
            len(held),
            "entry" if len(held) == 1 else "entries",
            last.entry_id,
            last.type,
            last.handler,
            last.attempts,
            first_line,
            extra=extra,
        )
