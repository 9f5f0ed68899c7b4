"""Typed models of the platform's 22 legacy push notifications (see `iotpush.formats.legacy`).

One `msgspec.Struct` per notification type, a tagged union on ``notifyType``. Python attributes
are snake_case; on the wire they are the platform's camelCase. Optional members default to
``None``; members the platform documents as mandatory but really sends as ``null`` (``requestId``,
``resultDetail``) are optional here. Unknown members are accepted: they stay in the raw body, which
every decoded notification keeps (`Notification.raw`, `Notification.json`, `Notification.extra`).
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any, ClassVar, Final

import msgspec

__all__ = [
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
    "format_time",
    "parse_time",
]

_TIME_FORMAT: Final = "%Y%m%dT%H%M%SZ"


def parse_time(value: str) -> dt.datetime:
    """Parse a platform time string (``20151212T121212Z``) into an aware UTC datetime.

    Raises:
        ValueError: Not a platform time string.
    """
    # Sliced by hand: strptime costs ten times more, and trackers parse every data report.
    if len(value) != 16 or value[8] != "T" or value[15] != "Z" or not value[:8].isdigit():
        raise ValueError(f"time data {value!r} does not match format 'yyyyMMddTHHmmssZ'")
    clock = value[9:15]
    if not clock.isdigit():
        raise ValueError(f"time data {value!r} does not match format 'yyyyMMddTHHmmssZ'")
    return dt.datetime(
        int(value[:4]), int(value[4:6]), int(value[6:8]),
        int(clock[:2]), int(clock[2:4]), int(clock[4:]), tzinfo=dt.UTC,
    )  # fmt: skip


def format_time(value: dt.datetime) -> str:
    """Format a datetime as a platform time string (``20151212T121212Z``), in UTC."""
    return value.astimezone(dt.UTC).strftime(_TIME_FORMAT)


@functools.cache
def _known_members(cls: type[Notification]) -> frozenset[str]:
    return frozenset(cls.__struct_encode_fields__) | {"notifyType"}


class _Struct(msgspec.Struct, rename="camel", kw_only=True):
    """Base of the nested structures: camelCase on the wire."""


# --- shared structures ----------------------------------------------------------------------


class DeviceInfo(_Struct, kw_only=True):
    """Static and status information of a device; every member may be ``null``."""

    node_id: str | None = None
    name: str | None = None
    description: str | None = None
    manufacturer_id: str | None = None
    manufacturer_name: str | None = None
    mac: str | None = None
    location: str | None = None
    device_type: str | None = None
    model: str | None = None
    sw_version: str | None = None
    fw_version: str | None = None
    hw_version: str | None = None
    protocol_type: str | None = None
    bridge_id: str | None = None
    status: str | None = None
    status_detail: str | None = None
    mute: str | None = None
    supported_security: str | None = None
    is_security: str | None = None
    signal_strength: str | None = None
    sig_version: str | None = None
    serial_number: str | None = None
    battery_level: str | None = None
    is_hd: Any = msgspec.field(default=None, name="isHD")


class ServiceData(_Struct, kw_only=True):
    """One service's reported data (``DeviceServiceData``)."""

    service_id: str
    service_type: str
    data: dict[str, Any]
    event_time: str


class ServiceInfo(_Struct, kw_only=True):
    """A service's settings: the commands muted for it."""

    mute_cmds: list[str] | None = None


class MessageConfirmHeader(_Struct, kw_only=True):
    """Header of a ``messageConfirm`` notification."""

    request_id: str
    from_: str = msgspec.field(name="from")
    to: str
    status: str
    timestamp: str


class CommandRspHeader(_Struct, kw_only=True):
    """Header of a ``commandRsp`` notification."""

    request_id: str
    from_: str = msgspec.field(name="from")
    to: str
    device_id: str
    service_type: str
    method: str


class DeviceEventHeader(_Struct, kw_only=True):
    """Header of a ``deviceEvent`` notification."""

    event_type: str
    from_: str = msgspec.field(name="from")
    timestamp: str
    event_time: str
    device_id: str
    service_type: str


class Reason(_Struct, kw_only=True):
    """Why a rule fired."""

    satisfaction_time: str
    type: str
    id: str | None = None
    info: dict[str, Any] | None = None
    trans_info: dict[str, Any] | None = None


