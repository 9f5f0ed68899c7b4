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

from collections.abc import Iterator, Mapping
from typing import Any

from ._context import current_delivery
from .models import NOTIFICATION_TYPES
from .receiver import Receiver

__all__ = ["PushMessageReceiver", "request"]


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


class _Request:
    """Stands in for ``flask.request`` inside a handler: the push being delivered."""

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
        """The path the push was received on."""
        return current_delivery().entry.path

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
