"""The pipeline's typed events: one surface that metrics, logs and the console subscribe to.

Each step of the pipeline emits what happened to it as a small frozen record::

    request -> Answered (every HTTP answer of a receive path: status, seconds)
            -> Received (accepted or duplicate) | Refused (a reason from a fixed set)
    inbox   -> Committed (a batch is durable)
    delivery-> AttemptStarted -> AttemptFinished -> Delivered | Retried | Dead
    sinks   -> Published | SinkFailed
    store   -> PurgeRound (retention purged what is older than it)

Emitting costs one dictionary lookup when nothing listens, and an emitter that would build an
event in a hot path asks `Events.wants` first, so an unobserved pipeline pays well under 1 µs
per notification. Listeners are plain callables run synchronously in the emitter's thread: they
must be quick and must not block (a listener that needs I/O queues the event and returns). A
listener that raises is logged and otherwise ignored: observing never breaks the pipeline.

Subscribing::

    events = Events()
    events.subscribe(on_dead, Dead)              # one type
    events.subscribe(print, Received, Refused)   # several
    events.subscribe(audit)                      # every type
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, Literal, TypeAlias

import msgspec

__all__ = [
    "REFUSAL_REASONS",
    "Answered",
    "AttemptFinished",
    "AttemptStarted",
    "Committed",
    "Dead",
    "Delivered",
    "Event",
    "Events",
    "Listener",
    "Published",
    "PurgeRound",
    "Received",
    "RefusalReason",
    "Refused",
    "Retried",
    "SinkFailed",
]

log = logging.getLogger("iotpush.events")

RefusalReason: TypeAlias = Literal[
    "bad_json",  # not JSON at all, or not an object
    "invalid",  # a member is missing or has the wrong type
    "unknown_type",  # a type (notifyType, or a v5 resource:event pair) nobody knows
    "too_large",  # over --max-body
    "too_deep",  # nesting, members or string length over the JSON bounds
    "unsupported_media_type",  # a Content-Type that is not JSON
    "forbidden",  # an access control said no (allowlist, signature, path token)
    "unauthorized",  # the query API or console without a valid token
    "not_found",  # no route
    "method_not_allowed",  # not a POST on a receive path
    "timeout",  # the body arrived too slowly
    "busy",  # load shed: --max-in-flight or --max-pending-writes
    "unavailable",  # the store could not persist (or our own failure): nothing acknowledged
]
"""Why a request was refused: a fixed set, so that it can be a metric's label."""

REFUSAL_REASONS: Final[tuple[RefusalReason, ...]] = RefusalReason.__args__  # type: ignore[attr-defined]


class Answered(msgspec.Struct, frozen=True):
    """A request to a receive path was answered (any status): what the platform saw."""

    status: int
    seconds: float
    """From the request's arrival to its answer."""
    at: float
    """When it was answered (Unix seconds, the app's clock)."""


class Received(msgspec.Struct, frozen=True):
    """A push was committed to the inbox (``duplicate``: seen before, kept but not delivered)."""

    entry_id: int
    type: str
    device_id: str | None
    duplicate: bool
    at: float


class Refused(msgspec.Struct, frozen=True):
    """A request was refused: kept in quarantine where it had a body."""

    reason: RefusalReason
    status: int
    detail: str
    """The sentence the log and quarantine hold."""
    path: str
    """The JSON path (``$.result.resultCode``) or ``$``."""
    route: str
    """The request path, with any path token masked."""


class Committed(msgspec.Struct, frozen=True):
    """A batch of appends became durable in one transaction."""

    count: int
    seconds: float


class AttemptStarted(msgspec.Struct, frozen=True):
    """A handler is about to run for an entry (the attempt counts from here)."""

    entry_id: int
    type: str
    device_id: str | None
    attempt: int
    handler: str
    """The handler's qualified name."""


class AttemptFinished(msgspec.Struct, frozen=True):
    """A handler returned or raised; ``error`` is None when it returned."""

    entry_id: int
    type: str
    device_id: str | None
    attempt: int
    handler: str
    seconds: float
    error: str | None