class ActionResult(_Struct, kw_only=True):
    """Outcome of one rule action: ``result`` on success, ``exception`` on failure."""

    type: str
    id: str | None = None
    exception: str | None = None
    result: dict[str, Any] | None = None
    info: dict[str, Any] | None = None
    trans_info: dict[str, Any] | None = None


class NBCommandResult(_Struct, kw_only=True):
    """Status of an NB-IoT command; ``resultDetail`` is an object, a string, ``null`` or absent."""

    result_code: str
    result_detail: dict[str, Any] | str | None = None


# --- notifications --------------------------------------------------------------------------


class Notification(_Struct, dict=True, tag_field="notifyType", kw_only=True):
    """Base class of every notification.

    Class attributes:
        notify_type: The ``notifyType`` value (iotpush's own name for the NB-IoT command status,
            which has none on the wire).
        callback: The `PushMessageReceiver` method called for it: the legacy SDK's name, and
            iotpush's own names for the ``deviceCapabilities*`` types, which the SDK lacked (both
            set from the type's entry in `iotpush.formats.legacy`).
    """

    notify_type: ClassVar[str]
    callback: ClassVar[str | None] = None

    @property
    def raw(self) -> bytes:
        """The body exactly as received (re-encoded for a notification built in code)."""
        raw: bytes | None = self.__dict__.get("_raw")
        if raw is None:
            raw = self.__dict__["_raw"] = msgspec.json.encode(self)
        return raw

    @property
    def json(self) -> dict[str, Any]:
        """The body as a plain dict, unknown members included (what ``request.json`` was)."""
        value: dict[str, Any] | None = self.__dict__.get("_json")
        if value is None:
            value = self.__dict__["_json"] = msgspec.json.decode(self.raw)
        return value

    @property
    def extra(self) -> dict[str, Any]:
        """Top-level members of the body that the model does not know."""
        known = _known_members(type(self))
        return {k: v for k, v in self.json.items() if k not in known}

    @property
    def device(self) -> str | None:
        """The device this notification is about, or ``None`` (models, rules)."""
        return None


class _DeviceNotification(Notification, kw_only=True):
    device_id: str

    @property
    def device(self) -> str | None:
        return self.device_id


class DeviceAdded(_DeviceNotification, tag="deviceAdded", kw_only=True):
    """A device was added (registered) to the platform."""

    gateway_id: str | None = None
    node_type: str
    device_info: DeviceInfo


class BindDevice(_DeviceNotification, tag="bindDevice", kw_only=True):
    """A device came online for the first time and was bound (``resultCode``: succeeded/expired)."""

    result_code: str
    device_info: DeviceInfo | None = None


class DeviceInfoChanged(_DeviceNotification, tag="deviceInfoChanged", kw_only=True):
    """Device information changed; only the changed members of ``deviceInfo`` are non-null."""

    gateway_id: str
    device_info: DeviceInfo
    network_status: str | None = None


class DeviceDataChanged(_DeviceNotification, tag="deviceDataChanged", kw_only=True):
    """A device reported the data of one service."""

    request_id: str | None = None
    gateway_id: str
    service: ServiceData


class DeviceDatasChanged(_DeviceNotification, tag="deviceDatasChanged", kw_only=True):
    """A device reported the data of several services at once."""

    request_id: str | None = None
    gateway_id: str
    services: list[ServiceData] = msgspec.field(default_factory=list)
    # One documentation example names the array `service`; accepted and folded into `services`.
    service: list[ServiceData] | None = None

    def __post_init__(self) -> None:
        if not self.services:
            if self.service is None:
                raise ValueError("Object missing required field `services`")
            self.services, self.service = self.service, None


class ServiceInfoChanged(_DeviceNotification, tag="serviceInfoChanged", kw_only=True):
    """A service's settings (muted commands) changed."""

    gateway_id: str
    service_id: str
    service_type: str
    service_info: ServiceInfo


class DeviceDeleted(_DeviceNotification, tag="deviceDeleted", kw_only=True):
    """A device was deleted."""

    gateway_id: str


def _device_from_path(path: str) -> str | None:
    # `from` is /devices/{deviceId} or /devices/{deviceId}/services/{serviceId}.
    parts = path.split("/")
    return parts[2] or None if len(parts) > 2 and parts[1] == "devices" else None


