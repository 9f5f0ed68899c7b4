"""Bearer-token authentication in front of an ASGI application (the query API, the console).

`BearerAuth` lets a request through when its ``Authorization: Bearer <token>`` is one of the
configured tokens (compared in constant time); otherwise it answers 401 with
``WWW-Authenticate``. With no token configured it lets everything through, unless ``required``:
then it answers 403 (a server listening on a public address must not show device data to anyone
who asks).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable
from typing import Final, Literal

from ._asgi import ASGIApp, Receive, Scope, Send, send_error
from .events import Events, Refused

__all__ = ["BearerAuth"]

log = logging.getLogger("iotpush")

_CHALLENGE: Final = ((b"www-authenticate", b'Bearer realm="iotpush"'),)


class BearerAuth:
    """Wraps ``app``: only requests with a valid bearer token reach it.

    Args:
        app: The application to protect.
        tokens: The tokens accepted.
        required: Refuse every request (403) while no token is configured.
        what: What the application is, for the log and the 403 (``the query API``).
        option: The option that configures the tokens, named in the 403.
        events: Where refusals go (`Refused`, ``unauthorized`` or ``forbidden``).
    """

    def __init__(
        self,
        app: ASGIApp,
        tokens: Iterable[str],
        *,
        required: bool = False,
        what: str = "the query API",
        option: str = "--api-token",
        events: Events | None = None,
    ) -> None:
        self.app = app
        self.tokens = [token.encode() for token in tokens]
        self.required = required
        self.what = what
        self.option = option
        self.events = events or Events()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._admits(scope):
            await self.app(scope, receive, send)
            return
        if not self.tokens:
            log.warning("refused a request to %s: no %s configured", self.what, self.option)
            reason = f"{self.what} needs {self.option} when the server listens on a public address"
            self._refused("forbidden", 403, reason, scope)
            await send_error(send, 403, reason)
            return
        client = scope.get("client")
        log.warning(
            "refused a request to %s from %s: bad or missing token", self.what, client and client[0]
        )
        reason = "a valid bearer token is required"
        self._refused("unauthorized", 401, reason, scope)
        await send_error(send, 401, reason, "$", _CHALLENGE)

    def _admits(self, scope: Scope) -> bool:
        if not self.tokens:
            return not self.required
        offered = b""
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                offered = value[7:].strip()
        # Compare with every token, in constant time, so timing tells nothing about them.
        matched = False
        for token in self.tokens:
            matched |= hmac.compare_digest(offered, token)
        return matched

    def _refused(self, reason: Literal["forbidden", "unauthorized"], status: int, detail: str,
                 scope: Scope) -> None:  # fmt: skip
        if self.events.wants(Refused):
            self.events.emit(Refused(reason, status, detail, "$", scope["path"]))
