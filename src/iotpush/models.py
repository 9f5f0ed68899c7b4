"""Typed models of the platform's 22 push notifications, and their decoder.

The models live with their format (`iotpush.formats.legacy`); this module keeps their names. One
`msgspec.Struct` per notification type, a tagged union on ``notifyType``. Python attributes are
snake_case; on the wire they are the platform's camelCase. Optional members default to ``None``;
members the platform documents as mandatory but really sends as ``null`` (``requestId``,
``resultDetail``) are optional here. Unknown members are accepted: they stay in the raw body, which
every decoded notification keeps (`Notification.raw`, `Notification.json`, `Notification.extra`).
"""

from __future__ import annotations

from typing import Literal, TypeAlias

from .formats import LEGACY_OR_V5, V5
from .formats.legacy import NOTIFICATION_TYPES
from .formats.legacy.models import (
    ActionResult,
    BindDevice,
    CommandRsp,
    CommandRspHeader,
    DeviceAdded,
    DeviceCapabilitiesAdded,
    DeviceCapabilitiesChanged,
    DeviceCapabilitiesDeleted,
    DeviceDataChanged,
    DeviceDatasChanged,
    DeviceDeleted,
    DeviceDesiredPropertiesModifyStatusChanged,
    DeviceEvent,
    DeviceEventHeader,
    DeviceInfo,
    DeviceInfoChanged,
    DeviceModelAdded,
    DeviceModelDeleted,
    FwUpgradeResultNotify,
    FwUpgradeStateChangeNotify,
    MessageConfirm,
    MessageConfirmHeader,
    NBCommandResult,
    NBCommandStatusChanged,
    Notification,
    Reason,
    RuleEvent,
    ServiceData,
    ServiceInfo,
    ServiceInfoChanged,
    SwUpgradeResultNotify,
    SwUpgradeStateChangeNotify,
    format_time,
    parse_time,
)

__all__ = [
    "NOTIFICATION_TYPES",
    "ActionResult",
    "BindDevice",
    "CommandRsp",
    "CommandRspHeader",
    "DeviceAdded",
    "DeviceCapabilitiesAdded",
    "DeviceCapabilitiesChanged",
    "DeviceCapabilitiesDeleted",
    "DeviceDataChanged",
    "DeviceDatasChanged",
    "DeviceDeleted",
    "DeviceDesiredPropertiesModifyStatusChanged",
    "DeviceEvent",
    "DeviceEventHeader",
    "DeviceInfo",
    "DeviceInfoChanged",
    "DeviceModelAdded",
    "DeviceModelDeleted",
    "FwUpgradeResultNotify",
    "FwUpgradeStateChangeNotify",
    "MessageConfirm",
    "MessageConfirmHeader",
    "NBCommandResult",
    "NBCommandStatusChanged",
    "Notification",
    "Reason",
    "RuleEvent",
    "ServiceData",
    "ServiceInfo",
    "ServiceInfoChanged",
    "SwUpgradeResultNotify",
    "SwUpgradeStateChangeNotify",
    "decode",
    "format_time",
    "parse_time",
]

Route: TypeAlias = Literal["notify", "command", "v5"]
"""Which receive path a body came in on: the main one, the NB-IoT command status one, or the v5
data-forwarding one (`iotpush.v5`)."""


def decode(body: bytes, route: Route = "notify") -> Notification:
    """Decode a request body into its typed notification.

    Args:
        body: The raw request body.
        route: ``"notify"`` for the main path (dispatch on ``notifyType``), ``"command"`` for the
            NB-IoT command status path, ``"v5"`` for a v5 data-forwarding push. On the main path
            a body without ``notifyType`` that carries ``commandId`` is taken as an NB-IoT
            command status too, and one with ``resource`` and ``event`` as a v5 push: many
            applications register one URL for everything.

    Raises:
        NotificationError: The body is not valid JSON, not an object, or not a valid
            notification; `NotificationError.path` names the member.
    """
    if route == "v5":
        return V5.decode(body)
    kind = NBCommandStatusChanged.notify_type if route == "command" else None
    return LEGACY_OR_V5.decode(body, kind)
