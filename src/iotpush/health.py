"""Health that tells the truth: liveness and readiness, each a set of named checks.

``/health/live`` says the process and its event loop answer (restart it when they do not).
``/health/ready`` says whether this process can do its work now (take it out of the load
balancer when it cannot): the store commits a write within ``store_timeout`` (it updates a row of
``ready_checks``: an empty transaction would commit on a full disk too), the
dispatcher's claim loop runs, and each sink is connected, its last publish did not fail and its
outbox holds at most ``max_backlog`` entries. Each check has a name, ``ok`` and a reason::

    {"status": "fail", "checks": {
        "store": {"ok": true, "reason": "a write transaction committed in 2 ms"},
        "dispatcher": {"ok": true, "reason": "the claim loop runs"},
        "sink:nats:IOTPUSH": {"ok": false,
                              "reason": "12034 entries wait in the outbox (at most 10000)"}}}
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Final, Protocol

import msgspec

from .events import Events, Published, SinkFailed
from .inbox._sqlbase import SQLInbox
from .overview import OverviewReader, read_unpublished

__all__ = ["DEFAULT_MAX_BACKLOG", "Check", "Health", "Report"]

DEFAULT_MAX_BACKLOG: Final = 10_000

# One row, whichever process of a cluster writes it: the table never grows.
_WRITE = (
    "INSERT INTO ready_checks (name, checked_at) VALUES ('store', ?)"
    " ON CONFLICT (name) DO UPDATE SET checked_at = excluded.checked_at"
)


class Check(msgspec.Struct, frozen=True):
    """One check's verdict."""

    ok: bool
    reason: str


class Report(msgspec.Struct, frozen=True):
    """Every check of a probe; ``status`` is ``ok`` when all are."""

    status: str
    checks: dict[str, Check]

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return self.status == "ok"


def _report(checks: dict[str, Check]) -> Report:
    return Report("ok" if all(c.ok for c in checks.values()) else "fail", checks)


class _Claiming(Protocol):
    @property
    def claiming(self) -> bool: ...


class _Sink(Protocol):
    name: str

    @property
    def connected(self) -> bool | None: ...


class _Publishing(Protocol):
    @property
    def sink(self) -> Any: ...


class Health:
    """The liveness and readiness checks of one app.

    Args:
        overview: Its ``inbox`` takes the write check and gives each sink's backlog (its outbox
            alone, `overview.read_unpublished`: not the overview's figures, whose first reading
            counts every entry, on the probe a just-started server answers first).
        events: The app's events: a sink's last publish outcome comes from them.
        dispatcher: The dispatcher whose claim loop must run (None: not checked).
        publishers: The sinks' publishers (their ``sink`` is checked).
        max_backlog: The most entries a sink's outbox may hold for the process to be ready.
        store_timeout: Seconds the store has to commit the write check.
    """

    def __init__(
        self,
        overview: OverviewReader,
        events: Events,
        *,
        dispatcher: _Claiming | None = None,
        publishers: Sequence[_Publishing] = (),
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        store_timeout: float = 2.0,
    ) -> None:
        self.overview = overview
        self.dispatcher = dispatcher
        self.sinks: list[_Sink] = [publisher.sink for publisher in publishers]
        self.max_backlog = max_backlog
        self.store_timeout = store_timeout
        self._sink_errors: dict[str, str] = {}  # sinks whose last publish failed: why
        if self.sinks:
            events.subscribe(self._on_sink, Published, SinkFailed)

    async def live(self) -> Report:
        """Liveness: answering is the proof (the event loop ran this coroutine)."""
        return _report({"event_loop": Check(True, "the process and its event loop answer")})

    async def ready(self) -> Report:
        """Readiness: the store, the dispatcher, each sink."""
        checks = {"store": await self._store()}
        if self.dispatcher is not None:
            running = self.dispatcher.claiming
            reason = "the claim loop runs" if running else "the claim loop is not running"
            checks["dispatcher"] = Check(running, reason)
        if self.sinks:
            try:
                backlog: dict[str, int] | str = await read_unpublished(self.overview.inbox)
            except Exception as exc:  # noqa: BLE001 - reported as the checks' reason
                backlog = f"cannot read the outbox: {exc}"
            for sink in self.sinks:
                checks[f"sink:{sink.name}"] = self._sink(sink, backlog)
        return _report(checks)

    async def _store(self) -> Check:
        inbox = self.overview.inbox
        started = time.perf_counter()
        now = time.time()

        def write(db: Any) -> None:
            if isinstance(inbox, SQLInbox):  # the memory inbox has no disk to fill
                db.execute(_WRITE, (now,))

        try:
            async with asyncio.timeout(self.store_timeout):
                await inbox.transact(write)
        except TimeoutError:
            return Check(False, f"no write transaction committed within {self.store_timeout:g} s")
        except Exception as exc:  # noqa: BLE001 - any store failure is the reason
            return Check(False, f"the store refused a write: {exc}")
        took = (time.perf_counter() - started) * 1000
        return Check(True, f"a write transaction committed in {took:.0f} ms")

    def _sink(self, sink: _Sink, backlog: dict[str, int] | str) -> Check:
        if sink.connected is False:
            return Check(False, "not connected")
        error = self._sink_errors.get(sink.name)
        if error is not None:
            return Check(False, f"the last publish failed: {error}")
        if isinstance(backlog, str):
            return Check(False, backlog)
        waiting = backlog.get(sink.name, 0)
        if waiting > self.max_backlog:
            return Check(
                False, f"{waiting} entries wait in the outbox (at most {self.max_backlog})"
            )
        return Check(True, f"connected; {waiting} entries wait in the outbox")

    def _on_sink(self, event: object) -> None:
        if isinstance(event, SinkFailed):
            self._sink_errors[event.sink] = event.error
        elif isinstance(event, Published):
            self._sink_errors.pop(event.sink, None)
