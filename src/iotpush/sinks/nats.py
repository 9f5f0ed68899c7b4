"""The NATS JetStream sink: each kept notification published to ``<prefix>.<type>.<device>``.

Subjects. ``iotpush.deviceDataChanged.meter-0001``: the prefix (default ``iotpush``), the
``notifyType`` (``nbCommandStatusChanged`` for NB-IoT command status), and the device id. A v5
push goes to ``<prefix>.v5.<resource>.<event>.<device>`` (``iotpush.v5.device%2Eproperty.report.
meter-0001``): five tokens where legacy subjects have three, and no ``notifyType`` is ``v5``, so
the two never meet; ``iotpush.v5.>`` is every v5 push, ``iotpush.v5.*.*.meter-0001`` one device's,
``iotpush.*.*`` every legacy one. A token
keeps every printable ASCII character but ``.``, ``*``, ``>`` and ``%``; those, spaces, control
and non-ASCII characters are percent-encoded (UTF-8, ``%2E`` for a ``.``), so no device id can
add a token or a wildcard. An entry without a device (or with an empty one) gets the token ``_``;
a device called ``_`` is written ``%5F``.

Message id (``Nats-Msg-Id``): the entry's idempotency key, ``#``, and its entry id. The key alone
is not unique: a state change's key repeats when the state comes back (ONLINE, OFFLINE, ONLINE:
the third is a new entry with the first one's key), and JetStream would drop it. The entry id
alone would repeat after the store is recreated (ids start at 1 again). Both are kept with the
entry, so a republished entry has the same id and JetStream drops the copy within the stream's
duplicate window.

Headers: ``Iotpush-Entry-Id``, ``Iotpush-Type``, ``Iotpush-Device`` (absent without a device),
``Iotpush-Received-At`` (``2026-11-21T10:00:00.123Z``) and ``Content-Type``. Header values
percent-encode ``%`` and every character that is not printable ASCII.

The stream (default ``IOTPUSH``) is created if missing: subjects ``<prefix>.>``, file storage,
limits retention with a maximum age (default 7 days, oldest messages dropped first) and a
duplicate window (default 2 hours). A stream that exists is left as it is (a warning says what
differs).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from .._when import format_ts, parse_duration
from ..exceptions import ConfigError, SinkError
from ..inbox import Entry
from . import Outcome, Sink

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

__all__ = [
    "DEFAULT_DUPLICATE_WINDOW",
    "DEFAULT_MAX_AGE",
    "DEFAULT_PREFIX",
    "DEFAULT_STREAM",
    "NO_DEVICE",
    "NatsSink",
    "headers",
    "message_id",
    "subject",
    "token",
]

log = logging.getLogger("iotpush.sinks")

DEFAULT_PREFIX = "iotpush"
DEFAULT_STREAM = "IOTPUSH"
DEFAULT_MAX_AGE = 7 * 86400.0
DEFAULT_DUPLICATE_WINDOW = 2 * 3600.0
NO_DEVICE = "_"
"""The subject token of an entry without a device."""

_TOKEN_KEEP = frozenset(chr(c) for c in range(33, 127)) - set(".*>%")
_HEADER_KEEP = frozenset(chr(c) for c in range(33, 127)) - {"%"}
_STREAM = re.compile(r"[A-Za-z0-9_-]{1,255}")


def _escape(value: str, keep: frozenset[str]) -> str:
    return "".join(c if c in keep else "".join(f"%{b:02X}" for b in c.encode()) for c in value)


def token(value: str | None) -> str:
    """``value`` as one subject token: reserved characters percent-encoded, ``_`` for none."""
    if not value:
        return NO_DEVICE
    if value == NO_DEVICE:
        return "%5F"
    return _escape(value, _TOKEN_KEEP)


def subject(prefix: str, entry: Entry) -> str:
    """The subject ``entry`` is published to: ``<prefix>.<type>.<device>``, and for a v5 push
    ``<prefix>.v5.<resource>.<event>.<device>``."""
    resource, v5, event = entry.type.partition(":")
    if v5:
        return f"{prefix}.v5.{token(resource)}.{token(event)}.{token(entry.device)}"
    return f"{prefix}.{token(entry.type)}.{token(entry.device)}"


def message_id(entry: Entry) -> str:
    """The ``Nats-Msg-Id`` of ``entry``: unique per kept entry, the same when republished."""
    return _escape(f"{entry.key}#{entry.id}", _HEADER_KEEP)


def headers(entry: Entry) -> dict[str, str]:
    """The headers of ``entry``'s message (the message id among them)."""
    values = {
        "Nats-Msg-Id": message_id(entry),
        "Content-Type": "application/json",
        "Iotpush-Entry-Id": str(entry.id),
        "Iotpush-Type": _escape(entry.type, _HEADER_KEEP),
        "Iotpush-Received-At": format_ts(entry.received_at),
    }
    if entry.device:
        values["Iotpush-Device"] = _escape(entry.device, _HEADER_KEEP)
    return values


