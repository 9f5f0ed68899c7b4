"""Access control on the receive paths: a secret path token, an IP allowlist, signatures.

Each control is optional and independent of the others; the app consults only those configured.
Each is an `AccessControl`: a check ``before`` the body is read (on the path, peer and headers)
and one ``after`` (on the raw body, at the time the app passes in); both are plain functions of
what arrived, so they are tested without a server. A refusal is a `Denial`: which control, a
sentence for the sender, and the field path it concerns.

- `PathToken`: the receive paths live under ``/<token>``; the first path segment is compared in
  constant time.
- `IPAllowlist`: the client address must be in an allowed network. The client is the peer, or,
  behind trusted proxies only, the right-most ``X-Forwarded-For`` address that is not one of them.
- `SignatureVerifier`: Standard Webhooks signatures (``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature``: HMAC-SHA256), for gateways and relays that sign what they forward.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, Protocol, TypeAlias

from ._asgi import Scope
from .exceptions import ConfigError

__all__ = [
    "DEFAULT_TOLERANCE",
    "MIN_SECRET",
    "AccessControl",
    "Denial",
    "IPAllowlist",
    "PathToken",
    "SignatureVerifier",
    "decode_secret",
    "parse_network",
    "sign",
]

Headers: TypeAlias = Iterable[tuple[bytes, bytes]]
Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

MIN_SECRET: Final = 16
"""The fewest characters of a path token, and bytes of a signing key."""
DEFAULT_TOLERANCE: Final = 300.0
"""How far a signature's ``webhook-timestamp`` may be from now, in seconds (Standard Webhooks)."""

# URL-unreserved characters: the token reads the same percent-encoded or not, and is one segment.
_TOKEN: Final = re.compile(r"[A-Za-z0-9._~-]+")
_WHSEC: Final = "whsec_"
_MAX_TIMESTAMP_DIGITS: Final = 12


@dataclass(frozen=True, slots=True)
class Denial:
    """Why an access control refused a request: the control, a sentence, the field path."""

    control: Literal["token", "ip", "signature"]
    reason: str
    field: str = "$"


class AccessControl(Protocol):
    """A check of who may push: before the body is read, and on the raw body after."""

    def before(self, scope: Scope) -> Denial | None:
        """None if the request may go on, judged by its path, peer and headers."""
        ...

    def after(self, scope: Scope, body: bytes, now: float) -> Denial | None:
        """None if the request may go on, judged by its raw ``body`` as well, at ``now``."""
        ...


def _peer(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class PathToken:
    """A secret first path segment: the receive paths become ``/<token>/v1.0.0/...``.

    Args:
        token: At least 16 URL-safe characters (letters, digits and ``- . _ ~``).

    Raises:
        ConfigError: The token is too short or holds other characters.
    """

    def __init__(self, token: str) -> None:
        if len(token) < MIN_SECRET:
            raise ConfigError(f"a path token must have at least {MIN_SECRET} characters")
        if not _TOKEN.fullmatch(token):
            raise ConfigError("a path token may hold only letters, digits and - . _ ~")
        self._digest = _digest(token.encode())

    def split(self, path: str) -> tuple[bool, str]:
        """Whether the first segment of ``path`` is the token, and the path after that segment.

        ``/<token>/v1.0.0/messageReceiver`` gives ``(True, "/v1.0.0/messageReceiver")``.
        """
        segment, slash, rest = path[1:].partition("/")
        # Digests have one length, so the time taken tells nothing of the token, not even its size.
        offered = _digest(segment.encode("utf-8", "surrogateescape"))
        return hmac.compare_digest(offered, self._digest), slash + rest

    def before(self, scope: Scope) -> Denial | None:
        """None if the first segment of the request's path is the token."""
        if self.split(scope["path"])[0]:
            return None
        return Denial("token", "wrong or missing path token")

    def after(self, scope: Scope, body: bytes, now: float) -> Denial | None:
        """Nothing to check on the body."""
        return None


def parse_network(value: str | Network) -> Network:
    """An IPv4 or IPv6 network in CIDR notation (``10.0.0.0/8``), or one address (a /32, /128).

    Raises:
        ConfigError: Not an address or network, or one with host bits set (``10.1.2.3/8``).
    """
    try:
        return ipaddress.ip_network(value)
    except ValueError:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ConfigError(f"{value!r} is not an IP address or CIDR network") from None
        raise ConfigError(f"{value!r} has host bits set; did you mean {loose}?") from None


def _address(text: str) -> Address:
    """An address as peers and proxies write it: ``192.0.2.1``, ``192.0.2.1:80``, ``2001:db8::1``,
    ``[2001:db8::1]:80``. An IPv4-mapped IPv6 address (a dual-stack socket's) is IPv4."""
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: Address, networks: tuple[Network, ...]) -> bool:
    return any(address in network for network in networks)


