"""The ASGI application: receive paths, limits, and the accept path into the inbox.

A push is answered ``200 ok`` only once the inbox has committed it. Anything refused gets a JSON
body naming the problem and the field path, and is kept in quarantine for the operator.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final, TypeAlias

import msgspec

from ._deadlines import Deadlines
from ._jsonlimits import DEFAULT_MAX_DEPTH, DEFAULT_MAX_MEMBERS, DEFAULT_MAX_STRING, JSONLimits
from .access import Denial, IPAllowlist, PathToken, SignatureVerifier
from .events import Events, Received, RefusalReason, Refused
from .exceptions import InboxUnavailable, NotificationError
from .inbox import Incoming, ReceiveInbox, Rejection
from .models import Route, decode

__all__ = ["App"]

log = logging.getLogger("iotpush")

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
Hook: TypeAlias = Callable[[], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_PATH: Final = "/v1.0.0/messageReceiver"
DEFAULT_MAX_BODY: Final = 1024 * 1024
DEFAULT_QUARANTINE_MAX_BODY: Final = 64 * 1024

# Request headers kept with each entry: enough to tell senders apart, nothing sensitive.
KEPT_HEADERS: Final = frozenset(
    (b"content-type", b"user-agent", b"x-forwarded-for", b"x-real-ip", b"x-request-id", b"host")
)
MAX_QUARANTINED_HEADERS: Final = 64

_OK_START: Final = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"2")],
}
_OK_BODY: Final = {"type": "http.response.body", "body": b"ok"}
_JSON_TYPES: Final = (b"application/json", b"text/json")
# The connection is closed too: a sender told to come back later should not hold it meanwhile.
_BUSY_HEADERS: Final = ((b"retry-after", b"1"), (b"connection", b"close"))
_REFUSALS: Final[dict[int, RefusalReason]] = {
    400: "invalid", 403: "forbidden", 404: "forbidden", 408: "timeout", 413: "too_large",
    415: "unsupported_media_type", 503: "unavailable",
}  # fmt: skip


class _Refused(Exception):
    """A request the app answers with a 4xx; ``body`` is what was read of it, for quarantine.

    ``counter`` is its name in `App.counters` (by default the status); ``answer`` is the error the
    sender is told when it must differ from the ``reason`` logged and quarantined; ``headers`` go
    with the answer.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        field: str = "$",
        body: bytes = b"",
        *,
        counter: str | None = None,
        answer: str | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(reason)
        self.status, self.reason, self.field, self.body = status, reason, field, body
        self.counter, self.answer = counter or str(status), answer or reason
        self.headers = headers

    @classmethod
    def denied(cls, denial: Denial, body: bytes = b"") -> _Refused:
        """The 403 of an access control's denial."""
        return cls(403, denial.reason, denial.field, body, counter=f"403-{denial.control}")


