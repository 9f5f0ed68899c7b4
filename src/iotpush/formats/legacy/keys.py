"""The legacy types' idempotency key rules (see `iotpush.idempotency` for what key and slot mean).

* Events that name themselves (a command status, a data report with its event time, a rule
  firing) use the key as the slot: the same event twice within the window is a duplicate.
* State changes that carry no time (device info, shadow status, upgrade step...) use one slot
  per thing whose state it is, so only a repeat of the *latest* state is a duplicate.
"""

from __future__ import annotations

from ..base import digest
from . import models as m

__all__ = [
    "command_rsp",
    "confirm",
    "confirm_time",
    "data",
    "data_time",
    "datas",
    "datas_time",
    "event",
    "event_time",
    "model",
    "nb_command",
    "registry",
    "rule",
    "rule_time",
    "service_info",
    "shadow",
    "upgrade_result",
    "upgrade_state",
]


def _body(n: m.Notification) -> str:
    return digest(n.json)


def nb_command(n: m.NBCommandStatusChanged) -> tuple[str, str | None]:
    return f"{n.command_id}:{n.result.result_code.upper()}", None


def data(n: m.DeviceDataChanged) -> tuple[str, str | None]:
    s = n.service
    return f"{n.device_id}:{s.service_id}:{s.event_time}:{digest(s.data)}", None


def datas(n: m.DeviceDatasChanged) -> tuple[str, str | None]:
    services = [(s.service_id, s.event_time, s.data) for s in n.services]
    return f"{n.device_id}:{digest(services)}", None


def confirm(n: m.MessageConfirm) -> tuple[str, str | None]:
    h = n.header
    return f"{h.from_}:{h.request_id}:{h.status}:{h.timestamp}", None


def command_rsp(n: m.CommandRsp) -> tuple[str, str | None]:
    h = n.header
    return f"{h.device_id}:{h.request_id}:{digest(n.body)}", None


def event(n: m.DeviceEvent) -> tuple[str, str | None]:
    h = n.header
    return f"{h.device_id}:{h.event_type}:{h.event_time}:{digest(n.body)}", None


def rule(n: m.RuleEvent) -> tuple[str, str | None]:
    return f"{n.rule_id}:{n.trigger_time}:{_body(n)}", None


def upgrade_result(n: m.SwUpgradeResultNotify | m.FwUpgradeResultNotify) -> tuple[str, str | None]:
    return f"{n.device_id}:{n.operation_id}:{n.sub_operation_id}:{_body(n)}", None


def registry(n: m._DeviceNotification) -> tuple[str, str | None]:
    return _body(n), f"registry:{n.device_id}"


def service_info(n: m.ServiceInfoChanged) -> tuple[str, str | None]:
    return _body(n), f"service:{n.device_id}:{n.service_id}"


def shadow(n: m.DeviceDesiredPropertiesModifyStatusChanged) -> tuple[str, str | None]:
    return _body(n), f"shadow:{n.device_id}:{n.service_id}"


def upgrade_state(
    n: m.SwUpgradeStateChangeNotify | m.FwUpgradeStateChangeNotify,
) -> tuple[str, str | None]:
    return _body(n), f"upgrade:{n.device_id}:{n.operation_id}:{n.sub_operation_id}"


def _seconds(value: str | None) -> float | None:
    try:
        return m.parse_time(value).timestamp()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


# The time each event key above names (`TypeSpec.order`): a retry repeats it with the key.


def data_time(n: m.DeviceDataChanged) -> float | None:
    return _seconds(n.service.event_time)


def datas_time(n: m.DeviceDatasChanged) -> float | None:
    times = [t for t in (_seconds(s.event_time) for s in n.services) if t is not None]
    return min(times) if times else None


def confirm_time(n: m.MessageConfirm) -> float | None:
    return _seconds(n.header.timestamp)


def event_time(n: m.DeviceEvent) -> float | None:
    return _seconds(n.header.event_time)


def rule_time(n: m.RuleEvent) -> float | None:
    return _seconds(n.trigger_time)


def model(n: m._ModelNotification) -> tuple[str, str | None]:
    return _body(n), f"model:{n.app_id}:{n.manufacturer_id}:{n.device_type}:{n.model}"
