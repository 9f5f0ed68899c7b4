"""A deadline on a step of many requests, for a few hundred nanoseconds a request.

``asyncio.timeout`` costs a timer per request (about 3 µs here, a sixth of the whole receive
path). Instead the tasks inside the step are kept with the time they entered it, and one timer,
armed only while some task is inside, cancels those past the deadline every half of it: a task
is cancelled between ``timeout`` and 1.5 times ``timeout`` seconds after it entered.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Deadlines"]


class Deadlines:
    """Cancels tasks that stay between `enter` and `leave` longer than ``timeout`` seconds.

    The task cancelled gets `asyncio.CancelledError` where it waits; `expired` tells it apart
    from any other cancellation (a server shutting down).
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._inside: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def enter(self) -> asyncio.Task[Any]:
        """Start the current task's deadline; returns the task, for `leave` and `expired`."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        self._inside[task] = loop.time()
        if self._timer is None or self._loop is not loop:  # none armed, or on a finished loop
            self._loop = loop
            self._timer = loop.call_later(self.timeout / 2, self._sweep)
        return task

    def leave(self, task: asyncio.Task[Any]) -> None:
        """End ``task``'s deadline."""
        self._inside.pop(task, None)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled for its deadline (and, if so, take that back)."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    def _sweep(self) -> None:
        assert self._loop is not None
        late = self._loop.time() - self.timeout
        for task, entered in list(self._inside.items()):
            if entered <= late:
                del self._inside[task]
                self._expired.add(task)
                task.cancel()
        self._timer = self._loop.call_later(self.timeout / 2, self._sweep) if self._inside else None
