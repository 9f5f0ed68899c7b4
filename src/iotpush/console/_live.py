"""Live figures of the receiver, counted from the pipeline's events (since the process started).

`Live` subscribes to `Received` and `Answered`: pushes per minute by type over the last hour,
accepted, duplicate and refused counts (a receive path's answers other than 200: a scanner's 404
or an API 401 is no refused push), when the last push came, and how many answers in a row were
refusals (the platform stops pushing to a callback URL that fails ten times in a row).
Listeners run in the emitter's thread, so each one does a few dictionary updates and returns.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from ..events import Answered, Event, Events, Received

__all__ = ["MINUTES", "Live", "Minute"]

MINUTES: Final = 60
"""How many minutes of pushes the overview's chart shows."""


@dataclass(slots=True)
class Minute:
    """Pushes received in one minute (``start``: Unix seconds, a multiple of 60), by type."""

    start: int
    by_type: Counter[str] = field(default_factory=Counter)


class Live:
    """What the overview shows of the pipeline's recent activity, kept up by its events.

    Args:
        events: The pipeline's events; `Live` subscribes at once and `close` unsubscribes.
        clock: Unix time (injected by tests).
    """

    def __init__(self, events: Events, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.started_at = clock()
        self.accepted = 0
        self.duplicates = 0
        self.refused = 0
        self.refusals_in_a_row = 0
        self.last_push_at: float | None = None
        self._minutes: dict[int, Counter[str]] = {}  # by start, the last MINUTES only
        self.close = events.subscribe(self._on_event, Received, Answered)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Received):
            self.refusals_in_a_row = 0
            self.last_push_at = event.at
            if event.duplicate:
                self.duplicates += 1
                return
            self.accepted += 1
            start = int(event.at // 60 * 60)
            counts = self._minutes.get(start)
            if counts is None:
                counts = self._minutes[start] = Counter()
                oldest = max(self._minutes) - (MINUTES - 1) * 60
                for old in [s for s in self._minutes if s < oldest]:
                    del self._minutes[old]
            counts[event.type] += 1
        elif isinstance(event, Answered) and event.status != 200:
            self.refused += 1
            self.refusals_in_a_row += 1

    def minutes(self) -> list[Minute]:
        """The last `MINUTES` minutes, oldest first, the current one last (empty ones included)."""
        now = int(self.clock() // 60 * 60)
        starts = range(now - (MINUTES - 1) * 60, now + 60, 60)
        return [Minute(start, Counter(self._minutes.get(start, ()))) for start in starts]
