"""The console's pages: overview, notifications, quarantine. Devices and commands: `_tracked`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode

from .._when import parse_when
from ..inbox import STATES, Selection
from ..trackers.effects import effects
from . import _tracked
from ._http import Invalid, Request, Response, redirect
from ._overview import chart, figures

if TYPE_CHECKING:
    from ._app import Console, Handler

__all__ = ["PAGE", "ROUTES", "page_size", "pretty"]

PAGE: Final = 50
MAX_PAGE: Final = 200
"""No page reads more rows than this."""


def page_size(request: Request) -> int:
    text = request.query.get("limit", str(PAGE))
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise Invalid(f"limit must be 1..{MAX_PAGE}, got {text!r}")
    return int(text)


def pretty(body: bytes) -> str:
    """A body as indented JSON, or as text where it is not JSON."""
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body.decode("utf-8", "backslashreplace")


def _id(request: Request, index: int) -> int:
    text = request.segments[index]
    if not text.isdigit() or len(text) > 18:
        raise Invalid(f"{text!r} is not an id")
    return int(text)


def _after(request: Request) -> int:
    text = request.query.get("after", "") or "0"
    if not text.isdigit() or len(text) > 18:
        raise Invalid(f"after must be the id the previous page ended with, got {text!r}")
    return int(text)


# overview ----------------------------------------------------------------------------------


async def _overview_context(console: Console) -> dict[str, Any]:
    now = console.clock()
    live = console.live
    return {
        "figures": await figures(console.inbox, now),
        "live": live,
        "chart": chart(live),
        "last_push_ago": None if live.last_push_at is None else now - live.last_push_at,
    }


async def overview(console: Console, request: Request) -> Response:
    return console.render(request, "overview.html", **await _overview_context(console))


async def overview_live(console: Console, request: Request) -> Response:
    """The overview's figures alone: the page's script swaps them in every 2 s."""
    return console.render(request, "_figures.html", **await _overview_context(console))


# notifications -----------------------------------------------------------------------------


def _selection(console: Console, request: Request, *, dead_only: bool = False) -> Selection:
    query = request.form or request.query
    state = query.get("state") or None
    if state is not None and state not in STATES:
        raise Invalid(f"state must be one of {', '.join(STATES)}, got {state!r}")
    times: dict[str, float | None] = {}
    for name in ("since", "until"):
        text = query.get(name) or None
        try:
            times[name] = None if text is None else parse_when(text, console.clock())
        except ValueError as exc:
            raise Invalid(f"{name}: {exc}") from None
    return Selection(
        states=["dead"] if dead_only else ([state] if state else None),
        type=query.get("type") or None,
        device=query.get("device") or None,
        since=times["since"],
        until=times["until"],
    )


def _filters(request: Request) -> dict[str, str]:
    query = request.form or request.query
    return {k: query[k] for k in ("type", "device", "state", "since", "until") if query.get(k)}


async def notifications(console: Console, request: Request) -> Response:
    selection, limit, after = _selection(console, request), page_size(request), _after(request)
    entries = await console.inbox.find(selection, limit=limit, after=after)
    filters = _filters(request)
    following = None
    if len(entries) == limit:
        following = "?" + urlencode({**filters, "limit": limit, "after": entries[-1].id})
    return console.render(
        request, "notifications.html", entries=entries, filters=filters, next=following,
        first="?" + urlencode(filters) if after else None, states=STATES,
        replayed=request.query.get("replayed"),
        types=sorted(_types()),
    )  # fmt: skip


def _types() -> list[str]:
    from ..formats import FORMATS  # every registered push format's types

    return list(FORMATS.types)


async def entry(console: Console, request: Request) -> Response:
    entry_id = _id(request, 1)
    found = await console.inbox.get(entry_id)
    done = await console.inbox.read(lambda db: effects(db, entry_id))
    return console.render(
        request, "entry.html", entry=found, body=pretty(found.body), effects=done,
        replayed=request.query.get("replayed"),
    )  # fmt: skip


async def confirm_replay(console: Console, request: Request) -> Response:
    found = await console.inbox.get(_id(request, 1))
    return console.render(request, "replay_one.html", entry=found)


async def replay(console: Console, request: Request) -> Response:
    entry_id = _id(request, 1)
    count = await console.inbox.replay(Selection(ids=[entry_id]))
    return redirect(f"/ui/notifications/{entry_id}?replayed={count}")


async def confirm_replay_dead(console: Console, request: Request) -> Response:
    tally = await console.inbox.tally(_selection(console, request, dead_only=True))
    filters = {k: v for k, v in _filters(request).items() if k != "state"}
    return console.render(request, "replay_dead.html", count=tally.total, filters=filters)


async def replay_dead(console: Console, request: Request) -> Response:
    count = await console.inbox.replay(_selection(console, request, dead_only=True))
    filters = {k: v for k, v in _filters(request).items() if k != "state"}
    return redirect("/ui/notifications?" + urlencode({**filters, "replayed": count}))


# quarantine --------------------------------------------------------------------------------


async def quarantine(console: Console, request: Request) -> Response:
    limit, after = page_size(request), _after(request)
    items = await console.inbox.quarantined(limit=limit, after=after)
    following = None
    if len(items) == limit:
        following = "?" + urlencode({"limit": limit, "after": items[-1].id})
    return console.render(
        request, "quarantine.html", items=items, next=following, first="?" if after else None
    )


async def rejection(console: Console, request: Request) -> Response:
    found = await console.inbox.get_quarantined(_id(request, 1))
    return console.render(
        request, "rejection.html", item=found, body=pretty(found.body),
        can_retry=console.retry is not None, outcome=request.query.get("outcome"),
    )  # fmt: skip


async def retry(console: Console, request: Request) -> Response:
    item_id = _id(request, 1)
    if console.retry is None:
        raise Invalid("this server cannot retry quarantined bodies")
    outcome = await console.retry(item_id)
    return redirect(f"/ui/quarantine/{item_id}?" + urlencode({"outcome": outcome}))


ROUTES: Final[dict[tuple[str, ...], dict[str, Handler]]] = {
    (): {"GET": overview},
    ("live",): {"GET": overview_live},
    ("notifications",): {"GET": notifications},
    ("notifications", "replay"): {"GET": confirm_replay_dead, "POST": replay_dead},
    ("notifications", "*"): {"GET": entry},
    ("notifications", "*", "replay"): {"GET": confirm_replay, "POST": replay},
    ("quarantine",): {"GET": quarantine},
    ("quarantine", "*"): {"GET": rejection},
    ("quarantine", "*", "retry"): {"POST": retry},
    **_tracked.ROUTES,
}