class IPAllowlist:
    """Accept requests from clients in the ``allowed`` networks only.

    The client is the peer, the other end of the TCP connection. Only when the peer is one of the
    ``trusted_proxies`` does ``X-Forwarded-For`` count: the client is its right-most address that
    is not itself a trusted proxy. Every proxy appends the address it was connected from, so the
    entries to the left of that one were written by the client and may be forged; from any other
    peer the header is ignored.

    Raises:
        ConfigError: An entry is not an IP address or network.
    """

    def __init__(
        self, allowed: Iterable[str | Network], trusted_proxies: Iterable[str | Network] = ()
    ) -> None:
        self.allowed = tuple(parse_network(network) for network in allowed)
        self.trusted_proxies = tuple(parse_network(network) for network in trusted_proxies)

    def client(self, peer: str, headers: Headers = ()) -> Address:
        """The client's address, given the peer's and the request headers.

        Raises:
            ValueError: The peer's address, or an ``X-Forwarded-For`` entry that counts, is not
                an IP address.
        """
        return self._behind(_address(peer), headers)

    def _behind(self, peer: Address, headers: Headers) -> Address:
        if not _within(peer, self.trusted_proxies):
            return peer
        address = peer
        forwarded = b",".join(value for name, value in headers if name == b"x-forwarded-for")
        for entry in reversed(forwarded.decode("latin-1").split(",")):
            if entry.strip():
                address = _address(entry.strip())
                if not _within(address, self.trusted_proxies):
                    break
        return address  # every hop a trusted proxy: the left-most

    def check(self, peer: str | None, headers: Headers = ()) -> Denial | None:
        """None if the client may push; otherwise why not."""
        if peer is None:  # a Unix socket: no address to check
            return Denial("ip", "the peer address is unknown")
        try:
            address = _address(peer)
        except ValueError:
            return Denial("ip", "the peer address is not an IP address")
        try:
            address = self._behind(address, headers)
        except ValueError:
            reason = "X-Forwarded-For from a trusted proxy holds something not an IP address"
            return Denial("ip", reason, "$.headers.x-forwarded-for")
        if _within(address, self.allowed):
            return None
        return Denial("ip", f"{address} is not in the IP allowlist")

    def before(self, scope: Scope) -> Denial | None:
        """`check` of the request's peer and headers."""
        return self.check(_peer(scope), scope["headers"])

    def after(self, scope: Scope, body: bytes, now: float) -> Denial | None:
        """Nothing to check on the body."""
        return None


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a signing secret: ``whsec_`` and base64 (Standard Webhooks), or plain text.

    Raises:
        ConfigError: Not base64 after ``whsec_``, or a key shorter than 16 bytes.
    """
    if secret.startswith(_WHSEC):
        encoded = secret[len(_WHSEC) :]
        try:  # padding is often left off
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            raise ConfigError("a whsec_ signing secret must be base64 after the prefix") from None
    else:
        key = secret.encode()
    if len(key) < MIN_SECRET:
        raise ConfigError(f"a signing secret must hold at least {MIN_SECRET} bytes")
    return key


def sign(secret: str, body: bytes, *, msg_id: str, timestamp: float) -> dict[str, str]:
    """The Standard Webhooks headers that sign ``body``, as `SignatureVerifier` checks them.

    Args:
        secret: ``whsec_<base64>`` or plain text (see `decode_secret`).
        body: The exact bytes to be sent.
        msg_id: The ``webhook-id``: unique per message.
        timestamp: The ``webhook-timestamp`` (Unix time; whole seconds are sent).

    Returns:
        ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` (``v1,<base64>``).

    Raises:
        ConfigError: A secret `decode_secret` refuses.
    """
    seconds = str(int(timestamp))
    signed = b"%s.%s.%s" % (msg_id.encode(), seconds.encode(), body)
    mac = hmac.digest(decode_secret(secret), signed, "sha256")
    signature = "v1," + base64.b64encode(mac).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": seconds, "webhook-signature": signature}


def _header_error(name: str, reason: str) -> Denial:
    return Denial("signature", reason, f"$.headers.{name}")


class SignatureVerifier:
    """Require a Standard Webhooks signature: HMAC-SHA256 of ``{id}.{timestamp}.{body}``.

    ``webhook-signature`` is a space-separated list of ``v1,<base64 signature>``; one valid ``v1``
    signature by any of the secrets passes (several secrets let a sender rotate its own). Other
    versions (``v1a``, asymmetric) are skipped.

    Args:
        secrets: ``whsec_<base64>`` or plain text, each a key of at least 16 bytes.
        tolerance: How far ``webhook-timestamp`` may be from now, in seconds, either way.

    Raises:
        ConfigError: No secret, a secret `decode_secret` refuses, or a tolerance not above 0.
    """

    def __init__(self, secrets: Iterable[str], tolerance: float = DEFAULT_TOLERANCE) -> None:
        self._keys = tuple(decode_secret(secret) for secret in secrets)
        if not self._keys:
            raise ConfigError("signatures need at least one signing secret")
        if not tolerance > 0:
            raise ConfigError("the signature tolerance must be above 0 seconds")
        self.tolerance = tolerance

    def before(self, scope: Scope) -> Denial | None:
        """Nothing to check before the body."""
        return None

    def after(self, scope: Scope, body: bytes, now: float) -> Denial | None:
        """`verify` the raw body against the request's headers at ``now``."""
        return self.verify(scope["headers"], body, now)

    def verify(self, headers: Headers, body: bytes, now: float) -> Denial | None:
        """None if ``body`` is signed as the headers say, within the tolerance of ``now``."""
        msg_id = timestamp = b""
        offered: list[bytes] = []
        for name, value in headers:
            if name == b"webhook-id":
                msg_id = msg_id or value
            elif name == b"webhook-timestamp":
                timestamp = timestamp or value
            elif name == b"webhook-signature":
                offered += value.split()
        for header, value in (("webhook-id", msg_id), ("webhook-timestamp", timestamp)):
            if not value.strip():
                return _header_error(header, f"the {header} header is missing")
        if not offered:
            return _header_error("webhook-signature", "the webhook-signature header is missing")
        if not (timestamp.isdigit() and len(timestamp) <= _MAX_TIMESTAMP_DIGITS):
            return _header_error("webhook-timestamp", "webhook-timestamp must be Unix seconds")
        if abs(int(timestamp) - now) > self.tolerance:
            reason = f"webhook-timestamp is outside the {self.tolerance:g} s tolerance"
            return _header_error("webhook-timestamp", reason)
        signed = b"%s.%s.%s" % (msg_id, timestamp, body)
        expected = [hmac.digest(key, signed, "sha256") for key in self._keys]
        matched = False
        for signature in offered:
            version, _, encoded = signature.partition(b",")
            if version != b"v1":
                continue
            try:
                given = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                continue
            for digest in expected:
                matched |= hmac.compare_digest(given, digest)
        if matched:
            return None
        reason = "webhook-signature holds no valid v1 signature of this request"
        return _header_error("webhook-signature", reason)
