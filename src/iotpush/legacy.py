"""Compatibility with receivers written for the vendor's Python SDK.

Code written for the SDK keeps working with two changed imports::

    from iotpush import PushMessageReceiver   # was: from ...PushMessageReceiver import ...
    from iotpush.legacy import request        # was: from flask import request

    class MyReceiver(PushMessageReceiver):
        def handleDeviceDataChanged(self):
            print(request.json["service"]["data"])

A callback that takes one argument gets the typed notification instead, and ``handleBody(self,
body)`` is called with the raw bytes of every push, as in the Java SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal
from urllib.parse import parse_qsl

from ._context import current_delivery
from .models import NOTIFICATION_TYPES
from .receiver import Handler, Kind, Receiver

__all__ = ["PushMessageReceiver", "request"]

# What the app keeps of a request beyond its headers, under names no sender can use (it sets
# them itself): the TCP peer, the query string, and the scheme when it was https.
PEER_HEADER = "x-iotpush-peer"
QUERY_HEADER = "x-iotpush-query"
SCHEME_HEADER = "x-iotpush-scheme"


class _Headers(Mapping[str, str]):
    """Case-insensitive view of the headers kept with the notification."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = {k.lower(): v for k, v in headers.items()}

    def __getitem__(self, key: str) -> str:
        return self._headers[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers)

    def __len__(self) -> int:
        return len(self._headers)


class _MultiDict(Mapping[str, str]):
    """Read-only multi-valued mapping, as Flask's ``ImmutableMultiDict``: ``d[key]`` and
    ``d.get(key)`` give the first value, ``d.getlist(key)`` all of them."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def __getitem__(self, key: str) -> str:
        for name, value in self._pairs:
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self._pairs))

    def __len__(self) -> int:
        return len(dict.fromkeys(name for name, _ in self._pairs))

    def getlist(self, key: str) -> list[str]:
        """Every value of ``key``, in order."""
        return [value for name, value in self._pairs if name == key]

    def __repr__(self) -> str:
        return f"_MultiDict({self._pairs!r})"


class _Request:
    """Stands in for ``flask.request`` inside a handler: the push being delivered.

    The members a push gives meaning to, as Flask defines them: ``method``, ``path``, ``url``,
    ``base_url``, ``host``, ``scheme``, ``args``, ``values``, ``form`` (always empty: a push is
    JSON), ``headers``, ``content_type``, ``mimetype``, ``is_json``, ``json``, ``get_json``,
    ``data``, ``get_data``, ``remote_addr`` and ``environ``. Only the headers iotpush keeps
    (``Content-Type``, ``User-Agent``, ``Host``, ``X-Forwarded-For``, ``X-Real-IP``,
    ``X-Request-Id``) are there; a path token is never part of ``path`` or ``url``.
    """

    method = "POST"

    @property
    def json(self) -> dict[str, Any]:
        """The body decoded as JSON, unknown members included."""
        return current_delivery().notification.json

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        """Like Flask's ``get_json``: the body decoded as JSON."""
        return self.json

    @property
    def data(self) -> bytes:
        """The raw body."""
        return current_delivery().notification.raw

    def get_data(self, cache: bool = True, as_text: bool = False) -> bytes | str:
        """Like Flask's ``get_data``: the raw body, as text if asked."""
        return self.data.decode() if as_text else self.data

    @property
    def headers(self) -> Mapping[str, str]:
        """The request headers iotpush kept with the notification."""
        return _Headers(current_delivery().entry.headers)

    @property
    def path(self) -> str:
        """The path the push was received on (without a path token or query string)."""
        return current_delivery().entry.path

    @property
    def query_string(self) -> bytes:
        """The URL's query string, without the ``?``."""
        return current_delivery().entry.headers.get(QUERY_HEADER, "").encode("latin-1")

    @property
    def args(self) -> _MultiDict:
        """The parsed query string of the callback URL."""
        query = self.query_string.decode("latin-1")
        return _MultiDict(parse_qsl(query, keep_blank_values=True))

    @property
    def form(self) -> _MultiDict:
        """Form fields: none, a push is JSON."""
        return _MultiDict([])

    @property
    def values(self) -> _MultiDict:
        """``args`` and ``form`` together (Flask's ``values`` of a POST)."""
        return self.args

    @property
    def scheme(self) -> str:
        """``https`` when the push came over TLS to iotpush itself, else ``http``."""
        return current_delivery().entry.headers.get(SCHEME_HEADER, "http")

    @property
    def host(self) -> str:
        """The ``Host`` header (with the port, if the sender gave one)."""
        return self.headers.get("host", "")

    @property
    def base_url(self) -> str:
        """The URL without its query string."""
        return f"{self.scheme}://{self.host}{self.path}"

    @property
    def url(self) -> str:
        """The URL the push was posted to, query string included (path token left out)."""
        query = self.query_string.decode("latin-1")
        return self.base_url + (f"?{query}" if query else "")

    @property
    def remote_addr(self) -> str | None:
        """The TCP peer's address (as Flask without a proxy fix-up; see ``X-Forwarded-For``)."""
        return current_delivery().entry.headers.get(PEER_HEADER)

    @property
    def content_type(self) -> str | None:
        """The ``Content-Type`` header, parameters included; None without one."""
        return self.headers.get("content-type")

    @property
    def mimetype(self) -> str:
        """The content type without parameters, lower case (empty without one)."""
        return (self.content_type or "").split(";", 1)[0].strip().lower()

    @property
    def is_json(self) -> bool:
        """Whether the mimetype is ``application/json`` or ``application/*+json``."""
        mt = self.mimetype
        return mt == "application/json" or (mt.startswith("application/") and mt.endswith("+json"))

    @property
    def environ(self) -> dict[str, Any]:
        """A WSGI environ for the push (the keys a push gives values to)."""
        host, _, port = self.host.partition(":")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": self.path,
            "QUERY_STRING": self.query_string.decode("latin-1"),
            "SERVER_NAME": host,
            "SERVER_PORT": port or ("443" if self.scheme == "https" else "80"),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": self.remote_addr,
            "CONTENT_LENGTH": str(len(self.data)),
            "wsgi.url_scheme": self.scheme,
        }
        for name, value in self.headers.items():
            if name.startswith("x-iotpush-"):
                continue
            if name == "content-type":
                environ["CONTENT_TYPE"] = value
            else:
                environ["HTTP_" + name.upper().replace("-", "_")] = value
        return environ

    def __repr__(self) -> str:
        return "<iotpush.legacy.request>"