def _nats() -> Any:
    try:
        import nats
        import nats.js.api
        import nats.js.errors
    except ImportError:
        raise ConfigError("the NATS sink needs nats-py: pip install 'iotpush[nats]'") from None
    return nats


class NatsSink(Sink):
    """Publishes entries to a JetStream stream.

    Args:
        url: The NATS server, ``nats://[user:password@]host:port`` or ``tls://...``.
        prefix: The first subject token(s); the stream takes ``<prefix>.>``.
        stream: The stream's name; the sink's outbox is ``nats:<stream>``.
        max_age: Seconds the stream keeps a message (when the sink creates the stream).
        duplicate_window: Seconds JetStream remembers message ids to drop a republished entry
            (when the sink creates the stream). A restart must come back within it.
        ack_timeout: Seconds to wait for a batch's acknowledgements.
        connect_timeout: Seconds one connection attempt may take.
    """

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        prefix: str = DEFAULT_PREFIX,
        stream: str = DEFAULT_STREAM,
        max_age: float = DEFAULT_MAX_AGE,
        duplicate_window: float = DEFAULT_DUPLICATE_WINDOW,
        ack_timeout: float = 10.0,
        connect_timeout: float = 2.0,
    ) -> None:
        _nats()  # a missing extra is a configuration error, reported before serving
        if not all(part and set(part) <= _TOKEN_KEEP for part in prefix.split(".")):
            raise ConfigError(f"NATS subject prefix {prefix!r}: use tokens such as iotpush")
        if not _STREAM.fullmatch(stream):
            raise ConfigError(f"NATS stream name {stream!r}: use letters, digits, - and _")
        if not 0 < duplicate_window <= max_age:
            raise ConfigError("the NATS duplicate window must be above 0 and at most max_age")
        self.url = url
        self.prefix = prefix
        self.stream = stream
        self.max_age = max_age
        self.duplicate_window = duplicate_window
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        self.name = f"nats:{stream}"
        parts = urlsplit(url)
        self.display = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        """The URL without credentials, for messages."""
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._stream_ready = False
        self._closing = False

    @classmethod
    def from_url(cls, url: str) -> NatsSink:
        """A sink from ``nats://host:port?stream=S&prefix=P&max_age=7d&duplicate_window=2h``.

        Raises:
            ConfigError: An unknown option or a value that is not valid.
        """
        parts = urlsplit(url)
        options: dict[str, Any] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in ("stream", "prefix"):
                options[name] = value
            elif name in ("max_age", "duplicate_window", "ack_timeout"):
                try:
                    options[name] = parse_duration(value)
                except ValueError as exc:
                    raise ConfigError(f"sink option {name}: {exc}") from None
            else:
                raise ConfigError(
                    f"unknown NATS sink option {name!r}:"
                    " use stream, prefix, max_age, duplicate_window or ack_timeout"
                )
        return cls(urlunsplit(parts._replace(query="")), **options)

    async def open(self) -> None:
        nats = _nats()
        if self._nc is None or self._nc.is_closed:
            try:
                # A short outage is bridged by the client (it buffers); a longer one closes the
                # connection and the publisher reconnects with its own backoff.
                self._nc = await nats.connect(
                    self.url,
                    name="iotpush",
                    connect_timeout=self.connect_timeout,
                    reconnect_time_wait=0.5,
                    max_reconnect_attempts=4,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
            except (OSError, TimeoutError, nats.errors.Error) as exc:
                raise SinkError(f"cannot connect to {self.display}: {_describe(exc)}") from exc
            assert self._nc is not None
            self._js = self._nc.jetstream(timeout=self.ack_timeout)
            self._stream_ready = False
            log.info("%s: connected to %s", self.name, self.display)
        if not self._stream_ready:
            await self._ensure_stream()
            self._stream_ready = True

    async def _ensure_stream(self) -> None:
        nats = _nats()
        api = nats.js.api
        assert self._js is not None
        try:
            try:
                info = await self._js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                config = api.StreamConfig(
                    name=self.stream,
                    description="iotpush: the platform's push notifications",
                    subjects=[f"{self.prefix}.>"],
                    storage=api.StorageType.FILE,
                    retention=api.RetentionPolicy.LIMITS,
                    discard=api.DiscardPolicy.OLD,
                    max_age=self.max_age,
                    duplicate_window=self.duplicate_window,
                )
                await self._js.add_stream(config)
                log.info(
                    "%s: created the stream %s (subjects %s.>, max age %.0f s, duplicate window"
                    " %.0f s)",
                    self.name, self.stream, self.prefix, self.max_age, self.duplicate_window,
                )  # fmt: skip
                return
        except (TimeoutError, nats.errors.Error) as exc:
            raise SinkError(f"cannot set up the stream {self.stream}: {_describe(exc)}") from exc
        found = info.config
        wanted = {
            "subjects": [f"{self.prefix}.>"],
            "max_age": self.max_age,
            "duplicate_window": self.duplicate_window,
        }
        differs = {
            name: getattr(found, name)
            for name, value in wanted.items()
            if getattr(found, name) != value
        }
        if differs:
            settings = ", ".join(f"{name} {value}" for name, value in differs.items())
            log.warning(
                "%s: the stream %s exists with %s; left as it is (messages go to %s.*.*)",
                self.name, self.stream, settings, self.prefix,
            )  # fmt: skip

    async def publish(self, entries: Sequence[Entry]) -> Outcome:
        nats = _nats()
        await self.open()
        assert self._js is not None
        outcome = Outcome()
        sent: list[tuple[int, asyncio.Future[Any]]] = []
        for entry in entries:  # sent in order, acknowledged together
            try:
                future = await self._js.publish_async(
                    subject(self.prefix, entry), entry.body, headers=headers(entry),
                    stream=self.stream,
                )  # fmt: skip
            except (nats.errors.MaxPayloadError, nats.errors.BadSubjectError) as exc:
                log.error(
                    "%s: entry %d can never be published (%s); it is left out of the stream",
                    self.name, entry.id, _describe(exc),
                )  # fmt: skip
                outcome.refused.append(entry.id)
                continue
            except (OSError, TimeoutError, nats.errors.Error) as exc:
                outcome.error = _describe(exc)
                break
            sent.append((entry.id, future))
        if sent:
            await asyncio.wait([future for _, future in sent], timeout=self.ack_timeout)
        for id, future in sent:
            if not future.done():
                future.cancel()
                outcome.error = f"no acknowledgement within {self.ack_timeout:g} s"
            elif future.exception() is not None:
                error = future.exception()
                if isinstance(error, nats.js.errors.NoStreamResponseError):
                    self._stream_ready = False  # deleted under us? create it again
                outcome.error = _describe(error)
            else:
                outcome.acknowledged.append(id)
                outcome.duplicates += bool(future.result().duplicate)
        return outcome

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            self._closing = True
            try:
                await nc.close()
            except Exception as exc:  # noqa: BLE001 - closing: nothing is left to save
                log.debug("%s: closing the connection: %s", self.name, exc)
            finally:
                self._closing = False

    async def _on_error(self, exc: Exception) -> None:
        log.debug("%s: %s: %s", self.name, self.display, _describe(exc))

    async def _on_disconnected(self) -> None:
        if not self._closing:
            log.warning("%s: disconnected from %s", self.name, self.display)

    async def _on_reconnected(self) -> None:
        log.info("%s: reconnected to %s", self.name, self.display)


def _describe(exc: BaseException | None) -> str:
    text = str(exc).removeprefix("nats: ")
    return text or type(exc).__name__
