"""Quarantine replay: a kept refused body run through today's decoder and JSON bounds again.

After an upgrade of iotpush, or a limit raised (``--max-depth``, ``--max-string``...), a body
refused earlier may be a valid notification now. `replay_quarantined` checks it as the receive
path would today (body size, JSON bounds, decoding for the path it was posted to) and, if it
passes, appends it to the inbox with its original receipt time and headers: it is then
delivered and tracked like any other push (a body replayed twice is a duplicate the second
time). A body cut when it was kept (at ``--max-body`` or ``--quarantine-max-body``) cannot be
replayed. The quarantine keeps its record either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ._jsonlimits import JSONLimits
from .exceptions import NotificationError
from .idempotency import key_and_slot
from .inbox import Inbox, Incoming
from .models import Notification
from .receive import KEPT_HEADERS

__all__ = ["QuarantineReplay", "replay_quarantined"]

Decode = Callable[[str, bytes], Notification]
"""Decodes a body posted to a receive path (raises `NotificationError`)."""


@dataclass(frozen=True, slots=True)
class QuarantineReplay:
    """What replaying one quarantined body did.

    Attributes:
        id: The quarantine record.
        entry_id: The inbox entry it became (or the entry it duplicates); None if refused again.
        duplicate: The body was a duplicate of ``entry_id`` (already kept).
        reason: Why it is still refused, with ``field`` the JSON path; None when accepted.
    """

    id: int
    entry_id: int | None = None
    duplicate: bool = False
    reason: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        if self.entry_id is None:
            return f"Still refused: {self.reason} ({self.field})."
        if self.duplicate:
            return f"Accepted, as a duplicate of entry {self.entry_id} (already kept)."
        return f"Accepted as entry {self.entry_id}: it will be delivered and tracked."


async def replay_quarantined(
    inbox: Inbox,
    id: int,
    decode: Decode,
    *,
    max_body: int,
    limits: JSONLimits | None = None,
    kept_max_body: int = 0,
) -> QuarantineReplay:
    """Run quarantined body ``id`` through ``decode`` and ``limits`` again; append it if it passes.

    Args:
        inbox: The store (open).
        id: The quarantine record.
        decode: Today's decoder for the path the body was posted to.
        max_body: The largest body accepted today, in bytes.
        limits: Today's JSON bounds (None: none).
        kept_max_body: The most bytes the quarantine kept of a body (0: all): a body of that
            length may have been cut.

    Raises:
        EntryNotFound: No quarantine record ``id``.
        InboxUnavailable: The inbox could not persist the accepted body.
    """
    rejection = await inbox.get_quarantined(id)
    body = rejection.body
    refused = QuarantineReplay
    if (kept_max_body and len(body) >= kept_max_body) or rejection.status == 413:
        return refused(id, reason="the body was cut when it was kept: it cannot be replayed",
                       field="$")  # fmt: skip
    if len(body) > max_body:
        return refused(id, reason=f"body larger than {max_body} bytes", field="$")
    if limits is not None and (bounds := limits.check(body)):
        return refused(id, reason=bounds.reason, field=bounds.path)
    try:
        notification = decode(rejection.path, body)
    except NotificationError as exc:
        return refused(id, reason=exc.reason, field=exc.path)
    key, slot = key_and_slot(notification)
    kept = rejection.headers.items()  # as the receive path keeps them: nothing sensitive
    headers = {name: value for name, value in kept if name.encode("latin-1") in KEPT_HEADERS}
    accepted = await inbox.append(
        Incoming(body, notification.notify_type, notification.device, key, slot, rejection.path,
                 headers, rejection.received_at, notification)
    )  # fmt: skip
    return QuarantineReplay(id, accepted.id, accepted.duplicate)
