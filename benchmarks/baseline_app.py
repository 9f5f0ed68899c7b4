"""The baseline: a bare ASGI app that reads the whole body and answers ``200 ok``.

It does what any receiver must do at the least (read the request, answer it) and nothing else:
no parsing, no storage. Its rate is the ceiling of the server stack on this machine, and
iotpush's figures are given as a ratio of it::

    uvicorn benchmarks.baseline_app:app --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]

_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"2")],
}
_BODY = {"type": "http.response.body", "body": b"ok"}


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """Read the request body to its end, then answer ``200 ok``."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send(_START)
    await send(_BODY)
