"""What each caller of the inbox uses of it: one protocol per caller.

`Inbox` (every backend) implements them all; a caller names only the one it needs, so that what
it may do to the store is written where it is declared:

- `ReceiveInbox`: the app keeps accepted notifications and quarantines refused bodies;
- `DeliveryInbox`: the dispatcher claims entries and records how their delivery went;
- `OutboxInbox`: a sink's publisher takes the entries it has not published yet;
- `TrackingInbox`: tracker queries and rebuilds read and write the projections' tables;
- `AdminInbox`: operator commands inspect, replay and purge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    import sqlite3

    from ..projections import Projections
    from . import Accepted, Entry, InboxStats, Incoming, Purged, Rejection, Selection, Tally

__all__ = ["AdminInbox", "DeliveryInbox", "OutboxInbox", "ReceiveInbox", "TrackingInbox"]

T = TypeVar("T")


class ReceiveInbox(Protocol):
    """The app's part: keep what it accepted, quarantine what it refused (and open and close
    the inbox in its lifespan)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, item: Incoming) -> Accepted: ...

    async def quarantine(self, rejection: Rejection) -> int: ...


class DeliveryInbox(Protocol):
    """The dispatcher's part: claim due entries, settle them, hold and give back claims."""

    async def claim(self, owner: str, limit: int, lease: float) -> list[Entry]: ...

    async def begin(self, owner: str, id: int, attempt: int) -> bool: ...

    async def begin_many(self, owner: str, attempts: Sequence[tuple[int, int]]) -> set[int]: ...

    async def ack(self, ids: Sequence[int]) -> None: ...

    async def fail(self, id: int, error: str, attempts: int, retry_at: float) -> None: ...

    async def dead(self, id: int, error: str, attempts: int) -> None: ...

    async def renew(self, owner: str, lease: float) -> int: ...

    async def release(self, owner: str) -> int: ...

    def attach(
        self,
        owner: str | None,
        *,
        lease: float = 60.0,
        on_claimed: Callable[[list[Entry]], None] | None = None,
        has_room: Callable[[], bool] = ...,
    ) -> None: ...

    async def wait_for_work(self, timeout: float) -> None: ...


class OutboxInbox(Protocol):
    """A sink publisher's part: lease unpublished entries, mark them published, give back."""

    async def unpublished(self, sink: str, owner: str, limit: int, lease: float) -> list[Entry]: ...

    async def published(self, sink: str, ids: Sequence[int]) -> None: ...

    async def release_unpublished(self, sink: str, owner: str) -> int: ...

    async def wait_for_unpublished(self, sink: str, timeout: float) -> None: ...


class TrackingInbox(Protocol):
    """The tracker queries' part: the projections' tables, and the entries to rebuild them."""

    @property
    def projections(self) -> Projections: ...

    async def transact(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def find(
        self, selection: Selection, *, limit: int = 100, after: int = 0
    ) -> list[Entry]: ...

    async def tally(
        self, selection: Selection, *, after: int = 0, limit: int | None = None
    ) -> Tally: ...

    async def purged(self) -> Purged | None: ...

    async def forget_purged(self) -> None: ...


class AdminInbox(Protocol):
    """The operator commands' part: look, replay, purge, recover from quarantine."""

    async def get(self, id: int) -> Entry: ...

    async def find(
        self, selection: Selection, *, limit: int = 100, after: int = 0
    ) -> list[Entry]: ...

    async def stats(self) -> InboxStats: ...

    async def tally(
        self, selection: Selection, *, after: int = 0, limit: int | None = None
    ) -> Tally: ...

    async def replay(self, selection: Selection) -> int: ...

    async def purgeable(self, before: float) -> Tally: ...

    async def purge(
        self,
        before: float,
        *,
        batch: int = 10_000,
        progress: Callable[[int], None] | None = None,
        dead: bool = True,
    ) -> int: ...

    async def count_quarantined(self, before: float | None = None) -> int: ...

    async def purge_quarantine(
        self, before: float, *, batch: int = 10_000, progress: Callable[[int], None] | None = None
    ) -> int: ...

    async def quarantined(self, *, limit: int = 100, after: int = 0) -> list[Rejection]: ...

    async def get_quarantined(self, id: int) -> Rejection: ...

    # quarantine replay (`iotpush.quarantine`): a body accepted again becomes an entry
    async def append(self, item: Incoming) -> Accepted: ...

    async def requarantine(self, id: int, status: int, reason: str, field: str) -> None: ...
