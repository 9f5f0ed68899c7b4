"""The receive endpoint: read a push, check it, decode it with its route's format, keep it.

A push is answered ``200 ok`` only once the inbox has committed it. Anything refused gets a JSON
body naming the problem and the field path, and is kept in quarantine for the operator. The
checks run in this order: access controls before the body (path token, IP allowlist), method,
the in-flight bound, body size, type and time, access controls after the body (signatures), JSON
bounds, then the body is decoded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from ._asgi import Headers, Receive, Scope, Send, send_error
from ._deadlines import Deadlines
from ._jsonlimits import DEFAULT_MAX_DEPTH, DEFAULT_MAX_MEMBERS, DEFAULT_MAX_STRING, JSONLimits
from .access import AccessControl, Denial
from .events import Answered, Events, Received, RefusalReason, Refused
from .exceptions import InboxUnavailable, NotificationError
from .formats import PushRoute
from .inbox import Incoming, ReceiveInbox, Rejection

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_QUARANTINE_MAX_BODY",
    "KEPT_HEADERS",
    "Limits",
    "ReceiveEndpoint",
]

log = logging.getLogger("iotpush")

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
_CLOSE: Final = ((b"connection", b"close"),)
_PROBLEMS: Final[dict[str, RefusalReason]] = {
    "malformed": "bad_json",
    "invalid": "invalid",
    "unknown_type": "unknown_type",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """What a push may cost the receiver.

    Attributes:
        max_body: The largest body accepted, in bytes (413 beyond).
        max_depth: The deepest nesting of objects and arrays in a body (400 beyond; 0: no bound).
        max_members: The most members of one object or array in a body (400 beyond; 0: none).
        max_string: The longest string in a body, in characters (400 beyond; 0: no bound).
        max_in_flight: The most pushes being received at once; beyond, a push is answered 503
            with ``Retry-After`` at once, its body unread (None: no bound).
        body_timeout: Seconds a push's body may take to arrive; a slower one is answered 408
            and its connection closed, within 1.5 times that (None: no bound).
        quarantine_max_body: The most bytes of a refused body kept in quarantine (0: all).
    """

    max_body: int = DEFAULT_MAX_BODY
    max_depth: int | None = DEFAULT_MAX_DEPTH
    max_members: int | None = DEFAULT_MAX_MEMBERS
    max_string: int | None = DEFAULT_MAX_STRING
    max_in_flight: int | None = None
    body_timeout: float | None = None
    quarantine_max_body: int = DEFAULT_QUARANTINE_MAX_BODY


class _Refusal(Exception):
    """A push the endpoint answers with a 4xx or 503; ``body`` is what was read of it.

    ``answer`` is the error the sender is told when it must differ from the ``detail`` logged
    and quarantined; ``headers`` go with the answer.
    """

    def __init__(
        self,
        status: int,
        reason: RefusalReason,
        detail: str,
        field: str = "$",
        body: bytes = b"",
        *,
        answer: str | None = None,
        headers: Headers = (),
    ) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail, self.field = status, reason, detail, field
        self.body, self.answer, self.headers = body, answer or detail, tuple(headers)

    @classmethod
    def denied(cls, denial: Denial, path: str, body: bytes = b"") -> _Refusal:
        """The refusal of an access control's denial: 403, but 404 for the path token, answered
        as any unknown path so that nothing tells the token exists."""
        if denial.control == "token":
            answer = f"no receiver at {path}"
            return cls(404, "forbidden", denial.reason, denial.field, body, answer=answer)
        return cls(403, "forbidden", denial.reason, denial.field, body)


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media in _JSON_TYPES or media.endswith(b"+json")


class ReceiveEndpoint:
    """Receives the pushes of every receive path: ``route`` says which format decodes them.

    Args:
        inbox: Where accepted notifications are persisted before the 200 (and refused ones
            quarantined).
        limits: What a push may cost.
        access: The access controls, consulted in order (before the body, then after it).
        events: Where `Answered`, `Received` and `Refused` go.
        clock: Returns the time in Unix seconds (injected by tests).
    """

    def __init__(
        self,
        inbox: ReceiveInbox,
        *,
        limits: Limits | None = None,
        access: Sequence[AccessControl] = (),
        events: Events | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.inbox = inbox
        self.limits = limits = limits or Limits()
        self.access = tuple(access)
        self.events = events or Events()
        self.clock = clock
        json_limits = JSONLimits(limits.max_depth, limits.max_members, limits.max_string)
        self.json_limits = json_limits if json_limits.active else None
        self._deadlines = None if limits.body_timeout is None else Deadlines(limits.body_timeout)
        self.in_flight = 0
        """Pushes being received now (read, decoded, persisted)."""

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, route: PushRoute, path: str, masked: str
    ) -> None:
        """Receive one push to ``route``.

        ``path`` is the path kept with the push (without the path token); ``masked`` is the
        request path as it may be logged when the path token is wrong (its first segment masked,
        for it may be close to the token).
        """
        started = self.clock()
        status = 0  # the answer's, once given
        try:  # one coroutine for the usual push: no frame of its own for the checks
            for control in self.access:
                denial = control.before(scope)
                if denial is not None:
                    refusal = _Refusal.denied(denial, scope["path"])
                    shown = masked if denial.control == "token" else path
                    status = await self._deny(scope, receive, send, shown, refusal)
                    return
            if scope["method"] != "POST":
                error = "only POST is accepted here"
                self._refused("method_not_allowed", 405, error, "$", path)
                await send_error(send, 405, error, "$", [(b"allow", b"POST")])
                status = 405
                return
            limit = self.limits.max_in_flight
            if limit is not None and self.in_flight >= limit:
                # Shed load before reading the body: an overloaded receiver must not also buffer.
                error = "too many pushes are being received now; retry"
                self._refused("busy", 503, error, "$", path)
                await send_error(send, 503, error, "$", _BUSY_HEADERS)
                status = 503
                return
            self.in_flight += 1
            try:
                status = await self._accept(scope, receive, send, route, path, started)
            finally:
                self.in_flight -= 1
        finally:
            events = self.events
            if status and events.wants(Answered):
                now = self.clock()
                events.emit(Answered(status, now - started, now))

    async def _accept(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: PushRoute,
        path: str,
        received_at: float,
    ) -> int:
        """Read, check, decode and persist one push, then answer it."""
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
            reader = self._read_body if self._deadlines is None else self._read_in_time
            body = await reader(receive, length, media)
            for control in self.access:  # on the raw body, before anything reads it
                denial = control.after(scope, body, received_at)
                if denial is not None:
                    raise _Refusal.denied(denial, path, body)
            if self.json_limits is not None and (bounds := self.json_limits.check(body)):
                raise _Refusal(400, "too_deep", bounds.reason, bounds.path, body)
            notification = route.format.decode(body, route.kind)
        except _Refusal as refusal:
            return await self._refuse(send, scope, path, body, received_at, refusal)
        except NotificationError as exc:
            invalid = _Refusal(400, _PROBLEMS[exc.problem], exc.reason, exc.path)
            return await self._refuse(send, scope, path, body, received_at, invalid)
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
            log.error("not acknowledged, the inbox cannot persist: %s", exc)
            error = "the inbox cannot persist the notification now; retry"
            self._refused("unavailable", 503, error, "$", path)
            await send_error(send, 503, error, "$", [(b"retry-after", b"5")])
            return 503
        except Exception:  # a bug of ours: never a 500, never an acknowledgement
            log.exception("accepting a push to %s failed", path)
            failure = _Refusal(
                503, "unavailable", "the receiver failed to accept the notification; retry"
            )
            return await self._refuse(send, scope, path, body, received_at, failure)
        events = self.events
        if events.wants(Received):
            events.emit(
                Received(accepted.id, item.type, item.device, accepted.duplicate, received_at)
            )
        await send(_OK_START)
        await send(_OK_BODY)
        return 200

    def _refused(
        self, reason: RefusalReason, status: int, detail: str, field: str, path: str
    ) -> None:
        if self.events.wants(Refused):
            self.events.emit(Refused(reason, status, detail, field, path))

    async def _deny(
        self, scope: Scope, receive: Receive, send: Send, path: str, refusal: _Refusal
    ) -> int:
        """Refuse a request an access control turned away, keeping what it sent in quarantine."""
        received_at = self.clock()
        try:
            refusal.body = await self._read_in_time(receive, b"", b"")
        except _Refusal as cut:  # too large, too slow, or the sender went away: keep what came
            refusal.body, refusal.headers = cut.body, cut.headers
        return await self._refuse(send, scope, path, b"", received_at, refusal)

    async def _read_in_time(self, receive: Receive, length: bytes, media: bytes) -> bytes:
        """The body, within the body timeout if there is one."""
        deadlines = self._deadlines
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
            detail = f"the body did not arrive within {deadlines.timeout:g} s"
            raise _Refusal(408, "timeout", detail, body=b"".join(chunks), headers=_CLOSE) from None
        finally:
            deadlines.leave(task)

    async def _read_body(
        self, receive: Receive, length: bytes, media: bytes, chunks: list[bytes] | None = None
    ) -> bytes:
        """The body; what was read so far stays in ``chunks`` should the caller give up."""
        max_body = self.limits.max_body
        refusal: _Refusal | None = None
        if length.isdigit() and int(length) > max_body:
            refusal = _Refusal(413, "too_large", f"body larger than {max_body} bytes")
        elif media and not _is_json(media):
            got = media.decode("latin-1")
            detail = f"expected Content-Type application/json, got {got!r}"
            refusal = _Refusal(415, "unsupported_media_type", detail)
        message = await receive()
        body: bytes = message.get("body", b"")
        if (
            refusal is None
            and message["type"] == "http.request"
            and not message.get("more_body", False)
            and len(body) <= max_body
        ):
            return body  # the usual case: the whole body in one message
        # Even a refused body is read (up to max_body) so that quarantine keeps it.
        if chunks is None:
            chunks = []
        size = 0
        while True:
            if message["type"] != "http.request":  # the client went away
                refusal = refusal or _Refusal(400, "invalid", "the request ended before its body")
                break
            chunk: bytes = message.get("body", b"")
            if size + len(chunk) > max_body:
                chunks.append(chunk[: max_body - size])
                detail = f"body larger than {max_body} bytes"
                refusal = refusal or _Refusal(413, "too_large", detail)
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
        refusal: _Refusal,
    ) -> int:
        self._refused(refusal.reason, refusal.status, refusal.detail, refusal.field, path)
        log.warning(
            "refused a push to %s: %s %s (%s)", path, refusal.status, refusal.detail, refusal.field
        )
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in list(scope["headers"])[:MAX_QUARANTINED_HEADERS]
        }
        kept = refusal.body or body
        limit = self.limits.quarantine_max_body
        if limit and len(kept) > limit:
            kept = kept[:limit]  # enough to see what it was
        rejection = Rejection(
            received_at, path, refusal.status, refusal.detail, refusal.field, kept, headers
        )
        # Answer first: a refusal costs the sender no wait for the disk, and its timing tells
        # nothing about which check refused it. The body is kept right after.
        await send_error(send, refusal.status, refusal.answer, refusal.field, refusal.headers)
        try:
            await self.inbox.quarantine(rejection)
        except Exception:  # the operator learns from the log
            log.exception("could not quarantine a refused body")
        return refusal.status
