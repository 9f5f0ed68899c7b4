"""Plausible v5 pushes for the simulator, the examples and tests (`iotpush.testing.build`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from ..._samples import Faker
from .models import PAIRS, V5Notification, dec_hook

__all__ = ["build", "defaults", "merge"]

_PROPERTIES: Final[tuple[tuple[str, Callable[[Faker], dict[str, Any]]], ...]] = (
    ("Temperature", lambda f: {"temperature": round(f.rng.uniform(15.0, 32.0), 1)}),
    ("Humidity", lambda f: {"humidity": f.rng.randint(25, 80)}),
    ("Battery", lambda f: {"batteryLevel": f.rng.randint(5, 100)}),
    ("WaterMeter", lambda f: {"currentReading": round(f.rng.uniform(0, 9999), 2)}),
)
_PRODUCTS: Final = (
    ("WaterMeter", "MQTT", "json", "Acme", "utilities"),
    ("SmokeDetector", "LwM2M", "binary", "Huawei", "safety"),
    ("Gateway", "MQTT", "json", "wulian", "home"),
)


def _ms(f: Faker, seconds_ago: int = 0) -> str:
    t = f.now - dt.timedelta(seconds=seconds_ago)
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _body(pair: str, f: Faker, device: str, product: str) -> dict[str, Any]:
    r = f.rng
    match pair:
        case "device:create" | "device:update" | "device:delete":
            node = f.imei()
            return {
                "device_id": device, "node_id": node, "gateway_id": device,
                "device_name": f"meter-{r.randint(1, 999)}", "node_type": "GATEWAY",
                "description": "", "fw_version": "1.0.2", "sw_version": "2.1.0",
                "device_sdk_version": "C_v0.5.0", "auth_info": {"auth_type": "SECRET"},
                "product_id": product, "product_name": "WaterMeter",
                "status": "INACTIVE" if pair == "device:create" else "ONLINE",
                "create_time": f.time(3600), "tags": [{"tag_key": "site", "tag_value": "north"}],
            }  # fmt: skip
        case "device.status:update":
            return {"status": "ONLINE", "last_online_time": f.time()}
        case "device.property:report" | "device.data:update":
            chosen = r.sample(_PROPERTIES, 2)
            return {
                "services": [
                    {"service_id": name, "properties": make(f), "event_time": f.time(1)}
                    for name, make in chosen
                ]
            }
        case "device.message:report":
            content = {"alarm": r.choice(["smoke", "tamper", "low-battery"]), "level": 2}
            return {"content": content, "topic": f"$oc/devices/{device}/user/up", "id": f.uuid()}
        case "device.message.status:update":
            return {
                "message_id": f.uuid(), "name": "config", "status": "DELIVERED",
                "topic": f"$oc/devices/{device}/user/down", "timestamp": f.time(),
            }  # fmt: skip
        case "device.command.status:update":
            return {
                "command_id": f.uuid(), "created_time": f.time(5), "sent_time": f.time(4),
                "delivered_time": f.time(3), "response_time": f.time(1), "status": "SUCCESSFUL",
                "result": {"result_code": 0, "paras": {"value": r.choice(["ON", "OFF"])}},
            }  # fmt: skip
        case "batchtask:update":
            return {
                "app_id": f.hex(), "task_id": f.hex(24), "task_type": "firmwareUpgrade",
                "status": "Processing", "status_desc": "2 of 10 devices upgraded",
            }  # fmt: skip
    assert pair.startswith("product:"), pair
    device_type, protocol, data_format, maker, industry = r.choice(_PRODUCTS)
    return {
        "product_id": product, "name": device_type, "device_type": device_type,
        "protocol_type": protocol, "data_format": data_format, "manufacturer_name": maker,
        "industry": industry, "description": "", "create_time": f.time(86400),
        "service_capabilities": [{"service_id": "Status", "service_type": "Status"}],
    }  # fmt: skip


def defaults(pair: str, f: Faker) -> dict[str, Any]:
    """A fresh push of ``pair`` as plain JSON values, in the documented shape."""
    resource, _, event = pair.partition(":")
    device, product = f.hex(24) + "_" + f.imei(), f.hex(24)
    header = {
        "app_id": f.hex(), "device_id": device, "node_id": device.split("_")[1],
        "product_id": product, "gateway_id": device,
    }  # fmt: skip
    notify: dict[str, Any] = {"body": _body(pair, f, device, product)}
    if not pair.startswith(("batchtask:", "product:")):
        notify = {"header": header, **notify}
    return {
        "resource": resource,
        "event": event,
        "event_time": f.time(),
        "event_time_ms": _ms(f),
        "request_id": f.uuid(),
        "notify_data": notify,
    }


def merge(base: Any, override: Any) -> Any:
    """``override`` merged into ``base``: dicts member by member, lists of dicts item by item
    (items past the base's start from its first), anything else replaced."""
    if isinstance(base, dict) and isinstance(override, Mapping):
        merged = dict(base)
        for name, value in override.items():
            merged[name] = merge(base.get(name), value)
        return merged
    if isinstance(base, list) and base and isinstance(override, list):
        return [merge(base[min(i, len(base) - 1)], item) for i, item in enumerate(override)]
    return override


def build(pair: str, f: Faker, overrides: Mapping[str, Any]) -> V5Notification[Any]:
    """A fresh push of ``pair`` with ``overrides`` (wire names; ``None`` removes a member).

    Raises:
        TypeError: An override is not a member of the push.
        msgspec.ValidationError: The result is not a valid push.
    """
    cls = PAIRS[pair]
    wire = defaults(pair, f)
    for name in overrides:
        if name not in cls.__struct_encode_fields__:
            members = ", ".join(cls.__struct_encode_fields__)
            raise TypeError(f"{pair} has no member {name!r} (members: {members})")
    wire = merge(wire, overrides)
    notification: V5Notification[Any] = msgspec.convert(_drop_none(wire), cls, dec_hook=dec_hook)
    return notification


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value
