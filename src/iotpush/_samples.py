"""Plausible values for simulated notifications: ids, times, service data, per-type defaults."""

from __future__ import annotations

import datetime as dt
import random
import string
import uuid
from collections.abc import Callable
from typing import Any, Final

from .models import format_time

__all__ = ["Faker", "defaults"]

_SERVICES: Final[dict[str, Callable[[random.Random], dict[str, Any]]]] = {
    "Temperature": lambda r: {"temperature": round(r.uniform(15.0, 32.0), 1)},
    "Humidity": lambda r: {"humidity": r.randint(25, 80)},
    "Battery": lambda r: {"batteryLevel": r.randint(5, 100)},
    "Brightness": lambda r: {"brightness": r.randint(0, 100)},
    "Pressure": lambda r: {"pressure": round(r.uniform(990.0, 1030.0), 1)},
    "WaterMeter": lambda r: {"currentReading": round(r.uniform(0, 9999), 2)},
}
_MODEL_MEMBERS: Final = (
    "device_type",
    "manufacturer_name",
    "manufacturer_id",
    "model",
    "protocol_type",
)
_MODELS: Final = (
    ("WaterMeter", "Acme", "acme-01", "WM-200", "CoAP"),
    ("SmokeDetector", "Huawei", "huawei", "SD-10", "LWM2M"),
    ("Motion", "STAR-IoT", "eefb52c1", "NBWatch_OTA", "CoAP"),
    ("Gateway", "wulian", "wl-01", "GW-300", "ZigBee"),
)


class Faker:
    """Plausible platform values from one `random.Random` and one "now"."""

    def __init__(self, rng: random.Random, now: dt.datetime) -> None:
        self.rng = rng
        self.now = now

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def hex(self, digits: int = 32) -> str:
        return f"{self.rng.getrandbits(4 * digits):0{digits}x}"

    def time(self, seconds_ago: int = 0) -> str:
        return format_time(self.now - dt.timedelta(seconds=seconds_ago))

    def imei(self) -> str:
        digits = [8, 6, *(self.rng.randrange(10) for _ in range(12))]
        # A real IMEI ends with a Luhn check digit.
        total = sum(d if i % 2 == 0 else sum(divmod(2 * d, 10)) for i, d in enumerate(digits))
        return "".join(map(str, digits)) + str(-total % 10)

    def token(self, length: int) -> str:
        return "".join(self.rng.choices(string.ascii_letters + string.digits, k=length))

    def service(self, name: str) -> dict[str, Any]:
        data = _SERVICES[name](self.rng)
        return {"service_id": name, "service_type": name, "data": data, "event_time": self.time(1)}

    def upgrade(self, device: str) -> dict[str, Any]:
        return {
            "device_id": device,
            "app_id": self.token(28),
            "operation_id": self.hex(24),
            "sub_operation_id": self.hex(24),
        }

    def versions(self) -> dict[str, Any]:
        minor = self.rng.randint(0, 7)
        target = f"1.{minor + self.rng.randint(1, 2)}.0"
        return {"cur_version": target, "target_version": target, "source_version": f"1.{minor}.0"}


