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
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._await_headers()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._await_headers()

        def _await_headers(self) -> None:
            # uvicorn starts a new request cycle once a request's headers are complete: if the
            # cycle is still the same when the timer fires, no request came in time.
            self.loop.call_later(timeout, self._headers_overdue, self.cycle)

        def _headers_overdue(self, cycle: object) -> None:
            if self.cycle is cycle and not self.transport.is_closing():
                log.debug("closed a connection: no request headers within %g s", timeout)
                self.transport.close()

    HeaderTimeout.__name__ = HeaderTimeout.__qualname__ = f"HeaderTimeout{base.__name__}"
    return HeaderTimeout
