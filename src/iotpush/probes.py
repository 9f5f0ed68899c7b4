"""``/metrics``, ``/health/live`` and ``/health/ready`` as one small ASGI app.

The app in front decides who may call them: `iotpush.App` serves ``/metrics`` under the query
API's access rules and the health paths to anyone (they hold no device data).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final, TypeAlias

import msgspec

from .health import Health, Report
from .metrics import CONTENT_TYPE, Metrics

__all__ = ["PATHS", "Probes"]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]

PATHS: Final = frozenset(("/metrics", "/health/live", "/health/ready"))


class Probes:
    """Serves `PATHS` (GET and HEAD) from ``metrics`` (None: ``/metrics`` is 404) and ``health``."""

    def __init__(self, health: Health, metrics: Metrics | None = None) -> None:
        self.health = health
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if scope["method"] not in ("GET", "HEAD"):
            body = msgspec.json.encode({"error": "only GET and HEAD are served here", "path": "$"})
            await _send(send, 405, b"application/json", body, [(b"allow", b"GET, HEAD")])
        elif path == "/metrics" and self.metrics is not None:
            await _send(send, 200, CONTENT_TYPE.encode(), await self.metrics.render())
        elif path in ("/health/live", "/health/ready"):
            probe = self.health.live if path == "/health/live" else self.health.ready
            report: Report = await probe()
            body = msgspec.json.encode(report)
            await _send(send, 200 if report.ok else 503, b"application/json", body)
        else:
            body = msgspec.json.encode({"error": f"no receiver at {path}", "path": "$"})
            await _send(send, 404, b"application/json", body)


async def _send(
    send: Send, status: int, media: bytes, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