request = _Request()
"""The push being delivered, for callbacks written for the SDK's Flask ``request``."""


class PushMessageReceiver(Receiver):
    """Receiver with the legacy SDK's callback names; override the ones you need.

    Every ``handleXxx`` of the SDK exists (see the README's table), plus
    ``handleNBCommandStateChanged`` for NB-IoT command status pushes (which the SDK lacked) and
    ``handleDeviceCapabilities*`` for the raw API's capability types. Only overridden callbacks
    are registered, so the others cost nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self._register_callbacks()

    def _register_callbacks(self) -> None:
        base = PushMessageReceiver
        for notify_type, cls in NOTIFICATION_TYPES.items():
            name = cls.callback
            # A type added without a stub here still reaches the subclass's method.
            if name is not None and getattr(type(self), name, None) is not getattr(
                base, name, None
            ):
                self.add(getattr(self, name), notify_type)
        if type(self).handleBody is not base.handleBody:
            self.add(self.handleBody, argument="body")

    def _ready(self) -> None:
        # The SDK's base class had no __init__, so SDK-era subclasses often define one that never
        # calls ours: set up on first use instead.
        if "_cache" not in self.__dict__:
            Receiver.__init__(self)
            self._register_callbacks()

    def add(
        self,
        func: Callable[..., Any],
        *kinds: Kind,
        argument: Literal["notification", "body"] = "notification",
    ) -> Handler:
        self._ready()
        return super().add(func, *kinds, argument=argument)

    def handlers_for(self, notify_type: str) -> tuple[Handler, ...]:
        self._ready()
        return super().handlers_for(notify_type)

    def __repr__(self) -> str:
        self._ready()
        return super().__repr__()

    def handleBody(self, body: bytes) -> None:  # noqa: N802 - the SDK's names
        """Called with the raw body of every push, after the type's own callback."""

    def handleDeviceAdded(self) -> None:  # noqa: N802
        """``deviceAdded``: a device was registered."""

    def handleBindDevice(self) -> None:  # noqa: N802
        """``bindDevice``: a device came online for the first time."""

    def handleDeviceInfoChanged(self) -> None:  # noqa: N802
        """``deviceInfoChanged``: device information changed."""

    def handleDeviceDataChanged(self) -> None:  # noqa: N802
        """``deviceDataChanged``: a device reported one service's data."""

    def handleDeviceDatasChanged(self) -> None:  # noqa: N802
        """``deviceDatasChanged``: a device reported several services' data."""

    def handleServiceInfoChanged(self) -> None:  # noqa: N802
        """``serviceInfoChanged``: a service's muted commands changed."""

    def handleDeviceDeleted(self) -> None:  # noqa: N802
        """``deviceDeleted``: a device was deleted."""

    def handleMessageConfirm(self) -> None:  # noqa: N802
        """``messageConfirm``: an MQTT device confirmed a message."""

    def handleCommandRsp(self) -> None:  # noqa: N802
        """``commandRsp``: an MQTT device answered a command."""

    def handleDeviceEvent(self) -> None:  # noqa: N802
        """``deviceEvent``: a device raised an event."""

    def handleDeviceModelAdded(self) -> None:  # noqa: N802
        """``deviceModelAdded``: a device model was added."""

    def handleDeviceModelDeleted(self) -> None:  # noqa: N802
        """``deviceModelDeleted``: a device model was deleted (the SDK misrouted it)."""

    def handleRuleEvent(self) -> None:  # noqa: N802
        """``ruleEvent``: a rule fired."""

    def handleDeviceDesiredStatusChanged(self) -> None:  # noqa: N802
        """``deviceDesiredPropertiesModifyStatusChanged``: shadow properties DELIVERED or FAILED."""

    def handleSwUpgradeStateChanged(self) -> None:  # noqa: N802
        """``swUpgradeStateChangeNotify``: software upgrade state changed."""

    def handleSwUpgradeResult(self) -> None:  # noqa: N802
        """``swUpgradeResultNotify``: software upgrade finished."""

    def handleFwUpgradeStateChanged(self) -> None:  # noqa: N802
        """``fwUpgradeStateChangeNotify``: firmware upgrade step changed."""

    def handleFwUpgradeResult(self) -> None:  # noqa: N802
        """``fwUpgradeResultNotify``: firmware upgrade finished."""

    def handleNBCommandStateChanged(self) -> None:  # noqa: N802
        """NB-IoT command status changed (no ``notifyType``; the SDK answered 500 to it)."""

    def handleDeviceCapabilitiesChanged(self) -> None:  # noqa: N802
        """``deviceCapabilitiesChanged`` (iotpush addition)."""

    def handleDeviceCapabilitiesAdded(self) -> None:  # noqa: N802
        """``deviceCapabilitiesAdded`` (iotpush addition)."""

    def handleDeviceCapabilitiesDeleted(self) -> None:  # noqa: N802
        """``deviceCapabilitiesDeleted`` (iotpush addition)."""