class Delivered(msgspec.Struct, frozen=True):
    """Every handler of an entry returned: the entry is done."""

    entry_id: int
    type: str
    device_id: str | None
    attempts: int
    lag: float
    """Seconds from receipt to delivery."""


class Retried(msgspec.Struct, frozen=True):
    """An attempt failed and the entry will be tried again after ``delay`` seconds."""

    entry_id: int
    type: str
    device_id: str | None
    attempt: int
    handler: str
    error: str
    delay: float


class Dead(msgspec.Struct, frozen=True):
    """An entry was dead-lettered: its last attempt failed and no more are allowed."""

    entry_id: int
    type: str
    device_id: str | None
    attempts: int
    handler: str
    error: str


class Published(msgspec.Struct, frozen=True):
    """A sink acknowledged ``count`` entries."""

    sink: str
    count: int


class SinkFailed(msgspec.Struct, frozen=True):
    """A sink could not publish (the outbox keeps the entries for the next try)."""

    sink: str
    error: str


class PurgeRound(msgspec.Struct, frozen=True):
    """Retention purged what was received before ``before`` (a round runs every
    ``--purge-interval``, in short transactions)."""

    purged: dict[str, int]
    """Rows deleted, by what they were: ``entries`` (delivered inbox entries) and each tracker
    history table (``command_events``...); with ``--finished-retention``, the records deleted
    whole (``finished_commands``, ``finished_upgrades``, ``finished_devices``,
    ``finished_shadows``, ``finished_messages``, ``finished_tasks``). Every one is there, 0
    included."""
    seconds: float
    """How long the round took."""
    before: float
    """The time bound (Unix seconds): now minus the retention."""
    pages_freed: int = 0
    """Pages the store gave back to the filesystem (a SQLite file with incremental vacuum)."""
    finished_before: float | None = None
    """With ``--finished-retention``: records in a final state last heard of before this time
    went (counted in `purged` as ``finished_commands``, ``finished_devices``...)."""


Event: TypeAlias = (
    Answered
    | Received
    | Refused
    | Committed
    | AttemptStarted
    | AttemptFinished
    | Delivered
    | Retried
    | Dead
    | Published
    | SinkFailed
    | PurgeRound
)
Listener: TypeAlias = Callable[[Event], object]
_ALL: Final = (
    Answered, Received, Refused, Committed, AttemptStarted, AttemptFinished,
    Delivered, Retried, Dead, Published, SinkFailed, PurgeRound,
)  # fmt: skip


class Events:
    """Where the pipeline's events go: listeners by event type, called in subscription order."""

    __slots__ = ("_listeners",)

    def __init__(self) -> None:
        self._listeners: dict[type, tuple[Listener, ...]] = {}

    def subscribe(self, listener: Listener, *types: type) -> Callable[[], None]:
        """Call ``listener`` with each event of ``types`` (all when none); return an unsubscribe."""
        for kind in types or _ALL:
            if kind not in _ALL:
                raise TypeError(f"{kind!r} is not an iotpush event type")
            self._listeners[kind] = (*self._listeners.get(kind, ()), listener)

        def unsubscribe() -> None:
            for kind in types or _ALL:
                rest = tuple(item for item in self._listeners.get(kind, ()) if item != listener)
                if rest:
                    self._listeners[kind] = rest
                else:
                    self._listeners.pop(kind, None)

        return unsubscribe

    def wants(self, kind: type) -> bool:
        """Whether anything listens to events of ``kind``: ask before building one in a hot path."""
        return kind in self._listeners

    def emit(self, event: Event) -> None:
        """Hand ``event`` to its listeners; a listener that raises is logged and skipped."""
        for listener in self._listeners.get(type(event), ()):
            try:
                listener(event)
            except Exception:  # observing must never break the pipeline
                log.exception("event listener %r failed on %r", listener, event)
