"""Who may use the console: loopback clients without a token, everyone logged in with one.

Without a token configured, only loopback clients are answered; they get a session at once.
With tokens (``--console-token``, else ``--api-token``), every client, loopback included, logs
in once with a token and gets a session cookie; a token never goes in a URL.

Sessions are signed, not stored: the cookie is ``<expiry>.<nonce>.<mac>``, the MAC an HMAC of
the rest by a key derived from the tokens (a random key per process without tokens). So any
process of the same deployment accepts the session, a restart does not log anyone out, and a
change of token does. Logout clears the cookie and revokes its nonce in this process. Every POST
that changes something carries a CSRF token, an HMAC of the session: a form on another site
cannot know it, so a forged POST gets a 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Final

from ._http import Request

__all__ = ["COOKIE", "SESSION_SECONDS", "Guard"]

COOKIE: Final = "iotpush_console"
SESSION_SECONDS: Final = 12 * 3600
"""How long a session lasts after logging in."""


class Guard:
    """Sessions and CSRF tokens of the console.

    Args:
        tokens: The tokens that log in; none: loopback clients only, without a login.
        clock: Unix time (injected by tests).
    """

    def __init__(self, tokens: Sequence[str], clock: Callable[[], float] = time.time) -> None:
        self._tokens = [hashlib.sha256(token.encode()).digest() for token in tokens]
        self.needs_login = bool(tokens)
        seed = b"".join(sorted(self._tokens)) if tokens else secrets.token_bytes(32)
        self._key = hashlib.sha256(b"iotpush console sessions\0" + seed).digest()
        self.clock = clock
        self._revoked: set[str] = set()

    def check_token(self, offered: str) -> bool:
        """Whether ``offered`` is one of the tokens (compared in constant time)."""
        digest = hashlib.sha256(offered.encode("utf-8", "surrogateescape")).digest()
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(digest, token)
        return matched

    def new_session(self) -> str:
        """A new session cookie value."""
        expiry = int(self.clock()) + SESSION_SECONDS
        payload = f"{expiry}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{self._mac(payload)}"

    def session(self, request: Request) -> str | None:
        """The request's session: the first of its cookies that is valid, unexpired, not revoked."""
        for value in request.cookies.get(COOKIE, ()):
            payload, _, mac = value.rpartition(".")
            expiry, _, nonce = payload.partition(".")
            if not (expiry.isdigit() and nonce and hmac.compare_digest(mac, self._mac(payload))):
                continue
            if int(expiry) >= self.clock() and nonce not in self._revoked:
                return value
        return None

    def revoke(self, session: str) -> None:
        """Refuse ``session`` from now on in this process (logout)."""
        self._revoked.add(session.split(".")[1])

    def csrf(self, session: str) -> str:
        """The CSRF token forms of ``session`` carry."""
        return self._mac("csrf\0" + session)

    def check_csrf(self, session: str, offered: str) -> bool:
        """Whether ``offered`` is the CSRF token of ``session``."""
        return hmac.compare_digest(offered.encode(), self.csrf(session).encode())

    def cookie(self, value: str, *, secure: bool, max_age: int = SESSION_SECONDS) -> bytes:
        """The ``Set-Cookie`` value of a session (an empty value with 0 clears it)."""
        attributes = f"{COOKIE}={value}; Path=/ui; Max-Age={max_age}; HttpOnly; SameSite=Strict"
        return (attributes + ("; Secure" if secure else "")).encode()

    def _mac(self, payload: str) -> str:
        digest = hmac.digest(self._key, payload.encode(), "sha256")
        return digest.hex()[:43]
