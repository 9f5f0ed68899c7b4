from __future__ import annotations

import json
from typing import Any

import pytest

from iotpush import decode
from iotpush.idempotency import digest, key_and_slot, slot_order
from iotpush.inbox import Incoming
from tests.conftest import EXAMPLES


def key_of(name: str, **changes: Any) -> tuple[str, str]:
    data = json.loads(EXAMPLES[name])
    for path, value in changes.items():
        target = data
        *parents, leaf = path.split("__")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return key_and_slot(decode(json.dumps(data).encode()))


def test_digest_ignores_member_order_and_whitespace() -> None:
    assert digest({"a": 1, "b": [1, 2]}) == digest(json.loads('{ "b": [1,2], "a": 1 }'))
    assert digest({"a": 1}) != digest({"a": 2})


@pytest.mark.parametrize("name", list(EXAMPLES), ids=list(EXAMPLES))
def test_key_starts_with_type_and_is_stable_across_formatting(name: str) -> None:
    body = EXAMPLES[name]
    compact = json.dumps(json.loads(body), separators=(",", ":")).encode()
    key, slot = key_and_slot(decode(body))
    assert key.startswith(name.split("-", 1)[1] + ":")
    assert key_and_slot(decode(compact)) == (key, slot)


def test_key_nb_command_is_command_id_and_code() -> None:
    key, slot = key_of("19-nbCommandStatusChanged")
    assert key == slot == "nbCommandStatusChanged:108a9c71e3d34d0a9a6b9a11c2f0b7e2:DELIVERED"
    assert key_of("19-nbCommandStatusChanged", result__resultCode="SUCCESSFUL")[0] != key
    assert key_of("19-nbCommandStatusChanged", result__resultDetail={"x": 1})[0] == key


def test_key_data_is_device_service_time_and_data_hash() -> None:
    key, slot = key_of("04-deviceDataChanged")
    assert key == slot
    assert key.startswith(
        "deviceDataChanged:3f1e9a52-7c41-4b8e-9d2a-61f0c8b5e7a4:Brightness:20151212T121212Z:"
    )
    assert key_of("04-deviceDataChanged", service__data={"brightness": 81})[0] != key
    assert key_of("04-deviceDataChanged", service__eventTime="20151212T121213Z")[0] != key
    assert key_of("04-deviceDataChanged", requestId="r-1")[0] == key


@pytest.mark.parametrize(
    ("name", "slot"),
    [
        ("01-deviceAdded", "registry:3f1e9a52-7c41-4b8e-9d2a-61f0c8b5e7a4"),
        ("03-deviceInfoChanged", "registry:3f1e9a52-7c41-4b8e-9d2a-61f0c8b5e7a4"),
        ("07-deviceDeleted", "registry:3f1e9a52-7c41-4b8e-9d2a-61f0c8b5e7a4"),
        ("06-serviceInfoChanged", "service:3f1e9a52-7c41-4b8e-9d2a-61f0c8b5e7a4:Switch"),
        ("14-deviceDesiredPropertiesModifyStatusChanged",
         "shadow:3f1e9a52-7c41-4b8e-9d2a-61f0c8b5e7a4:Device"),
        ("17-fwUpgradeStateChangeNotify",
         "upgrade:3f1e9a52-7c41-4b8e-9d2a-61f0c8b5e7a4:op-2:sub-2"),
        ("12-deviceModelDeleted", "model:app-7d1c:acme-01:WaterMeter:WM-200"),
        ("20-deviceCapabilitiesChanged", "model:app-7d1c:acme-01:WaterMeter:WM-200"),
    ],
    ids=lambda v: v.split(":")[0],
)  # fmt: skip
def test_state_types_share_a_slot_per_thing(name: str, slot: str) -> None:
    assert key_and_slot(decode(EXAMPLES[name]))[1] == slot


def test_state_change_back_and_forth_gives_distinct_keys() -> None:
    online = key_of("03-deviceInfoChanged")
    offline = key_of("03-deviceInfoChanged", deviceInfo__status="OFFLINE")
    assert online[1] == offline[1]
    assert online[0] != offline[0]


def test_event_keys_include_their_identity() -> None:
    confirm = key_of("08-messageConfirm")[0]
    assert "1005" in confirm and "delivered" in confirm
    assert key_of("08-messageConfirm", header__status="executed")[0] != confirm
    assert key_of("10-deviceEvent", body={"level": "low"})[0] != key_of("10-deviceEvent")[0]
    assert key_of("13-ruleEvent", triggerTime="20261121T101501Z")[0] != key_of("13-ruleEvent")[0]
    assert key_of("09-commandRsp", header__requestId="1007")[0] != key_of("09-commandRsp")[0]


def test_slot_order_of_an_event_is_the_time_its_key_names() -> None:
    data = json.loads(EXAMPLES["04-deviceDataChanged"])
    notification = decode(json.dumps(data).encode())
    assert slot_order(notification) == 1449922332.0  # 20151212T121212Z
    data["service"]["eventTime"] = "not a time"
    assert slot_order(decode(json.dumps(data).encode())) is None


def test_incoming_order_only_for_a_slot_that_is_its_key() -> None:
    event = decode(EXAMPLES["04-deviceDataChanged"])
    state = decode(EXAMPLES["03-deviceInfoChanged"])
    made = {
        name: Incoming.from_notification(n, body=b"{}", path="/", headers={}, received_at=0.0)
        for name, n in (("event", event), ("state", state))
    }
    assert made["event"].order == slot_order(event) is not None
    assert made["state"].order is None
