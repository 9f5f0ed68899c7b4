from __future__ import annotations

import datetime as dt
import json

import msgspec
import pytest

from iotpush import models as m
from iotpush.exceptions import NotificationError
from tests.conftest import EXAMPLES

EXPECTED_CLASSES = [
    m.DeviceAdded, m.BindDevice, m.DeviceInfoChanged, m.DeviceDataChanged, m.DeviceDatasChanged,
    m.ServiceInfoChanged, m.DeviceDeleted, m.MessageConfirm, m.CommandRsp, m.DeviceEvent,
    m.DeviceModelAdded, m.DeviceModelDeleted, m.RuleEvent,
    m.DeviceDesiredPropertiesModifyStatusChanged, m.SwUpgradeStateChangeNotify,
    m.SwUpgradeResultNotify, m.FwUpgradeStateChangeNotify, m.FwUpgradeResultNotify,
    m.NBCommandStatusChanged, m.DeviceCapabilitiesChanged, m.DeviceCapabilitiesAdded,
    m.DeviceCapabilitiesDeleted,
]  # fmt: skip


def route_of(name: str) -> m.Route:
    return "command" if "nbCommandStatusChanged" in name else "notify"


def test_examples_all_22_types_present() -> None:
    assert len(EXAMPLES) == 22
    assert list(m.NOTIFICATION_TYPES.values()) == EXPECTED_CLASSES


@pytest.mark.parametrize("name", list(EXAMPLES), ids=list(EXAMPLES))
def test_decode_spec_example_gives_its_class(name: str) -> None:
    body = EXAMPLES[name]
    notification = m.decode(body, route_of(name))
    number = int(name.split("-")[0])
    assert type(notification) is EXPECTED_CLASSES[number - 1]
    assert notification.notify_type == name.split("-", 1)[1]
    assert notification.raw is body
    assert notification.json == json.loads(body)
    assert notification.extra == {}


@pytest.mark.parametrize("name", list(EXAMPLES), ids=list(EXAMPLES))
def test_decode_compact_reordered_body_equals_pretty(name: str) -> None:
    data = json.loads(EXAMPLES[name])
    reordered = dict(reversed(list(data.items())))
    compact = json.dumps(reordered, separators=(",", ":")).encode()
    assert m.decode(compact, route_of(name)) == m.decode(EXAMPLES[name], route_of(name))


def test_decode_example_values_are_typed_snake_case() -> None:
    n = m.decode(EXAMPLES["04-deviceDataChanged"])
    assert isinstance(n, m.DeviceDataChanged)
    assert n.device_id == "3f1e9a52-7c41-4b8e-9d2a-61f0c8b5e7a4"
    assert n.service.service_id == "Brightness"
    assert n.service.data == {"brightness": 80}
    assert m.parse_time(n.service.event_time) == dt.datetime(
        2015, 12, 12, 12, 12, 12, tzinfo=dt.UTC
    )
    rule = m.decode(EXAMPLES["13-ruleEvent"])
    assert isinstance(rule, m.RuleEvent)
    assert rule.actions_results[1].exception == "mail server unreachable"
    assert rule.reasons[0].info == {"temperature": 81}


def test_decode_message_confirm_device_from_header_path() -> None:
    n = m.decode(EXAMPLES["08-messageConfirm"])
    assert isinstance(n, m.MessageConfirm)
    assert n.header.from_ == "/devices/3f1e9a52-7c41-4b8e-9d2a-61f0c8b5e7a4/services/Switch"
    assert n.device == "3f1e9a52-7c41-4b8e-9d2a-61f0c8b5e7a4"


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        ("null", None),
        ('"None"', "None"),
        ('{"light_state": 1}', {"light_state": 1}),
        ('{"reason": "send command failed"}', {"reason": "send command failed"}),
    ],
    ids=["null", "string", "object", "reason"],
)
def test_decode_nb_command_result_detail_any_form(detail: str, expected: object) -> None:
    result = f'{{"resultCode": "SENT", "resultDetail": {detail}}}'
    body = f'{{"deviceId": "d", "commandId": "c", "result": {result}}}'
    n = m.decode(body.encode(), "command")
    assert isinstance(n, m.NBCommandStatusChanged)
    assert n.result.result_detail == expected


def test_decode_nb_command_result_detail_absent_is_none() -> None:
    n = m.decode(b'{"deviceId":"d","commandId":"c","result":{"resultCode":"FAIL"}}', "command")
    assert isinstance(n, m.NBCommandStatusChanged)
    assert n.result.result_detail is None


@pytest.mark.parametrize(
    "code",
    ["PENDING", "SENT", "DELIVERED", "SUCCESS", "SUCCESSFUL", "FAIL", "FAILED", "TIMEOUT",
     "EXPIRED", "CANCELED"],
)  # fmt: skip
def test_decode_nb_command_every_result_code_spelling(code: str) -> None:
    body = f'{{"deviceId":"d","commandId":"c","result":{{"resultCode":"{code}"}}}}'.encode()
    n = m.decode(body, "command")
    assert isinstance(n, m.NBCommandStatusChanged)
    assert n.result.result_code == code


def test_decode_nb_command_on_main_path_without_notify_type_is_accepted() -> None:
    n = m.decode(EXAMPLES["19-nbCommandStatusChanged"], "notify")
    assert isinstance(n, m.NBCommandStatusChanged)


@pytest.mark.parametrize("upgrade_time", ['"120"', "120", "120.5"], ids=["string", "int", "float"])
def test_decode_upgrade_time_string_or_number(upgrade_time: str) -> None:
    data = json.loads(EXAMPLES["18-fwUpgradeResultNotify"])
    data["upgradeTime"] = json.loads(upgrade_time)
    n = m.decode(json.dumps(data).encode())
    assert isinstance(n, m.FwUpgradeResultNotify)
    assert n.upgrade_time == json.loads(upgrade_time)