def defaults(kind: str, f: Faker) -> dict[str, Any]:
    """The members of a fresh ``kind``, by attribute name; nested structures as dicts."""
    r, d = f.rng, f.uuid()
    model = dict(zip(_MODEL_MEMBERS, r.choice(_MODELS), strict=True))
    if kind.startswith(("deviceModel", "deviceCapabilities")):
        return {"app_id": f.token(28), **model}
    on_gateway = {"device_id": d, "gateway_id": d}  # directly connected: its own gateway
    match kind:
        case "deviceAdded":
            info = {"node_id": f.imei(), "status": "OFFLINE", "status_detail": "NOT_ACTIVE"}
            return {**on_gateway, "node_type": "ENDPOINT", "device_info": info}
        case "bindDevice":
            info = {**model, "node_id": f.imei(), "name": f"{model['model']}-{r.randint(1, 999)}"}
            info.update(status="ONLINE", status_detail="NONE", mute="FALSE")
            return {"device_id": d, "result_code": "succeeded", "device_info": info}
        case "deviceInfoChanged":
            info = {"status": "ONLINE", "status_detail": "NONE"}  # only what changed
            return {**on_gateway, "device_info": info, "network_status": None}
        case "deviceDataChanged":
            return {
                **on_gateway,
                "request_id": None,
                "service": f.service(r.choice(sorted(_SERVICES))),
            }
        case "deviceDatasChanged":
            services = [f.service(name) for name in r.sample(sorted(_SERVICES), 2)]
            return {**on_gateway, "request_id": None, "services": services}
        case "serviceInfoChanged":
            muted = {"mute_cmds": ["SET_STATE"]}
            switch = {"service_id": "Switch", "service_type": "Switch"}
            return {**on_gateway, **switch, "service_info": muted}
        case "deviceDeleted":
            return on_gateway
        case "messageConfirm":
            header = {
                "request_id": str(r.randint(1000, 99999)),
                "from_": f"/devices/{d}/services/Switch",
                "to": f.token(28),
                "status": "delivered",
                "timestamp": f.time(),
            }
            return {"header": header, "body": {}}
        case "commandRsp":
            header = {
                "request_id": str(r.randint(1000, 99999)),
                "from_": f"/devices/{d}",
                "to": f.token(28),
                "device_id": d,
                "service_type": "Switch",
                "method": "SET_STATE",
            }
            return {"header": header, "body": {"result": "ok", "state": r.choice(["ON", "OFF"])}}
        case "deviceEvent":
            header = {
                "event_type": "alarm",
                "from_": f"/devices/{d}/services/Smoke",
                "timestamp": f.time(),
                "event_time": f.time(1),
                "device_id": d,
                "service_type": "Smoke",
            }
            return {"header": header, "body": {"level": r.choice(["low", "medium", "high"])}}
        case "ruleEvent":
            reading = {"deviceId": d, "temperature": round(r.uniform(80.0, 95.0), 1)}
            reason = {"satisfaction_time": f.time(1), "type": "DEVICE_DATA", "id": "c1"}
            result = {"statusCode": 201, "body": {"commandId": f.hex()}}
            return {
                "author": f"user-{r.randint(1, 999)}",
                "rule_id": f.hex(),
                "rule_name": "overheat",
                "logic": "AND",
                "reasons": [{**reason, "info": reading}],
                "trigger_time": f.time(),
                "actions_results": [{"type": "DEVICE_CMD", "id": "a1", "result": result}],
            }
        case "deviceDesiredPropertiesModifyStatusChanged":
            properties = {"reportInterval": r.choice([60, 300, 900, 3600])}
            shadow = {"service_id": "Device", "properties": properties, "status": "DELIVERED"}
            return {"device_id": d, **shadow}
        case "swUpgradeStateChangeNotify":
            return {**f.upgrade(d), "sw_upgrade_state": "downloading"}
        case "swUpgradeResultNotify":
            return {
                **f.upgrade(d),
                **f.versions(),
                "sw_upgrade_result": "SUCCESS",
                "upgrade_time": str(r.randint(30, 600)),
                "result_desc": "success",
                "error_code": "0",
                "description": "",
            }
        case "fwUpgradeStateChangeNotify":
            return {**f.upgrade(d), "step": "1", "step_desc": "downloading"}
        case "fwUpgradeResultNotify":
            return {
                **f.upgrade(d),
                **f.versions(),
                "status": "SUCCESS",
                "status_desc": "upgraded",
                "upgrade_time": str(r.randint(30, 600)),
            }
    assert kind == "nbCommandStatusChanged", kind
    result = {"result_code": "DELIVERED", "result_detail": None}
    return {"device_id": d, "command_id": f.hex(), "result": result}
