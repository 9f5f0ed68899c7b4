"""The ASGI types iotpush's applications share, and the JSON answers they give.

Every error iotpush answers over HTTP is ``{"error": "<sentence>", "path": "<where>"}``: ``where``
is a JSON path into the body (``$.result.resultCode``), ``$`` for the request as a whole, or a
query parameter's name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, TypeAlias

import msgspec

__all__ = [
    "ASGIApp",
    "Headers",
    "Hook",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "error_body",
    "send_error",
    "send_json",
]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
Hook: TypeAlias = Callable[[], Awaitable[None]]
Headers: TypeAlias = Iterable[tuple[bytes, bytes]]

_encode = msgspec.json.encode


def error_body(error: str, path: str = "$") -> bytes:
    """The JSON body of an error answer."""
    return _encode({"error": error, "path": path})


async def send_json(send: Send, status: int, body: bytes, headers: Headers = ()) -> None:
    """Answer ``status`` with the JSON ``body`` (already encoded)."""
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


async def send_error(
    send: Send, status: int, error: str, path: str = "$", headers: Headers = ()
) -> None:
    """Answer ``status`` with ``{"error": error, "path": path}``."""
    await send_json(send, status, error_body(error, path), headers)
