"""Sample values of the legacy types for the simulator: one function per type, by attribute name.

Each returns the members of a plausible fresh notification, nested structures as dicts.
"""

from __future__ import annotations

from typing import Any, Final

from ..._samples import SERVICES, Faker

__all__ = [
    "bind_device",
    "command_rsp",
    "device_added",
    "device_data_changed",
    "device_datas_changed",
    "device_deleted",
    "device_event",
    "device_info_changed",
    "device_model",
    "fw_upgrade_result",
    "fw_upgrade_state",
    "message_confirm",
    "nb_command",
    "rule_event",
    "service_info_changed",
    "shadow",
    "sw_upgrade_result",
    "sw_upgrade_state",
]

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


def _start(f: Faker) -> tuple[str, dict[str, Any]]:
    """A device id and a device model: drawn first by every type, so that a seed gives each
    type the same values whatever else changes."""
    d = f.uuid()
    return d, dict(zip(_MODEL_MEMBERS, f.rng.choice(_MODELS), strict=True))


def _on_gateway(d: str) -> dict[str, Any]:
    return {"device_id": d, "gateway_id": d}  # directly connected: its own gateway


def device_model(f: Faker) -> dict[str, Any]:
    _, model = _start(f)
    return {"app_id": f.token(28), **model}


def device_added(f: Faker) -> dict[str, Any]:
    d, _ = _start(f)
    info = {"node_id": f.imei(), "status": "OFFLINE", "status_detail": "NOT_ACTIVE"}
    return {**_on_gateway(d), "node_type": "ENDPOINT", "device_info": info}


def bind_device(f: Faker) -> dict[str, Any]:
    d, model = _start(f)
    info = {**model, "node_id": f.imei(), "name": f"{model['model']}-{f.rng.randint(1, 999)}"}
    info.update(status="ONLINE", status_detail="NONE", mute="FALSE")
    return {"device_id": d, "result_code": "succeeded", "device_info": info}


def device_info_changed(f: Faker) -> dict[str, Any]:
    d, _ = _start(f)
    info = {"status": "ONLINE", "status_detail": "NONE"}  # only what changed
    return {**_on_gateway(d), "device_info": info, "network_status": None}


def device_data_changed(f: Faker) -> dict[str, Any]:
    d, _ = _start(f)
    on_gateway = _on_gateway(d)
    return {**on_gateway, "request_id": None, "service": f.service(f.rng.choice(SERVICES))}


def device_datas_changed(f: Faker) -> dict[str, Any]:
    d, _ = _start(f)
    on_gateway = _on_gateway(d)
    services = [f.service(name) for name in f.rng.sample(SERVICES, 2)]
    return {**on_gateway, "request_id": None, "services": services}


def service_info_changed(f: Faker) -> dict[str, Any]:
    d, _ = _start(f)
    muted = {"mute_cmds": ["SET_STATE"]}
    switch = {"service_id": "Switch", "service_type": "Switch"}
    return {**_on_gateway(d), **switch, "service_info": muted}


def device_deleted(f: Faker) -> dict[str, Any]:
    d, _ = _start(f)
    return _on_gateway(d)


def message_confirm(f: Faker) -> dict[str, Any]:
    d, _ = _start(f)
    header = {
        "request_id": str(f.rng.randint(1000, 99999)),
        "from_": f"/devices/{d}/services/Switch",
        "to": f.token(28),
        "status": "delivered",
        "timestamp": f.time(),
    }
    return {"header": header, "body": {}}


def command_rsp(f: Faker) -> dict[str, Any]:
    d, _ = _start(f)
    r = f.rng
    header = {
        "request_id": str(r.randint(1000, 99999)),
        "from_": f"/devices/{d}",
        "to": f.token(28),
        "device_id": d,
        "service_type": "Switch",
        "method": "SET_STATE",
    }
    return {"header": header, "body": {"result": "ok", "state": r.choice(["ON", "OFF"])}}


def device_event(f: Faker) -> dict[str, Any]:
    d, _ = _start(f)
    header = {
        "event_type": "alarm",
        "from_": f"/devices/{d}/services/Smoke",
        "timestamp": f.time(),
        "event_time": f.time(1),
        "device_id": d,
        "service_type": "Smoke",
    }
    return {"header": header, "body": {"level": f.rng.choice(["low", "medium", "high"])}}


def rule_event(f: Faker) -> dict[str, Any]:
    d, _ = _start(f)
    r = f.rng
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


def shadow(f: Faker) -> dict[str, Any]:
    d, _ = _start(f)
    properties = {"reportInterval": f.rng.choice([60, 300, 900, 3600])}
    return {
        "device_id": d,
        "service_id": "Device",
        "properties": properties,
        "status": "DELIVERED",
    }


def sw_upgrade_state(f: Faker) -> dict[str, Any]:
    d, _ = _start(f)
    return {**f.upgrade(d), "sw_upgrade_state": "downloading"}


def sw_upgrade_result(f: Faker) -> dict[str, Any]:
    d, _ = _start(f)
    return {
        **f.upgrade(d),
        **f.versions(),
        "sw_upgrade_result": "SUCCESS",
        "upgrade_time": str(f.rng.randint(30, 600)),
        "result_desc": "success",
        "error_code": "0",
        "description": "",
    }


def fw_upgrade_state(f: Faker) -> dict[str, Any]:
    d, _ = _start(f)
    return {**f.upgrade(d), "step": "1", "step_desc": "downloading"}


def fw_upgrade_result(f: Faker) -> dict[str, Any]:
    d, _ = _start(f)
    return {
        **f.upgrade(d),
        **f.versions(),
        "status": "SUCCESS",
        "status_desc": "upgraded",
        "upgrade_time": str(f.rng.randint(30, 600)),
    }


def nb_command(f: Faker) -> dict[str, Any]:
    d, _ = _start(f)
    result = {"result_code": "DELIVERED", "result_detail": None}
    return {"device_id": d, "command_id": f.hex(), "result": result}
