"""A bound on how long a client may take to send a request's headers, on one coarse timer.

uvicorn closes a connection that stays idle ``timeout_keep_alive`` seconds after a response, but
any byte received stops that timer, and nothing bounds the headers of a request: a client that
sends one header byte every few seconds (slow-loris) holds its connection for ever. The protocol
class made here closes a connection whose next request has not got all its headers within
``timeout`` seconds of the connection opening or of the previous response. The body has its own
bound in the app (``body_timeout``).

Timers per request are what a busy server pays most for here: uvicorn arms (and cancels) a
keep-alive timer for every request, and a header timer would add another. Instead each
connection notes when it began waiting for a request (one clock read), and one timer per server,
armed while connections are open, looks at them all every half of the shortest bound: a
connection is closed between its bound and 1.5 times it. With httptools (the server `iotpush
serve` runs) that timer also enforces uvicorn's keep-alive bound, with uvicorn's meaning (no byte
of a new request within ``timeout_keep_alive`` seconds of a response), in place of uvicorn's own
timer per request; with h11, uvicorn keeps its own keep-alive timer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["with_header_timeout"]

log = logging.getLogger("iotpush")

_BUSY: Any = object()  # `_awaited` while a request is under way (never a cycle)


def with_header_timeout(base: type[Any], timeout: float) -> type[asyncio.Protocol]:
    """A subclass of the uvicorn HTTP protocol ``base`` that enforces the header ``timeout``."""
    # httptools' protocol: its keep-alive timer per request is replaced by the coarse one.
    coarse_keep_alive = hasattr(base, "_start_asgi_task") and hasattr(base, "on_message_begin")

    class HeaderTimeout(base):  # type: ignore[misc]
        # Class state, shared by the connections of one server (one event loop).
        _open: set[HeaderTimeout] = set()  # noqa: RUF012 - shared on purpose
        _sweeper: asyncio.TimerHandle | None = None
        _sweeping: asyncio.AbstractEventLoop | None = None
        # Per connection: the request cycle current when it began waiting for a request (it is
        # still current if no request's headers came since), when, and whether no byte of a
        # new request came since a response (the keep-alive bound).
        _awaited: Any = _BUSY
        _waiting_since = 0.0
        _idle = False

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._awaited, self._waiting_since = self.cycle, self.loop.time()
            cls = type(self)
            cls._open.add(self)
            if cls._sweeper is None or cls._sweeping is not self.loop:
                cls._sweeping = self.loop
                cls._sweeper = self.loop.call_later(self._period(), cls._sweep)

        def connection_lost(self, exc: Exception | None) -> None:
            type(self)._open.discard(self)
            self._awaited = _BUSY
            super().connection_lost(exc)

        if coarse_keep_alive:

            def on_message_begin(self) -> None:
                self._idle = False
                super().on_message_begin()

            def on_response_complete(self) -> None:
                # uvicorn's, without its keep-alive timer: the sweep below enforces that bound.
                self.server_state.total_requests += 1
                if self.transport.is_closing():
                    return
                self.flow.resume_reading()
                if self.pipeline:  # the next request is here already
                    self._awaited = _BUSY
                    cycle, app = self.pipeline.pop()
                    self._start_asgi_task(cycle, app)
                else:
                    self._awaited, self._waiting_since = self.cycle, self.loop.time()
                    self._idle = True

        else:

            def on_response_complete(self) -> None:
                super().on_response_complete()
                if not self.transport.is_closing():
                    self._awaited, self._waiting_since = self.cycle, self.loop.time()

        def _period(self) -> float:
            bounds = [timeout]
            if coarse_keep_alive:
                bounds.append(self.timeout_keep_alive)
            return min(bounds) / 2

        @classmethod
        def _sweep(cls) -> None:
            loop = asyncio.get_running_loop()
            if loop is not cls._sweeping:  # a timer of a server stopped since, on its own loop
                return
            cls._sweeper = None
            if not cls._open:
                return
            now = loop.time()
            period = timeout / 2
            for conn in list(cls._open):
                period = conn._period()
                # A new request's headers make a new cycle: then nothing is awaited any more.
                if conn._awaited is not conn.cycle or conn.transport.is_closing():
                    continue
                waited = now - conn._waiting_since
                if waited >= timeout:
                    log.debug("closed a connection: no request headers within %g s", timeout)
                    conn.transport.close()
                elif conn._idle and waited >= conn.timeout_keep_alive:
                    conn.transport.close()
            cls._sweeper = loop.call_later(period, cls._sweep)

    HeaderTimeout.__name__ = HeaderTimeout.__qualname__ = f"HeaderTimeout{base.__name__}"
    return HeaderTimeout
