"""The read-only query API: what the trackers know, as JSON over HTTP, described by OpenAPI 3.1.

A small ASGI app that `App` serves under ``/api/`` and at ``/openapi.json``. Every list answers
``{"items": [...], "next": cursor}``; pass ``next`` back as ``after`` for the following page
(``null``: there is none). Errors answer ``{"error": "<sentence>", "path": "<where>"}``, ``where``
being ``$`` for the request or the name of the query parameter at fault. Reads go through
`Tracking`, which runs them in worker threads on their own connections: queries never hold up
the receiving of pushes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar
from urllib.parse import parse_qsl, unquote_to_bytes

import msgspec

from ._asgi import Receive, Scope, Send, error_body
from ._when import parse_when
from .exceptions import EntryNotFound
from .formats import FORMATS
from .inbox import Entry
from .trackers import CommandRecord, DeviceRecord, ShadowRecord, UpgradeRecord, normalise
from .trackers.commands import RANKS, SPELLINGS
from .trackers.messages import MessageRecord
from .trackers.shadow import CURSOR_PATTERN as UNSYNCED_CURSOR
from .trackers.shadow import parse_cursor as parse_unsynced_cursor
from .trackers.tasks import TaskRecord
from .trackers.upgrades import CURSOR_PATTERN, parse_cursor
from .tracking import MAX_VIEW_COMMANDS, DeviceView, Tracking

__all__ = ["Error", "NotificationItem", "Page", "QueryAPI"]

log = logging.getLogger("iotpush.api")

T = TypeVar("T")

MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 100
DEFAULT_VIEW_COMMANDS: Final = 100
_REF: Final = "#/components/schemas/{name}"
_JSON: Final = "application/json"


class Page(msgspec.Struct, Generic[T], kw_only=True):
    """One page of a list; ``next`` is the ``after`` of the following page, ``null`` at the end."""

    items: list[T]
    next: str | None


class Error(msgspec.Struct, kw_only=True):
    """A request that could not be answered: what went wrong, and where (``$`` or a parameter)."""

    error: str
    path: str


class NotificationItem(msgspec.Struct, kw_only=True):
    """A received notification: its inbox entry's delivery state and its body as JSON."""

    id: int
    received_at: float
    type: str
    device: str | None
    state: str
    attempts: int
    duplicates: int
    body: Any


class _Refused(Exception):
    def __init__(self, status: int, error: str, path: str = "$") -> None:
        super().__init__(error)
        self.status, self.error, self.path = status, error, path


