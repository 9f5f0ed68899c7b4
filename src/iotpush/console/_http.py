"""The little HTTP the console needs on top of ASGI: requests, forms, cookies and answers."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, unquote_to_bytes

from .._asgi import Receive, Scope, Send

__all__ = [
    "MAX_FORM",
    "Invalid",
    "Receive",
    "Request",
    "Response",
    "Scope",
    "Send",
    "read_form",
    "redirect",
]

MAX_FORM: Final = 16 * 1024
"""The largest form body read; the console's forms hold a few short fields."""

_PROXY_HEADERS: Final = frozenset((b"x-forwarded-for", b"forwarded", b"x-real-ip"))
_SECURITY_HEADERS: Final = (
    # Inline scripts and styles are refused: the console's own come from /ui/static/.
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
     b" frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)  # fmt: skip


class Invalid(Exception):
    """A request the console cannot answer as asked: a 400 page with this sentence."""


@dataclass(slots=True)
class Request:
    """One request to the console: its path below ``/ui``, query, cookies and peer."""

    scope: Scope
    method: str
    segments: list[str]
    """The path below ``/ui/``, split at ``/``, each segment URL-decoded on its own."""
    query: dict[str, str]
    cookies: dict[str, list[str]]
    """Every value sent for each cookie name (a browser may hold several, with other paths)."""
    form: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_scope(cls, scope: Scope) -> Request:
        raw: bytes = scope.get("raw_path") or str(scope["path"]).encode()
        path = raw.split(b"?", 1)[0]
        parts = [unquote_to_bytes(p).decode("utf-8", "replace") for p in path.split(b"/")]
        segments = [p for p in parts[2:] if p]  # parts[0] is "", parts[1] is "ui"
        query: dict[str, str] = {}
        for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
            query.setdefault(name, value.strip())
        cookies: dict[str, list[str]] = {}
        for name, value in scope.get("headers", ()):
            if name == b"cookie":
                for pair in value.decode("latin-1").split(";"):
                    key, _, text = pair.strip().partition("=")
                    cookies.setdefault(key, []).append(text.strip('"'))
        return cls(scope, scope["method"], segments, query, cookies)

    def header(self, name: bytes) -> str | None:
        for key, value in self.scope.get("headers", ()):
            if key == name:
                return str(value.decode("latin-1"))
        return None

    @property
    def secure(self) -> bool:
        """Whether the request came over HTTPS (cookies are then ``Secure``)."""
        return self.scope.get("scheme") == "https"

    @property
    def loopback(self) -> bool:
        """Whether the client is on this machine: a loopback peer, and no proxy in between (a
        proxy on this machine is a loopback peer for every client it forwards)."""
        client = self.scope.get("client")
        if not client or any(name in _PROXY_HEADERS for name, _ in self.scope.get("headers", ())):
            return False
        try:
            address = ipaddress.ip_address(str(client[0]))
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        return bool((mapped or address).is_loopback)

    @property
    def path(self) -> str:
        """The request's path and query, as a local link back to it."""
        query = self.scope.get("query_string", b"").decode("latin-1")
        return str(self.scope["path"]) + (f"?{query}" if query else "")


@dataclass(slots=True)
class Response:
    """An answer: status, body, content type and extra headers."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def send(self, send: Send, *, head: bool = False) -> None:
        headers = [
            (b"content-type", self.content_type.encode()),
            (b"content-length", str(len(self.body)).encode()),
            *_SECURITY_HEADERS,
            *self.headers,
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else self.body})


def redirect(location: str, *headers: tuple[bytes, bytes]) -> Response:
    """A 303 to a local ``location`` (after a POST: the browser then GETs it)."""
    return Response(303, headers=[(b"location", location.encode()), *headers])


async def read_form(receive: Receive) -> dict[str, str] | None:
    """An ``application/x-www-form-urlencoded`` body as a dict; None when over `MAX_FORM`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks).decode("utf-8", "replace")
    return {name: value for name, value in parse_qsl(body, keep_blank_values=True)}
