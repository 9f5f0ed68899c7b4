"""The request mix: templates of all 22 notification types, each request made unique; and its v5
variant, templates of every v5 ``resource:event`` pair in the same proportions (`build_mix` with
``v5=True``), posted to the v5 path.

A template is a compact JSON body with tokens that a request counter ``n`` fills in:

* ``@N@``    the counter itself (in command ids, request ids, data values, model names...),
* ``@DEV@``  a device id from a pool of `DEVICES` devices, so one device gets many
  notifications and the dispatcher's per-device ordering is exercised,
* ``@UDEV@`` a device id of its own (a device is added or deleted once),
* ``@T@``    a platform time string, ``BASE_TIME + n`` seconds,
* ``@C@``    the cycle of 200 requests ``n`` is in (``n // 200``), and ``@P@`` the one before:
  the lifecycle mix only (`build_mix` with ``lifecycles=True``; the Python pacer, not wrk).

In the usual mix every command, upgrade and added device has an id of its own and most never
finish (a command SENT, an upgrade's state, a device added and never deleted): with retention,
those open records are what the store keeps. The lifecycle mix (`lifecycle_variants`) gives them
lifecycles instead, in the same proportions: each command id gets a push that moves it and one
that ends it, each upgrade a state and a result, each added device is bound in its cycle and
deleted in the next; so what stays open is bounded, as in a fleet, and ``--finished-retention``
bounds the rest.

Every type puts ``@N@`` or ``@T@`` into what its idempotency key covers, so no request of a run
is a duplicate of another and dedupe drops nothing. The same templates feed wrk (as a Lua table,
``mix.lua``) and the Python pacer of the soak mode. ``python -m benchmarks.bodies --check``
renders bodies through iotpush's own decoder and key function and proves both claims.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PATH = "/v1.0.0/messageReceiver"
V5_PATH = "/v5/forwarding"
COMMAND_PATH = "/v1.0.0/messageReceiver/cmd"
DEVICES = 2999  # prime, so device and template choice (n mod 200) are independent
BASE_TIME = 1_767_225_600  # 2026-01-01T00:00:00Z
DEVICE_PREFIX = "3f1e9a52-7c41-4b8e-9d2a-"
UNIQUE_PREFIX = "d0a1b2c3-5e6f-4a7b-8c9d-"

# Token -> the number the Lua script switches on.
TOKENS: dict[str, int] = {"@N@": 1, "@DEV@": 2, "@UDEV@": 3, "@T@": 4, "@C@": 5, "@P@": 6}
CYCLE = 200  # requests in one pass of the mix
_SPLIT = re.compile("(" + "|".join(map(re.escape, TOKENS)) + ")")
_NUM = "@NUM@"  # a bare number in JSON: encoded as a string first, unquoted afterwards

# Out of every 200 requests: half data reports, a fifth NB-IoT command status, 3 of each other.
WEIGHTS: dict[str, int] = {"deviceDataChanged": 100, "nbCommandStatusChanged": 40}
OTHER_WEIGHT = 3


@dataclass(frozen=True, slots=True)
class Template:
    """One body template: its type, the path it is posted to, literal parts and token numbers."""

    type: str
    path: str
    parts: tuple[str | int, ...]


# fmt: off
_INFO_MEMBERS = (
    "nodeId", "name", "description", "manufacturerId", "manufacturerName", "mac", "location",
    "deviceType", "model", "swVersion", "fwVersion", "hwVersion", "protocolType", "bridgeId",
    "status", "statusDetail", "mute", "supportedSecurity", "isSecurity", "signalStrength",
    "sigVersion", "serialNumber", "batteryLevel",
)
# fmt: on


def _info(**members: str | None) -> dict[str, Any]:
    return {name: members.get(name) for name in _INFO_MEMBERS}


def _model(kind: str, maker: str, maker_id: str, protocol: str) -> dict[str, Any]:
    return {
        "notifyType": kind,
        "appId": "app-7d1c",
        "deviceType": "WaterMeter",
        "manufacturerName": maker,
        "manufacturerId": maker_id,
        "model": "WM-@N@",
        "protocolType": protocol,
    }


def _data(service: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "notifyType": "deviceDataChanged",
        "requestId": None,
        "deviceId": "@DEV@",
        "gatewayId": "@DEV@",
        "service": {"serviceId": service, "serviceType": service, "data": data, "eventTime": "@T@"},
    }


def _nb(code: str, detail: Any, *, omit_detail: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {"resultCode": code} if omit_detail else {
        "resultCode": code,
        "resultDetail": detail,
    }  # fmt: skip
    return {"deviceId": "@DEV@", "commandId": "9a6b9a11c2f0b7e2@N@", "result": result}


def _upgrade(kind: str, **members: Any) -> dict[str, Any]:
    return {
        "notifyType": kind,
        "deviceId": "@DEV@",
        "appId": "app-7d1c",
        "operationId": "op-@N@",
        "subOperationId": "sub-@N@",
        **members,
    }


def variants() -> dict[str, list[dict[str, Any]]]:
    """Example bodies of every type (several for the frequent ones), with tokens in place."""
    dev, t = "@DEV@", "@T@"
    return {
        "deviceAdded": [{"notifyType": "deviceAdded", "deviceId": "@UDEV@",
                         "gatewayId": "@UDEV@", "nodeType": "ENDPOINT",
                         "deviceInfo": _info(nodeId="86217704@N@", status="OFFLINE",
                                             statusDetail="NOT_ACTIVE")}],
        "bindDevice": [{"notifyType": "bindDevice", "deviceId": "@UDEV@", "resultCode": "succeeded",
                        "deviceInfo": _info(nodeId="86217704@N@", name="watch-@N@",
                                            manufacturerName="STAR-IoT", deviceType="Motion",
                                            protocolType="CoAP", status="ONLINE",
                                            statusDetail="NONE", mute="FALSE")}],
        "deviceInfoChanged": [{"notifyType": "deviceInfoChanged", "deviceId": dev,
                               "gatewayId": dev, "deviceInfo": _info(status="ONLINE",
                                                                     statusDetail="NONE",
                                                                     batteryLevel="@N@"),
                               "networkStatus": None}],
        "deviceDataChanged": [
            _data("Brightness", {"brightness": _NUM}),
            _data("Temperature", {"temperature": _NUM, "humidity": 41.5}),
            _data("WaterMeter", {"currentReading": _NUM, "signalStrength": -87,
                                 "batteryLevel": 93}),
            _data("Switch", {"state": "ON", "seq": _NUM}),
        ],
        "deviceDatasChanged": [{"notifyType": "deviceDatasChanged", "requestId": None,
                                "deviceId": dev, "gatewayId": dev, "services": [
                                    {"serviceId": "Battery", "serviceType": "Battery",
                                     "data": {"batteryLevel": _NUM}, "eventTime": t},
                                    {"serviceId": "Temperature", "serviceType": "Temperature",
                                     "data": {"temperature": 21.5}, "eventTime": t}]}],
        "serviceInfoChanged": [{"notifyType": "serviceInfoChanged", "deviceId": dev,
                                "gatewayId": dev, "serviceId": "Switch", "serviceType": "Switch",
                                "serviceInfo": {"muteCmds": ["SET_STATE_@N@"]}}],
        "deviceDeleted": [{"notifyType": "deviceDeleted", "deviceId": "@UDEV@",
                           "gatewayId": "@UDEV@"}],
        "messageConfirm": [{"notifyType": "messageConfirm", "header": {
            "requestId": "@N@", "from": f"/devices/{dev}/services/Switch", "to": "app-user-01",
            "status": "delivered", "timestamp": t}, "body": {}}],
        "commandRsp": [{"notifyType": "commandRsp", "header": {
            "requestId": "@N@", "from": f"/devices/{dev}", "to": "app-user-01", "deviceId": dev,
            "serviceType": "Camera", "method": "MUTE_COMMANDS"}, "body": {"result": "ok"}}],
        "deviceEvent": [{"notifyType": "deviceEvent", "header": {
            "eventType": "alarm", "from": f"/devices/{dev}/services/Smoke", "timestamp": t,
            "eventTime": t, "deviceId": dev, "serviceType": "Smoke"}, "body": {"level": "high"}}],
        "deviceModelAdded": [_model("deviceModelAdded", "Acme", "acme-01", "CoAP")],
        "deviceModelDeleted": [_model("deviceModelDeleted", "Acme", "acme-01", "CoAP")],
        "ruleEvent": [{"notifyType": "ruleEvent", "author": "user-42", "ruleId": "rule-0001",
                       "ruleName": "overheat", "logic": "AND", "reasons": [
                           {"satisfactionTime": t, "type": "DEVICE_DATA", "id": "c1",
                            "info": {"temperature": _NUM}}],
                       "triggerTime": t, "actionsResults": [
                           {"type": "DEVICE_CMD", "id": "a1",
                            "result": {"statusCode": 201, "body": {"commandId": "cmd-@N@"}}},
                           {"type": "EMAIL", "id": "a2", "exception": "mail server unreachable"}]}],
        "deviceDesiredPropertiesModifyStatusChanged": [{
            "notifyType": "deviceDesiredPropertiesModifyStatusChanged", "deviceId": dev,
            "serviceId": "Device", "properties": {"targetTemperature": _NUM},
            "status": "DELIVERED"}],
        "swUpgradeStateChangeNotify": [_upgrade("swUpgradeStateChangeNotify",
                                                swUpgradeState="downloading")],
        "swUpgradeResultNotify": [_upgrade("swUpgradeResultNotify", curVersion="1.3",
                                           targetVersion="1.5", sourceVersion="1.0",
                                           swUpgradeResult="SUCCESS", upgradeTime="120",
                                           resultDesc="ok", errorCode="0", description="")],
        "fwUpgradeStateChangeNotify": [_upgrade("fwUpgradeStateChangeNotify", step="1",
                                                stepDesc="downloading")],
        "fwUpgradeResultNotify": [_upgrade("fwUpgradeResultNotify", curVersion="1.6",
                                           targetVersion="1.6", sourceVersion="1.3",
                                           status="SUCCESS", statusDesc="upgraded",
                                           upgradeTime="300")],
        "nbCommandStatusChanged": [
            _nb("SENT", None),
            _nb("DELIVERED", None),
            _nb("SUCCESSFUL", {"light_state": 1}),
            _nb("FAILED", {"reason": "send command failed"}),
            _nb("SUCCESS", "None"),
            _nb("DELIVERED", None, omit_detail=True),
        ],
        "deviceCapabilitiesChanged": [_model("deviceCapabilitiesChanged", "Acme", "acme-01",
                                             "CoAP")],
        "deviceCapabilitiesAdded": [_model("deviceCapabilitiesAdded", "wulian", "wl-01", "zigbee")],
        "deviceCapabilitiesDeleted": [_model("deviceCapabilitiesDeleted", "wulian", "wl-01",
                                             "zigbee")],
    }  # fmt: skip


# Out of every 200 v5 requests, as in the legacy mix: half property reports, a fifth command
# status; then messages and status changes, 3 of each other pair.
V5_WEIGHTS: dict[str, int] = {
    "device.property:report": 100, "device.command.status:update": 40,
    "device.message:report": 15, "device.status:update": 15, "device.message.status:update": 6,
}  # fmt: skip


def _v5(pair: str, body: dict[str, Any], *, request_id: bool = True, dev: str = "@DEV@") -> Any:
    resource, _, event = pair.partition(":")
    header = {"app_id": "app-7d1c", "device_id": dev, "node_id": "86217704@N@",
              "product_id": "prod-01", "gateway_id": dev}  # fmt: skip
    notify: dict[str, Any] = {"body": body}
    if not pair.startswith(("batchtask", "product")):
        notify = {"header": header, **notify}
    envelope: dict[str, Any] = {"resource": resource, "event": event, "event_time": "@T@"}
    if request_id:
        envelope["request_id"] = "req-@N@"
    return {**envelope, "notify_data": notify}


def v5_variants() -> dict[str, list[dict[str, Any]]]:
    """Bodies of every v5 pair with tokens in place. Property reports and command status carry
    no ``request_id`` (their keys are derived, as for the legacy data reports), the rest do."""
    t = "@T@"

    def services(*items: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        return {"services": [{"service_id": name, "properties": props, "event_time": t}
                             for name, props in items]}  # fmt: skip

    def command(status: str, result: Any) -> dict[str, Any]:
        return {"command_id": "9a6b9a11c2f0b7e2@N@", "created_time": t, "sent_time": t,
                "status": status, "result": result}  # fmt: skip

    device = {"device_id": "@UDEV@", "node_id": "86217704@N@", "gateway_id": "@UDEV@",
              "device_name": "meter-@N@", "node_type": "ENDPOINT", "fw_version": "1.0",
              "sw_version": "2.1", "product_id": "prod-01", "product_name": "WaterMeter",
              "status": "INACTIVE", "create_time": t}  # fmt: skip
    product = {"product_id": "prod-@N@", "name": "WaterMeter", "device_type": "WaterMeter",
               "protocol_type": "MQTT", "data_format": "json", "manufacturer_name": "Acme",
               "industry": "utilities", "create_time": t}  # fmt: skip
    return {
        "device.property:report": [
            _v5("device.property:report", services(("Brightness", {"brightness": _NUM})),
                request_id=False),
            _v5("device.property:report",
                services(("Temperature", {"temperature": _NUM, "humidity": 41.5})),
                request_id=False),
            _v5("device.property:report", services(("WaterMeter", {"currentReading": _NUM}),
                                                   ("Battery", {"batteryLevel": 93})),
                request_id=False),
            _v5("device.property:report", services(("Switch", {"state": "ON", "seq": _NUM})),
                request_id=False),
        ],
        "device.command.status:update": [
            _v5("device.command.status:update", command("SENT", None), request_id=False),
            _v5("device.command.status:update", command("DELIVERED", None), request_id=False),
            _v5("device.command.status:update", command("SUCCESSFUL", {"result_code": 0}),
                request_id=False),
            _v5("device.command.status:update", command("FAILED", {"error": "timeout"}),
                request_id=False),
        ],
        "device.message:report": [_v5("device.message:report", {
            "content": {"alarm": "smoke", "seq": _NUM}, "topic": "user/up", "id": "msg-@N@"})],
        "device.status:update": [_v5("device.status:update", {
            "status": "ONLINE", "last_online_time": t})],
        "device.message.status:update": [_v5("device.message.status:update", {
            "message_id": "msg-@N@", "name": "config", "status": "DELIVERED", "timestamp": t})],
        "device:create": [_v5("device:create", device, dev="@UDEV@")],
        "device:update": [_v5("device:update", {**device, "status": "ONLINE"}, dev="@UDEV@")],
        "device:delete": [_v5("device:delete", device, dev="@UDEV@")],
        "device.data:update": [_v5("device.data:update", services(("Meter", {"v": _NUM})))],
        "batchtask:update": [_v5("batchtask:update", {
            "app_id": "app-7d1c", "task_id": "task-@N@", "task_type": "firmwareUpgrade",
            "status": "Processing", "status_desc": "2 of 10"})],
        "product:create": [_v5("product:create", product)],
        "product:update": [_v5("product:update", product)],
        "product:delete": [_v5("product:delete", product)],
    }  # fmt: skip


def lifecycle_variants() -> dict[str, list[dict[str, Any]]]:
    """`variants` whose commands, upgrades and added devices finish (see the module's doc).

    ``@K@`` is a template's number among those of its type in the cycle (`build_mix` puts it
    in): templates with the same number name the same thing.
    """
    v = variants()
    ok, fail = {"light_state": 1}, {"reason": "send command failed"}
    nb = [_nb("SENT", None), _nb("SUCCESSFUL", ok), _nb("DELIVERED", None), _nb("FAILED", fail)]
    for body in nb:  # template i is command i // 2: SENT then SUCCESSFUL, DELIVERED then FAILED
        body["commandId"] = "9a6b9a11c2f0b7e2-@C@-@K2@"
    v["nbCommandStatusChanged"] = nb
    for kind in ("messageConfirm", "commandRsp"):  # template i of each: request i of the cycle
        v[kind][0]["header"]["requestId"] = "rq-@C@-@K@"
    for kind, prefix in (
        ("swUpgradeStateChangeNotify", "sw"),
        ("swUpgradeResultNotify", "sw"),
        ("fwUpgradeStateChangeNotify", "fw"),
        ("fwUpgradeResultNotify", "fw"),
    ):
        body = v[kind][0]
        body["operationId"] = body["subOperationId"] = f"{prefix}-@C@-@K@"
        body["deviceId"] = f"{UNIQUE_PREFIX}{prefix}@C@-@K@"
    for kind, cycle in (("deviceAdded", "@C@"), ("bindDevice", "@C@"), ("deviceDeleted", "@P@")):
        body = v[kind][0]
        body["deviceId"] = f"{UNIQUE_PREFIX}L{cycle}-@K@"  # deleted a cycle after it was added
        if "gatewayId" in body:
            body["gatewayId"] = body["deviceId"]
    return v


def _template(kind: str, body: dict[str, Any], i: int = 0) -> Template:
    text = json.dumps(body, separators=(",", ":")).replace(f'"{_NUM}"', "@N@")
    text = text.replace("@K2@", str(i // 2)).replace("@K@", str(i))
    parts: list[str | int] = []
    for i, piece in enumerate(_SPLIT.split(text)):
        if i % 2:
            parts.append(TOKENS[piece])
        elif piece:
            parts.append(piece)
    path = COMMAND_PATH if kind == "nbCommandStatusChanged" else V5_PATH if ":" in kind else PATH
    return Template(kind, path, tuple(parts))


def build_mix(seed: int = 5, *, v5: bool = False, lifecycles: bool = False) -> list[Template]:
    """The cycle of 200 templates requests go through, by `WEIGHTS` (`V5_WEIGHTS`), in a fixed
    shuffled order; with ``lifecycles``, `lifecycle_variants` (not with ``v5``)."""
    cycle: list[Template] = []
    weights = V5_WEIGHTS if v5 else WEIGHTS
    kinds = v5_variants() if v5 else lifecycle_variants() if lifecycles else variants()
    for kind, bodies in kinds.items():
        weight = weights.get(kind, OTHER_WEIGHT)
        cycle += [_template(kind, bodies[i % len(bodies)], i) for i in range(weight)]
    random.Random(seed).shuffle(cycle)
    return cycle


def device_id(d: int) -> str:
    """The id of pooled device number ``d``."""
    return f"{DEVICE_PREFIX}{d:012d}"


def token_value(token: int, n: int, devices: int = DEVICES) -> str:
    """What ``token`` becomes in request ``n`` with a pool of ``devices`` devices (``mix.lua``
    does the same in Lua)."""
    if token == 1:
        return str(n)
    if token == 2:
        return device_id(n % devices)
    if token == 3:
        return f"{UNIQUE_PREFIX}{n:012d}"
    if token in (5, 6):
        return str(n // CYCLE - (token == 6))
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(BASE_TIME + n))


def render(template: Template, n: int, devices: int = DEVICES) -> bytes:
    """The body of request ``n`` made from ``template``, its device from ``devices``."""
    parts = template.parts
    return "".join(p if isinstance(p, str) else token_value(p, n, devices) for p in parts).encode()


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def write_lua(
    path: Path, mix: list[Template] | None = None, *, devices: int = DEVICES, first: int = 0
) -> None:
    """Write the mix as a Lua chunk returning the table ``mix.lua`` loads: device ids from a
    pool of ``devices``, request numbers from ``first`` on (a store filled with requests 0 to
    ``first - 1`` then gets no duplicate)."""
    lines = [
        "-- Generated by benchmarks/bodies.py; do not edit.",
        "return {",
        f"  devices = {devices}, base_time = {BASE_TIME}, first = {first},",
        f"  device_prefix = {_lua_string(DEVICE_PREFIX)},",
        f"  unique_prefix = {_lua_string(UNIQUE_PREFIX)},",
        "  items = {",
    ]
    for t in mix or build_mix():
        parts = ", ".join(_lua_string(p) if isinstance(p, str) else str(p) for p in t.parts)
        lines.append(f"    {{path = {_lua_string(t.path)}, parts = {{{parts}}}}},")
    lines += ["  },", "}", ""]
    path.write_text("\n".join(lines))


def check(count: int, *, v5: bool = False, lifecycles: bool = False) -> list[str]:
    """Render ``count`` requests and return the problems found (empty: every body is valid,
    unique by iotpush's idempotency key, and the mix holds all 22 types, or every v5 pair)."""
    from iotpush import NOTIFICATION_TYPES, decode
    from iotpush.idempotency import key_and_slot
    from iotpush.v5 import PAIRS

    mix = build_mix(v5=v5, lifecycles=lifecycles)
    problems: list[str] = []
    keys: set[str] = set()
    seen: Counter[str] = Counter()
    for n in range(count):
        t = mix[n % len(mix)]
        body = render(t, n)
        try:
            route = "command" if t.path == COMMAND_PATH else "v5" if t.path == V5_PATH else "notify"
            notification = decode(body, route)
        except Exception as exc:
            problems.append(f"request {n} ({t.type}): {exc}")
            continue
        seen[notification.notify_type] += 1
        key, _slot = key_and_slot(notification)
        if key in keys:
            problems.append(f"request {n} ({t.type}) repeats key {key}")
        keys.add(key)
    missing = set(PAIRS if v5 else NOTIFICATION_TYPES) - set(seen)
    if missing:
        problems.append(f"types never sent: {sorted(missing)}")
    return problems


def main() -> None:
    """``--check N``: validate the mix; ``--lua FILE``: write the Lua table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", type=int, metavar="N", help="render and validate N requests")
    parser.add_argument("--lua", type=Path, metavar="FILE", help="write the Lua table to FILE")
    parser.add_argument("--v5", action="store_true", help="the v5 variant of the mix")
    parser.add_argument("--lifecycles", action="store_true", help="the lifecycle mix")
    args = parser.parse_args()
    if args.lua:
        write_lua(args.lua, build_mix(v5=args.v5))
    if args.check:
        problems = check(args.check, v5=args.v5, lifecycles=args.lifecycles)
        for line in problems[:20]:
            print(line, file=sys.stderr)
        counts = Counter(t.type for t in build_mix(v5=args.v5))
        print(f"{args.check} bodies, {len(counts)} types, per 200: {dict(counts.most_common())}")
        sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