# Each query parameter's JSON schema and meaning: for parsing, and for the document.
_TEXT: Final = {"type": "string", "minLength": 1}  # an empty value is refused
_PARAMETERS: Final[dict[str, tuple[dict[str, Any], str]]] = {
    "device": (_TEXT, "Only records of this device."),
    "state": (
        {"type": "string", "enum": list(SPELLINGS)},
        f"Only commands in this state: {', '.join(RANKS)} (SUCCESS, FAIL... accepted too).",
    ),
    "overdue": (
        {"type": "boolean", "default": False},
        "Only commands past their deadline without a terminal state.",
    ),
    "status": (_TEXT, "Only devices whose deviceInfo.status is this (ONLINE)."),
    "deleted": ({"type": "boolean", "default": False}, "Include devices deleted and not re-added."),
    "type": (
        {"type": "string", "enum": list(FORMATS.types)},
        "Only this notifyType or v5 pair.",
    ),
    "since": (
        {
            "anyOf": [
                {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?[smhdw]?$"},
                {"type": "string", "format": "date-time"},
            ]
        },
        "Only notifications received since: an ISO 8601 time, or a duration ago (2h, 7d).",
    ),
    "limit": (
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        "Page size.",
    ),
    "after": (_TEXT, "The `next` of the previous page."),
    "commands": (
        {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_VIEW_COMMANDS,
            "default": DEFAULT_VIEW_COMMANDS,
        },
        "How many of the device's commands to include, most recently updated first;"
        " `commands_total` counts them all, and /api/commands?device= pages through them.",
    ),
}


class _Query:
    """A request's query string, checked against the parameters its endpoint takes."""

    def __init__(self, raw: bytes, allowed: tuple[str, ...]) -> None:
        self.values: dict[str, str] = {}
        for name, value in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
            if name not in allowed:
                takes = ", ".join(allowed) or "none"
                raise _Refused(
                    400, f"unknown query parameter {name!r} (this one takes {takes})", name
                )
            if name in self.values:
                raise _Refused(400, f"{name} must be given at most once", name)
            if not value:
                raise _Refused(400, f"{name} must not be empty", name)
            self.values[name] = value

    def text(self, name: str) -> str | None:
        return self.values.get(name)

    def flag(self, name: str) -> bool:
        value = self.values.get(name, "false")
        if value not in ("true", "false"):
            raise _Refused(400, f"{name} must be true or false, got {value!r}", name)
        return value == "true"

    def limit(self) -> int:
        return self.integer("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)

    def cursor(self, parse: Callable[[str], object]) -> str | None:
        """``after``, checked by the list's cursor reader (which raises ValueError)."""
        after = self.values.get("after")
        if after is not None:
            try:
                parse(after)
            except ValueError as exc:
                error = f"after must be a `next` of this list, got {after!r}"
                raise _Refused(400, error, "after") from exc
        return after

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.values.get(name, str(default))
        if not re.fullmatch(r"[0-9]{1,7}", value) or not low <= int(value) <= high:
            raise _Refused(400, f"{name} must be {low}..{high}, got {value!r}", name)
        return int(value)


@dataclass(frozen=True)
class _Route:
    pattern: tuple[str, ...]  # "{name}" matches any one path segment
    params: tuple[str, ...]
    answer: Any  # the type of a 200 answer, for the document
    operation: str
    summary: str
    schemas: dict[str, Any] = field(default_factory=dict)  # parameters of another schema here


_ROUTES: Final = (
    _Route(("api", "commands"), ("device", "state", "overdue", "limit", "after"),
           Page[CommandRecord], "listCommands", "Commands by command id."),
    _Route(("api", "commands", "{id}"), (), CommandRecord, "getCommand",
           "A command's state, deadline and history."),
    _Route(("api", "devices"), ("status", "deleted", "limit", "after"), Page[DeviceRecord],
           "listDevices", "Devices by device id, with their latest data."),
    _Route(("api", "devices", "{id}"), ("commands",), DeviceView, "getDevice",
           "A device's registry record, latest data, shadow sync and most recent commands."),
    _Route(("api", "shadow", "unsynced"), ("limit", "after"), Page[ShadowRecord], "listUnsynced",
           "Device services whose desired properties FAILED or are unconfirmed, by device id"
           " then service id.",
           {"after": {"type": "string", "pattern": UNSYNCED_CURSOR}}),
    _Route(("api", "upgrades"), ("device", "limit", "after"), Page[UpgradeRecord],
           "listUpgrades",
           "Upgrades, most recently updated first, then by operation, sub-operation and device"
           " id. A record updated while you page moves to the front: the following pages skip"
           " it, every other record appears once.",
           {"after": {"type": "string", "pattern": CURSOR_PATTERN}}),
    _Route(("api", "upgrades", "{operationId}"), (), Page[UpgradeRecord], "getUpgrade",
           "Each device's progress in one upgrade operation."),
    _Route(("api", "messages", "{id}"), (), MessageRecord, "getMessage",
           "A message sent down to a device (v5): its status, error and history."),
    _Route(("api", "tasks", "{id}"), (), TaskRecord, "getTask",
           "A v5 batch task (firmware or software upgrade...): its progress and history."),
    _Route(("api", "notifications"), ("type", "device", "since", "limit", "after"),
           Page[NotificationItem], "listNotifications", "Received notifications, oldest first.",
           {"after": {"type": "string", "pattern": "^[0-9]{1,18}$"}}),
    _Route(("openapi.json",), (), dict[str, Any], "getOpenAPI", "This document."),
)  # fmt: skip


def _match(segments: list[str]) -> tuple[_Route, list[str]] | None:
    for route in _ROUTES:
        if len(route.pattern) == len(segments) and all(
            p.startswith("{") or p == s for p, s in zip(route.pattern, segments, strict=True)
        ):
            return route, [s for p, s in zip(route.pattern, segments, strict=True) if p[0] == "{"]
    return None


def _segments(scope: Scope) -> list[str]:
    """The path's segments, each URL-decoded on its own (so an id may hold ``%2F``)."""
    raw: bytes | None = scope.get("raw_path")
    if raw:
        path = raw.split(b"?", 1)[0]
        parts = [unquote_to_bytes(p).decode("utf-8", "replace") for p in path.split(b"/")]
    else:
        parts = str(scope["path"]).split("/")
    parts = parts[1:] if parts and parts[0] == "" else parts
    return parts[:-1] if len(parts) > 1 and parts[-1] == "" else parts


def _page(items: list[Any], limit: int, cursor: Callable[[Any], object]) -> Page[Any]:
    return Page(items=items, next=str(cursor(items[-1])) if len(items) == limit else None)


def _body(entry: Entry) -> Any:
    try:
        return msgspec.json.decode(entry.body)
    except msgspec.DecodeError:  # accepted bodies are JSON; this keeps an odd one readable
        return entry.body.decode("utf-8", "backslashreplace")


class QueryAPI:
    """The query API as an ASGI app: pass it to `App` as ``api``.

    Args:
        tracking: What the API reads; its clock is "now" for ``overdue`` and ``since``.
    """

    def __init__(self, tracking: Tracking) -> None:
        self.tracking = tracking
        self._handlers: dict[str, Callable[[list[str], _Query], Awaitable[Any]]] = {
            "listCommands": self._commands, "getCommand": self._command,
            "listDevices": self._devices, "getDevice": self._device,
            "listUnsynced": self._unsynced, "listUpgrades": self._upgrades,
            "getUpgrade": self._upgrade, "listNotifications": self._notifications,
            "getMessage": self._message, "getTask": self._task,
            "getOpenAPI": self._openapi,
        }  # fmt: skip
        self._document: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-type", _JSON.encode()), (b"cache-control", b"no-store")]
        try:
            status, payload = 200, await self._answer(scope)
            body = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
        except _Refused as refused:
            status, body = refused.status, error_body(refused.error, refused.path)
            if status == 405:
                headers.append((b"allow", b"GET, HEAD"))
        except Exception:  # a store that fails or a bug: the client hears 503, the log tells why
            log.exception("query %s failed", scope.get("path"))
            status, body = 503, error_body("the query failed; retry later")
            headers.append((b"retry-after", b"5"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        head = scope["method"] == "HEAD"
        await send({"type": "http.response.body", "body": b"" if head else body})

    async def _answer(self, scope: Scope) -> Any:
        found = _match(_segments(scope))
        if found is None:
            raise _Refused(404, f"no endpoint at {scope['path']}; see /openapi.json")
        if scope["method"] not in ("GET", "HEAD"):
            raise _Refused(405, f"{scope['method']} is not allowed: the query API is read-only")
        route, args = found
        query = _Query(scope.get("query_string", b""), route.params)
        try:
            return await self._handlers[route.operation](args, query)
        except EntryNotFound as exc:
            raise _Refused(404, str(exc)) from exc

    # endpoints ------------------------------------------------------------------------------

    async def _commands(self, _: list[str], q: _Query) -> Page[CommandRecord]:
        state, limit = q.text("state"), q.limit()
        if state is not None and normalise(state) is None:
            raise _Refused(400, f"state must be one of {', '.join(RANKS)}, got {state!r}", "state")
        items = await self.tracking.commands(
            device=q.text("device"), state=state, overdue=q.flag("overdue"), limit=limit,
            after=q.text("after"),
        )  # fmt: skip
        return _page(items, limit, lambda r: r.command_id)

    async def _command(self, args: list[str], _: _Query) -> CommandRecord:
        return await self.tracking.command(args[0])

    async def _devices(self, _: list[str], q: _Query) -> Page[DeviceRecord]:
        limit = q.limit()
        items = await self.tracking.devices(
            status=q.text("status"), include_deleted=q.flag("deleted"), limit=limit,
            after=q.text("after"),
        )  # fmt: skip
        return _page(items, limit, lambda r: r.device_id)

    async def _device(self, args: list[str], q: _Query) -> DeviceView:
        commands = q.integer("commands", DEFAULT_VIEW_COMMANDS, 0, MAX_VIEW_COMMANDS)
        return await self.tracking.device(args[0], commands=commands)

    async def _unsynced(self, _: list[str], q: _Query) -> Page[ShadowRecord]:
        after, limit = q.cursor(parse_unsynced_cursor), q.limit()
        items = await self.tracking.unsynced(limit=limit, after=after)
        return _page(items, limit, lambda r: r.cursor)

    async def _upgrades(self, _: list[str], q: _Query) -> Page[UpgradeRecord]:
        after, limit = q.cursor(parse_cursor), q.limit()
        items = await self.tracking.upgrades(device=q.text("device"), limit=limit, after=after)
        return _page(items, limit, lambda r: r.cursor)

    async def _upgrade(self, args: list[str], _: _Query) -> Page[UpgradeRecord]:
        return Page(items=await self.tracking.upgrade(args[0]), next=None)

    async def _message(self, args: list[str], _: _Query) -> MessageRecord:
        return await self.tracking.message(args[0])

    async def _task(self, args: list[str], _: _Query) -> TaskRecord:
        return await self.tracking.task(args[0])

    async def _notifications(self, _: list[str], q: _Query) -> Page[NotificationItem]:
        kind, since, after, limit = q.text("type"), q.text("since"), q.text("after"), q.limit()
        if kind is not None and kind not in FORMATS.types:
            raise _Refused(400, f"type must be a notifyType or a v5 pair, got {kind!r}", "type")
        if after is not None and not re.fullmatch(r"[0-9]{1,18}", after):
            raise _Refused(400, f"after must be a `next` of this list, got {after!r}", "after")
        when = None
        if since is not None:
            try:
                when = parse_when(since, self.tracking.clock())
            except ValueError as exc:
                raise _Refused(400, f"since: {exc}", "since") from exc
        entries = await self.tracking.notifications(
            type=kind, device=q.text("device"), since=when, limit=limit, after=int(after or 0)
        )
        items = [
            NotificationItem(
                id=e.id, received_at=e.received_at, type=e.type, device=e.device, state=e.state,
                attempts=e.attempts, duplicates=e.duplicates, body=_body(e),
            )
            for e in entries
        ]  # fmt: skip
        return _page(items, limit, lambda item: item.id)

    async def _openapi(self, _: list[str], q: _Query) -> bytes:
        if self._document is None:
            self._document = msgspec.json.encode(openapi())
        return self._document


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the query API, its schemas made from the record types."""
    (*refs, error_ref), schemas = msgspec.json.schema_components(
        [route.answer for route in _ROUTES] + [Error], ref_template=_REF
    )
    error = {"content": {_JSON: {"schema": error_ref}}}
    paths: dict[str, Any] = {}
    for route, ref in zip(_ROUTES, refs, strict=True):
        parameters = [
            {"name": p[1:-1], "in": "path", "required": True, "schema": {"type": "string"},
             "description": "URL-encoded (%2F for a slash)."}
            for p in route.pattern if p.startswith("{")
        ] + [
            {"name": name, "in": "query", "required": False,
             "schema": route.schemas.get(name, _PARAMETERS[name][0]),
             "description": _PARAMETERS[name][1]}
            for name in route.params
        ]  # fmt: skip
        responses: dict[str, Any] = {
            "200": {"description": route.summary, "content": {_JSON: {"schema": ref}}},
            "405": {"description": "Not GET or HEAD.", **error},
            "503": {"description": "The store could not be read; retry.", **error},
        }
        security: list[dict[str, list[str]]] = []
        if route.pattern[0] == "api":  # the document itself is public
            responses["401"] = {"description": "A bearer token is missing or wrong.", **error}
            responses["403"] = {"description": "The server has no token to check.", **error}
            security = [{"bearer": []}, {}]  # none needed on loopback without --api-token
        if route.params:
            responses["400"] = {"description": "A query parameter is invalid.", **error}
        if len(parameters) > len(route.params):
            responses["404"] = {"description": "No record with this id.", **error}
        operation = {"operationId": route.operation, "summary": route.summary}
        paths["/" + "/".join(route.pattern)] = {
            "get": {
                **operation,
                "parameters": parameters,
                "responses": responses,
                "security": security,
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "iotpush query API",
            "version": "1",
            "description": "What iotpush knows about commands, devices, shadows and upgrades.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token of the server's --api-token options.",
                }
            },
        },
    }