def test_decode_request_id_null_or_absent_is_none() -> None:
    data = json.loads(EXAMPLES["05-deviceDatasChanged"])
    del data["requestId"]
    n = m.decode(json.dumps(data).encode())
    assert isinstance(n, m.DeviceDatasChanged)
    assert n.request_id is None
    assert len(n.services) == 2


def test_decode_datas_misnamed_service_array_is_services() -> None:
    data = json.loads(EXAMPLES["05-deviceDatasChanged"])
    data["service"] = data.pop("services")
    n = m.decode(json.dumps(data).encode())
    assert isinstance(n, m.DeviceDatasChanged)
    assert [s.service_id for s in n.services] == ["Battery", "Temperature"]


def test_decode_unknown_members_kept_and_readable() -> None:
    data = json.loads(EXAMPLES["03-deviceInfoChanged"])
    data["networkStatus"] = "ONLINE"
    data["vendorExtension"] = {"a": 1}
    data["deviceInfo"]["isHD"] = True
    data["deviceInfo"]["futureMember"] = "x"
    n = m.decode(json.dumps(data).encode())
    assert isinstance(n, m.DeviceInfoChanged)
    assert n.network_status == "ONLINE"
    assert n.device_info.is_hd is True
    assert n.extra == {"vendorExtension": {"a": 1}}
    assert n.json["deviceInfo"]["futureMember"] == "x"


@pytest.mark.parametrize(
    ("body", "route", "path", "reason"),
    [
        (b'{"deviceId": "d"', "notify", "$", "invalid JSON"),
        (b"[1, 2]", "notify", "$", "Expected `object`, got `array`"),
        (b'"text"', "command", "$", "Expected `object`, got `str`"),
        (b'{"deviceId": "d"}', "notify", "$.notifyType", "missing required member `notifyType`"),
        (b'{"notifyType": "deviceGone"}', "notify", "$.notifyType", "unknown notifyType"),
        (b'{"notifyType": "deviceDeleted", "gatewayId": "g"}', "notify", "$",
         "Object missing required field `deviceId`"),
        (b'{"notifyType": "deviceDeleted", "deviceId": null, "gatewayId": "g"}', "notify",
         "$.deviceId", "Expected `str`, got `null`"),
        (b'{"deviceId": "d", "commandId": "c", "result": {"resultCode": null}}', "command",
         "$.result.resultCode", "Expected `str`, got `null`"),
        (b'{"deviceId": "d", "commandId": "c", "result": {}}', "command", "$.result",
         "Object missing required field `resultCode`"),
        (b'{"notifyType": "deviceDatasChanged", "deviceId": "d", "gatewayId": "g"}', "notify",
         "$", "missing required field `services`"),
        (b"\xff\xfe{}", "notify", "$", "invalid JSON"),
    ],
    ids=["truncated", "array", "string", "no-type", "unknown-type", "missing-member", "null-member",
         "null-nested", "missing-nested", "no-services", "not-utf8"],
)  # fmt: skip
def test_decode_bad_body_names_path(body: bytes, route: m.Route, path: str, reason: str) -> None:
    with pytest.raises(NotificationError) as info:
        m.decode(body, route)
    assert info.value.path == path
    assert reason in info.value.reason


def test_notification_built_in_code_encodes_like_the_wire() -> None:
    n = m.NBCommandStatusChanged(
        device_id="d", command_id="c", result=m.NBCommandResult(result_code="DELIVERED")
    )
    assert "notifyType" not in n.json
    assert n.json["result"] == {"resultCode": "DELIVERED", "resultDetail": None}
    added = m.decode(msgspec.json.encode(m.decode(EXAMPLES["01-deviceAdded"])))
    assert added.json["notifyType"] == "deviceAdded"


def test_time_format_round_trips() -> None:
    moment = dt.datetime(2026, 11, 21, 10, 15, tzinfo=dt.UTC)
    assert m.format_time(moment) == "20261121T101500Z"
    assert m.parse_time("20261121T101500Z") == moment


def test_callbacks_are_the_sdk_names() -> None:
    assert (
        m.DeviceDesiredPropertiesModifyStatusChanged.callback == "handleDeviceDesiredStatusChanged"
    )
    assert m.NBCommandStatusChanged.callback == "handleNBCommandStateChanged"
    assert m.DeviceModelDeleted.callback == "handleDeviceModelDeleted"
    assert m.SwUpgradeStateChangeNotify.callback == "handleSwUpgradeStateChanged"
    assert len({cls.callback for cls in m.NOTIFICATION_TYPES.values()}) == 22


@pytest.mark.parametrize(
    "text",
    ["2015121T121212Z", "20151212 121212Z", "20151212T121212", "20151312T121212Z",
     "20151212T12121xZ", "2015-12-12T12:12"],
)  # fmt: skip
def test_parse_time_rejects_what_is_not_a_platform_time(text: str) -> None:
    with pytest.raises(ValueError):
        m.parse_time(text)


@pytest.mark.parametrize("depth", [10_000, 100_000], ids=["10k", "100k"])
def test_decode_deeply_nested_member_is_a_notification_error(depth: int) -> None:
    deep = b"[" * depth + b"]" * depth
    body = b'{"notifyType": "deviceDeleted", "deviceId": "d", "gatewayId": "g", "x": ' + deep + b"}"
    with pytest.raises(NotificationError, match="nested too deeply"):
        m.decode(body)
