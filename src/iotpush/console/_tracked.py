"""The console's pages of what the trackers know: devices and commands (every push format)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from urllib.parse import urlencode

from ..trackers import normalise
from ..trackers.commands import RANKS
from ._http import Invalid, Request, Response

if TYPE_CHECKING:
    from ._app import Console, Handler

__all__ = ["ROUTES"]

RECENT: Final = 20
"""Commands and upgrades shown on a device's page (its commands list pages through all)."""


def _limit(request: Request) -> int:
    from ._pages import page_size

    return page_size(request)


async def devices(console: Console, request: Request) -> Response:
    limit, after = _limit(request), request.query.get("after") or None
    status = request.query.get("status") or None
    deleted = request.query.get("deleted") == "on"
    items = await console.tracking.devices(
        status=status, include_deleted=deleted, limit=limit, after=after
    )
    filters = {k: v for k, v in (("status", status), ("deleted", "on" if deleted else None)) if v}
    following = None
    if len(items) == limit:
        following = "?" + urlencode({**filters, "limit": limit, "after": items[-1].device_id})
    return console.render(
        request, "devices.html", items=items, filters=filters, next=following,
        first="?" + urlencode(filters) if after else None,
    )  # fmt: skip


async def device(console: Console, request: Request) -> Response:
    device_id = request.segments[1]
    view = await console.tracking.device(device_id, commands=RECENT)
    upgrades = await console.tracking.upgrades(device=device_id, limit=RECENT)
    return console.render(request, "device.html", view=view, upgrades=upgrades)


async def commands(console: Console, request: Request) -> Response:
    limit, after = _limit(request), request.query.get("after") or None
    state = request.query.get("state") or None
    if state is not None and normalise(state) is None:
        raise Invalid(f"state must be one of {', '.join(RANKS)}, got {state!r}")
    device_id = request.query.get("device") or None
    overdue = request.query.get("overdue") == "on"
    items = await console.tracking.commands(
        device=device_id, state=state, overdue=overdue, limit=limit, after=after
    )
    filters = {
        k: v for k, v in (("state", state), ("device", device_id),
                          ("overdue", "on" if overdue else None)) if v
    }  # fmt: skip
    following = None
    if len(items) == limit:
        following = "?" + urlencode({**filters, "limit": limit, "after": items[-1].command_id})
    return console.render(
        request, "commands.html", items=items, filters=filters, next=following,
        first="?" + urlencode(filters) if after else None, states=list(RANKS),
    )  # fmt: skip


async def command(console: Console, request: Request) -> Response:
    record = await console.tracking.command(request.segments[1])
    return console.render(request, "command.html", record=record)


ROUTES: Final[dict[tuple[str, ...], dict[str, Handler]]] = {
    ("devices",): {"GET": devices},
    ("devices", "*"): {"GET": device},
    ("commands",): {"GET": commands},
    ("commands", "*"): {"GET": command},
}
