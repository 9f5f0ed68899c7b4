"""Quarantine recovery: refused bodies run again through today's decoder and JSON bounds.

A push refused by mistake (a model since fixed by an upgrade of iotpush, a bound set too low, a
sender missing from the allowlist or without a signature) stays in the quarantine with its body.
`replay_quarantined` runs kept bodies again through the decoder and the JSON bounds, not through
the access controls (the operator vouches for what they replay):

- an accepted body becomes an inbox entry, delivered and tracked like any other, with its
  original receipt time (and its new entry id: trackers take it as the latest of its device);
  its quarantine record is deleted;
- a body still refused stays in the quarantine with today's reason;
- a body kept incomplete (cut at ``--max-body`` or ``--quarantine-max-body``, or whose request
  ended early) is never replayed: what is missing cannot be guessed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, TypeAlias

from ._jsonlimits import JSONLimits
from .exceptions import EntryNotFound, NotificationError
from .idempotency import key_and_slot
from .inbox import AdminInbox, Incoming, Rejection
from .models import Route, decode
from .receive import KEPT_HEADERS

__all__ = ["Outcome", "QuarantineReplay", "replay_quarantined", "select_quarantined"]

Outcome: TypeAlias = Literal["accepted", "duplicate", "refused", "cut", "missing"]

_PAGE = 1000
# Refusals whose body was not read in full: 413 (over --max-body), 408 (too slow).
_INCOMPLETE_STATUSES = frozenset((408, 413))
_ENDED_EARLY = "the request ended before its body"


@dataclass(frozen=True, slots=True)
class QuarantineReplay:
    """What replaying one quarantined body did (or, in a dry run, would do).

    Attributes:
        id: The quarantine record.
        outcome: ``accepted`` (a new entry), ``duplicate`` (of a kept entry: nothing new),
            ``refused`` (still refused: the record now holds today's reason), ``cut`` (kept
            incomplete: not replayed), ``missing`` (no such record).
        entry: The entry it became or duplicates.
        reason: Why it is still refused, or why it cannot be replayed.
        field: The field path of that reason.
    """

    id: int
    outcome: Outcome
    entry: int | None = None
    reason: str = ""
    field: str = ""


def _cut(rejection: Rejection, quarantine_max_body: int | None) -> str | None:
    """Why ``rejection``'s body is known or feared to be incomplete, or None."""
    if rejection.status in _INCOMPLETE_STATUSES or rejection.reason == _ENDED_EARLY:
        return f"its body was not received in full ({rejection.status} {rejection.reason})"
    length = {k.lower(): v for k, v in rejection.headers.items()}.get("content-length", "")
    if length.isdigit() and int(length) != len(rejection.body):
        return f"only {len(rejection.body)} of its {length} bytes were kept"
    if not length and quarantine_max_body and len(rejection.body) >= quarantine_max_body:
        return f"it may have been cut at --quarantine-max-body ({quarantine_max_body} bytes)"
    return None


def _check(
    rejection: Rejection, limits: JSONLimits | None, quarantine_max_body: int | None
) -> Incoming | QuarantineReplay:
    """The entry ``rejection`` becomes today, or why it does not."""
    cut = _cut(rejection, quarantine_max_body)
    if cut is not None:
        return QuarantineReplay(rejection.id, "cut", reason=cut, field="$")
    body = rejection.body
    bounds = limits.check(body) if limits is not None and limits.active else None
    if bounds is not None:
        return QuarantineReplay(rejection.id, "refused", reason=bounds.reason, field=bounds.path)
    route: Route = "command" if rejection.path.rstrip("/").endswith("/cmd") else "notify"
    try:
        notification = decode(body, route)
    except NotificationError as exc:
        return QuarantineReplay(rejection.id, "refused", reason=exc.reason, field=exc.path)
    key, slot = key_and_slot(notification)
    headers = {
        name: value
        for name, value in rejection.headers.items()
        if name.lower().encode("latin-1") in KEPT_HEADERS
    }
    headers["x-iotpush-quarantined"] = str(rejection.id)
    return Incoming(
        body, notification.notify_type, notification.device, key, slot, rejection.path,
        headers, rejection.received_at, notification,
    )  # fmt: skip


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
    while page := await inbox.quarantined(limit=_PAGE, after=after):
        found += [
            r.id
            for r in page
            if (since is None or r.received_at >= since)
            and (until is None or r.received_at < until)
            and (status is None or r.status == status)
        ]
        after = page[-1].id
    return found


async def replay_quarantined(
    inbox: AdminInbox,
    ids: Iterable[int],
    *,
    limits: JSONLimits | None = None,
    quarantine_max_body: int | None = None,
    dry_run: bool = False,
) -> list[QuarantineReplay]:
    """Run quarantined bodies again through today's decoder and JSON bounds.

    An accepted body is appended to the inbox with its original receipt time (it is delivered
    and tracked like any other) and leaves the quarantine; one still refused stays, its record
    updated with today's status, reason and field; one kept incomplete is left as it is.

    Args:
        inbox: The store (opened by the caller).
        ids: The quarantine records to replay (`select_quarantined` picks them by filter).
        limits: The JSON bounds to apply (a server's ``--max-depth``, ``--max-members``,
            ``--max-string``); None: none.
        quarantine_max_body: The server's ``--quarantine-max-body``: a body of that size or more
            whose length was not sent may have been cut, and is not replayed. None or 0: none.
        dry_run: Only say what would happen; change nothing.

    Returns:
        One `QuarantineReplay` per id, in the order given.
    """
    results: list[QuarantineReplay] = []
    for id in ids:
        try:
            rejection = await inbox.get_quarantined(id)
        except EntryNotFound:
            results.append(QuarantineReplay(id, "missing", reason=f"no quarantined body {id}"))
            continue
        checked = _check(rejection, limits, quarantine_max_body)
        if isinstance(checked, QuarantineReplay):
            if checked.outcome == "refused" and not dry_run:
                await inbox.requarantine(id, 400, checked.reason, checked.field)
            results.append(checked)
        elif dry_run:
            results.append(QuarantineReplay(id, "accepted"))
        else:
            accepted = await inbox.append(checked)
            await inbox.drop_quarantined([id])
            outcome: Outcome = "duplicate" if accepted.duplicate else "accepted"
            results.append(QuarantineReplay(id, outcome, entry=accepted.id))
    return results
