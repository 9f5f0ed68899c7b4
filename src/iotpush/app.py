"""The ASGI application: a small router in front of the receive endpoint, and the lifespan.

Receive paths (each a `PushRoute`: a path and the format of its bodies) go to the
`ReceiveEndpoint`; other paths go to the applications mounted on them (the query API behind its
token, ``/health``...). With a path token the receive paths live under ``/<token>``. The IP
allowlist, when there is one, covers every path: a receive path consults it with the other
access controls (so a refused push is quarantined), any other path through `Guard`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from ._asgi import ASGIApp, Hook, Receive, Scope, Send, send_error, send_json
from .access import AccessControl, PathToken
from .events import Events, Refused
from .formats import LEGACY_OR_V5, V5, PushRoute
from .inbox import ReceiveInbox
from .models import NBCommandStatusChanged
from .receive import (
    DEFAULT_MAX_BODY,
    DEFAULT_QUARANTINE_MAX_BODY,
    Limits,
    ReceiveEndpoint,
)

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_PATH",
    "DEFAULT_QUARANTINE_MAX_BODY",
    "DEFAULT_V5_PATH",
    "App",
    "Guard",
    "Lifespan",
    "Mount",
    "NotFound",
    "health",
    "legacy_routes",
    "not_found",
    "v5_routes",
]

log = logging.getLogger("iotpush")

DEFAULT_PATH: Final = "/v1.0.0/messageReceiver"
DEFAULT_V5_PATH: Final = "/v5/forwarding"
_HEALTH: Final = b'{"status":"ok"}'


def legacy_routes(path: str = DEFAULT_PATH, command_path: str | None = None) -> list[PushRoute]:
    """The legacy format's receive paths: ``path``, and the NB-IoT command status path
    (``path + "/cmd"`` unless ``command_path`` is given). A v5 push posted to ``path`` is
    recognised too: operators reuse their callback URL."""
    main = "/" + path.strip("/")
    command = "/" + (command_path or f"{main}/cmd").strip("/")
    return [
        PushRoute(main, LEGACY_OR_V5),
        PushRoute(command, LEGACY_OR_V5, NBCommandStatusChanged.notify_type),
    ]


def v5_routes(path: str = DEFAULT_V5_PATH) -> list[PushRoute]:
    """The v5 data-forwarding receive path (`iotpush.v5`)."""
    return [PushRoute("/" + path.strip("/"), V5)]


@dataclass(frozen=True, slots=True)
class Mount:
    """An application served at ``path`` (``exact``) or under it (a prefix ending in ``/``)."""

    path: str
    app: ASGIApp
    exact: bool = False

    def matches(self, path: str) -> bool:
        return path == self.path if self.exact else path.startswith(self.path)


async def health(scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /health``: the server answers."""
    if scope["method"] in ("GET", "HEAD"):
        await send_json(send, 200, _HEALTH)
    else:
        await not_found(scope, receive, send)


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer of a path nothing serves."""
    await send_error(send, 404, f"no receiver at {scope['path']}")


class NotFound:
    """`not_found`, emitting `Refused` (``not_found``) first."""

    def __init__(self, events: Events) -> None:
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.events.wants(Refused):
            path = scope["path"]
            self.events.emit(Refused("not_found", 404, f"no receiver at {path}", "$", path))
        await not_found(scope, receive, send)


def _rest(path: str) -> str:
    """``path`` without its first segment (``/a/b/c``: ``/b/c``)."""
    return "".join(path[1:].partition("/")[1:])


class Guard:
    """Wraps an application: a request an access control refuses before its body is answered
    403 (``{"error", "path"}``) and never reaches it. The IP allowlist guards every path so."""

    def __init__(
        self, app: ASGIApp, controls: Sequence[AccessControl], events: Events | None = None
    ) -> None:
        self.app = app
        self.controls = tuple(controls)
        self.events = events or Events()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for control in self.controls:
                denial = control.before(scope)
                if denial is not None:
                    log.warning("refused a request to %s: %s", scope["path"], denial.reason)
                    if self.events.wants(Refused):
                        event = Refused(
                            "forbidden", 403, denial.reason, denial.field, scope["path"]
                        )
                        self.events.emit(event)
                    await send_error(send, 403, denial.reason, denial.field)
                    return
        await self.app(scope, receive, send)


class Lifespan:
    """The ASGI lifespan: opens the inbox and runs the startup hooks; at shutdown the reverse."""

    def __init__(self, inbox: ReceiveInbox, on_startup: Iterable[Hook] = (),
                 on_shutdown: Iterable[Hook] = ()) -> None:  # fmt: skip
        self.inbox = inbox
        self.on_startup = list(on_startup)
        self.on_shutdown = list(on_shutdown)

    async def __call__(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.inbox.open()
                    for hook in self.on_startup:
                        await hook()
                except Exception as exc:
                    log.exception("startup failed")
                    await self.inbox.close()
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    for hook in self.on_shutdown:
                        await hook()
                finally:
                    await self.inbox.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


class App:
    """The receiver as an ASGI 3 application: receive paths, mounted applications, lifespan.

    Args:
        inbox: Where accepted notifications are persisted before the 200.
        routes: The receive paths and their formats (default: `legacy_routes` and `v5_routes`).
        limits: What a push may cost (body size and time, JSON bounds, pushes at once).
        access: The access controls of the receive paths, in order; with a `PathToken` among
            them the receive paths live under ``/<token>``.
        mounts: Other applications by path, tried in order (default: ``/health``).
        fallback: What answers a path nothing else serves (default: `NotFound`).
        on_startup: Coroutines run at ASGI lifespan startup, after the inbox opened.
        on_shutdown: Coroutines run at lifespan shutdown, before the inbox closes.
        events: Where the receive path's events go.
        clock: Returns the time in Unix seconds (injected by tests).
    """

    def __init__(
        self,
        inbox: ReceiveInbox,
        *,
        routes: Sequence[PushRoute] | None = None,
        limits: Limits | None = None,
        access: Sequence[AccessControl] = (),
        mounts: Sequence[Mount] | None = None,
        fallback: ASGIApp | None = None,
        on_startup: Iterable[Hook] = (),
        on_shutdown: Iterable[Hook] = (),
        events: Events | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.inbox = inbox
        self.events = events = events or Events()
        self.endpoint = ReceiveEndpoint(
            inbox, limits=limits, access=access, events=events, clock=clock
        )
        self.routes = list([*legacy_routes(), *v5_routes()] if routes is None else routes)
        self._routes = {route.path: route for route in self.routes}
        self._token = next((c for c in access if isinstance(c, PathToken)), None)
        self.mounts = list([Mount("/health", health, exact=True)] if mounts is None else mounts)
        self.fallback = NotFound(events) if fallback is None else fallback
        self.lifespan = Lifespan(inbox, on_startup, on_shutdown)

    @property
    def in_flight(self) -> int:
        """Pushes being received now (read, decoded, persisted)."""
        return self.endpoint.in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            route = self._routes.get(path) if self._token is None else None
            if route is not None:  # the usual case, first
                await self.endpoint(scope, receive, send, route, path, path)
                return
            found = self._resolve(path)
            if found is not None:
                await self.endpoint(scope, receive, send, *found)
                return
            for mount in self.mounts:
                if mount.matches(path):
                    await mount.app(scope, receive, send)
                    return
            await self.fallback(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    def _route(self, path: str) -> PushRoute | None:
        return self._routes.get(path) or self._routes.get(path.rstrip("/"))

    def _resolve(self, path: str) -> tuple[PushRoute, str, str] | None:
        """The route of ``path``, the path to keep (without the path token) and the path to log
        should the token be wrong (its first segment masked)."""
        route = self._route(path)
        if self._token is None:
            return None if route is None else (route, path, path)
        rest = _rest(path)
        under = self._route(rest)
        if under is not None:  # the path token's check decides whether the segment is right
            return under, rest, "/***" + rest
        return None if route is None else (route, path, path)  # a receive path without token

    def loggable_path(self, path: str) -> str:
        """``path`` as it may be written to a log: with a path token, a first segment in front of a
        receive path is masked (the token, or a guess that may be close to it)."""
        if self._token is None:
            return path
        path, mark, query = path.partition("?")
        if self._route(path) is None and self._route(rest := _rest(path)) is not None:
            path = "/***" + rest
        return path + mark + query
