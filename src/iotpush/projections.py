"""Projections: state derived from notifications, written in the transaction that keeps them.

A projection (the trackers of `iotpush.trackers` are four) reads each new notification of the
types it ``handles`` and updates its own tables, inside the inbox's append transaction, so its
state is as durable as the 200 the platform got. The inbox is *given* its projections (the
``projections`` option of every backend; `iotpush.server` wires the trackers) and knows nothing
else about them: it hands each new entry of a handled type to `Projections.apply` under a
savepoint, so a projection that fails costs neither the notification nor the other entries of
the transaction (it is logged, and ``iotpush trackers rebuild`` can apply it again).

A projection's tables come from the store's numbered migrations (`iotpush.inbox._migrations`),
not from the projection: every process that opens a store, whatever it wires, must agree on the
store's schema version.

Rules a projection keeps: ``apply`` is synchronous SQL on the connection it is given (``?``
placeholders; it never begins or ends a transaction), idempotent by entry id, and ordered by
entry id or event time rather than by when it runs, so that ``reset`` and applying every kept
entry in id order rebuilds the same state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .models import Notification

__all__ = ["Cursor", "Database", "Projection", "Projections"]


class Cursor(Protocol):
    """The part of a DB-API cursor projections use."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Database(Protocol):
    """The part of a DB-API connection projections use: `sqlite3.Connection` has it.

    SQL uses ``?`` placeholders; a backend for another driver translates them.
    """

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...


class Projection(Protocol):
    """State derived from notifications: what it handles, how it applies one, how it resets."""

    @property
    def name(self) -> str:
        """What logs call it."""
        ...

    @property
    def handles(self) -> frozenset[str]:
        """The ``notifyType`` values it reads; the inbox hands it no other."""
        ...

    def apply(
        self, db: Database, entry_id: int, received_at: float, notification: Notification
    ) -> None:
        """Apply one new entry, in the caller's transaction; safe to run again for it."""
        ...

    def reset(self, db: Database) -> None:
        """Delete every row derived from notifications (before a rebuild)."""
        ...


Apply = Callable[["Database", int, float, "Notification"], None]


class Projections:
    """The projections an inbox is given, indexed by the notification types they handle."""

    __slots__ = ("_by_type", "all")

    def __init__(self, projections: Iterable[Projection] = ()) -> None:
        self.all: tuple[Projection, ...] = tuple(projections)
        by_type: dict[str, list[Apply]] = {}
        for projection in self.all:
            for type_ in projection.handles:
                by_type.setdefault(type_, []).append(projection.apply)
        self._by_type = {type_: tuple(applies) for type_, applies in by_type.items()}

    @property
    def handles(self) -> frozenset[str]:
        """Every ``notifyType`` some projection reads."""
        return frozenset(self._by_type)

    def wants(self, notify_type: str) -> bool:
        """Whether some projection reads notifications of ``notify_type``."""
        return notify_type in self._by_type

    def apply(
        self, db: Database, entry_id: int, received_at: float, notification: Notification
    ) -> None:
        """Apply one entry to every projection that reads its type, in the order given."""
        for apply in self._by_type.get(notification.notify_type, ()):
            apply(db, entry_id, received_at, notification)

    def reset(self, db: Database) -> None:
        """Reset every projection."""
        for projection in self.all:
            projection.reset(db)
