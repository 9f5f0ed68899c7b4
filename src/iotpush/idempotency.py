"""Idempotency keys: how a retried or duplicated push is recognised.

The platform sends no delivery id, so each notification gets a deterministic ``key`` from what
it says, and a ``slot``: the inbox keeps one live key per slot, and a push is a duplicate when
its slot's live key equals its own and is younger than the dedupe window.

* Events that name themselves (a command status, a data report with its event time, a rule
  firing) use the key as the slot: the same event twice within the window is a duplicate.
* State changes that carry no time (device info, shadow status, upgrade step...) use one slot
  per thing whose state it is, so only a repeat of the *latest* state is a duplicate:
  ONLINE, OFFLINE, ONLINE delivers all three, ONLINE, ONLINE delivers one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgspec

from . import models as m

__all__ = ["digest", "key_and_slot"]

_encode = msgspec.json.encode


def digest(value: Any) -> str:
    """A short stable hash of a JSON value, independent of member order and whitespace."""
    return hashlib.blake2b(_encode(value, order="sorted"), digest_size=8).hexdigest()


def _body(n: m.Notification) -> str:
    return digest(n.json)


def _nb_command(n: m.NBCommandStatusChanged) -> tuple[str, None]:
    return f"{n.command_id}:{n.result.result_code.upper()}", None


def _data(n: m.DeviceDataChanged) -> tuple[str, None]:
    s = n.service
    return f"{n.device_id}:{s.service_id}:{s.event_time}:{digest(s.data)}", None


def _datas(n: m.DeviceDatasChanged) -> tuple[str, None]:
    services = [(s.service_id, s.event_time, s.data) for s in n.services]
    return f"{n.device_id}:{digest(services)}", None


def _confirm(n: m.MessageConfirm) -> tuple[str, None]:
    h = n.header
    return f"{h.from_}:{h.request_id}:{h.status}:{h.timestamp}", None


def _command_rsp(n: m.CommandRsp) -> tuple[str, None]:
    h = n.header
    return f"{h.device_id}:{h.request_id}:{digest(n.body)}", None


def _event(n: m.DeviceEvent) -> tuple[str, None]:
    h = n.header
    return f"{h.device_id}:{h.event_type}:{h.event_time}:{digest(n.body)}", None


def _rule(n: m.RuleEvent) -> tuple[str, None]:
    return f"{n.rule_id}:{n.trigger_time}:{_body(n)}", None


def _upgrade_result(n: m.SwUpgradeResultNotify | m.FwUpgradeResultNotify) -> tuple[str, None]:
    return f"{n.device_id}:{n.operation_id}:{n.sub_operation_id}:{_body(n)}", None


def _registry(n: m._DeviceNotification) -> tuple[str, str]:
    return _body(n), f"registry:{n.device_id}"


def _service_info(n: m.ServiceInfoChanged) -> tuple[str, str]:
    return _body(n), f"service:{n.device_id}:{n.service_id}"


def _shadow(n: m.DeviceDesiredPropertiesModifyStatusChanged) -> tuple[str, str]:
    return _body(n), f"shadow:{n.device_id}:{n.service_id}"


def _upgrade_state(
    n: m.SwUpgradeStateChangeNotify | m.FwUpgradeStateChangeNotify,
) -> tuple[str, str]:
    return _body(n), f"upgrade:{n.device_id}:{n.operation_id}:{n.sub_operation_id}"


def _model(n: m._ModelNotification) -> tuple[str, str]:
    return _body(n), f"model:{n.app_id}:{n.manufacturer_id}:{n.device_type}:{n.model}"


_RULES: dict[type[m.Notification], Callable[[Any], tuple[str, str | None]]] = {
    m.NBCommandStatusChanged: _nb_command,
    m.DeviceDataChanged: _data,
    m.DeviceDatasChanged: _datas,
    m.MessageConfirm: _confirm,
    m.CommandRsp: _command_rsp,
    m.DeviceEvent: _event,
    m.RuleEvent: _rule,
    m.SwUpgradeResultNotify: _upgrade_result,
    m.FwUpgradeResultNotify: _upgrade_result,
    m.DeviceAdded: _registry,
    m.BindDevice: _registry,
    m.DeviceInfoChanged: _registry,
    m.DeviceDeleted: _registry,
    m.ServiceInfoChanged: _service_info,
    m.DeviceDesiredPropertiesModifyStatusChanged: _shadow,
    m.SwUpgradeStateChangeNotify: _upgrade_state,
    m.FwUpgradeStateChangeNotify: _upgrade_state,
    m.DeviceModelAdded: _model,
    m.DeviceModelDeleted: _model,
    m.DeviceCapabilitiesChanged: _model,
    m.DeviceCapabilitiesAdded: _model,
    m.DeviceCapabilitiesDeleted: _model,
}
assert set(_RULES) == set(m.NOTIFICATION_TYPES.values()), "every type needs a key rule"


def key_and_slot(notification: m.Notification) -> tuple[str, str]:
    """The idempotency key of ``notification`` and the dedupe slot it occupies.

    Keys start with the ``notifyType``, so keys of different types never meet; state slots are
    shared by the types that change the same state (``deviceAdded`` ... ``deviceDeleted``).
    """
    key, slot = _RULES[type(notification)](notification)
    key = f"{notification.notify_type}:{key}"
    return key, key if slot is None else slot
