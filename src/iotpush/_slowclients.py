"""A bound on how long a client may take to send a request's headers.

uvicorn closes a connection that stays idle ``timeout_keep_alive`` seconds after a response, but
any byte received stops that timer, and nothing bounds the headers of a request: a client that
sends one header byte every few seconds (slow-loris) holds its connection for ever. The protocol
class made here closes a connection whose next request has not got all its headers within
``timeout`` seconds of the connection opening or of the previous response. The body has its own
bound in the app (``body_timeout``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["with_header_timeout"]

log = logging.getLogger("iotpush")


def with_header_timeout(base: type[Any], timeout: float) -> type[asyncio.Protocol]:
    """A subclass of the uvicorn HTTP protocol ``base`` that enforces the header ``timeout``."""

    class HeaderTimeout(base):  # type: ignore[misc]
        # One timer per connection, re-armed after each response and cancelled with the
        # connection: a timer left running per request would keep every finished request (its
        # scope and body) alive for the whole timeout, hundreds of MB under load.
        _header_timer: asyncio.TimerHandle | None = None
        _awaited: object = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._await_headers()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            super().connection_lost(exc)

        def _await_headers(self) -> None:
            # uvicorn starts a new request cycle once a request's headers are complete: if the
            # cycle is still the same when the timer fires, no request came in time.
            self._stop_header_timer()
            self._awaited = self.cycle
            self._header_timer = self.loop.call_later(timeout, self._headers_overdue)

        def _stop_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            self._awaited = None

        def _headers_overdue(self) -> None:
            self._header_timer = None
            if self.cycle is self._awaited and not self.transport.is_closing():
                log.debug("closed a connection: no request headers within %g s", timeout)
                self.transport.close()

    HeaderTimeout.__name__ = HeaderTimeout.__qualname__ = f"HeaderTimeout{base.__name__}"
    return HeaderTimeout