class MessageConfirm(Notification, tag="messageConfirm", kw_only=True):
    """An MQTT device confirmed a message (``header.status``: sent/delivered/executed)."""

    header: MessageConfirmHeader
    body: dict[str, Any]

    @property
    def device(self) -> str | None:
        return _device_from_path(self.header.from_)


class CommandRsp(Notification, tag="commandRsp", kw_only=True):
    """An MQTT device answered a command."""

    header: CommandRspHeader
    body: dict[str, Any]

    @property
    def device(self) -> str | None:
        return self.header.device_id


class DeviceEvent(Notification, tag="deviceEvent", kw_only=True):
    """A device raised an event (alarm...)."""

    header: DeviceEventHeader
    body: dict[str, Any]

    @property
    def device(self) -> str | None:
        return self.header.device_id


class _ModelNotification(Notification, kw_only=True):
    app_id: str
    device_type: str
    manufacturer_name: str
    manufacturer_id: str
    model: str
    protocol_type: str


class DeviceModelAdded(_ModelNotification, tag="deviceModelAdded", kw_only=True):
    """A device model (profile) was added to the application."""


class DeviceModelDeleted(_ModelNotification, tag="deviceModelDeleted", kw_only=True):
    """A device model (profile) was deleted from the application."""


class DeviceCapabilitiesChanged(_ModelNotification, tag="deviceCapabilitiesChanged", kw_only=True):
    """Device capabilities changed (raw API name; the SDK had no callback)."""


class DeviceCapabilitiesAdded(_ModelNotification, tag="deviceCapabilitiesAdded", kw_only=True):
    """Device capabilities were added (raw API name; the SDK had no callback)."""


class DeviceCapabilitiesDeleted(_ModelNotification, tag="deviceCapabilitiesDeleted", kw_only=True):
    """Device capabilities were deleted (raw API name; the SDK had no callback)."""


class RuleEvent(Notification, tag="ruleEvent", kw_only=True):
    """A rule fired; says why and what its actions did."""

    author: str
    rule_id: str
    rule_name: str
    logic: str | None = None
    reasons: list[Reason]
    trigger_time: str
    actions_results: list[ActionResult]


class DeviceDesiredPropertiesModifyStatusChanged(
    _DeviceNotification, tag="deviceDesiredPropertiesModifyStatusChanged", kw_only=True
):
    """Desired properties (device shadow) were DELIVERED to the device, or FAILED."""

    service_id: str
    properties: dict[str, Any]
    status: str


class _UpgradeNotification(_DeviceNotification, kw_only=True):
    app_id: str
    operation_id: str
    sub_operation_id: str


class SwUpgradeStateChangeNotify(
    _UpgradeNotification, tag="swUpgradeStateChangeNotify", kw_only=True
):
    """Software upgrade state changed (downloading, downloaded, updating, idle)."""

    sw_upgrade_state: str


class SwUpgradeResultNotify(_UpgradeNotification, tag="swUpgradeResultNotify", kw_only=True):
    """Software upgrade finished (``swUpgradeResult``: SUCCESS/FAIL)."""

    cur_version: str
    target_version: str
    source_version: str
    sw_upgrade_result: str
    upgrade_time: str | int | float
    result_desc: str
    error_code: str
    description: str


class FwUpgradeStateChangeNotify(
    _UpgradeNotification, tag="fwUpgradeStateChangeNotify", kw_only=True
):
    """Firmware upgrade step changed (``"0"`` idle .. ``"3"`` updating)."""

    step: str
    step_desc: str


class FwUpgradeResultNotify(_UpgradeNotification, tag="fwUpgradeResultNotify", kw_only=True):
    """Firmware upgrade finished (``status``: SUCCESS/FAIL)."""

    cur_version: str
    target_version: str
    source_version: str
    status: str
    status_desc: str
    upgrade_time: str | int | float


class NBCommandStatusChanged(_DeviceNotification, tag=False, kw_only=True):
    """An NB-IoT command's status changed. Has no ``notifyType`` on the wire.

    Posted to the callback URL given when the command was created, once per status change.
    """

    notify_type = "nbCommandStatusChanged"
    command_id: str
    result: NBCommandResult
