"""The console's ASGI app: access, routing, rendering, static files."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, Final
from urllib.parse import quote

import jinja2

from .._when import format_ts
from ..events import Events
from ..exceptions import EntryNotFound
from ..inbox import Inbox
from ..tracking import Tracking
from ._auth import Guard
from ._http import Invalid, Receive, Request, Response, Scope, Send, read_form, redirect
from ._live import Live

__all__ = ["Console", "Retry"]

log = logging.getLogger("iotpush.console")

Retry = Callable[[int], Awaitable[str]]
"""Runs a quarantined body through today's decoder into the inbox; returns what happened."""
Handler = Callable[["Console", Request], Awaitable[Response]]

_STATIC_TYPES: Final = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
_NAME: Final = re.compile(r"[a-z0-9_-]+\.(css|js)")


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


class Console:
    """The operator's web console, served under ``/ui/``.

    Args:
        inbox: The store (opened by the app's lifespan).
        tracking: The trackers' queries on it.
        events: The pipeline's events, for the overview's live figures.
        tokens: Tokens that log in; none: loopback clients only, without a login.
        retry: Takes a quarantined body back through the decoder (the quarantine's Retry).
        clock: Unix time (injected by tests).
    """

    def __init__(
        self,
        inbox: Inbox,
        tracking: Tracking,
        events: Events,
        *,
        tokens: Sequence[str] = (),
        retry: Retry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from . import _pages

        self.inbox, self.tracking, self.retry, self.clock = inbox, tracking, retry, clock
        self.guard = Guard(tokens, clock)
        self.live = Live(events, clock)
        self.routes: dict[tuple[str, ...], dict[str, Handler]] = _pages.ROUTES
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("iotpush.console"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(
            ts=format_ts, ago=_ago, segment=lambda v: quote(str(v), safe="")
        )
        self._static = resources.files("iotpush.console") / "static"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/ui":
            await redirect("/ui/").send(send)
            return
        request = Request.from_scope(scope)
        try:
            response = await self._answer(request, receive)
        except EntryNotFound as exc:
            response = self.message(request, 404, "Not found", str(exc))
        except Invalid as exc:
            response = self.message(request, 400, "Cannot show that", str(exc))
        except Exception:  # a store that fails or a bug: a page saying so, the log tells why
            log.exception("console %s %s failed", request.method, scope["path"])
            response = self.message(request, 503, "Unavailable", "Reading the store failed; retry.")
        await response.send(send, head=request.method == "HEAD")

    async def _answer(self, request: Request, receive: Receive) -> Response:
        segments = request.segments
        if segments[:1] == ["static"] and len(segments) == 2:
            return self._file(segments[1])
        if not self.guard.needs_login and not request.loopback:
            detail = (
                "Without a token, the console answers only on this machine (loopback)."
                " Start the server with --console-token or --api-token to use it from elsewhere."
            )
            return self.message(request, 403, "Forbidden", detail)
        if segments == ["login"]:
            return await self._login(request, receive)
        session = self.guard.session(request)
        new_cookie = None
        if session is None:
            if request.method == "POST":
                return self.message(request, 403, "Forbidden", "No session: log in first.")
            if self.guard.needs_login:
                return self._login_page(request, 401, next_path=request.path)
            session = self.guard.new_session()  # loopback without a token: no login needed
            new_cookie = self.guard.cookie(session, secure=request.secure)
        request.scope["iotpush.session"] = session
        if request.method == "POST":
            form = await read_form(receive)
            if form is None or not self.guard.check_csrf(session, form.get("csrf", "")):
                return self.message(request, 403, "Forbidden", "The form's CSRF token is wrong.")
            request.form = form
            if segments == ["logout"]:
                self.guard.revoke(session)
                cleared = self.guard.cookie("", secure=request.secure, max_age=0)
                return redirect("/ui/login" if self.guard.needs_login else "/ui/",
                                (b"set-cookie", cleared))  # fmt: skip
        response = await self._route(request)
        if new_cookie is not None:
            response.headers.append((b"set-cookie", new_cookie))
        return response

    async def _route(self, request: Request) -> Response:
        segments = request.segments
        for pattern, methods in self.routes.items():
            if len(pattern) == len(segments) and all(
                p == "*" or p == s for p, s in zip(pattern, segments, strict=True)
            ):
                method = "GET" if request.method == "HEAD" else request.method
                handler = methods.get(method)
                if handler is None:
                    response = self.message(request, 405, "Method not allowed", "Not here.")
                    response.headers.append((b"allow", ", ".join(methods).encode()))
                    return response
                return await handler(self, request)
        return self.message(request, 404, "Not found", f"No page at {request.scope['path']}.")

    async def _login(self, request: Request, receive: Receive) -> Response:
        if not self.guard.needs_login:
            return redirect("/ui/")
        if request.method != "POST":
            return self._login_page(request, 200, next_path=request.query.get("next", "/ui/"))
        form = await read_form(receive) or {}
        next_path = form.get("next", "/ui/")
        if not self.guard.check_token(form.get("token", "")):
            return self._login_page(request, 401, next_path, error="That token is not valid.")
        session = self.guard.new_session()
        cookie = self.guard.cookie(session, secure=request.secure)
        if not next_path.startswith("/ui/") or next_path.startswith("/ui//"):
            next_path = "/ui/"  # only a page of the console: no open redirect
        return redirect(next_path, (b"set-cookie", cookie))

    def _login_page(
        self, request: Request, status: int, next_path: str, error: str | None = None
    ) -> Response:
        return self.render(request, "login.html", status=status, next=next_path, error=error)

    def _file(self, name: str) -> Response:
        match = _NAME.fullmatch(name)
        item = self._static / name
        if match is None or not item.is_file():
            return Response(404, b"not found", "text/plain; charset=utf-8")
        response = Response(200, item.read_bytes(), _STATIC_TYPES["." + match[1]])
        return response

    def render(
        self, request: Request, template: str, *, status: int = 200, **context: Any
    ) -> Response:
        """A page from ``template`` with ``context``, the session's CSRF token and the clock."""
        session = request.scope.get("iotpush.session")
        page = self.templates.get_template(template).render(
            csrf=self.guard.csrf(session) if session else "",
            logged_in=session is not None and self.guard.needs_login,
            now=self.clock(),
            path=request.path,
            section=request.segments[0] if request.segments else "overview",
            **context,
        )
        return Response(status, page.encode())

    def message(self, request: Request, status: int, title: str, detail: str) -> Response:
        """A page saying what went wrong."""
        return self.render(request, "message.html", status=status, title=title, detail=detail)
