"""The legacy push format: the platform's 22 ``notifyType`` notifications (the vendor SDK's).

One `TypeSpec` per type in `TYPES`, in the order of the platform's documentation: its model (in
`.models`), its idempotency key rule (`.keys`), its sample values (`.samples`) and its
`PushMessageReceiver` callback. Adding a type is its model and one line here.

Bodies name their type in ``notifyType``, except the NB-IoT command status, which has a path of
its own (or, posted to the main path, is told by its ``commandId``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, Union

import msgspec

from ...exceptions import NotificationError
from ..base import TypeSpec
from . import keys, samples
from . import models as m

__all__ = ["LEGACY", "NOTIFICATION_TYPES", "TYPES", "LegacyFormat"]

TYPES: Final[tuple[TypeSpec[Any], ...]] = (
    TypeSpec(m.DeviceAdded, keys.registry, samples.device_added, "handleDeviceAdded"),
    TypeSpec(m.BindDevice, keys.registry, samples.bind_device, "handleBindDevice"),
    TypeSpec(
        m.DeviceInfoChanged, keys.registry, samples.device_info_changed, "handleDeviceInfoChanged"
    ),
    TypeSpec(
        m.DeviceDataChanged,
        keys.data,
        samples.device_data_changed,
        "handleDeviceDataChanged",
        order=keys.data_time,
    ),
    TypeSpec(
        m.DeviceDatasChanged,
        keys.datas,
        samples.device_datas_changed,
        "handleDeviceDatasChanged",
        order=keys.datas_time,
    ),
    TypeSpec(
        m.ServiceInfoChanged,
        keys.service_info,
        samples.service_info_changed,
        "handleServiceInfoChanged",
    ),
    TypeSpec(m.DeviceDeleted, keys.registry, samples.device_deleted, "handleDeviceDeleted"),
    TypeSpec(
        m.MessageConfirm,
        keys.confirm,
        samples.message_confirm,
        "handleMessageConfirm",
        order=keys.confirm_time,
    ),
    TypeSpec(m.CommandRsp, keys.command_rsp, samples.command_rsp, "handleCommandRsp"),
    TypeSpec(
        m.DeviceEvent, keys.event, samples.device_event, "handleDeviceEvent", order=keys.event_time
    ),
    TypeSpec(m.DeviceModelAdded, keys.model, samples.device_model, "handleDeviceModelAdded"),
    TypeSpec(m.DeviceModelDeleted, keys.model, samples.device_model, "handleDeviceModelDeleted"),
    TypeSpec(m.RuleEvent, keys.rule, samples.rule_event, "handleRuleEvent", order=keys.rule_time),
    TypeSpec(
        m.DeviceDesiredPropertiesModifyStatusChanged,
        keys.shadow,
        samples.shadow,
        "handleDeviceDesiredStatusChanged",
    ),
    TypeSpec(
        m.SwUpgradeStateChangeNotify,
        keys.upgrade_state,
        samples.sw_upgrade_state,
        "handleSwUpgradeStateChanged",
    ),
    TypeSpec(
        m.SwUpgradeResultNotify,
        keys.upgrade_result,
        samples.sw_upgrade_result,
        "handleSwUpgradeResult",
    ),
    TypeSpec(
        m.FwUpgradeStateChangeNotify,
        keys.upgrade_state,
        samples.fw_upgrade_state,
        "handleFwUpgradeStateChanged",
    ),
    TypeSpec(
        m.FwUpgradeResultNotify,
        keys.upgrade_result,
        samples.fw_upgrade_result,
        "handleFwUpgradeResult",
    ),
    TypeSpec(
        m.NBCommandStatusChanged, keys.nb_command, samples.nb_command, "handleNBCommandStateChanged"
    ),
    TypeSpec(
        m.DeviceCapabilitiesChanged,
        keys.model,
        samples.device_model,
        "handleDeviceCapabilitiesChanged",
    ),
    TypeSpec(
        m.DeviceCapabilitiesAdded, keys.model, samples.device_model, "handleDeviceCapabilitiesAdded"
    ),
    TypeSpec(
        m.DeviceCapabilitiesDeleted,
        keys.model,
        samples.device_model,
        "handleDeviceCapabilitiesDeleted",
    ),
)

for _spec in TYPES:
    _tag = _spec.model.__struct_config__.tag
    if isinstance(_tag, str):  # the tagless type names itself in its class body
        _spec.model.notify_type = _tag
    _spec.model.callback = _spec.callback

NOTIFICATION_TYPES: Final[dict[str, type[m.Notification]]] = {
    spec.name: spec.model for spec in TYPES
}
"""Every notification class by its ``notifyType``, in the documentation's order."""

_TAGGED: Final = tuple(cls for cls in NOTIFICATION_TYPES.values() if cls.__struct_config__.tag)
_UNTAGGED: Final = m.NBCommandStatusChanged
_tagged_decoder = msgspec.json.Decoder(Union[_TAGGED])  # noqa: UP007 - a runtime tuple of types
_untagged_decoder = msgspec.json.Decoder(_UNTAGGED)
_NO_TAG: Final = "Object missing required field `notifyType`"
_UNKNOWN_TAG: Final = "Invalid value "


def _error(exc: msgspec.MsgspecError) -> NotificationError:
    message = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return NotificationError(f"invalid JSON: {message}", problem="malformed")
    reason, sep, path = message.rpartition(" - at `")
    if not sep:
        problem: Literal["malformed", "invalid"] = (
            "malformed" if message.startswith("Expected `object`") else "invalid"
        )
        return NotificationError(message, problem=problem)
    path = path.rstrip("`")
    if path == "$.notifyType" and reason.startswith(_UNKNOWN_TAG):
        value = reason.removeprefix(_UNKNOWN_TAG)
        return NotificationError(f"unknown notifyType {value}", path, problem="unknown_type")
    return NotificationError(reason, path)


class LegacyFormat:
    """The legacy format as a `PushFormat`: tagged on ``notifyType``, NB-IoT status untagged."""

    name: str = "legacy"
    projections: tuple[str, ...] = ("commands", "shadow", "devices", "upgrades")

    def __init__(self) -> None:
        self.types: Mapping[str, TypeSpec[Any]] = {spec.name: spec for spec in TYPES}

    def decode(self, body: bytes, kind: str | None = None) -> m.Notification:
        """Decode ``body``; ``kind`` ``nbCommandStatusChanged`` for the command status path.

        On the main path a body without ``notifyType`` that carries ``commandId`` is taken as an
        NB-IoT command status too: many applications register one URL for everything.
        """
        try:
            if kind == _UNTAGGED.notify_type:
                notification: m.Notification = _untagged_decoder.decode(body)
            else:
                try:
                    notification = _tagged_decoder.decode(body)
                except msgspec.ValidationError as exc:
                    if str(exc) != _NO_TAG:
                        raise
                    if b'"commandId"' not in body:
                        raise NotificationError(
                            "missing required member `notifyType`", "$.notifyType"
                        ) from exc
                    notification = _untagged_decoder.decode(body)
        except msgspec.MsgspecError as exc:
            raise _error(exc) from exc
        except RecursionError as exc:  # msgspec's own bound on nesting, reached by hostile input
            raise NotificationError("JSON nested too deeply", problem="malformed") from exc
        notification.__dict__["_raw"] = body
        return notification


LEGACY: Final = LegacyFormat()
"""The legacy format, registered in `iotpush.formats.FORMATS`."""
