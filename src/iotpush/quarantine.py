"""Quarantine replay: a kept refused body run through today's decoder and JSON bounds again.

After an upgrade of iotpush, or a limit raised (``--max-depth``, ``--max-string``...), a body
refused earlier may be a valid notification now. `replay_quarantined` checks it as the receive
path would today (body size, JSON bounds, decoding for the path it was posted to) and, if it
passes, appends it to the inbox with its original receipt time and headers: it is then
delivered and tracked like any other push (a body replayed twice is a duplicate the second
time). A body cut when it was kept (at ``--max-body`` or ``--quarantine-max-body``, or shorter
than its ``Content-Length``) cannot be replayed. The quarantine keeps its record either way; a
body still refused has it updated with today's reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ._jsonlimits import JSONLimits
from .exceptions import NotificationError
from .idempotency import key_and_slot
from .inbox import AdminInbox, Incoming, Rejection
from .models import Notification
from .models import decode as decode_notification
from .receive import KEPT_HEADERS

__all__ = ["QuarantineReplay", "decode_for_path", "replay_quarantined", "select_quarantined"]

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


def _cut(rejection: Rejection, kept_max_body: int) -> bool:
    """Whether the kept body is, or may be, less than what was sent."""
    if rejection.status in (408, 413) or rejection.reason == "the request ended before its body":
        return True  # not received in full
    headers = {name.lower(): value for name, value in rejection.headers.items()}
    length = headers.get("content-length", "")
    if length.isdigit():
        return int(length) != len(rejection.body)
    return bool(kept_max_body and len(rejection.body) >= kept_max_body)


async def select_quarantined(
    inbox: AdminInbox,
    *,
    since: float | None = None,
    until: float | None = None,
    status: int | None = None,
) -> list[int]:
    """The ids of the quarantined bodies received in ``[since, until)`` with ``status``."""
    found: list[int] = []
    after = 0
    while page := await inbox.quarantined(limit=1000, after=after):
        found += [
            r.id
            for r in page
            if (since is None or r.received_at >= since)
            and (until is None or r.received_at < until)
            and (status is None or r.status == status)
        ]
        after = page[-1].id
    return found


def decode_for_path(path: str, body: bytes) -> Notification:
    """Today's decoder for a body posted to ``path`` of a server with the default routes."""
    return decode_notification(body, "command" if path.rstrip("/").endswith("/cmd") else "notify")


async def replay_quarantined(
    inbox: AdminInbox,
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
    if _cut(rejection, kept_max_body):
        return refused(id, reason="the body was cut when it was kept: it cannot be replayed",
                       field="$")  # fmt: skip
    again: QuarantineReplay | None = None
    if len(body) > max_body:
        again = refused(id, reason=f"body larger than {max_body} bytes", field="$")
    elif limits is not None and (bounds := limits.check(body)):
        again = refused(id, reason=bounds.reason, field=bounds.path)
    else:
        try:
            notification = decode(rejection.path, body)
        except NotificationError as exc:
            again = refused(id, reason=exc.reason, field=exc.path)
    if again is not None:  # the record keeps today's reason
        await inbox.requarantine(id, 400, str(again.reason), str(again.field))
        return again
    key, slot = key_and_slot(notification)
    kept = rejection.headers.items()  # as the receive path keeps them: nothing sensitive
    headers = {name: value for name, value in kept if name.encode("latin-1") in KEPT_HEADERS}
    accepted = await inbox.append(
        Incoming(body, notification.notify_type, notification.device, key, slot, rejection.path,
                 headers, rejection.received_at, notification)
    )  # fmt: skip
    return QuarantineReplay(id, accepted.id, accepted.duplicate)