async def _respond(
    send: Send, status: int, payload: Any, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = msgspec.json.encode(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media in _JSON_TYPES or media.endswith(b"+json")


class App:
    """The receiver as an ASGI 3 application.

    Args:
        inbox: Where accepted notifications are persisted before the 200.
        path: The main receive path (the callback URL's path); the NB-IoT command status path is
            ``path + "/cmd"`` unless ``command_path`` is given.
        command_path: The NB-IoT command status path.
        max_body: The largest body accepted, in bytes (413 beyond).
        on_startup: Coroutines run at ASGI lifespan startup, after the inbox opened.
        on_shutdown: Coroutines run at lifespan shutdown, before the inbox closes.
        api: The read-only query API, served under ``/api/`` and at ``/openapi.json``.
        api_tokens: Bearer tokens the query API accepts; with any, ``/api/`` requires one.
        api_needs_token: Refuse ``/api/`` while no token is configured (a server listening on
            a public address must not show device data to anyone who asks).
        console: The web console, served under ``/ui/`` (it checks access itself).
        events: Where the app emits `Received` and `Refused` (a new `Events` by default).
        clock: Returns the time in Unix seconds (injected by tests).
        path_token: Serve the receive paths under ``/<token>``; other first segments get 404.
        allowlist: Accept pushes only from the clients it allows (403 otherwise).
        signatures: Accept only pushes it verifies as signed (403 otherwise).
        max_depth: The deepest nesting of objects and arrays in a body (400 beyond; 0: no bound).
        max_members: The most members of one object or array in a body (400 beyond; 0: none).
        max_string: The longest string in a body, in characters (400 beyond; 0: no bound).
        max_in_flight: The most pushes being received at once; beyond, a push is answered 503
            with ``Retry-After`` at once, its body unread (None: no bound).
        body_timeout: Seconds a push's body may take to arrive; a slower one is answered 408
            and its connection closed, within 1.5 times that (None: no bound).
        quarantine_max_body: The most bytes of a refused body kept in quarantine (0: all).
    """

    def __init__(
        self,
        inbox: ReceiveInbox,
        *,
        path: str = DEFAULT_PATH,
        command_path: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        on_startup: Iterable[Hook] = (),
        on_shutdown: Iterable[Hook] = (),
        api: ASGIApp | None = None,
        api_tokens: Iterable[str] = (),
        api_needs_token: bool = False,
        console: ASGIApp | None = None,
        events: Events | None = None,
        clock: Callable[[], float] = time.time,
        path_token: PathToken | None = None,
        allowlist: IPAllowlist | None = None,
        signatures: SignatureVerifier | None = None,
        max_depth: int | None = DEFAULT_MAX_DEPTH,
        max_members: int | None = DEFAULT_MAX_MEMBERS,
        max_string: int | None = DEFAULT_MAX_STRING,
        max_in_flight: int | None = None,
        body_timeout: float | None = None,
        quarantine_max_body: int = DEFAULT_QUARANTINE_MAX_BODY,
    ) -> None:
        self.inbox = inbox
        self.path = "/" + path.strip("/")
        self.command_path = "/" + (command_path or f"{self.path}/cmd").strip("/")
        self.max_body = max_body
        self.on_startup = list(on_startup)
        self.on_shutdown = list(on_shutdown)
        self.api = api
        self.api_tokens = [token.encode() for token in api_tokens]
        self.api_needs_token = api_needs_token
        self.console = console
        self.events = Events() if events is None else events
        self.clock = clock
        self.path_token = path_token
        self.allowlist = allowlist
        self.signatures = signatures
        limits = JSONLimits(max_depth, max_members, max_string)
        self.json_limits = limits if limits.active else None
        self.max_in_flight = max_in_flight
        self._body_deadlines = None if body_timeout is None else Deadlines(body_timeout)
        self.quarantine_max_body = quarantine_max_body
        self.in_flight = 0
        """Pushes being received now (read, decoded, persisted)."""
        self.counters: Counter[str] = Counter()
        self.state: dict[str, Any] = {}
        """Objects the application was built with (``state["dispatcher"]``), for tools and tests."""
        self._routes: dict[str, Route] = {self.path: "notify", self.command_path: "command"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
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

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        route = self._routes.get(path) if self.path_token is None else None
        if route is None:
            route, path = self._resolve(path)
        if route is None:
            if self.api is not None and path == "/openapi.json":  # the schema: no device data
                await self.api(scope, receive, send)
                return
            if self.api is not None and path.startswith("/api/"):
                if await self._authorized(scope, send):
                    await self.api(scope, receive, send)
                return
            if self.console is not None and (path == "/ui" or path.startswith("/ui/")):
                await self.console(scope, receive, send)
                return
            if path == "/health" and scope["method"] in ("GET", "HEAD"):
                await _respond(send, 200, {"status": "ok"})
                return
            if self.path_token is not None and (logged := self._token_failure(path)):
                # Answered as any unknown path, so that nothing tells the token exists.
                refused = _Refused(404, "wrong or missing path token", counter="403-token",
                                   answer=f"no receiver at {path}")  # fmt: skip
                await self._deny(scope, receive, send, logged, refused)
                return
            self.counters["404"] += 1
            await _respond(send, 404, {"error": f"no receiver at {path}", "path": "$"})
            return
        if self.allowlist is not None:
            client = scope.get("client")
            denial = self.allowlist.check(client[0] if client else None, scope["headers"])
            if denial is not None:
                await self._deny(scope, receive, send, path, _Refused.denied(denial))
                return
        if scope["method"] != "POST":
            self.counters["405"] += 1
            await _respond(
                send,
                405,
                {"error": "only POST is accepted here", "path": "$"},
                [(b"allow", b"POST")],
            )
            return
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
            # Shed load before reading the body: an overloaded receiver must not also buffer.
            self.counters["503-busy"] += 1
            error = {"error": "too many pushes are being received now; retry", "path": "$"}
            await _respond(send, 503, error, _BUSY_HEADERS)
            return
        self.in_flight += 1
        try:
            await self._accept(scope, receive, send, route, path)
        finally:
            self.in_flight -= 1

    async def _accept(
        self, scope: Scope, receive: Receive, send: Send, route: Route, path: str
    ) -> None:
        """Read, check, decode and persist one push, then answer it."""
        received_at = self.clock()
        headers: dict[str, str] = {}
        length = media = b""
        for name, value in scope["headers"]:
            if name in KEPT_HEADERS:
                headers[name.decode("latin-1")] = value.decode("latin-1")
            if name == b"content-length":
                length = value
            elif name == b"content-type":
                media = value
        body = b""
        try:
            # Straight to the reader when there is no deadline: one coroutine less per push.
            reader = self._read_body if self._body_deadlines is None else self._read_in_time
            body = await reader(receive, length, media)
            if self.signatures is not None:  # on the raw body, before anything reads it
                denial = self.signatures.verify(scope["headers"], body, received_at)
                if denial is not None:
                    raise _Refused.denied(denial, body)
            if self.json_limits is not None and (bounds := self.json_limits.check(body)):
                raise _Refused(400, bounds.reason, bounds.path, body)
            notification = decode(body, route)
        except _Refused as refused:
            await self._refuse(send, scope, path, body, received_at, refused)
            return
        except NotificationError as exc:
            await self._refuse(
                send, scope, path, body, received_at, _Refused(400, exc.reason, exc.path)
            )
            return
        client = scope.get("client")
        if client:
            headers["x-iotpush-peer"] = str(client[0])
        if scope.get("query_string"):  # for `iotpush.legacy.request.args` and `.url`
            headers["x-iotpush-query"] = scope["query_string"].decode("latin-1")
        if scope.get("scheme") == "https":
            headers["x-iotpush-scheme"] = "https"
        try:
            item = Incoming.from_notification(
                notification, body=body, path=path, headers=headers, received_at=received_at
            )
            accepted = await self.inbox.append(item)
        except InboxUnavailable as exc:
            self.counters["503"] += 1
            log.error("not acknowledged, the inbox cannot persist: %s", exc)
            error = {"error": "the inbox cannot persist the notification now; retry", "path": "$"}
            await _respond(send, 503, error, [(b"retry-after", b"5")])
            return
        except Exception:  # a bug of ours: never a 500, never an acknowledgement
            log.exception("accepting a push to %s failed", path)
            failure = _Refused(503, "the receiver failed to accept the notification; retry")
            await self._refuse(send, scope, path, body, received_at, failure)
            return
        self.counters["duplicate" if accepted.duplicate else "accepted"] += 1
        if self.events.wants(Received):
            self.events.emit(
                Received(accepted.id, item.type, item.device, accepted.duplicate, received_at)
            )
        await send(_OK_START)
        await send(_OK_BODY)

    def _route(self, path: str) -> Route | None:
        return self._routes.get(path) or self._routes.get(path.rstrip("/"))

    def _resolve(self, path: str) -> tuple[Route | None, str]:
        """The route of ``path`` and the path to keep: without the path token, if there is one."""
        if self.path_token is None:
            return self._route(path), path
        matched, rest = self.path_token.split(path)
        route = self._route(rest)
        return (route, rest) if matched and route is not None else (None, path)

    def _token_failure(self, path: str) -> str | None:
        """For an unrouted ``path`` that is a receive path under a wrong first segment, or under
        none, the path to log and quarantine (the wrong segment masked: it may be close to the
        token); otherwise None."""
        assert self.path_token is not None
        if self._route(path) is not None:
            return path
        rest = self.path_token.split(path)[1]
        return "/***" + rest if self._route(rest) is not None else None

    def loggable_path(self, path: str) -> str:
        """``path`` as it may be written to a log: with a path token, a first segment in front of a
        receive path is masked (the token, or a guess that may be close to it)."""
        if self.path_token is None:
            return path
        path, mark, query = path.partition("?")
        masked = self._token_failure(path) if self._route(path) is None else None
        return (masked or path) + mark + query

    async def _deny(
        self, scope: Scope, receive: Receive, send: Send, path: str, refused: _Refused
    ) -> None:
        """Refuse a request an access control turned away, keeping what it sent in quarantine."""
        received_at = self.clock()
        try:
            refused.body = await self._read_in_time(receive, b"", b"")
        except _Refused as cut:  # too large, too slow, or the sender went away: keep what came
            refused.body, refused.headers = cut.body, cut.headers
        await self._refuse(send, scope, path, b"", received_at, refused)

    async def _authorized(self, scope: Scope, send: Send) -> bool:
        """Check the query API's bearer token; answer 401/403 and return False if it fails."""
        if not self.api_tokens:
            if not self.api_needs_token:
                return True
            self.counters["api-403"] += 1
            log.warning("refused a query API request: no --api-token configured")
            reason = "the query API needs --api-token when the server listens on a public address"
            await _respond(send, 403, {"error": reason, "path": "$"})
            return False
        offered = b""
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                offered = value[7:].strip()
        # Compare with every token, in constant time, so timing tells nothing about them.
        matched = False
        for token in self.api_tokens:
            matched |= hmac.compare_digest(offered, token)
        if matched:
            return True
        self.counters["api-401"] += 1
        client = scope.get("client")
        log.warning(
            "refused a query API request from %s: bad or missing token", client and client[0]
        )
        await _respond(
            send,
            401,
            {"error": "a valid bearer token is required", "path": "$"},
            [(b"www-authenticate", b'Bearer realm="iotpush"')],
        )
        return False

    async def _read_in_time(self, receive: Receive, length: bytes, media: bytes) -> bytes:
        """The body, within the body timeout if there is one."""
        deadlines = self._body_deadlines
        if deadlines is None:
            return await self._read_body(receive, length, media)
        chunks: list[bytes] = []
        task = deadlines.enter()
        try:
            return await self._read_body(receive, length, media, chunks)
        except asyncio.CancelledError:
            if not deadlines.expired(task):
                raise
            # A sender trickling its body (slow-loris) must not hold a slot for ever.
            reason = f"the body did not arrive within {deadlines.timeout:g} s"
            close = ((b"connection", b"close"),)
            raise _Refused(408, reason, body=b"".join(chunks), headers=close) from None
        finally:
            deadlines.leave(task)

    async def _read_body(
        self, receive: Receive, length: bytes, media: bytes, chunks: list[bytes] | None = None
    ) -> bytes:
        """The body; what was read so far stays in ``chunks`` should the caller give up."""
        refusal: _Refused | None = None
        if length.isdigit() and int(length) > self.max_body:
            refusal = _Refused(413, f"body larger than {self.max_body} bytes")
        elif media and not _is_json(media):
            got = media.decode("latin-1")
            refusal = _Refused(415, f"expected Content-Type application/json, got {got!r}")
        message = await receive()
        body: bytes = message.get("body", b"")
        if (
            refusal is None
            and message["type"] == "http.request"
            and not message.get("more_body", False)
            and len(body) <= self.max_body
        ):
            return body  # the usual case: the whole body in one message
        # Even a refused body is read (up to max_body) so that quarantine keeps it.
        if chunks is None:
            chunks = []
        size = 0
        while True:
            if message["type"] != "http.request":  # the client went away
                refusal = refusal or _Refused(400, "the request ended before its body")
                break
            chunk: bytes = message.get("body", b"")
            if size + len(chunk) > self.max_body:
                chunks.append(chunk[: self.max_body - size])
                refusal = refusal or _Refused(413, f"body larger than {self.max_body} bytes")
                break
            size += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
            message = await receive()
        body = b"".join(chunks)
        if refusal is not None:
            refusal.body = body
            raise refusal
        return body

    async def _refuse(
        self,
        send: Send,
        scope: Scope,
        path: str,
        body: bytes,
        received_at: float,
        refused: _Refused,
    ) -> None:
        self.counters[refused.counter] += 1
        if self.events.wants(Refused):
            reason = _REFUSALS.get(refused.status, "invalid")
            self.events.emit(Refused(reason, refused.status, refused.reason, refused.field, path))
        log.warning(
            "refused a push to %s: %s %s (%s)", path, refused.status, refused.reason, refused.field
        )
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in list(scope["headers"])[:MAX_QUARANTINED_HEADERS]
        }
        kept = refused.body or body
        if self.quarantine_max_body and len(kept) > self.quarantine_max_body:
            kept = kept[: self.quarantine_max_body]  # enough to see what it was
        rejection = Rejection(
            received_at, path, refused.status, refused.reason, refused.field, kept, headers
        )
        # Answer first: a refusal costs the sender no wait for the disk, and its timing tells
        # nothing about which check refused it. The body is kept right after.
        error = {"error": refused.answer, "path": refused.field}
        await _respond(send, refused.status, error, refused.headers)
        try:
            await self.inbox.quarantine(rejection)
        except Exception:  # the operator learns from the log
            log.exception("could not quarantine a refused body")
